//! Fault injection: wrappers over any [`ItemStore`] and [`BlobStore`] that fail the N-th backend
//! call (counted over both stores, so N walks the steps of an operation in order) with an error,
//! a throttle, or a timeout (the call HAPPENS, then the caller sees an error — the ambiguous
//! case a real network gives).
//!
//! `faulty_storage(&test_store, plan)` builds a [`Storage`] over the test store's backends with
//! the faults in between; `plan.arm(n, fault)` fails the n-th call from then on (1-based).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use dspy_storage_core::backend::{
    BlobMeta, BlobStore, BlobTier, Item, ItemStore, MultipartUpload, Page, PageKey, Query, WriteOp,
};
use dspy_storage_core::config::StorageConfig;
use dspy_storage_core::storage::Storage;
use dspy_storage_core::{Error, Result};

/// How an armed call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call is not made; the caller sees `Unavailable` (a refused connection, a 500).
    Error,
    /// The call is not made; the caller sees `Throttled` (after the SDK's own retries).
    Throttle,
    /// The call is made, then the caller sees `Unavailable` (the answer was lost: a timeout).
    Timeout,
}

impl Fault {
    pub const ALL: [Fault; 3] = [Fault::Error, Fault::Throttle, Fault::Timeout];
}

#[derive(Debug, Default)]
struct PlanState {
    /// Calls since the last `arm`/`reset`, by name (`items.get`, `blobs.put`, …).
    calls: Vec<String>,
    armed: Option<(usize, Fault)>,
    /// How many consecutive calls the fault hits (a throttle that outlasts the retries: > 1).
    repeat: usize,
    /// Fail every call of this name (see [`FaultPlan::arm_every`]).
    every: Option<(String, Fault)>,
    /// The calls a fault was injected at since the last `arm`/`reset`: (1-based index, name).
    fired: Vec<(usize, String)>,
    /// Restores take time, as in S3 Glacier (see [`FaultPlan::slow_restores`]).
    slow_restores: bool,
    /// Blobs whose restore was asked for and is under way.
    restoring: std::collections::BTreeSet<String>,
    /// Blobs whose restore is done (their copy is made when the store next looks at them).
    restored: std::collections::BTreeSet<String>,
}

/// Which call fails, shared by the two wrappers.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan(Arc<Mutex<PlanState>>);

impl FaultPlan {
    /// Fails the `nth` call (1-based) from now on with `fault`.
    pub fn arm(&self, nth: usize, fault: Fault) {
        self.arm_repeated(nth, fault, 1)
    }

    /// Fails `repeat` consecutive calls starting with the `nth`.
    pub fn arm_repeated(&self, nth: usize, fault: Fault, repeat: usize) {
        let mut s = self.0.lock().unwrap();
        s.calls.clear();
        s.fired.clear();
        s.every = None;
        s.armed = Some((nth, fault));
        s.repeat = repeat;
    }

    /// Fails every call named `name` (`items.transact`, `blobs.put`, …) from now on: a fault
    /// that outlasts every retry of one kind of call while the others succeed.
    pub fn arm_every(&self, name: &str, fault: Fault) {
        let mut s = self.0.lock().unwrap();
        s.calls.clear();
        s.fired.clear();
        s.armed = None;
        s.every = Some((name.to_owned(), fault));
    }

    /// No faults; the call log starts again.
    pub fn reset(&self) {
        let mut s = self.0.lock().unwrap();
        s.calls.clear();
        s.fired.clear();
        s.armed = None;
        s.every = None;
    }

    /// From now on a restore from the archive takes time, as in S3 Glacier (the emulators and
    /// the embedded store restore at once): `request_restore` only records the request, and
    /// the blob's tier is `Restoring` until [`FaultPlan::finish_restores`].
    pub fn slow_restores(&self) {
        self.0.lock().unwrap().slow_restores = true;
    }

    /// Every restore under way is done: the blob store makes the copy (the inner store's
    /// restore) when its tier is next read.
    pub fn finish_restores(&self) {
        let mut s = self.0.lock().unwrap();
        let done = std::mem::take(&mut s.restoring);
        s.restored.extend(done);
    }

    /// The calls made since the last `arm`/`reset`.
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().calls.clone()
    }

    /// The calls a fault was injected at since the last `arm`/`reset`, in order: (1-based call
    /// index, call name). Empty when the armed call was never reached.
    pub fn fired(&self) -> Vec<(usize, String)> {
        self.0.lock().unwrap().fired.clone()
    }

    fn on_call(&self, name: &str) -> Option<Fault> {
        let mut s = self.0.lock().unwrap();
        s.calls.push(name.to_owned());
        let n = s.calls.len();
        let fault = match (&s.armed, &s.every) {
            (Some((nth, fault)), _) if n >= *nth && n < nth + s.repeat => Some(*fault),
            (_, Some((every, fault))) if every == name => Some(*fault),
            _ => None,
        };
        if fault.is_some() {
            s.fired.push((n, name.to_owned()));
        }
        fault
    }

    async fn run<T, Fut>(&self, name: &str, call: Fut) -> Result<T>
    where
        Fut: std::future::Future<Output = Result<T>>,
    {
        match self.on_call(name) {
            None => call.await,
            Some(Fault::Error) => Err(Error::Unavailable(format!("injected error on {name}"))),
            Some(Fault::Throttle) => Err(Error::Throttled(format!("injected throttle on {name}"))),
            Some(Fault::Timeout) => {
                let _ = call.await;
                Err(Error::Unavailable(format!(
                    "injected timeout on {name} (the call happened)"
                )))
            }
        }
    }
}

pub struct FaultyItemStore {
    pub inner: Arc<dyn ItemStore>,
    pub plan: FaultPlan,
}

#[async_trait]
impl ItemStore for FaultyItemStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        self.plan.run("items.get", self.inner.get(pk, sk)).await
    }
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>> {
        self.plan
            .run("items.get_many", self.inner.get_many(keys))
            .await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<()> {
        self.plan
            .run("items.transact", self.inner.transact(ops))
            .await
    }
    async fn query(&self, query: &Query) -> Result<Page<Item>> {
        self.plan.run("items.query", self.inner.query(query)).await
    }
    async fn batch_put(&self, items: Vec<Item>) -> Result<()> {
        self.plan
            .run("items.batch_put", self.inner.batch_put(items))
            .await
    }
    async fn batch_put_once(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        self.plan
            .run("items.batch_put", self.inner.batch_put_once(items))
            .await
    }
    async fn scan(&self, start: Option<PageKey>, limit: usize) -> Result<Page<Item>> {
        self.plan
            .run("items.scan", self.inner.scan(start, limit))
            .await
    }
}

pub struct FaultyBlobStore {
    pub inner: Arc<dyn BlobStore>,
    pub plan: FaultPlan,
}

#[async_trait]
impl BlobStore for FaultyBlobStore {
    async fn put(&self, key: &str, bytes: Bytes, sha256_hex: &str) -> Result<()> {
        self.plan
            .run("blobs.put", self.inner.put(key, bytes, sha256_hex))
            .await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.plan.run("blobs.get", self.inner.get(key)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.plan.run("blobs.delete", self.inner.delete(key)).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.plan.run("blobs.copy", self.inner.copy(from, to)).await
    }
    async fn list(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<BlobMeta>, Option<String>)> {
        self.plan
            .run("blobs.list", self.inner.list(prefix, start, limit))
            .await
    }
    async fn archive(&self, key: &str) -> Result<()> {
        self.plan
            .run("blobs.archive", self.inner.archive(key))
            .await
    }
    async fn tier(&self, key: &str) -> Result<BlobTier> {
        let call = async {
            let (restoring, restored) = {
                let s = self.plan.0.lock().unwrap();
                (s.restoring.contains(key), s.restored.contains(key))
            };
            if restored {
                // The slow restore finished: the inner store makes its copy now.
                self.inner.request_restore(key).await?;
                self.plan.0.lock().unwrap().restored.remove(key);
            }
            let tier = self.inner.tier(key).await?;
            Ok(match tier {
                BlobTier::Archived if restoring => BlobTier::Restoring,
                other => other,
            })
        };
        self.plan.run("blobs.tier", call).await
    }
    async fn request_restore(&self, key: &str) -> Result<()> {
        let call = async {
            let slow = self.plan.0.lock().unwrap().slow_restores;
            if slow {
                let mut s = self.plan.0.lock().unwrap();
                if !s.restored.contains(key) {
                    s.restoring.insert(key.to_owned());
                }
                Ok(())
            } else {
                self.inner.request_restore(key).await
            }
        };
        self.plan.run("blobs.request_restore", call).await
    }
    async fn unarchive(&self, key: &str) -> Result<()> {
        self.plan
            .run("blobs.unarchive", self.inner.unarchive(key))
            .await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.plan.run("blobs.exists", self.inner.exists(key)).await
    }
    async fn start_multipart(&self, key: &str) -> Result<Option<Box<dyn MultipartUpload>>> {
        let inner = self
            .plan
            .run("blobs.start_multipart", self.inner.start_multipart(key))
            .await?;
        Ok(inner.map(|inner| {
            Box::new(FaultyMultipart {
                inner,
                plan: self.plan.clone(),
            }) as Box<dyn MultipartUpload>
        }))
    }
}

/// A multipart upload whose calls are steps of the plan like any other backend call.
pub struct FaultyMultipart {
    inner: Box<dyn MultipartUpload>,
    plan: FaultPlan,
}

#[async_trait]
impl MultipartUpload for FaultyMultipart {
    async fn write_part(&mut self, bytes: Bytes) -> Result<()> {
        let plan = self.plan.clone();
        plan.run("multipart.write_part", self.inner.write_part(bytes))
            .await
    }
    async fn complete(self: Box<Self>) -> Result<()> {
        let FaultyMultipart { inner, plan } = *self;
        plan.run("multipart.complete", inner.complete()).await
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        let FaultyMultipart { inner, plan } = *self;
        plan.run("multipart.abort", inner.abort()).await
    }
}

/// A storage over `store`'s backends with `plan`'s faults injected below the core (and below
/// its throttle retries). Caches are off so every read reaches the backends.
pub fn faulty_storage(store: &crate::TestStore, plan: &FaultPlan) -> Storage {
    let config = StorageConfig {
        program_cache_bytes: 0,
        resolve_cache_ttl: std::time::Duration::ZERO,
        max_write_attempts: 5,
        ..store.storage.config().clone()
    };
    Storage::new(
        Arc::new(FaultyItemStore {
            inner: store.storage.items().clone(),
            plan: plan.clone(),
        }),
        Arc::new(FaultyBlobStore {
            inner: store.storage.blobs().clone(),
            plan: plan.clone(),
        }),
        config,
        "faulty",
    )
}
