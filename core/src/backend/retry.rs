//! Retrying throttled backend calls. A [`Error::Throttled`] means the store refused the request
//! without doing it, so repeating it is always safe (even a conditional transaction); it is
//! repeated with exponential backoff and jitter up to [`MAX_THROTTLE_ATTEMPTS`] times. Other
//! errors pass through: an `Unavailable` may hide a write that happened (a timeout), and the
//! operations that can tell handle it themselves (see `Storage::store`).
//!
//! [`crate::service::Storage::new`] wraps both backends in these, so every operation of the core,
//! present and future, gets the retries.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BlobMeta, BlobStore, BlobTier, Item, ItemStore, MultipartUpload, Page, PageKey, Query, WriteOp,
};
use crate::error::{Error, Result};

/// Attempts of one call while it is throttled (the AWS SDK's own retries come on top).
pub const MAX_THROTTLE_ATTEMPTS: u32 = 6;

async fn retrying<T, F, Fut>(mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match call().await {
            Err(Error::Throttled(m)) if attempt < MAX_THROTTLE_ATTEMPTS => {
                tracing::debug!(attempt, error = %m, "throttled; retrying");
                crate::service::backoff(attempt).await
            }
            other => return other,
        }
    }
}

/// An [`ItemStore`] whose throttled calls are retried.
pub struct RetryingItems(pub Arc<dyn ItemStore>);

#[async_trait]
impl ItemStore for RetryingItems {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        retrying(|| self.0.get(pk, sk)).await
    }
    async fn transact(&self, ops: Vec<WriteOp>) -> Result<()> {
        retrying(|| self.0.transact(ops.clone())).await
    }
    async fn query(&self, query: &Query) -> Result<Page<Item>> {
        retrying(|| self.0.query(query)).await
    }
    async fn batch_put(&self, items: Vec<Item>) -> Result<()> {
        retrying(|| self.0.batch_put(items.clone())).await
    }
    async fn batch_put_once(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        retrying(|| self.0.batch_put_once(items.clone())).await
    }
    async fn scan(&self, start: Option<PageKey>, limit: usize) -> Result<Page<Item>> {
        retrying(|| self.0.scan(start.clone(), limit)).await
    }
}

/// A [`BlobStore`] whose throttled calls are retried.
pub struct RetryingBlobs(pub Arc<dyn BlobStore>);

#[async_trait]
impl BlobStore for RetryingBlobs {
    async fn put(&self, key: &str, bytes: Bytes, sha256_hex: &str) -> Result<()> {
        retrying(|| self.0.put(key, bytes.clone(), sha256_hex)).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        retrying(|| self.0.get(key)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        retrying(|| self.0.delete(key)).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        retrying(|| self.0.copy(from, to)).await
    }
    async fn list(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<BlobMeta>, Option<String>)> {
        retrying(|| self.0.list(prefix, start.clone(), limit)).await
    }
    async fn archive(&self, key: &str) -> Result<()> {
        retrying(|| self.0.archive(key)).await
    }
    async fn tier(&self, key: &str) -> Result<BlobTier> {
        retrying(|| self.0.tier(key)).await
    }
    async fn request_restore(&self, key: &str) -> Result<()> {
        retrying(|| self.0.request_restore(key)).await
    }
    async fn unarchive(&self, key: &str) -> Result<()> {
        retrying(|| self.0.unarchive(key)).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        retrying(|| self.0.exists(key)).await
    }
    async fn start_multipart(&self, key: &str) -> Result<Option<Box<dyn MultipartUpload>>> {
        retrying(|| self.0.start_multipart(key)).await
    }
}
