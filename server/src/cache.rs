//! Decompressed evaluation keys under one memory budget.
//!
//! Every decompressed key in the process holds a reservation of its bytes
//! against `compute.key_cache_mib`, whether the cache still lists it or only
//! requests hold it (an evicted key that a waiting request still uses keeps
//! its reservation until that request ends). A load or an upload reserves
//! *before* it decompresses: when the budget is short it evicts cached keys
//! that no request is using (least recently used first), and when every
//! reserved byte is in use it waits for a request to end, up to
//! `compute.key_wait_secs`, then refuses. So the keys' memory never exceeds
//! the budget; what decompressing one key needs on top for a moment is
//! bounded separately (loads run on the compute pool, `concurrent_jobs` at a
//! time; see [`blindfold_runtime::params::ParamSet`]'s
//! `key_decompression_transient_bytes`).
//!
//! The index is `moka` (weighed in bytes; eviction is ours, least recently
//! used first). Keys are cached by key id
//! (the hash of their bytes); who may use a key is decided by the store, not
//! here. Concurrent requests for the same cold key share one load
//! ([`KeyCache::get_or_load`]).

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use moka::future::Cache;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Reservations are counted in KiB (a semaphore acquires at most `u32`
/// permits at once).
const UNIT: usize = 1024;

fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

/// Why memory for a key could not be reserved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "a key of this parameter set needs {need_mib} MiB decompressed; the server's key memory \
         budget (compute.key_cache_mib) is {budget_mib} MiB"
    )]
    LargerThanBudget { need_mib: usize, budget_mib: usize },
    #[error(
        "the key memory budget ({budget_mib} MiB) is held by keys in use; waited {waited_s} s, \
         retry later"
    )]
    Busy { budget_mib: usize, waited_s: u64 },
}

struct Accounting {
    budget: usize,
    memory: Arc<Semaphore>,
    /// Woken whenever a request lets go of a key.
    released: Notify,
    metrics: Arc<Metrics>,
    clock: AtomicU64,
}

impl Accounting {
    fn reserved_bytes(&self) -> usize {
        (units(self.budget) - self.memory.available_permits()) * UNIT
    }

    fn publish(&self) {
        self.metrics.set_key_memory(self.reserved_bytes());
    }
}

/// Bytes reserved against the budget, not yet holding a key.
pub struct Reservation {
    /// Returned to the budget when dropped.
    _permit: OwnedSemaphorePermit,
    bytes: usize,
    accounting: Arc<Accounting>,
}

impl Reservation {
    /// The key this reservation was made for; it keeps the bytes reserved
    /// for as long as it lives.
    pub fn hold<T>(self, value: T) -> Arc<Resident<T>> {
        let tick = self.accounting.clock.fetch_add(1, Ordering::Relaxed);
        Arc::new(Resident {
            bytes: self.bytes,
            state: Mutex::new(Use {
                key: Some(Arc::new(value)),
                reservation: Some(self),
                leases: 0,
                listed: true,
            }),
            last_used: AtomicU64::new(tick),
        })
    }
}

fn release(reservation: Reservation) {
    let accounting = reservation.accounting.clone();
    drop(reservation);
    accounting.publish();
    accounting.released.notify_waiters();
}

/// Who keeps a key's memory: the cache's listing and the requests' leases.
/// The key and its reservation go together when neither does; this is
/// tracked here rather than by the `Resident`'s lifetime because the index
/// lets go of removed entries only when its pending work runs (what it
/// still holds then is an empty shell).
struct Use<T> {
    key: Option<Arc<T>>,
    reservation: Option<Reservation>,
    leases: usize,
    listed: bool,
}

/// A decompressed key and its reservation.
pub struct Resident<T> {
    bytes: usize,
    state: Mutex<Use<T>>,
    last_used: AtomicU64,
}

impl<T> Resident<T> {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn state(&self) -> MutexGuard<'_, Use<T>> {
        // nothing in a critical section panics; a poisoned lock's data is whole
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new lease, unless the key has already let go of its memory
    /// (unlisted with no lease: whoever holds this `Arc` raced an eviction).
    fn acquire(&self) -> Option<Arc<T>> {
        let mut s = self.state();
        let key = s.key.clone()?;
        s.leases += 1;
        Some(key)
    }

    /// Frees the key, then its reservation, once nothing keeps them.
    fn let_go_if_unused(&self, mut s: MutexGuard<'_, Use<T>>) {
        if s.leases > 0 || s.listed {
            return;
        }
        let (key, reservation) = (s.key.take(), s.reservation.take());
        drop(s);
        drop(key); // the last reference: leases drop theirs first
        if let Some(r) = reservation {
            release(r);
        }
    }

    fn end_lease(&self) {
        let mut s = self.state();
        s.leases = s.leases.saturating_sub(1);
        self.let_go_if_unused(s);
    }

    /// The cache no longer lists this key.
    fn unlist(&self) {
        let mut s = self.state();
        s.listed = false;
        self.let_go_if_unused(s);
    }

    fn idle(&self) -> bool {
        let s = self.state();
        s.leases == 0 && s.key.is_some()
    }
}

impl<T> Drop for Resident<T> {
    fn drop(&mut self) {
        let (key, reservation) = {
            let mut s = self.state();
            (s.key.take(), s.reservation.take())
        };
        drop(key);
        if let Some(r) = reservation {
            release(r);
        }
    }
}

/// A request's use of a key: while it lives the key is not evicted for
/// room, and its end wakes whoever waits for memory.
pub struct Lease<T> {
    key: Option<Arc<T>>,
    resident: Option<Arc<Resident<T>>>,
    accounting: Arc<Accounting>,
}

impl<T> Deref for Lease<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.key {
            Some(k) => k,
            None => unreachable!("a lease holds its key until dropped"),
        }
    }
}

impl<T> Drop for Lease<T> {
    fn drop(&mut self) {
        drop(self.key.take());
        if let Some(r) = self.resident.take() {
            r.end_lease();
        }
        self.accounting.released.notify_waiters();
    }
}

pub struct KeyCache<T> {
    cache: Cache<String, Arc<Resident<T>>>,
    accounting: Arc<Accounting>,
    wait: Duration,
}

impl<T: Send + Sync + 'static> KeyCache<T> {
    /// A cache of at most `budget` bytes of keys; a reservation waits at
    /// most `wait` for memory held by requests.
    pub fn new(budget: usize, wait: Duration, metrics: Arc<Metrics>) -> Self {
        // No capacity of its own: the reservations bound the keys' memory,
        // and only [`KeyCache::evict_idle`] evicts (a second, lagging
        // eviction policy could drop a key the budget did not need gone).
        let cache = Cache::builder()
            .weigher(|_: &String, e: &Arc<Resident<T>>| {
                u32::try_from(e.bytes()).unwrap_or(u32::MAX)
            })
            .build();
        let permits = units(budget).min(Semaphore::MAX_PERMITS);
        Self {
            cache,
            accounting: Arc::new(Accounting {
                budget: permits * UNIT,
                memory: Arc::new(Semaphore::new(permits)),
                released: Notify::new(),
                metrics,
                clock: AtomicU64::new(0),
            }),
            wait,
        }
    }

    fn lease(&self, resident: Arc<Resident<T>>) -> Option<Lease<T>> {
        let key = resident.acquire()?;
        let tick = self.accounting.clock.fetch_add(1, Ordering::Relaxed);
        resident.last_used.store(tick, Ordering::Relaxed);
        Some(Lease {
            key: Some(key),
            resident: Some(resident),
            accounting: self.accounting.clone(),
        })
    }

    pub async fn get(&self, key_id: &str) -> Option<Lease<T>> {
        let r = self.cache.get(key_id).await?;
        self.lease(r)
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.cache.contains_key(key_id)
    }

    /// Reserves `bytes` for a key about to be decompressed: evicts idle
    /// cached keys when short, waits for requests to end when every
    /// reserved byte is in use, and refuses after the wait.
    pub async fn reserve(&self, bytes: usize) -> Result<Reservation, AdmissionError> {
        let acc = &self.accounting;
        let need = units(bytes);
        let mib = |b: usize| b.div_ceil(1 << 20);
        let too_large = || AdmissionError::LargerThanBudget {
            need_mib: mib(bytes),
            budget_mib: mib(acc.budget),
        };
        let n = u32::try_from(need).map_err(|_| too_large())?;
        if need > units(acc.budget) {
            return Err(too_large());
        }
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            // registered before looking, so a release in between is not lost
            let released = acc.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Ok(permit) = acc.memory.clone().try_acquire_many_owned(n) {
                return Ok(self.reserved(permit, bytes));
            }
            if self.evict_idle(need).await {
                continue;
            }
            tokio::select! {
                permit = acc.memory.clone().acquire_many_owned(n) => {
                    // the semaphore is never closed
                    if let Ok(permit) = permit {
                        return Ok(self.reserved(permit, bytes));
                    }
                }
                _ = &mut released => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(AdmissionError::Busy {
                        budget_mib: mib(acc.budget),
                        waited_s: self.wait.as_secs(),
                    });
                }
            }
        }
    }

    fn reserved(&self, permit: OwnedSemaphorePermit, bytes: usize) -> Reservation {
        let r = Reservation {
            _permit: permit,
            bytes,
            accounting: self.accounting.clone(),
        };
        self.accounting.publish();
        r
    }

    /// Evicts cached keys no request holds, least recently used first,
    /// until `need` units are free; whether it evicted any.
    async fn evict_idle(&self, need: usize) -> bool {
        let mut idle: Vec<(u64, Arc<String>, usize)> = self
            .cache
            .iter()
            .filter(|(_, r)| r.idle())
            .map(|(k, r)| (r.last_used.load(Ordering::Relaxed), k, r.bytes()))
            .collect();
        idle.sort();
        let memory = &self.accounting.memory;
        let before = memory.available_permits();
        let mut free = before;
        for (_, key_id, bytes) in idle {
            if free >= need {
                break;
            }
            if let Some(r) = self.cache.remove(key_id.as_str()).await {
                r.unlist();
            }
            free += units(bytes);
        }
        self.settle().await;
        memory.available_permits() > before
    }

    /// The cached key, or the one `load` decompresses into a reservation of
    /// `bytes`, cached and returned; concurrent callers for the same cold
    /// key wait for one load.
    pub async fn get_or_load<E, F, Fut>(
        &self,
        key_id: &str,
        bytes: usize,
        load: F,
    ) -> Result<Lease<T>, Arc<E>>
    where
        E: From<AdmissionError> + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut load = Some(load);
        // a key evicted between its load and its lease is loaded again; a
        // budget so contended that this repeats is reported as busy
        for _ in 0..4 {
            let resident = self
                .cache
                .try_get_with(key_id.to_string(), async {
                    let reservation = self.reserve(bytes).await?;
                    let load = load.take().ok_or(AdmissionError::Busy {
                        budget_mib: self.accounting.budget.div_ceil(1 << 20),
                        waited_s: self.wait.as_secs(),
                    })?;
                    let key = load().await?;
                    Ok(reservation.hold(key))
                })
                .await?;
            self.settle().await;
            if let Some(lease) = self.lease(resident) {
                return Ok(lease);
            }
        }
        Err(Arc::new(E::from(AdmissionError::Busy {
            budget_mib: self.accounting.budget.div_ceil(1 << 20),
            waited_s: self.wait.as_secs(),
        })))
    }

    /// Caches a key decompressed into a reservation (a key already cached
    /// under this id, the same bytes, stays and the new copy is let go).
    pub async fn insert(&self, key_id: &str, resident: Arc<Resident<T>>) {
        let entry = self
            .cache
            .entry(key_id.to_string())
            .or_insert(resident.clone())
            .await;
        if !entry.is_fresh() {
            resident.unlist();
        }
        self.settle().await;
    }

    pub async fn remove(&self, key_id: &str) {
        if let Some(r) = self.cache.remove(key_id).await {
            r.unlist();
        }
        self.settle().await;
    }

    /// Bytes of keys the cache lists.
    pub async fn used_bytes(&self) -> usize {
        self.cache.iter().map(|(_, r)| r.bytes()).sum()
    }

    /// Bytes reserved by every live key, cached or only in use (rounded up
    /// to KiB per key).
    pub fn reserved_bytes(&self) -> usize {
        self.accounting.reserved_bytes()
    }

    pub fn budget_bytes(&self) -> usize {
        self.accounting.budget
    }

    /// Lets the index drop removed entries' shells and reports the
    /// cache's size.
    async fn settle(&self) {
        self.cache.run_pending_tasks().await;
        let (bytes, entries) = self
            .cache
            .iter()
            .fold((0, 0), |(b, n), (_, r)| (b + r.bytes(), n + 1));
        self.accounting.metrics.set_key_cache(bytes, entries);
        self.accounting.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    fn cache(budget_kib: usize, wait_ms: u64) -> Arc<KeyCache<u32>> {
        Arc::new(KeyCache::new(
            budget_kib * KIB,
            Duration::from_millis(wait_ms),
            Arc::new(Metrics::default()),
        ))
    }

    async fn put(cache: &KeyCache<u32>, id: &str, value: u32, kib: usize) {
        let r = cache.reserve(kib * KIB).await.unwrap();
        cache.insert(id, r.hold(value)).await;
    }

    #[tokio::test]
    async fn evicts_idle_keys_least_recently_used_first() {
        let cache = cache(100, 50);
        put(&cache, "a", 1, 40).await;
        put(&cache, "b", 2, 40).await;
        assert_eq!(cache.get("a").await.as_deref(), Some(&1)); // b is now older
        put(&cache, "c", 3, 40).await;
        assert!(cache.contains("a") && cache.contains("c") && !cache.contains("b"));
        assert_eq!(cache.used_bytes().await, 80 * KIB);
        assert_eq!(cache.reserved_bytes(), 80 * KIB);
        cache.remove("a").await;
        assert_eq!(cache.reserved_bytes(), 40 * KIB);
        assert!(matches!(
            cache.reserve(101 * KIB).await,
            Err(AdmissionError::LargerThanBudget { .. })
        ));
    }

    #[tokio::test]
    async fn keys_in_use_stay_counted_and_admission_waits_then_refuses() {
        let cache = cache(100, 200);
        put(&cache, "a", 1, 60).await;
        let a = cache.get("a").await.unwrap(); // a request uses a
        cache.remove("a").await; // deleted, or evicted, while in use
        assert!(!cache.contains("a"));
        assert_eq!(cache.reserved_bytes(), 60 * KIB, "still in memory");
        // 60 of 100 held by a request: 50 more must wait, then be refused
        assert!(matches!(
            cache.reserve(50 * KIB).await,
            Err(AdmissionError::Busy { .. })
        ));
        // the request ends while another waits: the waiter gets the memory
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.reserve(50 * KIB).await.map(|r| r.bytes) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(a);
        assert_eq!(waiter.await.unwrap().unwrap(), 50 * KIB);
        assert_eq!(cache.reserved_bytes(), 0, "the reservation was dropped");
    }

    #[tokio::test]
    async fn a_released_key_is_evicted_for_a_waiter() {
        let cache = cache(100, 2_000);
        put(&cache, "a", 1, 60).await;
        let a = cache.get("a").await.unwrap();
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                let r = cache.reserve(60 * KIB).await?;
                cache.insert("b", r.hold(2)).await;
                Ok::<_, AdmissionError>(())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a is in use: nothing to evict");
        drop(a); // idle now, but still cached: the waiter must evict it
        waiter.await.unwrap().unwrap();
        assert!(cache.contains("b") && !cache.contains("a"));
        assert_eq!(cache.reserved_bytes(), 60 * KIB);
    }

    /// Counts live copies, to see when a key's memory is really freed.
    struct Tracked(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_key_is_freed_with_its_reservation_not_when_the_index_gets_to_it() {
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cache: KeyCache<Tracked> =
            KeyCache::new(100 * KIB, Duration::from_millis(50), Arc::default());
        for round in 0..50 {
            for id in ["a", "b"] {
                let r = cache.reserve(50 * KIB).await.unwrap();
                live.fetch_add(1, Ordering::SeqCst);
                cache.insert(id, r.hold(Tracked(live.clone()))).await;
            }
            let held = cache.get("a").await.unwrap();
            cache.remove("a").await;
            cache.remove("b").await;
            // b idle: gone at once, reservation and memory; a in use: both stay
            assert_eq!(live.load(Ordering::SeqCst), 1, "round {round}");
            assert_eq!(cache.reserved_bytes(), 50 * KIB, "round {round}");
            drop(held);
            assert_eq!(live.load(Ordering::SeqCst), 0, "round {round}");
            assert_eq!(cache.reserved_bytes(), 0, "round {round}");
            // evicted for room: the evicted key is freed before the new one loads
            for id in ["c", "d", "e"] {
                let r = cache.reserve(50 * KIB).await.unwrap();
                assert!(live.load(Ordering::SeqCst) <= 1, "round {round}");
                live.fetch_add(1, Ordering::SeqCst);
                cache.insert(id, r.hold(Tracked(live.clone()))).await;
            }
            assert_eq!(cache.used_bytes().await, 100 * KIB);
            for id in ["c", "d", "e"] {
                cache.remove(id).await;
            }
            assert_eq!(live.load(Ordering::SeqCst), 0, "round {round}");
        }
    }

    #[tokio::test]
    async fn concurrent_loads_of_one_key_run_once() {
        let cache = cache(100, 50);
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load("k", 10 * KIB, || async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok::<_, AdmissionError>(7)
                        })
                        .await
                        .map(|lease| *lease)
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 7);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.reserved_bytes(), 10 * KIB);
    }
}
