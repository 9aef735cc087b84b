//! Pending streaming requests behind single-use tokens: a token is good for
//! one connection within [`TTL`] of its issue, and at most [`MAX_PENDING`]
//! wait at once (then the gRPC call fails with RESOURCE_EXHAUSTED, as the
//! kubelet's own streaming server does).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::{AttachRequest, ExecRequest, PortForwardRequest};

/// How long an issued URL stays good.
pub const TTL: Duration = Duration::from_secs(60);
/// How many URLs may be pending at once.
pub const MAX_PENDING: usize = 1000;

/// What a URL is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    /// The URL's first path segment.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Attach => "attach",
            Kind::PortForward => "portforward",
        }
    }

    pub fn from_path(segment: &str) -> Option<Kind> {
        match segment {
            "exec" => Some(Kind::Exec),
            "attach" => Some(Kind::Attach),
            "portforward" => Some(Kind::PortForward),
            _ => None,
        }
    }
}

/// A request waiting for its URL to be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

/// The channels a remote command has: (stdin, stdout, stderr, tty);
/// stderr never with a terminal, which has one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stdio {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Pending {
    /// The channels of an exec or attach; `None` for a port-forward.
    pub fn stdio(&self) -> Option<Stdio> {
        let (stdin, stdout, stderr, tty) = match self {
            Pending::Exec(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::Attach(r) => (r.stdin, r.stdout, r.stderr, r.tty),
            Pending::PortForward(_) => return None,
        };
        Some(Stdio {
            stdin,
            stdout,
            stderr: stderr && !tty,
            tty,
        })
    }

    pub fn kind(&self) -> Kind {
        match self {
            Pending::Exec(_) => Kind::Exec,
            Pending::Attach(_) => Kind::Attach,
            Pending::PortForward(_) => Kind::PortForward,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error(
        "maximum number of in-flight streaming requests exceeded ({MAX_PENDING} URLs issued \
         in the last {TTL:?} are unused)"
    )]
    Full,
}

/// The pending requests.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, (Instant, Pending)>>,
}

/// A new random token: 144 bits, URL-safe.
fn token() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// Keeps `pending`; its token.
    pub fn insert(&self, pending: Pending) -> Result<String, CacheError> {
        self.insert_at(pending, Instant::now())
    }

    fn insert_at(&self, pending: Pending, now: Instant) -> Result<String, CacheError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (issued, _)| now.duration_since(*issued) < TTL);
        if entries.len() >= MAX_PENDING {
            return Err(CacheError::Full);
        }
        let token = token();
        entries.insert(token.clone(), (now, pending));
        Ok(token)
    }

    /// Takes the request of `token` if it is of `kind` and still good. The
    /// token is used up either way.
    pub fn take(&self, kind: Kind, token: &str) -> Option<Pending> {
        self.take_at(kind, token, Instant::now())
    }

    fn take_at(&self, kind: Kind, token: &str, now: Instant) -> Option<Pending> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (issued, pending) = entries.remove(token)?;
        (now.duration_since(issued) < TTL && pending.kind() == kind).then_some(pending)
    }

    /// How many are pending (expired ones included until the next insert).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf(pod: &str) -> Pending {
        Pending::PortForward(PortForwardRequest {
            pod_id: pod.into(),
            ports: vec![80],
        })
    }

    #[test]
    fn a_token_works_once_and_only_for_its_kind() {
        let c = Cache::new();
        let t = c.insert(pf("a")).unwrap();
        assert!(t.len() >= 24 && !t.contains(['/', '+', '=']));
        assert_eq!(c.take(Kind::PortForward, &t), Some(pf("a")));
        assert_eq!(c.take(Kind::PortForward, &t), None);
        let t = c.insert(pf("b")).unwrap();
        assert_eq!(c.take(Kind::Exec, &t), None, "wrong kind");
        assert_eq!(
            c.take(Kind::PortForward, &t),
            None,
            "used up by the wrong kind"
        );
        assert_eq!(c.take(Kind::Exec, "nope"), None);
    }

    #[test]
    fn tokens_expire_after_a_minute() {
        let c = Cache::new();
        let now = Instant::now();
        let t = c.insert_at(pf("a"), now).unwrap();
        assert_eq!(c.take_at(Kind::PortForward, &t, now + TTL), None);
        let t = c.insert_at(pf("a"), now).unwrap();
        assert!(c
            .take_at(Kind::PortForward, &t, now + TTL - Duration::from_secs(1))
            .is_some());
    }

    #[test]
    fn at_most_a_thousand_pending_and_expired_ones_make_room() {
        let c = Cache::new();
        let now = Instant::now();
        for _ in 0..MAX_PENDING {
            c.insert_at(pf("a"), now).unwrap();
        }
        assert_eq!(c.insert_at(pf("a"), now), Err(CacheError::Full));
        assert!(c.insert_at(pf("a"), now + TTL).is_ok());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn tokens_differ() {
        let c = Cache::new();
        let a = c.insert(pf("a")).unwrap();
        let b = c.insert(pf("a")).unwrap();
        assert_ne!(a, b);
    }
}
