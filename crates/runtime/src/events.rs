//! GetContainerEvents: what happened to pods and containers, told to every
//! subscriber as it happens, with the pod's status and its containers'
//! statuses at that moment (the kubelet's evented PLEG caches them as the
//! pod's status).
//!
//! Who tells what, as containerd does:
//! - the RPCs: a pod's CREATED and STARTED (RunPodSandbox), STOPPED
//!   (StopPodSandbox, or RemovePodSandbox of a ready pod) and DELETED
//!   (RemovePodSandbox), with the pod's id as the container id; a
//!   container's CREATED, STARTED and DELETED;
//! - a container's STOPPED, whatever stopped it (its process exited, a
//!   StopContainer, a failed start, its pod stopping): the pod's watcher,
//!   which reads every state change from the monitor
//!   ([`berth_monitor::protocol::Request::Watch`]);
//!   and when the monitor dies unexpectedly, STOPPED for its containers
//!   and for the pod.
//!
//! Every subscriber has its own queue of [`EVENT_BACKLOG`] events. One that
//! falls further behind misses events: its stream ends with an error saying
//! how many, and the client must list again (the kubelet then relists).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_monitor::client::Client;
use berth_monitor::protocol::{State, Status};
use tokio::sync::broadcast;

use crate::container::ContainerView;
use crate::sandbox::{PodView, ProcessId};
use crate::{now_ns, Inner, Runtime};

/// How many events a subscriber may fall behind before it misses some.
pub const EVENT_BACKLOG: usize = 4096;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

/// One event, with the pod's state when it happened.
#[derive(Debug, Clone)]
pub struct Event {
    /// The container, or the pod for a pod's own events.
    pub container_id: String,
    pub kind: EventKind,
    /// When it was told (ns since the epoch).
    pub created_at: i64,
    /// The pod; `None` only if it is already gone.
    pub pod: Option<PodView>,
    /// Every container of the pod.
    pub containers: Vec<ContainerView>,
}

/// The daemon's event fan-out.
pub(crate) struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    /// Each ready pod's watcher, stopped when the pod is stopped.
    watchers: std::sync::Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(EVENT_BACKLOG).0,
            watchers: Default::default(),
        }
    }
}

impl Runtime {
    /// A new subscriber: every event from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.events.tx.subscribe()
    }

    /// Tells subscribers that `kind` happened to `container_id` (a
    /// container of pod `pod_id`, or the pod itself).
    pub(crate) fn emit(&self, container_id: &str, pod_id: &str, kind: EventKind) {
        if !self.has_subscribers() {
            return;
        }
        let (pod, records) = {
            let idx = self.read_index();
            let pod = idx.pods.get(pod_id).cloned();
            let records: Vec<_> = idx
                .containers
                .values()
                .filter(|c| c.sandbox_id == pod_id)
                .cloned()
                .collect();
            (pod, records)
        };
        let event = Event {
            container_id: container_id.to_string(),
            kind,
            created_at: now_ns(),
            pod: pod.map(PodView::of),
            containers: records.into_iter().map(|r| self.view(r)).collect(),
        };
        tracing::debug!(container = container_id, pod = pod_id, ?kind, "event");
        let _ = self.inner.events.tx.send(Arc::new(event));
    }

    /// Starts watching a ready pod's monitor for container exits.
    pub(crate) fn watch_pod(&self, pod_id: &str, monitor: ProcessId) {
        let task = tokio::spawn(watch(
            Arc::downgrade(&self.inner),
            pod_id.to_string(),
            monitor,
            self.pod_dir(pod_id),
        ));
        self.set_watcher(pod_id, Some(task.abort_handle()));
    }

    /// Stops watching a pod that is being stopped: from here on its RPC
    /// tells what happens to it.
    pub(crate) fn unwatch_pod(&self, pod_id: &str) {
        self.set_watcher(pod_id, None);
    }

    /// Puts `watcher` in the pod's place, stopping the one there was.
    fn set_watcher(&self, pod_id: &str, watcher: Option<tokio::task::AbortHandle>) {
        let mut watchers = self
            .inner
            .events
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let old = match watcher {
            Some(w) => watchers.insert(pod_id.to_string(), w),
            None => watchers.remove(pod_id),
        };
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Whether anyone listens: events and what they carry are only made
    /// for someone.
    pub(crate) fn has_subscribers(&self) -> bool {
        self.inner.events.tx.receiver_count() > 0
    }

    /// The status of each container of a pod, for [`Runtime::emit_exits`].
    pub(crate) fn statuses_of(&self, pod_id: &str) -> Vec<(String, Status)> {
        let records: Vec<_> = self
            .read_index()
            .containers
            .values()
            .filter(|c| c.sandbox_id == pod_id)
            .cloned()
            .collect();
        records
            .into_iter()
            .map(|r| {
                let status = self.container_state(&r).status;
                (r.id, status)
            })
            .collect()
    }

    /// STOPPED for every container that had not exited in `before` and
    /// has now.
    pub(crate) fn emit_exits(&self, pod_id: &str, before: &[(String, Status)]) {
        if before.is_empty() || !self.has_subscribers() {
            return;
        }
        let now: HashMap<String, Status> = self.statuses_of(pod_id).into_iter().collect();
        for (id, was) in before {
            if *was != Status::Exited && now.get(id) == Some(&Status::Exited) {
                self.emit(id, pod_id, EventKind::Stopped);
            }
        }
    }
}

/// The runtime, while it exists.
fn upgrade(weak: &Weak<Inner>) -> Option<Runtime> {
    weak.upgrade().map(|inner| Runtime { inner })
}

/// Follows a pod's monitor until it exits: STOPPED for each container that
/// exits; when the monitor itself dies (it was not stopped: that aborts
/// this task first), STOPPED for its remaining containers and the pod.
async fn watch(weak: Weak<Inner>, pod_id: String, monitor: ProcessId, dir: std::path::PathBuf) {
    let client = Client::new(dir);
    // Each container's last known status. The first snapshot is taken
    // silently: what happened before (a daemon restart) was not watched.
    let mut known: HashMap<String, Status> = HashMap::new();
    let mut seeded = false;
    let mut retry = Duration::from_millis(50);
    while monitor.alive() {
        match client.watch().await {
            Ok(mut w) => {
                retry = Duration::from_millis(50);
                for s in std::mem::take(&mut w.states) {
                    if seeded {
                        changed(&weak, &pod_id, &mut known, &s);
                    } else {
                        known.insert(s.id.clone(), s.status);
                    }
                }
                seeded = true;
                while let Ok(Some(s)) = w.next().await {
                    changed(&weak, &pod_id, &mut known, &s);
                }
                // The monitor exited, or this watch fell behind: look again.
            }
            Err(e) => {
                if !monitor.alive() {
                    break;
                }
                tracing::debug!(pod = %pod_id, error = %e, "watching the pod's monitor");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
            }
        }
    }
    let Some(rt) = upgrade(&weak) else { return };
    tracing::warn!(pod = %pod_id, pid = monitor.pid, "the pod's monitor exited");
    let before: Vec<(String, Status)> = known.into_iter().collect();
    rt.emit_exits(&pod_id, &before);
    if rt.read_index().pods.get(&pod_id).is_some_and(|p| p.ready) {
        rt.emit(&pod_id, &pod_id, EventKind::Stopped);
    }
}

/// A state line from the monitor: STOPPED when a known container exits.
fn changed(weak: &Weak<Inner>, pod_id: &str, known: &mut HashMap<String, Status>, s: &State) {
    let was = known.insert(s.id.clone(), s.status);
    if s.status != Status::Exited || was == Some(Status::Exited) {
        return;
    }
    let Some(rt) = upgrade(weak) else { return };
    if rt.read_index().containers.contains_key(&s.id) {
        rt.emit(&s.id, pod_id, EventKind::Stopped);
    }
}
