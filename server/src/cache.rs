//! In-memory cache of decompressed evaluation keys under a byte budget,
//! least recently used first out. Keys are cached by key id (the hash of
//! their bytes); who may use a key is decided by the store, not here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;

struct Entry<T> {
    key: Arc<T>,
    bytes: usize,
    last_used: u64,
}

struct Inner<T> {
    map: HashMap<String, Entry<T>>,
    used: usize,
    tick: u64,
}

pub struct KeyCache<T> {
    budget: usize,
    inner: Mutex<Inner<T>>,
    /// One async lock per key being loaded, so concurrent requests for the
    /// same cold key decompress it once.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Arc<Metrics>,
}

impl<T> KeyCache<T> {
    pub fn new(budget: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            budget,
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                used: 0,
                tick: 0,
            }),
            loading: Mutex::default(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // a panic while holding this lock cannot leave the map inconsistent
        // (every update is a single insert or remove), so keep going
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key_id: &str) -> Option<Arc<T>> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        inner.map.get_mut(key_id).map(|e| {
            e.last_used = tick;
            e.key.clone()
        })
    }

    pub fn contains(&self, key_id: &str) -> bool {
        self.lock().map.contains_key(key_id)
    }

    /// Caches `key`, evicting least recently used keys to stay within the
    /// budget. A key larger than the whole budget is not cached.
    pub fn insert(&self, key_id: &str, key: Arc<T>, bytes: usize) {
        let mut inner = self.lock();
        if bytes > self.budget {
            tracing::warn!(
                bytes,
                budget = self.budget,
                "evaluation key larger than the key cache budget; not cached"
            );
            return;
        }
        if let Some(old) = inner.map.remove(key_id) {
            inner.used -= old.bytes;
        }
        while inner.used + bytes > self.budget {
            let Some(victim) = inner
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = inner.map.remove(&victim) {
                inner.used -= e.bytes;
                tracing::debug!(bytes = e.bytes, "evicted an evaluation key from the cache");
            }
        }
        inner.tick += 1;
        let last_used = inner.tick;
        inner.map.insert(
            key_id.to_string(),
            Entry {
                key,
                bytes,
                last_used,
            },
        );
        inner.used += bytes;
        self.metrics.set_key_cache(inner.used, inner.map.len());
    }

    pub fn remove(&self, key_id: &str) {
        let mut inner = self.lock();
        if let Some(e) = inner.map.remove(key_id) {
            inner.used -= e.bytes;
        }
        self.metrics.set_key_cache(inner.used, inner.map.len());
    }

    pub fn used_bytes(&self) -> usize {
        self.lock().used
    }

    /// The lock serializing loads of `key_id`.
    pub fn load_lock(&self, key_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        // forget locks nobody holds any more
        loading.retain(|_, l| Arc::strong_count(l) > 1);
        loading.entry(key_id.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let cache = KeyCache::new(100, Arc::new(Metrics::default()));
        cache.insert("a", Arc::new(1), 40);
        cache.insert("b", Arc::new(2), 40);
        assert_eq!(cache.get("a").as_deref(), Some(&1)); // b is now older
        cache.insert("c", Arc::new(3), 40);
        assert!(cache.contains("a") && cache.contains("c") && !cache.contains("b"));
        assert_eq!(cache.used_bytes(), 80);
        cache.insert("huge", Arc::new(4), 101);
        assert!(!cache.contains("huge"));
        assert_eq!(cache.used_bytes(), 80);
        cache.insert("a", Arc::new(5), 60); // replacing frees the old bytes first
        assert_eq!(cache.used_bytes(), 100);
        cache.remove("a");
        assert_eq!(cache.used_bytes(), 40);
    }
}
