//! The periodic worker of one probe of one container, as the kubelet's
//! prober worker: first-run jitter, initial delay, period, thresholds,
//! startup gating, results published on change.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Probe;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::{run_probe_with, ExecSync, Outcome, Settings, Target};

/// Which probe a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Restarts the container when it fails.
    Liveness,
    /// Says whether the container is ready for traffic.
    Readiness,
    /// Holds back the other probes until the container has started.
    Startup,
}

impl Kind {
    /// The name the kubelet uses in messages: `Liveness`, `Readiness`,
    /// `Startup`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }

    /// The result a worker publishes before its first verdict: Failure for
    /// readiness (not ready until probed), Success for liveness, Unknown
    /// for startup.
    pub fn initial(self) -> ProbeResult {
        match self {
            Kind::Readiness => ProbeResult::Failure,
            Kind::Liveness => ProbeResult::Success,
            Kind::Startup => ProbeResult::Unknown,
        }
    }
}

/// A probe's published result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeResult {
    /// No verdict yet (a startup probe before its threshold).
    Unknown,
    /// Live, ready or started.
    Success,
    /// Not live (restart the container), not ready, or failed to start
    /// (restart the container).
    Failure,
}

/// A kubelet event for one probe attempt: reason `Unhealthy` for a
/// failure or an error, `ProbeWarning` for a warning, with the kubelet's
/// message (`Liveness probe failed: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// The probe that produced it.
    pub kind: Kind,
    /// `Unhealthy` or `ProbeWarning`.
    pub reason: &'static str,
    /// The event's message.
    pub message: String,
}

impl ProbeEvent {
    /// The event the kubelet records for an attempt's outcome, if any.
    pub fn of(kind: Kind, outcome: &Outcome) -> Option<ProbeEvent> {
        let (reason, message) = match outcome {
            Outcome::Success => return None,
            Outcome::Warning(m) => (
                "ProbeWarning",
                format!("{} probe warning: {m}", kind.name()),
            ),
            Outcome::Failure(m) => ("Unhealthy", format!("{} probe failed: {m}", kind.name())),
            Outcome::Unknown(e) => (
                "Unhealthy",
                format!(
                    "{} probe errored and resulted in unknown state: {e}",
                    kind.name()
                ),
            ),
        };
        Some(ProbeEvent {
            kind,
            reason,
            message,
        })
    }
}

/// The threshold logic of a worker, without timers: feed it outcomes,
/// read what it publishes.
#[derive(Debug, Clone)]
pub struct Machine {
    kind: Kind,
    settings: Settings,
    /// The last verdict counted (Success before any, as the kubelet's zero
    /// value).
    last: ProbeResult,
    /// How many times in a row `last` came.
    run: u32,
    /// No more probing: a liveness failure or a startup verdict was
    /// published (the container is to be restarted or has started), or
    /// the pod is being deleted.
    on_hold: bool,
    published: (ProbeResult, Option<String>),
}

impl Machine {
    /// A machine for `kind` with `probe`'s settings, publishing the
    /// kind's initial result.
    pub fn new(kind: Kind, probe: &Probe) -> Machine {
        Machine {
            kind,
            settings: Settings::of(probe),
            last: ProbeResult::Success,
            run: 0,
            on_hold: false,
            published: (kind.initial(), None),
        }
    }

    /// The published result and the message of the failure behind it.
    pub fn published(&self) -> &(ProbeResult, Option<String>) {
        &self.published
    }

    /// Whether probing has stopped for good.
    pub fn on_hold(&self) -> bool {
        self.on_hold
    }

    /// Whether a tick should run the probe: the container has been up for
    /// the initial delay (whole seconds, truncated, as the kubelet counts)
    /// and, for liveness and readiness, the startup probe (if any:
    /// `startup`) has succeeded; a startup probe stops once it has.
    pub fn due(&self, since_start: Duration, startup: Option<ProbeResult>) -> bool {
        if self.on_hold {
            return false;
        }
        let up = i64::try_from(since_start.as_secs()).unwrap_or(i64::MAX);
        if up < self.settings.initial_delay_seconds {
            return false;
        }
        let started = match self.kind {
            Kind::Startup => self.published.0 == ProbeResult::Success,
            _ => startup.is_none_or(|r| r == ProbeResult::Success),
        };
        match self.kind {
            Kind::Startup => !started,
            _ => started,
        }
    }

    /// Counts one attempt's outcome; returns whether the published result
    /// changed. A warning counts as success; an unknown outcome (a probe
    /// that could not run) is not counted. The result changes only after
    /// `successThreshold` successes or `failureThreshold` failures in a
    /// row; a liveness failure or any startup verdict then stops probing.
    pub fn record(&mut self, outcome: &Outcome) -> bool {
        let (result, message) = match outcome {
            Outcome::Success | Outcome::Warning(_) => (ProbeResult::Success, None),
            Outcome::Failure(m) => (ProbeResult::Failure, Some(m.clone())),
            Outcome::Unknown(_) => return false,
        };
        if self.last == result {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = result;
            self.run = 1;
        }
        let threshold = match result {
            ProbeResult::Failure => self.settings.failure_threshold,
            _ => self.settings.success_threshold,
        };
        if self.run < threshold {
            return false;
        }
        let changed = self.published.0 != result;
        self.published = (result, message);
        if (self.kind == Kind::Liveness && result == ProbeResult::Failure)
            || self.kind == Kind::Startup
        {
            self.on_hold = true;
            self.run = 0;
        }
        changed
    }

    /// The pod is being deleted: liveness and startup publish Success (so
    /// no restart interferes with the shutdown) and stop; readiness goes
    /// on. Returns whether the published result changed.
    pub fn pod_terminating(&mut self) -> bool {
        if self.kind == Kind::Readiness {
            return false;
        }
        self.on_hold = true;
        let changed = self.published.0 != ProbeResult::Success;
        self.published = (ProbeResult::Success, None);
        changed
    }
}

/// When the node agent's prober started, for the first-run jitter.
static MANAGER_START: OnceLock<Instant> = OnceLock::new();

/// Records when the node agent (its prober) started; call it once at
/// start-up. Workers spawned within one probe period of it wait a random
/// part of their period before probing, as the kubelet's do after a
/// restart. Without a call, the first worker's spawn counts as the start.
pub fn set_manager_start(at: Instant) {
    let _ = MANAGER_START.set(at);
}

/// How a worker is run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// When the prober started (see [`set_manager_start`]).
    pub manager_start: Instant,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            manager_start: *MANAGER_START.get_or_init(Instant::now),
        }
    }
}

/// Messages from the handle to the task.
enum Control {
    Trigger,
    PodTerminating,
}

/// The kubelet's attempts at a probe that could not be run.
const MAX_ATTEMPTS: usize = 3;

/// The periodic prober of one probe of one container. Create a new one
/// for each container (after a restart, too); dropping it stops it.
pub struct Worker {
    task: JoinHandle<()>,
    results: watch::Receiver<(ProbeResult, Option<String>)>,
    result: watch::Receiver<ProbeResult>,
    events: broadcast::Sender<ProbeEvent>,
    control: mpsc::UnboundedSender<Control>,
}

impl Worker {
    /// Spawns the worker task. `started_at` is when the container started
    /// (for `initialDelaySeconds`); `startup_done` is the startup probe's
    /// result when the container has one (liveness and readiness do not
    /// run until it is Success; see [`Worker::result_watch`]).
    pub fn spawn(
        client: berth_cri_client::Client,
        kind: Kind,
        probe: Probe,
        target: Target,
        started_at: SystemTime,
        startup_done: Option<watch::Receiver<ProbeResult>>,
    ) -> Worker {
        Worker::spawn_with(
            client,
            kind,
            probe,
            target,
            started_at,
            startup_done,
            Options::default(),
        )
    }

    /// [`Worker::spawn`] with any [`ExecSync`] and explicit options.
    pub fn spawn_with<E: ExecSync + 'static>(
        runner: E,
        kind: Kind,
        probe: Probe,
        target: Target,
        started_at: SystemTime,
        startup_done: Option<watch::Receiver<ProbeResult>>,
        options: Options,
    ) -> Worker {
        let machine = Machine::new(kind, &probe);
        let (results_tx, results) = watch::channel(machine.published().clone());
        let (result_tx, result) = watch::channel(machine.published().0);
        let (events, _) = broadcast::channel(32);
        let (control, control_rx) = mpsc::unbounded_channel();
        // The container's age now, then counted on Tokio's clock.
        let age = SystemTime::now()
            .duration_since(started_at)
            .unwrap_or_default();
        let task = Task {
            runner,
            kind,
            probe,
            target,
            clock: (Instant::now(), age),
            startup: startup_done,
            machine,
            results: results_tx,
            result: result_tx,
            events: events.clone(),
            control: control_rx,
            manager_start: options.manager_start,
        };
        Worker {
            task: tokio::spawn(task.run()),
            results,
            result,
            events,
            control,
        }
    }

    /// The published result with the message of the failure behind it;
    /// it changes only when the result does (as the kubelet's results
    /// manager). When the worker stops probing (a liveness failure, a
    /// startup verdict), the channel keeps its last value.
    pub fn results(&self) -> watch::Receiver<(ProbeResult, Option<String>)> {
        self.results.clone()
    }

    /// The published result alone: what another worker takes as
    /// `startup_done`.
    pub fn result_watch(&self) -> watch::Receiver<ProbeResult> {
        self.result.clone()
    }

    /// The kubelet's events for each attempt that failed, errored or
    /// warned (reason `Unhealthy` or `ProbeWarning`).
    pub fn events(&self) -> broadcast::Receiver<ProbeEvent> {
        self.events.subscribe()
    }

    /// Runs the probe now and restarts the period from now, as the kubelet
    /// does for a readiness probe of a started container that is not ready
    /// when it syncs the pod.
    pub fn trigger(&self) {
        let _ = self.control.send(Control::Trigger);
    }

    /// The pod is being deleted: a liveness or startup worker publishes
    /// Success and stops; a readiness worker goes on probing.
    pub fn pod_terminating(&self) {
        let _ = self.control.send(Control::PodTerminating);
    }

    /// Stops the worker (an attempt under way is abandoned).
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The state of a worker task.
struct Task<E> {
    runner: E,
    kind: Kind,
    probe: Probe,
    target: Target,
    /// A Tokio instant and the container's age at that instant.
    clock: (Instant, Duration),
    startup: Option<watch::Receiver<ProbeResult>>,
    machine: Machine,
    results: watch::Sender<(ProbeResult, Option<String>)>,
    result: watch::Sender<ProbeResult>,
    events: broadcast::Sender<ProbeEvent>,
    control: mpsc::UnboundedReceiver<Control>,
    manager_start: Instant,
}

impl<E: ExecSync> Task<E> {
    async fn run(mut self) {
        let period = self.machine.settings.period;
        // Soon after the prober starts, many workers start at once: each
        // waits a random part of its period first.
        if period > self.manager_start.elapsed() {
            tokio::time::sleep(period.mul_f64(rand::random::<f64>())).await;
        }
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut startup_live = self.startup.is_some();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                ctl = self.control.recv() => match ctl {
                    None => return,
                    Some(Control::Trigger) => ticker.reset(),
                    Some(Control::PodTerminating) => {
                        if self.machine.pod_terminating() {
                            self.publish();
                        }
                        if self.machine.on_hold() {
                            return;
                        }
                        continue;
                    }
                },
                ok = startup_changed(&mut self.startup), if startup_live => {
                    if !ok {
                        // The startup worker is gone; its last result stays.
                        startup_live = false;
                        continue;
                    }
                    // The container has just started: the kubelet's pod
                    // sync then runs the readiness probe at once.
                    let started = self.startup.as_ref().map(|r| *r.borrow())
                        == Some(ProbeResult::Success);
                    if self.kind != Kind::Readiness || !started {
                        continue;
                    }
                    ticker.reset();
                }
            }
            self.tick().await;
            if self.machine.on_hold() {
                return;
            }
        }
    }

    /// One tick: probe if due, count the outcome, publish a change.
    async fn tick(&mut self) {
        let (at, age) = self.clock;
        let since_start = age + at.elapsed();
        let startup = self.startup.as_ref().map(|r| *r.borrow());
        if !self.machine.due(since_start, startup) {
            return;
        }
        let mut outcome = Outcome::Unknown(String::new());
        for _ in 0..MAX_ATTEMPTS {
            outcome = run_probe_with(&self.runner, &self.probe, &self.target).await;
            if !matches!(outcome, Outcome::Unknown(_)) {
                break;
            }
        }
        tracing::debug!(
            probe = self.kind.name(),
            container = %self.target.container.name,
            ?outcome,
            "probe attempt"
        );
        if let Some(event) = ProbeEvent::of(self.kind, &outcome) {
            let _ = self.events.send(event);
        }
        self.machine.record(&outcome);
        self.publish();
    }

    /// Publishes the machine's result: receivers are told only when the
    /// result changed; the message is kept up to date either way.
    fn publish(&self) {
        let now = self.machine.published().clone();
        let result = now.0;
        self.results.send_if_modified(|v| {
            let changed = v.0 != now.0;
            *v = now;
            changed
        });
        self.result.send_if_modified(|v| {
            let changed = *v != result;
            *v = result;
            changed
        });
    }
}

/// Waits for the startup result to change; false once its worker is gone.
async fn startup_changed(rx: &mut Option<watch::Receiver<ProbeResult>>) -> bool {
    match rx {
        Some(r) => r.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
