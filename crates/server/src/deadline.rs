//! Client deadlines answered as DEADLINE_EXCEEDED.
//!
//! A gRPC client sends its deadline as the `grpc-timeout` header. tonic's
//! server enforces it too, but answers CANCELLED ("Timeout expired") when
//! its timer fires before the client's, which is what happens under load;
//! the CRI (critest's "should timeout if requested") and every gRPC client
//! expect DEADLINE_EXCEEDED. This layer sits inside tonic's and fires a
//! little earlier, so the caller always reads DEADLINE_EXCEEDED, whichever
//! side sees the deadline first. Changes still run to completion: they
//! are their own tasks (see [`crate::instrument::mutation`]).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tonic::Status;
use tower::{Layer, Service};

/// How much earlier than tonic's own timer this layer answers: a tenth of
/// the timeout, at most 20 ms.
fn early(timeout: Duration) -> Duration {
    timeout.saturating_sub((timeout / 10).min(Duration::from_millis(20)))
}

/// The `grpc-timeout` header's value: at most 8 digits and a unit (`H`,
/// `M`, `S`, `m`, `u`, `n`), as the gRPC over HTTP/2 spec defines it.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The layer, for `tonic::transport::Server::layer`.
#[derive(Clone, Copy, Default)]
pub struct DeadlineLayer;

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Deadline<S> {
        Deadline { inner }
    }
}

/// The service [`DeadlineLayer`] wraps around the CRI services.
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for Deadline<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let timeout = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let fut = self.inner.call(req);
        let Some(timeout) = timeout else {
            return Box::pin(fut);
        };
        Box::pin(async move {
            match tokio::time::timeout(early(timeout), fut).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        method,
                        timeout_ms = timeout.as_secs_f64() * 1e3,
                        "the caller's deadline expired"
                    );
                    Ok(Status::deadline_exceeded(format!(
                        "{method}: the caller's deadline of {timeout:?} expired"
                    ))
                    .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        // Nine digits, no digits, unknown unit, sign.
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("-5S"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn fires_before_tonic() {
        assert_eq!(early(Duration::from_secs(2)), Duration::from_millis(1980));
        assert_eq!(early(Duration::from_millis(100)), Duration::from_millis(90));
        assert_eq!(early(Duration::ZERO), Duration::ZERO);
    }
}
