//! SPDY/3.1 sessions (in progress on the `spdy` branch).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::cache::Pending;
use crate::remotecommand::Version;
use crate::{Backend, Shared};

pub(crate) async fn serve<S, B>(
    _io: S,
    _pending: Pending,
    _version: Version,
    _shared: Arc<Shared<B>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Backend,
{
}
