//! Probe ports: a number, or the name of one of the container's ports.

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Resolves a probe's port as the kubelet does: a number as is; a name
/// looked up among the container's ports (the first port of that name,
/// any protocol), and failing that parsed as a number. The result must be
/// 1–65535. Errors are in the kubelet's words.
pub fn resolve(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n: i64 = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()));
            match named {
                Some(p) => i64::from(p.container_port),
                None => atoi(name)?,
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// A decimal integer as Go's `strconv.Atoi` reads it, with its errors.
fn atoi(s: &str) -> Result<i64, String> {
    s.parse::<i64>().map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        format!("strconv.Atoi: parsing {}: {why}", crate::gofmt::quote(s))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerPort;

    fn container() -> Container {
        let port = |name: &str, n: i32| ContainerPort {
            name: Some(name.into()),
            container_port: n,
            ..Default::default()
        };
        Container {
            name: "c".into(),
            ports: Some(vec![
                port("http", 8080),
                port("http", 9090),
                port("grpc", 50051),
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn numbers_and_names_resolve() {
        let c = container();
        assert_eq!(resolve(&IntOrString::Int(80), &c), Ok(80));
        assert_eq!(resolve(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(resolve(&IntOrString::String("grpc".into()), &c), Ok(50051));
        // A number written as a string, when no port has that name.
        assert_eq!(resolve(&IntOrString::String("8443".into()), &c), Ok(8443));
    }

    #[test]
    fn bad_ports_are_errors_in_the_kubelets_words() {
        let c = container();
        assert_eq!(
            resolve(&IntOrString::String("admin".into()), &c),
            Err("strconv.Atoi: parsing \"admin\": invalid syntax".into())
        );
        assert_eq!(
            resolve(&IntOrString::String("99999999999999999999".into()), &c),
            Err("strconv.Atoi: parsing \"99999999999999999999\": value out of range".into())
        );
        assert_eq!(
            resolve(&IntOrString::Int(0), &c),
            Err("invalid port number: 0".into())
        );
        assert_eq!(
            resolve(&IntOrString::Int(70000), &c),
            Err("invalid port number: 70000".into())
        );
        assert_eq!(
            resolve(&IntOrString::String("-1".into()), &c),
            Err("invalid port number: -1".into())
        );
    }
}
