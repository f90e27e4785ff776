//! The retry decorator: the ONE place where backend calls are retried (policy and budget in
//! [`crate::retry`]). A [`crate::Error::Throttled`] means the store refused the request without
//! doing it, so every call is repeated on it (even a conditional transaction). Reads and
//! idempotent writes (batch puts, blob puts of the same bytes, deletes, copies, tier changes) are
//! also repeated on `Unavailable`. A transaction's or a restore request's `Unavailable` passes
//! through: it may hide a write that happened (a timeout), and the operations that can tell
//! handle it themselves (see `Storage::store`).
//!
//! [`crate::storage::Storage::new`] wraps both backends in these, so every operation of the core,
//! present and future, gets the retries.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlobMeta, BlobStore, BlobTier, Item, ItemStore, MultipartUpload, Page, PageKey, Query, WriteOp,
};
use crate::error::Result;
use crate::retry::{refused, retrying, transient};

/// An [`ItemStore`] whose throttled calls are retried.
pub struct RetryingItems(pub Arc<dyn ItemStore>);

#[async_trait]
impl ItemStore for RetryingItems {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        retrying(transient, || self.0.get(pk, sk)).await
    }
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>> {
        retrying(transient, || self.0.get_many(keys)).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<()> {
        retrying(refused, || self.0.transact(ops.clone())).await
    }
    async fn query(&self, query: &Query) -> Result<Page<Item>> {
        retrying(transient, || self.0.query(query)).await
    }
    async fn batch_put(&self, items: Vec<Item>) -> Result<()> {
        retrying(transient, || self.0.batch_put(items.clone())).await
    }
    async fn batch_put_once(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        retrying(transient, || self.0.batch_put_once(items.clone())).await
    }
    async fn scan(&self, start: Option<PageKey>, limit: usize) -> Result<Page<Item>> {
        retrying(transient, || self.0.scan(start.clone(), limit)).await
    }
}

/// A [`BlobStore`] whose throttled calls are retried.
pub struct RetryingBlobs(pub Arc<dyn BlobStore>);

#[async_trait]
impl BlobStore for RetryingBlobs {
    async fn put(&self, key: &str, bytes: Bytes, sha256_hex: &str) -> Result<()> {
        retrying(transient, || self.0.put(key, bytes.clone(), sha256_hex)).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        retrying(transient, || self.0.get(key)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        retrying(transient, || self.0.delete(key)).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        retrying(transient, || self.0.copy(from, to)).await
    }
    async fn list(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<BlobMeta>, Option<String>)> {
        retrying(transient, || self.0.list(prefix, start.clone(), limit)).await
    }
    async fn archive(&self, key: &str) -> Result<()> {
        retrying(transient, || self.0.archive(key)).await
    }
    async fn tier(&self, key: &str) -> Result<BlobTier> {
        retrying(transient, || self.0.tier(key)).await
    }
    async fn request_restore(&self, key: &str) -> Result<()> {
        retrying(refused, || self.0.request_restore(key)).await
    }
    async fn unarchive(&self, key: &str) -> Result<()> {
        retrying(transient, || self.0.unarchive(key)).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        retrying(transient, || self.0.exists(key)).await
    }
    async fn start_multipart(&self, key: &str) -> Result<Option<Box<dyn MultipartUpload>>> {
        retrying(refused, || self.0.start_multipart(key)).await
    }
}
