//! Concurrent callers asking for the same key share one execution. The work
//! runs as its own task so that a caller going away does not stop it for the
//! others; when the last caller goes away, the work is cancelled.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;
use tokio::task::AbortHandle;

struct Flight<V> {
    rx: watch::Receiver<Option<V>>,
    abort: AbortHandle,
}

impl<V> Drop for Flight<V> {
    fn drop(&mut self) {
        // The last interested caller is gone: stop the work.
        self.abort.abort();
    }
}

/// In-flight executions by key, each with the generation that started it.
type Flights<K, V> = Arc<Mutex<HashMap<K, (u64, Weak<Flight<V>>)>>>;

/// A map of in-flight executions keyed by `K`.
pub struct Group<K, V> {
    flights: Flights<K, V>,
    next: std::sync::atomic::AtomicU64,
}

impl<K, V> Default for Group<K, V> {
    fn default() -> Self {
        Group {
            flights: Arc::default(),
            next: Default::default(),
        }
    }
}

impl<K, V> Group<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Runs `work` for `key`, or joins the execution already running for it.
    /// Returns `None` if the work was cancelled or panicked.
    pub async fn run<F>(&self, key: K, work: impl FnOnce() -> F) -> Option<V>
    where
        F: Future<Output = V> + Send + 'static,
    {
        let flight = {
            let mut map = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key).and_then(|(_, w)| w.upgrade()) {
                Some(f) => f,
                None => {
                    let (tx, rx) = watch::channel(None);
                    let generation = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let fut = work();
                    let flights = self.flights.clone();
                    let k = key.clone();
                    let handle = tokio::spawn(async move {
                        let v = fut.await;
                        // Forget the flight before publishing, so a caller
                        // arriving after completion starts afresh.
                        let mut map = flights.lock().unwrap_or_else(|p| p.into_inner());
                        if map.get(&k).is_some_and(|(g, _)| *g == generation) {
                            map.remove(&k);
                        }
                        drop(map);
                        let _ = tx.send(Some(v));
                    });
                    let f = Arc::new(Flight {
                        rx,
                        abort: handle.abort_handle(),
                    });
                    map.insert(key, (generation, Arc::downgrade(&f)));
                    f
                }
            }
        };
        let mut rx = flight.rx.clone();
        let result = rx
            .wait_for(|v| v.is_some())
            .await
            .ok()
            .and_then(|v| v.clone());
        drop(flight);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let g: Arc<Group<&str, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let g = g.clone();
            let runs = runs.clone();
            tasks.push(tokio::spawn(async move {
                g.run("k", || async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    runs.fetch_add(1, Ordering::SeqCst) + 100
                })
                .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(100));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // After completion a new call runs again.
        let v = g.run("k", || async { 7 }).await;
        assert_eq!(v, Some(7));
    }

    #[tokio::test]
    async fn last_caller_leaving_cancels_the_work() {
        let g: Arc<Group<&str, ()>> = Arc::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let f2 = finished.clone();
        let call = g.run("k", || async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            f2.fetch_add(1, Ordering::SeqCst);
        });
        let _ = tokio::time::timeout(Duration::from_millis(20), call).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }
}
