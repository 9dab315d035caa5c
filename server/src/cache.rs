//! In-memory cache of decompressed evaluation keys under a byte budget,
//! least recently used first out (`moka`, LRU policy, weighed in bytes).
//! Keys are cached by key id (the hash of their bytes); who may use a key is
//! decided by the store, not here. Concurrent requests for the same cold
//! key share one load ([`KeyCache::get_or_load`]).

use std::future::Future;
use std::sync::Arc;

use moka::future::Cache;
use moka::policy::EvictionPolicy;

use crate::metrics::Metrics;

struct Entry<T> {
    key: Arc<T>,
    bytes: usize,
}

// by hand: the derive would ask `T: Clone`, and only the `Arc` is cloned
impl<T> Clone for Entry<T> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            bytes: self.bytes,
        }
    }
}

pub struct KeyCache<T> {
    budget: usize,
    cache: Cache<String, Entry<T>>,
    metrics: Arc<Metrics>,
}

impl<T: Send + Sync + 'static> KeyCache<T> {
    pub fn new(budget: usize, metrics: Arc<Metrics>) -> Self {
        let cache = Cache::builder()
            .max_capacity(budget as u64)
            .weigher(|_: &String, e: &Entry<T>| u32::try_from(e.bytes).unwrap_or(u32::MAX))
            .eviction_policy(EvictionPolicy::lru())
            .build();
        Self {
            budget,
            cache,
            metrics,
        }
    }

    pub async fn get(&self, key_id: &str) -> Option<Arc<T>> {
        self.cache.get(key_id).await.map(|e| e.key)
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.cache.contains_key(key_id)
    }

    /// The cached key, or the result of `load` (`(key, bytes)`) cached and
    /// returned; concurrent callers for the same cold key wait for one load.
    pub async fn get_or_load<E, F>(&self, key_id: &str, load: F) -> Result<Arc<T>, Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<(Arc<T>, usize), E>>,
    {
        let budget = self.budget;
        let entry = self
            .cache
            .try_get_with(key_id.to_string(), async move {
                let (key, bytes) = load.await?;
                if bytes > budget {
                    tracing::warn!(
                        bytes,
                        budget,
                        "evaluation key larger than the key cache budget; not kept"
                    );
                }
                Ok(Entry { key, bytes })
            })
            .await?;
        self.settle().await;
        Ok(entry.key)
    }

    /// Caches `key`, evicting least recently used keys to stay within the
    /// budget. A key larger than the whole budget is not kept.
    pub async fn insert(&self, key_id: &str, key: Arc<T>, bytes: usize) {
        if bytes > self.budget {
            tracing::warn!(
                bytes,
                budget = self.budget,
                "evaluation key larger than the key cache budget; not cached"
            );
            return;
        }
        self.cache
            .insert(key_id.to_string(), Entry { key, bytes })
            .await;
        self.settle().await;
    }

    pub async fn remove(&self, key_id: &str) {
        self.cache.invalidate(key_id).await;
        self.settle().await;
    }

    pub async fn used_bytes(&self) -> usize {
        self.cache.run_pending_tasks().await;
        self.cache.weighted_size() as usize
    }

    /// Applies pending evictions and reports the cache's size.
    async fn settle(&self) {
        self.cache.run_pending_tasks().await;
        self.metrics.set_key_cache(
            self.cache.weighted_size() as usize,
            self.cache.entry_count() as usize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn evicts_least_recently_used_within_budget() {
        let cache = KeyCache::new(100, Arc::new(Metrics::default()));
        cache.insert("a", Arc::new(1), 40).await;
        cache.insert("b", Arc::new(2), 40).await;
        assert_eq!(cache.get("a").await.as_deref(), Some(&1)); // b is now older
        cache.insert("c", Arc::new(3), 40).await;
        assert!(cache.contains("a") && cache.contains("c") && !cache.contains("b"));
        assert_eq!(cache.used_bytes().await, 80);
        cache.insert("huge", Arc::new(4), 101).await;
        assert!(!cache.contains("huge"));
        assert_eq!(cache.used_bytes().await, 80);
        cache.insert("a", Arc::new(5), 60).await; // replacing frees the old bytes first
        assert_eq!(cache.used_bytes().await, 100);
        cache.remove("a").await;
        assert_eq!(cache.used_bytes().await, 40);
    }

    #[tokio::test]
    async fn concurrent_loads_of_one_key_run_once() {
        let cache = Arc::new(KeyCache::new(100, Arc::new(Metrics::default())));
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load("k", async {
                            loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            Ok::<_, String>((Arc::new(7), 10))
                        })
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(*t.await.unwrap().unwrap(), 7);
        }
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
