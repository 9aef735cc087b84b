//! The wrapper every CRI handler runs in: it logs the call once (changes at
//! info, reads at debug, failures at warn with their gRPC code) and turns
//! the handler's error into a `Status`.

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
    let ms = start.elapsed().as_secs_f64() * 1e3;
    match &result {
        Ok(_) => match kind {
            Kind::Mutation => tracing::info!(method, ms, "ok"),
            Kind::Read => tracing::debug!(method, ms, "ok"),
        },
        Err(e) => tracing::warn!(method, ms, code = ?e.code(), error = %e, "failed"),
    }
    result.map(Response::new).map_err(Status::from)
}
