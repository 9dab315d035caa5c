//! The compute pool: FHE work runs on a rayon pool, off the async runtime.
//!
//! At most `concurrent_jobs` jobs run at once (each parallelizes over all
//! workers); up to `queue_capacity` more wait in FIFO order; beyond that a
//! submission fails at once (`RESOURCE_EXHAUSTED`). A job whose caller goes
//! away (client disconnect, deadline) is cancelled: it leaves the queue if it
//! had not started, and a running evaluation stops at its next check.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::error::ServerError;
use crate::metrics::Metrics;

/// Why a job did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("the compute queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    #[error("the compute pool is shutting down")]
    Closed,
    #[error("the computation failed unexpectedly")]
    Panicked,
}

/// Set when the submitting request is gone; jobs poll it.
#[derive(Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

struct CancelOnDrop(CancelFlag);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0 .0.store(true, Ordering::Relaxed);
    }
}

struct Waiting<'a>(&'a ComputePool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.queue_depth_add(-1);
    }
}

pub struct ComputePool {
    pool: Arc<rayon::ThreadPool>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl ComputePool {
    pub fn new(
        threads: usize,
        concurrent_jobs: usize,
        queue_capacity: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServerError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("blindfold-fhe-{i}"))
            .build()
            .map_err(|e| ServerError::Internal(format!("compute pool: {e}")))?;
        Ok(Self {
            pool: Arc::new(pool),
            slots: Arc::new(Semaphore::new(concurrent_jobs)),
            waiting: AtomicUsize::new(0),
            capacity: queue_capacity,
            metrics,
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `job` on the pool; returns its result and the time it waited.
    pub async fn run<T, F>(&self, job: F) -> Result<(T, Duration), PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&CancelFlag) -> T + Send + 'static,
    {
        let queued = Instant::now();
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(PoolError::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let waiting = self.waiting.fetch_add(1, Ordering::SeqCst);
                self.metrics.queue_depth_add(1);
                let _guard = Waiting(self);
                if waiting >= self.capacity {
                    return Err(PoolError::QueueFull(waiting));
                }
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| PoolError::Closed)?
            }
        };
        let waited = queued.elapsed();
        self.metrics.queue_waited(waited.as_secs_f64());
        let flag = CancelFlag::default();
        let cancel_on_drop = CancelOnDrop(flag.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let metrics = self.metrics.clone();
        metrics.running_add(1);
        let pool = self.pool.clone();
        pool.spawn(move || {
            // a panic must not take the server down (rayon would abort)
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&flag)));
            // the slot is held until the job really ends, even if its
            // caller went away
            drop(permit);
            metrics.running_add(-1);
            let _ = tx.send(out);
        });
        let out = rx.await.map_err(|_| PoolError::Closed)?;
        drop(cancel_on_drop);
        match out {
            Ok(out) => Ok((out, waited)),
            Err(_) => {
                tracing::error!("a compute job panicked");
                Err(PoolError::Panicked)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_job_is_an_error_not_an_abort() {
        let pool = ComputePool::new(1, 1, 1, Arc::new(Metrics::default())).unwrap();
        let r = pool.run(|_| -> u32 { panic!("boom") }).await;
        assert!(matches!(r, Err(PoolError::Panicked)));
        assert_eq!(pool.run(|_| 3).await.unwrap().0, 3, "the pool still works");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_refuses_and_cancelled_jobs_stop() {
        let pool = Arc::new(ComputePool::new(1, 1, 1, Arc::new(Metrics::default())).unwrap());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let stopped = Arc::new(AtomicBool::new(false));
        let s = stopped.clone();
        let p = pool.clone();
        // a long job that only ends when cancelled
        let long = tokio::spawn(async move {
            p.run(move |cancel| {
                let _ = started_tx.send(());
                while !cancel.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                s.store(true, Ordering::SeqCst);
            })
            .await
            .map(|_| ())
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        // one more may wait...
        let p = pool.clone();
        let waiter = tokio::spawn(async move { p.run(|_| 7).await.map(|(v, _)| v) });
        while pool.waiting.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // ...the next is refused
        assert!(matches!(
            pool.run(|_| 0).await,
            Err(PoolError::QueueFull(1))
        ));
        // the caller of the long job goes away: the job sees the flag
        long.abort();
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
        assert!(stopped.load(Ordering::SeqCst));
    }
}
