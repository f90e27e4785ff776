//! In-process caches of a warm function or server.
//!
//! * [`ProgramCache`]: program JSON by id, bounded by bytes (least recently used out). Programs
//!   are immutable, so a hit is never stale; the record (status, metadata) is still read on every
//!   load, and the cached text is used only when its SHA-256 equals the record's.
//! * [`ResolveCache`]: `latest` / alias → program id, for a TTL. A write through the same process
//!   invalidates the signature's entries at once; a write through ANOTHER process (another Lambda
//!   instance) is seen after at most the TTL. TTL 0 turns it off.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;

use crate::domain::ProgramId;

struct Entry {
    json: Box<RawValue>,
    sha256: String,
    tick: u64,
}

#[derive(Default)]
struct Lru {
    map: HashMap<ProgramId, Entry>,
    order: BTreeMap<u64, ProgramId>,
    bytes: usize,
    tick: u64,
}

pub struct ProgramCache {
    budget: usize,
    inner: Mutex<Lru>,
}

impl ProgramCache {
    pub fn new(budget_bytes: usize) -> Self {
        ProgramCache {
            budget: budget_bytes,
            inner: Mutex::new(Lru::default()),
        }
    }

    pub fn get(&self, id: &ProgramId, sha256: &str) -> Option<Box<RawValue>> {
        if self.budget == 0 {
            return None;
        }
        let mut lru = self.inner.lock().ok()?;
        lru.tick += 1;
        let tick = lru.tick;
        let entry = lru.map.get_mut(id)?;
        if entry.sha256 != sha256 {
            return None;
        }
        let old = std::mem::replace(&mut entry.tick, tick);
        let json = entry.json.clone();
        lru.order.remove(&old);
        lru.order.insert(tick, *id);
        Some(json)
    }

    pub fn insert(&self, id: ProgramId, sha256: &str, json: &RawValue) {
        let size = json.get().len();
        if self.budget == 0 || size > self.budget / 2 {
            return;
        }
        let Ok(mut lru) = self.inner.lock() else {
            return;
        };
        lru.tick += 1;
        let tick = lru.tick;
        if let Some(old) = lru.map.remove(&id) {
            lru.order.remove(&old.tick);
            lru.bytes -= old.json.get().len();
        }
        while lru.bytes + size > self.budget {
            let Some((_, victim)) = lru.order.pop_first() else {
                break;
            };
            if let Some(e) = lru.map.remove(&victim) {
                lru.bytes -= e.json.get().len();
            }
        }
        lru.bytes += size;
        lru.order.insert(tick, id);
        lru.map.insert(
            id,
            Entry {
                json: json.to_owned(),
                sha256: sha256.to_owned(),
                tick,
            },
        );
    }

    pub fn remove(&self, id: &ProgramId) {
        if let Ok(mut lru) = self.inner.lock() {
            if let Some(e) = lru.map.remove(id) {
                lru.order.remove(&e.tick);
                lru.bytes -= e.json.get().len();
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|l| l.bytes).unwrap_or(0)
    }
}

/// `(signature partition key, selector)` → program id, for a TTL.
pub struct ResolveCache {
    ttl: Duration,
    inner: Mutex<HashMap<(String, String), (ProgramId, Instant)>>,
    /// Bumped by every invalidation: a resolution read before a write must not be cached after it.
    generation: std::sync::atomic::AtomicU64,
}

const MAX_RESOLVE_ENTRIES: usize = 10_000;

impl ResolveCache {
    pub fn new(ttl: Duration) -> Self {
        ResolveCache {
            ttl,
            inner: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn get(&self, sig_pk: &str, selector: &str) -> Option<ProgramId> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.inner.lock().ok()?;
        let (id, at) = map.get(&(sig_pk.to_owned(), selector.to_owned()))?;
        (at.elapsed() < self.ttl).then_some(*id)
    }

    /// Take before reading what will be cached; pass to [`ResolveCache::insert`].
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Caches a resolution read when the cache was at `generation`; if a write invalidated
    /// anything since, the read may predate it and is not cached.
    pub fn insert(&self, sig_pk: &str, selector: &str, id: ProgramId, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut map) = self.inner.lock() {
            if self.generation() != generation {
                return;
            }
            if map.len() >= MAX_RESOLVE_ENTRIES {
                map.clear();
            }
            map.insert(
                (sig_pk.to_owned(), selector.to_owned()),
                (id, Instant::now()),
            );
        }
    }

    /// Forgets every resolution of a signature (after a write to it).
    pub fn invalidate(&self, sig_pk: &str) {
        if let Ok(mut map) = self.inner.lock() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            map.retain(|(pk, _), _| pk != sig_pk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn lru_evicts_by_bytes_and_checks_sha() {
        let cache = ProgramCache::new(30);
        let (a, b, c) = (ProgramId::new(), ProgramId::new(), ProgramId::new());
        cache.insert(a, "sa", &raw("[1111111]"));
        cache.insert(b, "sb", &raw("[2222222]"));
        assert!(cache.get(&a, "sa").is_some()); // a is now most recent
        assert!(cache.get(&a, "other").is_none());
        cache.insert(c, "sc", &raw("[3333333]"));
        cache.insert(ProgramId::new(), "sd", &raw("[4444444]"));
        assert!(cache.bytes() <= 30);
        assert!(
            cache.get(&b, "sb").is_none(),
            "least recently used went first"
        );
        assert!(cache.get(&a, "sa").is_some());
        cache.remove(&a);
        assert!(cache.get(&a, "sa").is_none());
    }

    #[test]
    fn resolve_cache_expires_and_invalidates() {
        let cache = ResolveCache::new(Duration::from_secs(60));
        let id = ProgramId::new();
        cache.insert("SIG#p#s", "latest", id, cache.generation());
        assert_eq!(cache.get("SIG#p#s", "latest"), Some(id));
        let before_write = cache.generation();
        cache.invalidate("SIG#p#s");
        assert_eq!(cache.get("SIG#p#s", "latest"), None);
        // A read that started before the write does not put its stale answer back.
        cache.insert("SIG#p#s", "latest", id, before_write);
        assert_eq!(cache.get("SIG#p#s", "latest"), None);
        let off = ResolveCache::new(Duration::ZERO);
        off.insert("SIG#p#s", "latest", id, off.generation());
        assert_eq!(off.get("SIG#p#s", "latest"), None);
    }
}
