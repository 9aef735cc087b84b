//! TCP probes, and the dialer probes share.
//!
//! The kubelet also sets `SO_LINGER` to one second on probe sockets. A
//! probe socket has nothing left to send when it is closed, so on Linux
//! that changes nothing, and with Tokio it could block a worker thread:
//! it is not set here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::{gofmt, Outcome};

/// Connects to `host:port` within `timeout`. A host name is resolved and its addresses tried in
/// turn. Errors are worded as Go's dialer words them (`dial tcp
/// 10.0.0.1:80: connect: connection refused`, `... i/o timeout`).
pub async fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let hostport = gofmt::join_host_port(host, port);
    let deadline = tokio::time::Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
                Ok(Ok(a)) => a.collect(),
                Ok(Err(e)) => {
                    return Err(format!("dial tcp: lookup {host}: {}", gofmt::io_error(&e)))
                }
                Err(_) => return Err(format!("dial tcp: lookup {host}: i/o timeout")),
            }
        }
    };
    if addrs.is_empty() {
        return Err(format!("dial tcp: lookup {host}: no such host"));
    }
    let mut first_error = None;
    for addr in addrs {
        let shown = if host.parse::<IpAddr>().is_ok() {
            hostport.clone()
        } else {
            addr.to_string()
        };
        let attempt = async {
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4(),
                SocketAddr::V6(_) => TcpSocket::new_v6(),
            }?;
            socket.connect(addr).await
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => {
                first_error.get_or_insert(format!(
                    "dial tcp {shown}: connect: {}",
                    gofmt::io_error(&e)
                ));
            }
            Err(_) => {
                first_error.get_or_insert(format!("dial tcp {shown}: i/o timeout"));
                break;
            }
        }
    }
    Err(first_error.unwrap_or_else(|| format!("dial tcp {hostport}: i/o timeout")))
}

/// Runs a TCP probe: success if a connection opens within `timeout`, a
/// failure with the dialer's error otherwise.
pub async fn probe(host: &str, port: u16, timeout: Duration) -> Outcome {
    match dial(host, port, timeout).await {
        Ok(stream) => {
            drop(stream);
            Outcome::Success
        }
        Err(e) => Outcome::Failure(e),
    }
}
