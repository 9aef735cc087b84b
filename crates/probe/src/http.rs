//! HTTP GET probes and hooks.
//!
//! The request is built as the kubelet builds it (URL, headers, `Host`
//! override, `User-Agent`, `Accept`), then sent with `reqwest`: no proxy,
//! certificates not verified, redirects followed only to the same host
//! name, a 3xx that is not followed a warning.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect;

use crate::{gofmt, port, Outcome, KUBE_VERSION};

/// The most of a response body that is read (the kubelet's 10 KiB).
pub const MAX_BODY: usize = 10 << 10;

/// What the request is for: it picks the `User-Agent` (`kube-probe/1.36`
/// or `kube-lifecycle/1.36`) and how it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A liveness, readiness or startup probe.
    Probe,
    /// A postStart or preStop hook.
    Lifecycle,
}

impl Purpose {
    fn user_agent(self) -> String {
        match self {
            Purpose::Probe => format!("kube-probe/{KUBE_VERSION}"),
            Purpose::Lifecycle => format!("kube-lifecycle/{KUBE_VERSION}"),
        }
    }
}

/// An HTTP GET request as the kubelet builds it for a probe or a hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `scheme://host:port/path?query`.
    pub url: String,
    /// The headers as Go's `http.Header` holds them: canonical names
    /// (`X-Custom`), in order, repeated names kept. A `Host` entry is not
    /// sent as such: see [`Request::host`].
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// Builds the request for `action`: the host is `action.host`, else
    /// `pod_host`; the port a number or a named port of `container`.
    /// Fails (the kubelet's probe "errored") when the port does not resolve.
    pub fn new(
        action: &HTTPGetAction,
        container: &Container,
        pod_host: &str,
        purpose: Purpose,
    ) -> Result<Request, String> {
        let scheme = match action.scheme.as_deref() {
            None | Some("") => "http".to_string(),
            Some(s) => s.to_ascii_lowercase(),
        };
        let host = match action.host.as_deref() {
            None | Some("") => pod_host,
            Some(h) => h,
        };
        let port = port::resolve(&action.port, container)?;
        let path = action.path.as_deref().unwrap_or("");
        let url = format_url(&scheme, host, port, path);
        let mut headers: Vec<(String, String)> = action
            .http_headers
            .iter()
            .flatten()
            .map(|h| (canonical_key(&h.name), h.value.clone()))
            .collect();
        if !headers.iter().any(|(k, _)| k == "User-Agent") {
            headers.push(("User-Agent".into(), purpose.user_agent()));
        }
        match headers.iter().find(|(k, _)| k == "Accept") {
            None => headers.push(("Accept".into(), "*/*".into())),
            // An Accept set to "" means: send none.
            Some((_, v)) if v.is_empty() => headers.retain(|(k, _)| k != "Accept"),
            Some(_) => {}
        }
        Ok(Request { url, headers })
    }

    /// The `Host` to send instead of the URL's: the first `Host` header,
    /// if it is not empty.
    pub fn host(&self) -> Option<&str> {
        self.first("Host").filter(|h| !h.is_empty())
    }

    /// The first value of a header (by canonical name).
    fn first(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The headers put on the wire, as Go's client writes them: `Host` as
    /// the override only, `User-Agent` once (its first value) and not at
    /// all when that is empty, the others as they are.
    pub fn wire_headers(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        if let Some(h) = self.host() {
            out.push(("Host", h));
        }
        match self.first("User-Agent") {
            Some(ua) if !ua.is_empty() => out.push(("User-Agent", ua)),
            _ => {}
        }
        for (k, v) in &self.headers {
            if k != "Host" && k != "User-Agent" {
                out.push((k.as_str(), v.as_str()));
            }
        }
        out
    }
}

/// The URL as the kubelet formats it: the path as given (a slash added in
/// front when it lacks one), on `scheme://host:port`.
pub fn format_url(scheme: &str, host: &str, port: u16, path: &str) -> String {
    let hostport = gofmt::join_host_port(host, port);
    if path.is_empty() || path.starts_with('/') {
        format!("{scheme}://{hostport}{path}")
    } else {
        format!("{scheme}://{hostport}/{path}")
    }
}

/// A header name as Go canonicalises it (`content-type` → `Content-Type`);
/// a name with characters not allowed in a header name is kept as is.
pub fn canonical_key(name: &str) -> String {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return name.to_string();
    }
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// The outcome of a probe from the status and the start of the body:
/// 200–299 success, 300–399 (a redirect not followed) a warning, others a
/// failure (its message holds the status, not the body, as the kubelet's).
pub fn classify(status: u16, body: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        300..=399 => Outcome::Warning(format!("Probe terminated redirects, Response body: {body}")),
        _ => Outcome::Failure(format!("HTTP probe failed with statuscode: {status}")),
    }
}

/// The redirect rule of the kubelet's probes and hooks: follow up to 10
/// redirects to the same host name; at another host stop and return the
/// redirect itself.
fn redirect_policy() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let same_host =
            attempt.previous().first().map(|u| u.host_str()) == Some(attempt.url().host_str());
        let too_many = attempt.previous().len() >= 10;
        if !same_host {
            attempt.stop()
        } else if too_many {
            attempt.error("stopped after 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

/// The shared client of one purpose.
fn client(purpose: Purpose) -> Result<&'static reqwest::Client, String> {
    static PROBE: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    static LIFECYCLE: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    let cell = match purpose {
        Purpose::Probe => &PROBE,
        Purpose::Lifecycle => &LIFECYCLE,
    };
    cell.get_or_init(|| {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .tls_danger_accept_invalid_certs(true)
            .redirect(redirect_policy())
            .retry(reqwest::retry::never())
            .referer(false)
            .http1_title_case_headers()
            .no_gzip()
            .no_brotli()
            .no_deflate()
            .no_zstd();
        b = match purpose {
            // Probes open a new connection every time, as the kubelet's.
            Purpose::Probe => b.pool_max_idle_per_host(0),
            // The kubelet's hook client speaks HTTP/1.1 only.
            Purpose::Lifecycle => b.http1_only(),
        };
        b.build()
            .map_err(|e| format!("cannot set up the HTTP client: {}", chain(&e)))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// An error and its sources on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    berth_cri_client::error_chain(e)
}

/// Whether a TLS request failed because the server answered in plain HTTP.
fn plain_http_answer(e: &reqwest::Error) -> bool {
    let text = chain(e);
    text.contains("InvalidContentType") || text.contains("corrupt message")
}

/// A client error as Go's client words it: `Get "url": detail`.
fn client_error(url: &str, e: &reqwest::Error) -> String {
    let url = e.url().map(|u| u.as_str()).unwrap_or(url);
    let detail = if e.is_timeout() {
        "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".to_string()
    } else if plain_http_answer(e) {
        "http: server gave HTTP response to HTTPS client".to_string()
    } else if let Some(io) = io_source(e) {
        let addr = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.trim_matches(['[', ']']).to_string();
                Some(gofmt::join_host_port(&host, u.port_or_known_default()?))
            })
            .unwrap_or_default();
        if e.is_connect() {
            format!("dial tcp {addr}: connect: {}", gofmt::io_error(io))
        } else {
            gofmt::io_error(io)
        }
    } else {
        // The sources only: reqwest's own first line repeats the URL.
        let mut parts = Vec::new();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            let t = s.to_string();
            if !parts.iter().any(|p: &String| p.ends_with(&t)) {
                parts.push(t);
            }
            src = s.source();
        }
        if parts.is_empty() {
            e.to_string()
        } else {
            parts.join(": ")
        }
    };
    format!("Get {}: {detail}", gofmt::quote(url))
}

/// The innermost I/O error of an error's sources.
fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut found = None;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            found = Some(io);
        }
        src = s.source();
    }
    found
}

/// The request as `reqwest` sends it, or the error Go's client gives for a
/// header it cannot send.
fn prepare(
    client: &reqwest::Client,
    req: &Request,
    purpose: Purpose,
    url: &str,
) -> Result<reqwest::RequestBuilder, String> {
    let mut headers = HeaderMap::new();
    for (k, v) in req.wire_headers() {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            format!(
                "Get {}: net/http: invalid header field name {}",
                gofmt::quote(url),
                gofmt::quote(k)
            )
        })?;
        let value = HeaderValue::from_str(v).map_err(|_| {
            format!(
                "Get {}: net/http: invalid header field value for {}",
                gofmt::quote(url),
                gofmt::quote(k)
            )
        })?;
        headers.append(name, value);
    }
    match purpose {
        // Go's probe transport disables keep-alives and says so (over
        // HTTP/1.1; plain HTTP is always HTTP/1.1 here, HTTPS may be h2,
        // where the header is not allowed).
        Purpose::Probe => {
            if url.starts_with("http://") {
                headers.insert(
                    reqwest::header::CONNECTION,
                    HeaderValue::from_static("close"),
                );
            }
        }
        // Go's default transport asks for gzip unless told otherwise.
        Purpose::Lifecycle => {
            if !headers.contains_key(reqwest::header::ACCEPT_ENCODING)
                && !headers.contains_key(reqwest::header::RANGE)
            {
                headers.insert(
                    reqwest::header::ACCEPT_ENCODING,
                    HeaderValue::from_static("gzip"),
                );
            }
        }
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("parse {}: {e}", gofmt::quote(url)))?;
    Ok(client.get(parsed).headers(headers))
}

/// Runs an HTTP probe with `timeout` for the whole exchange (connect,
/// redirects, the first 10 KiB of the body).
pub async fn probe(req: &Request, timeout: Duration) -> Outcome {
    let client = match client(Purpose::Probe) {
        Ok(c) => c,
        Err(e) => return Outcome::Unknown(e),
    };
    let builder = match prepare(client, req, Purpose::Probe, &req.url) {
        Ok(b) => b.timeout(timeout),
        // A URL that does not parse is the kubelet's request error; a bad
        // header is its client's error, a failure.
        Err(e) if e.starts_with("parse ") => return Outcome::Unknown(e),
        Err(e) => return Outcome::Failure(e),
    };
    let mut resp = match builder.send().await {
        Ok(r) => r,
        Err(e) => return Outcome::Failure(client_error(&req.url, &e)),
    };
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match resp.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break,
            // The kubelet treats a body it cannot read as a probe error.
            Err(e) => return Outcome::Unknown(client_error(&req.url, &e)),
        }
    }
    body.truncate(MAX_BODY);
    classify(status, &String::from_utf8_lossy(&body))
}

/// Runs an HTTP hook: any answer, whatever its status, is success; only a
/// request that gets no answer fails (with Go's client error text). An
/// HTTPS hook answered in plain HTTP is retried over HTTP without its
/// `Authorization` header, as the kubelet does.
pub async fn hook(req: &Request) -> Result<(), String> {
    let client = client(Purpose::Lifecycle)?;
    let err = match prepare(client, req, Purpose::Lifecycle, &req.url)?
        .send()
        .await
    {
        Ok(resp) => {
            drop(resp);
            return Ok(());
        }
        Err(e) => e,
    };
    if plain_http_answer(&err) {
        if let Some(rest) = req.url.strip_prefix("https://") {
            let url = format!("http://{rest}");
            let mut plain = req.clone();
            plain.headers.retain(|(k, _)| k != "Authorization");
            if let Ok(resp) = prepare(client, &plain, Purpose::Lifecycle, &url)?
                .send()
                .await
            {
                drop(resp);
                let host = rest.split('/').next().unwrap_or(rest);
                tracing::warn!(
                    reason = "LifecycleHTTPFallback",
                    "request to HTTPS lifecycle hook {host} got HTTP response, retry with HTTP succeeded"
                );
                return Ok(());
            }
        }
    }
    Err(client_error(&req.url, &err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, HTTPHeader};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn action(port: IntOrString, path: &str) -> HTTPGetAction {
        HTTPGetAction {
            port,
            path: Some(path.into()),
            ..Default::default()
        }
    }

    fn container() -> Container {
        Container {
            name: "web".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn urls_are_formatted_as_the_kubelet_does() {
        assert_eq!(
            format_url("http", "10.0.0.5", 80, "/healthz"),
            "http://10.0.0.5:80/healthz"
        );
        assert_eq!(
            format_url("http", "10.0.0.5", 80, "healthz"),
            "http://10.0.0.5:80/healthz"
        );
        assert_eq!(
            format_url("https", "fd00::5", 443, "/a?b=c"),
            "https://[fd00::5]:443/a?b=c"
        );
        assert_eq!(format_url("http", "h", 1, ""), "http://h:1");
    }

    #[test]
    fn requests_use_named_ports_hosts_and_schemes() {
        let mut a = action(IntOrString::String("http".into()), "/ready");
        a.scheme = Some("HTTPS".into());
        let r = Request::new(&a, &container(), "10.1.2.3", Purpose::Probe).unwrap();
        assert_eq!(r.url, "https://10.1.2.3:8080/ready");
        a.host = Some("example.test".into());
        let r = Request::new(&a, &container(), "10.1.2.3", Purpose::Probe).unwrap();
        assert_eq!(r.url, "https://example.test:8080/ready");
        let bad = action(IntOrString::String("metrics".into()), "/");
        assert_eq!(
            Request::new(&bad, &container(), "10.1.2.3", Purpose::Probe).unwrap_err(),
            "strconv.Atoi: parsing \"metrics\": invalid syntax"
        );
    }

    fn with_headers(h: &[(&str, &str)]) -> Request {
        let mut a = action(IntOrString::Int(80), "/");
        a.http_headers = Some(
            h.iter()
                .map(|(n, v)| HTTPHeader {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
        );
        Request::new(&a, &container(), "10.0.0.1", Purpose::Probe).unwrap()
    }

    #[test]
    fn default_headers_and_overrides() {
        let r = with_headers(&[]);
        assert_eq!(
            r.wire_headers(),
            vec![("User-Agent", "kube-probe/1.36"), ("Accept", "*/*")]
        );
        let r = with_headers(&[("host", "svc.example"), ("x-trace", "1"), ("X-TRACE", "2")]);
        assert_eq!(r.host(), Some("svc.example"));
        assert_eq!(
            r.wire_headers(),
            vec![
                ("Host", "svc.example"),
                ("User-Agent", "kube-probe/1.36"),
                ("X-Trace", "1"),
                ("X-Trace", "2"),
                ("Accept", "*/*"),
            ]
        );
        // An empty Accept removes it; an empty User-Agent sends none.
        let r = with_headers(&[("Accept", ""), ("User-Agent", "")]);
        assert_eq!(r.wire_headers(), Vec::<(&str, &str)>::new());
        let r = with_headers(&[("accept", "application/json"), ("user-agent", "mine")]);
        assert_eq!(
            r.wire_headers(),
            vec![("User-Agent", "mine"), ("Accept", "application/json")]
        );
        let mut a = action(IntOrString::Int(80), "/");
        a.http_headers = None;
        let r = Request::new(&a, &container(), "10.0.0.1", Purpose::Lifecycle).unwrap();
        assert_eq!(r.first("User-Agent"), Some("kube-lifecycle/1.36"));
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical_key("content-TYPE"), "Content-Type");
        assert_eq!(canonical_key("x-b3-traceid"), "X-B3-Traceid");
        assert_eq!(canonical_key("bad name"), "bad name");
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(classify(200, "ok"), Outcome::Success);
        assert_eq!(classify(204, ""), Outcome::Success);
        assert_eq!(
            classify(302, "moved"),
            Outcome::Warning("Probe terminated redirects, Response body: moved".into())
        );
        assert_eq!(
            classify(500, "boom"),
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            classify(404, ""),
            Outcome::Failure("HTTP probe failed with statuscode: 404".into())
        );
    }
}
