//! JSON as Go's `encoding/json` writes it for the few API structs whose
//! encoding ends up in annotations: struct fields in Go's declaration order,
//! `omitempty`, and HTML-safe escaping of `<`, `>` and `&`.

use k8s_openapi::api::core::v1::{ContainerPort, LifecycleHandler};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A JSON string literal escaped like Go's encoder.
pub(crate) fn string(s: &str) -> String {
    let plain = serde_json::Value::String(s.to_string()).to_string();
    let mut out = String::with_capacity(plain.len());
    for c in plain.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

struct Obj {
    buf: String,
    first: bool,
}

impl Obj {
    fn new() -> Obj {
        Obj {
            buf: String::from("{"),
            first: true,
        }
    }
    fn raw(&mut self, key: &str, value: &str) {
        if !self.first {
            self.buf.push(',');
        }
        self.first = false;
        self.buf.push('"');
        self.buf.push_str(key);
        self.buf.push_str("\":");
        self.buf.push_str(value);
    }
    fn str_omitempty(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            self.raw(key, &string(v));
        }
    }
    fn end(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => string(s),
    }
}

/// `[]v1.ContainerPort` as Go encodes it.
pub(crate) fn container_ports(ports: &[ContainerPort]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| {
            let mut o = Obj::new();
            o.str_omitempty("name", p.name.as_deref());
            if let Some(hp) = p.host_port.filter(|hp| *hp != 0) {
                o.raw("hostPort", &hp.to_string());
            }
            o.raw("containerPort", &p.container_port.to_string());
            o.str_omitempty("protocol", p.protocol.as_deref());
            o.str_omitempty("hostIP", p.host_ip.as_deref());
            o.end()
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// `v1.LifecycleHandler` as Go encodes it.
pub(crate) fn lifecycle_handler(h: &LifecycleHandler) -> String {
    let mut o = Obj::new();
    if let Some(exec) = &h.exec {
        let mut e = Obj::new();
        if let Some(cmd) = exec.command.as_ref().filter(|c| !c.is_empty()) {
            let items: Vec<String> = cmd.iter().map(|s| string(s)).collect();
            e.raw("command", &format!("[{}]", items.join(",")));
        }
        o.raw("exec", &e.end());
    }
    if let Some(http) = &h.http_get {
        let mut e = Obj::new();
        e.str_omitempty("path", http.path.as_deref());
        e.raw("port", &int_or_string(&http.port));
        e.str_omitempty("host", http.host.as_deref());
        e.str_omitempty("scheme", http.scheme.as_deref());
        if let Some(headers) = http.http_headers.as_ref().filter(|h| !h.is_empty()) {
            let items: Vec<String> = headers
                .iter()
                .map(|hd| {
                    let mut x = Obj::new();
                    x.raw("name", &string(&hd.name));
                    x.raw("value", &string(&hd.value));
                    x.end()
                })
                .collect();
            e.raw("httpHeaders", &format!("[{}]", items.join(",")));
        }
        o.raw("httpGet", &e.end());
    }
    if let Some(tcp) = &h.tcp_socket {
        let mut e = Obj::new();
        e.raw("port", &int_or_string(&tcp.port));
        e.str_omitempty("host", tcp.host.as_deref());
        o.raw("tcpSocket", &e.end());
    }
    if let Some(sleep) = &h.sleep {
        let mut e = Obj::new();
        e.raw("seconds", &sleep.seconds.to_string());
        o.raw("sleep", &e.end());
    }
    o.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ExecAction;

    #[test]
    fn go_escaping_and_order() {
        assert_eq!(string("a<b>&\"c\n"), "\"a\\u003cb\\u003e\\u0026\\\"c\\n\"");
        let h = LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into(), "-c".into(), "date > /x".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            lifecycle_handler(&h),
            r#"{"exec":{"command":["sh","-c","date \u003e /x"]}}"#
        );
        let p = ContainerPort {
            container_port: 80,
            host_port: Some(18080),
            protocol: Some("TCP".into()),
            ..Default::default()
        };
        assert_eq!(
            container_ports(&[p]),
            r#"[{"hostPort":18080,"containerPort":80,"protocol":"TCP"}]"#
        );
    }
}
