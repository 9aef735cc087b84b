//! The events a kubelet records for a pod (Pulling, Created, Started,
//! Killing, BackOff, Unhealthy, ...), kept in memory for `berth node
//! status` and the `/events` endpoint, and logged.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// Normal or Warning, as Kubernetes events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// One event about a pod or one of its containers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub reason: String,
    pub message: String,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let t: chrono::DateTime<chrono::Utc> = (*t).into();
    // Milliseconds are enough for people and for ordering.
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// An event as a client reads it back from `/events` or `/status`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub time: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub namespace: String,
    pub pod: String,
    #[serde(default)]
    pub container: Option<String>,
    pub reason: String,
    pub message: String,
}

/// The newest events, at most a fixed number.
#[derive(Debug)]
pub struct Recorder {
    keep: usize,
    events: Mutex<VecDeque<Event>>,
}

/// Which pod an event is about.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    /// The reference of a pod.
    pub fn of(pod: &k8s_openapi::api::core::v1::Pod) -> PodRef {
        PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        }
    }
}

impl Recorder {
    /// A recorder keeping the newest `keep` events.
    pub fn new(keep: usize) -> Recorder {
        Recorder {
            keep,
            events: Mutex::new(VecDeque::new()),
        }
    }

    /// Records (and logs) an event.
    pub fn record(
        &self,
        pod: &PodRef,
        container: Option<&str>,
        kind: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let message = message.into();
        match kind {
            EventType::Normal => tracing::info!(
                pod = %format!("{}/{}", pod.namespace, pod.name),
                container = container.unwrap_or(""),
                reason,
                "{message}"
            ),
            EventType::Warning => tracing::warn!(
                pod = %format!("{}/{}", pod.namespace, pod.name),
                container = container.unwrap_or(""),
                reason,
                "{message}"
            ),
        }
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == self.keep {
            events.pop_front();
        }
        events.push_back(Event {
            time: SystemTime::now(),
            kind,
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            container: container.map(str::to_string),
            reason: reason.to_string(),
            message,
        });
    }

    /// The events kept, oldest first.
    pub fn list(&self) -> Vec<Event> {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest() {
        let r = Recorder::new(2);
        let p = PodRef {
            namespace: "default".into(),
            name: "p".into(),
            uid: "u".into(),
        };
        for reason in ["A", "B", "C"] {
            r.record(&p, Some("c"), EventType::Normal, reason, "m");
        }
        let reasons: Vec<_> = r.list().into_iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["B", "C"]);
        let json = serde_json::to_value(&r.list()[0]).unwrap();
        assert_eq!(json["type"], "Normal");
        assert_eq!(json["podUid"], "u");
    }
}
