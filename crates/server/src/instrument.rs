//! The wrapper every CRI handler runs in: it logs the call once (changes at
//! info, reads at debug, failures at warn with their gRPC code) and turns
//! the handler's error into a `Status`. Changes run to completion even when
//! the caller gives up (a client deadline, kubelet's runtime request
//! timeout): a half-done RunPodSandbox or StopPodSandbox would leave state
//! that only a retry cleans. Each call is counted in `crate::metrics`.

use std::future::Future;
use std::time::Instant;

use tonic::{Response, Status};

use crate::error::ServerError;

/// Whether a call changes state (logged at info) or only reads it.
#[derive(Clone, Copy)]
pub enum Kind {
    Mutation,
    Read,
}

/// Runs one CRI handler.
pub async fn call<T, F>(method: &'static str, kind: Kind, fut: F) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, ServerError>>,
{
    let start = Instant::now();
    let result = fut.await;
    let seconds = start.elapsed().as_secs_f64();
    let ms = seconds * 1e3;
    let code = match &result {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.code(),
    };
    crate::metrics::global().call(method, code, seconds);
    match &result {
        Ok(_) => match kind {
            Kind::Mutation => tracing::info!(method, ms, "ok"),
            Kind::Read => tracing::debug!(method, ms, "ok"),
        },
        Err(e) => tracing::warn!(method, ms, code = ?e.code(), error = %e, "failed"),
    }
    result.map(Response::new).map_err(Status::from)
}

/// Runs a CRI handler that changes state, as its own task: if the caller
/// goes away, the call still finishes (and is logged), so nothing is left
/// half done.
pub async fn mutation<T, F>(method: &'static str, fut: F) -> Result<Response<T>, Status>
where
    F: Future<Output = Result<T, ServerError>> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(call(method, Kind::Mutation, fut)).await {
        Ok(result) => result,
        Err(e) => Err(Status::internal(format!("{method} did not finish: {e}"))),
    }
}
