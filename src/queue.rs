//! Keyed ordered queues: items pushed under one key are handled strictly in
//! order by one worker task, while different keys are handled concurrently.
//!
//! Used on both sides of the bridge (Matrix room events in, MAX chat events in)
//! so that a slow room never holds up the others, yet one room's events never
//! overtake each other.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

type BoxedHandler<K, T> =
    Arc<dyn Fn(K, T) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Default number of items buffered per key before `push` waits.
pub const DEFAULT_CAPACITY: usize = 64;
/// Default time a worker waits for new items before it exits.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-key ordered queues with one worker task per busy key.
///
/// Cloning is cheap and clones share the same queues.
pub struct KeyedQueue<K, T> {
    inner: Arc<Inner<K, T>>,
}

impl<K, T> Clone for KeyedQueue<K, T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K, T> {
    slots: Mutex<HashMap<K, Slot<T>>>,
    handler: BoxedHandler<K, T>,
    capacity: usize,
    idle_timeout: Duration,
    next_generation: AtomicU64,
}

struct Slot<T> {
    tx: mpsc::Sender<T>,
    generation: u64,
    /// The worker draining `tx`; a successor waits for it so that a key never
    /// has two workers processing at the same time.
    worker: JoinHandle<()>,
    /// Items of the key queued or being handled (shared with successors).
    pending: Arc<AtomicUsize>,
}

impl<K, T> KeyedQueue<K, T>
where
    K: Eq + Hash + Clone + Debug + Send + Sync + 'static,
    T: Send + 'static,
{
    /// Creates a queue with [`DEFAULT_CAPACITY`] and [`DEFAULT_IDLE_TIMEOUT`].
    pub fn new<F, Fut>(handler: F) -> Self
    where
        F: Fn(K, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::with_options(DEFAULT_CAPACITY, DEFAULT_IDLE_TIMEOUT, handler)
    }

    /// Creates a queue holding at most `capacity` (at least 1) pending items per
    /// key, whose workers exit after `idle_timeout` without items.
    pub fn with_options<F, Fut>(capacity: usize, idle_timeout: Duration, handler: F) -> Self
    where
        F: Fn(K, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: BoxedHandler<K, T> = Arc::new(move |key, item| Box::pin(handler(key, item)));
        Self {
            inner: Arc::new(Inner {
                slots: Mutex::new(HashMap::new()),
                handler,
                capacity: capacity.max(1),
                idle_timeout,
                next_generation: AtomicU64::new(0),
            }),
        }
    }

    /// Enqueues `item` for `key`, waiting while that key's queue is full.
    pub async fn push(&self, key: K, item: T) {
        let mut item = item;
        loop {
            let (tx, pending) = self.sender_for(&key);
            pending.fetch_add(1, Ordering::Relaxed);
            match tx.send(item).await {
                Ok(()) => return,
                // The worker closed its channel because it went idle; the next
                // lookup sees the closed sender and starts a successor.
                Err(mpsc::error::SendError(returned)) => {
                    pending.fetch_sub(1, Ordering::Relaxed);
                    item = returned;
                }
            }
        }
    }

    /// Number of keys that currently have a worker.
    #[cfg(test)]
    fn active_keys(&self) -> usize {
        self.lock_slots().len()
    }

    /// Number of keys with items queued or being handled (a worker waiting
    /// idle for more does not count).
    pub fn busy_keys(&self) -> usize {
        self.lock_slots()
            .values()
            .filter(|slot| slot.pending.load(Ordering::Relaxed) > 0)
            .count()
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<T>>> {
        // A poisoned map is still consistent: no code panics while holding it.
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sender_for(&self, key: &K) -> (mpsc::Sender<T>, Arc<AtomicUsize>) {
        let mut slots = self.lock_slots();
        if let Some(slot) = slots.get(key)
            && !slot.tx.is_closed()
        {
            return (slot.tx.clone(), Arc::clone(&slot.pending));
        }
        let (predecessor, pending) = match slots.remove(key) {
            Some(slot) => (Some(slot.worker), slot.pending),
            None => (None, Arc::default()),
        };
        let (tx, rx) = mpsc::channel(self.inner.capacity);
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let worker = tokio::spawn(run_worker(
            Arc::clone(&self.inner),
            key.clone(),
            generation,
            rx,
            predecessor,
            Arc::clone(&pending),
        ));
        slots.insert(
            key.clone(),
            Slot {
                tx: tx.clone(),
                generation,
                worker,
                pending: Arc::clone(&pending),
            },
        );
        (tx, pending)
    }
}

async fn run_worker<K, T>(
    inner: Arc<Inner<K, T>>,
    key: K,
    generation: u64,
    mut rx: mpsc::Receiver<T>,
    predecessor: Option<JoinHandle<()>>,
    pending: Arc<AtomicUsize>,
) where
    K: Eq + Hash + Clone + Debug + Send + Sync + 'static,
    T: Send + 'static,
{
    if let Some(predecessor) = predecessor {
        // The predecessor only fails if it was aborted; either way it is done.
        let _ = predecessor.await;
    }
    loop {
        match tokio::time::timeout(inner.idle_timeout, rx.recv()).await {
            Ok(Some(item)) => {
                handle_one(&inner, &key, item).await;
                pending.fetch_sub(1, Ordering::Relaxed);
            }
            Ok(None) => break,
            Err(_idle) => {
                // Closing refuses new sends (pushers then start a successor)
                // while letting us drain what was already accepted.
                rx.close();
                while let Some(item) = rx.recv().await {
                    handle_one(&inner, &key, item).await;
                    pending.fetch_sub(1, Ordering::Relaxed);
                }
                break;
            }
        }
    }
    let mut slots = inner.slots.lock().unwrap_or_else(PoisonError::into_inner);
    if slots.get(&key).is_some_and(|s| s.generation == generation) {
        slots.remove(&key);
    }
}

async fn handle_one<K, T>(inner: &Inner<K, T>, key: &K, item: T)
where
    K: Clone + Debug,
{
    let fut = (inner.handler)(key.clone(), item);
    if let Err(panic) = AssertUnwindSafe(fut).catch_unwind().await {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        tracing::error!(key = ?key, panic = %message, "queue handler panicked; item dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::{mpsc, oneshot};

    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn items_of_one_key_are_handled_in_order() {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let queue = KeyedQueue::with_options(4, DEFAULT_IDLE_TIMEOUT, move |key: u32, n: u32| {
            let out_tx = out_tx.clone();
            async move {
                // Yield so a broken queue would have a chance to reorder.
                tokio::task::yield_now().await;
                let _ = out_tx.send((key, n));
            }
        });
        for n in 0..200 {
            queue.push(n % 3, n).await;
        }
        let mut seen: HashMap<u32, Vec<u32>> = HashMap::new();
        for _ in 0..200 {
            let (key, n) = tokio::time::timeout(DEADLINE, out_rx.recv())
                .await
                .expect("all items handled before the deadline")
                .expect("channel open");
            seen.entry(key).or_default().push(n);
        }
        for (key, items) in seen {
            let expected: Vec<u32> = (0..200).filter(|n| n % 3 == key).collect();
            assert_eq!(items, expected, "key {key} out of order");
        }
    }

    #[tokio::test]
    async fn a_blocked_key_does_not_block_another() {
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let release_rx = Arc::new(Mutex::new(Some(release_rx)));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        let queue = KeyedQueue::new(move |key: &'static str, _: ()| {
            let release_rx = Arc::clone(&release_rx);
            let done_tx = done_tx.clone();
            async move {
                if key == "blocked" {
                    let rx = release_rx.lock().expect("lock").take();
                    if let Some(rx) = rx {
                        let _ = rx.await;
                    }
                }
                let _ = done_tx.send(key);
            }
        });
        queue.push("blocked", ()).await;
        queue.push("free", ()).await;
        let first = tokio::time::timeout(DEADLINE, done_rx.recv())
            .await
            .expect("free key handled while the other is blocked");
        assert_eq!(first, Some("free"));
        release_tx.send(()).expect("blocked handler still waiting");
        let second = tokio::time::timeout(DEADLINE, done_rx.recv())
            .await
            .expect("blocked key handled after release");
        assert_eq!(second, Some("blocked"));
    }

    #[tokio::test]
    async fn push_waits_while_the_key_is_full() {
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let release_rx = Arc::new(Mutex::new(Some(release_rx)));
        let (started_tx, mut started_rx) = mpsc::unbounded_channel();
        let handled = Arc::new(AtomicUsize::new(0));
        let handled_in = Arc::clone(&handled);
        let queue = KeyedQueue::with_options(1, DEFAULT_IDLE_TIMEOUT, move |_: u8, n: u32| {
            let release_rx = Arc::clone(&release_rx);
            let started_tx = started_tx.clone();
            let handled = Arc::clone(&handled_in);
            async move {
                let _ = started_tx.send(n);
                let rx = release_rx.lock().expect("lock").take();
                if let Some(rx) = rx {
                    let _ = rx.await;
                }
                handled.fetch_add(1, Ordering::SeqCst);
            }
        });
        // Item 0 is taken by the worker and blocks; item 1 fills the buffer.
        queue.push(0, 0).await;
        assert_eq!(
            tokio::time::timeout(DEADLINE, started_rx.recv()).await.ok(),
            Some(Some(0))
        );
        queue.push(0, 1).await;
        // With the buffer full, a third push must not complete.
        let mut third = Box::pin(queue.push(0, 2));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            third.as_mut().poll(&mut cx).is_pending(),
            "push completed although the key's queue was full"
        );
        release_tx.send(()).expect("handler waiting");
        tokio::time::timeout(DEADLINE, third)
            .await
            .expect("push completes once the worker makes room");
        let wait = async {
            while handled.load(Ordering::SeqCst) < 3 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("all three items handled");
    }

    #[tokio::test]
    async fn a_panicking_handler_does_not_stop_its_key_or_others() {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let queue = KeyedQueue::new(move |key: u8, n: u32| {
            let out_tx = out_tx.clone();
            async move {
                assert!(n != 0, "boom");
                let _ = out_tx.send((key, n));
            }
        });
        queue.push(1, 0).await;
        queue.push(1, 1).await;
        queue.push(2, 0).await;
        queue.push(2, 2).await;
        let mut got = Vec::new();
        for _ in 0..2 {
            let item = tokio::time::timeout(DEADLINE, out_rx.recv())
                .await
                .expect("handled before the deadline")
                .expect("open");
            got.push(item);
        }
        got.sort_unstable();
        assert_eq!(got, vec![(1, 1), (2, 2)]);
    }

    #[tokio::test]
    async fn idle_workers_exit_and_are_recreated() {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel();
        let queue = KeyedQueue::with_options(4, Duration::from_millis(20), move |_: u8, n: u32| {
            let out_tx = out_tx.clone();
            async move {
                let _ = out_tx.send(n);
            }
        });
        queue.push(7, 1).await;
        let first = tokio::time::timeout(DEADLINE, out_rx.recv()).await;
        assert_eq!(first.ok(), Some(Some(1)));
        let gone = async {
            while queue.active_keys() != 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(DEADLINE, gone)
            .await
            .expect("idle worker exits");
        queue.push(7, 2).await;
        let second = tokio::time::timeout(DEADLINE, out_rx.recv()).await;
        assert_eq!(second.ok(), Some(Some(2)));
    }

    #[tokio::test]
    async fn a_key_is_busy_while_it_has_work_not_while_its_worker_idles() {
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let gate = Arc::new(Mutex::new(Some(release_rx)));
        let handled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&handled);
        let queue = KeyedQueue::with_options(4, DEFAULT_IDLE_TIMEOUT, move |key: u8, n: u32| {
            // Key 1's first item waits to be released.
            let release = ((key, n) == (1, 0))
                .then(|| gate.lock().unwrap().take())
                .flatten();
            let counter = Arc::clone(&counter);
            async move {
                if let Some(release) = release {
                    let _ = release.await;
                }
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        queue.push(1, 0).await;
        queue.push(1, 1).await;
        queue.push(2, 0).await;
        let quiet = |keys: usize| {
            let queue = queue.clone();
            async move {
                while queue.busy_keys() != keys {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        // Key 2's item is done; key 1 waits on its first.
        tokio::time::timeout(DEADLINE, quiet(1))
            .await
            .expect("only key 1 busy");
        assert_eq!(handled.load(Ordering::SeqCst), 1);
        release_tx.send(()).unwrap();
        tokio::time::timeout(DEADLINE, quiet(0))
            .await
            .expect("nothing busy");
        assert_eq!(handled.load(Ordering::SeqCst), 3);
        assert_eq!(queue.active_keys(), 2, "the workers wait idle");
    }
}
