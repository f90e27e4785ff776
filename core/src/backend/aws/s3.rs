//! [`BlobStore`] over one S3 bucket.

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumMode, CompletedMultipartUpload, CompletedPart,
    CreateBucketConfiguration, Delete, GlacierJobParameters, MetadataDirective, ObjectIdentifier,
    RestoreRequest, StorageClass, Tier,
};
use aws_sdk_s3::Client;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{build_error, s3_error};
use crate::backend::{BlobMeta, BlobStore, BlobTier, MultipartUpload};
use crate::error::{Error, Result};

/// The S3 blob store: one bucket, blobs addressed by key.
#[derive(Clone, Debug)]
pub struct S3BlobStore {
    client: Client,
    bucket: String,
    /// Storage class of archived blobs: `GLACIER` (default) or `DEEP_ARCHIVE`.
    archive_class: StorageClass,
}

/// Days a restored copy stays readable before S3 removes it (the blob is moved back to the
/// standard class long before: on the next load or cleanup run after the restore completes).
const RESTORE_DAYS: i32 = 7;

impl S3BlobStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3BlobStore {
            client,
            bucket: bucket.into(),
            archive_class: StorageClass::Glacier,
        }
    }

    /// Sets the archive storage class: `GLACIER` or `DEEP_ARCHIVE`.
    pub fn with_archive_class(mut self, class: &str) -> Result<Self> {
        self.archive_class = match class.trim().to_ascii_uppercase().as_str() {
            "GLACIER" => StorageClass::Glacier,
            "DEEP_ARCHIVE" => StorageClass::DeepArchive,
            other => {
                return Err(Error::invalid(
                    "archive_class",
                    format!(
                        "the archive storage class must be GLACIER or DEEP_ARCHIVE, not {other:?}"
                    ),
                ))
            }
        };
        Ok(self)
    }

    /// A server-side copy of an object onto itself into another storage class.
    async fn change_class(&self, key: &str, class: StorageClass) -> Result<()> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(format!("{}/{}", self.bucket, encode_copy_key(key)))
            .metadata_directive(MetadataDirective::Copy)
            .storage_class(class)
            .send()
            .await
            .map_err(|e| s3_error("CopyObject", &self.what(key), e))?;
        Ok(())
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn what(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Creates the bucket (in the client's region); a bucket we already own is not an error.
    pub async fn create_bucket(&self) -> Result<()> {
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 takes no location constraint; every other region requires one.
        if let Some(region) = self.client.config().region() {
            if region.as_ref() != "us-east-1" {
                req = req.create_bucket_configuration(
                    CreateBucketConfiguration::builder()
                        .location_constraint(BucketLocationConstraint::from(region.as_ref()))
                        .build(),
                );
            }
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(s3_error("CreateBucket", &self.bucket, e)),
        }
    }

    /// Deletes every object (and every version and delete marker, if versioning was ever on)
    /// and then the bucket. A missing bucket is not an error.
    pub async fn delete_bucket_and_contents(&self) -> Result<()> {
        let bucket = self.bucket.as_str();
        // Current objects.
        let mut token: Option<String> = None;
        loop {
            let out = match self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token.take())
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.code() == Some("NoSuchBucket") => return Ok(()),
                Err(e) => return Err(s3_error("ListObjectsV2", bucket, e)),
            };
            let ids = out
                .contents()
                .iter()
                .filter_map(|o| o.key())
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .build()
                        .map_err(build_error)
                })
                .collect::<Result<Vec<_>>>()?;
            self.delete_objects(ids).await?;
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        // Old versions and delete markers (nothing left when versioning was never enabled).
        let mut key_marker: Option<String> = None;
        let mut version_marker: Option<String> = None;
        loop {
            let out = match self
                .client
                .list_object_versions()
                .bucket(bucket)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) => {
                    // Not fatal: the bucket deletion below says whether anything is left.
                    tracing::debug!(error = %s3_error("ListObjectVersions", bucket, e), "listing versions failed");
                    break;
                }
            };
            let versions = out
                .versions()
                .iter()
                .map(|v| (v.key(), v.version_id()))
                .chain(
                    out.delete_markers()
                        .iter()
                        .map(|m| (m.key(), m.version_id())),
                );
            let ids = versions
                .filter_map(|(k, v)| k.map(|k| (k, v)))
                .map(|(k, v)| {
                    ObjectIdentifier::builder()
                        .key(k)
                        .set_version_id(v.map(str::to_owned))
                        .build()
                        .map_err(build_error)
                })
                .collect::<Result<Vec<_>>>()?;
            self.delete_objects(ids).await?;
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            version_marker = out.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() && version_marker.is_none() {
                break;
            }
        }
        match self.client.delete_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchBucket") => Ok(()),
            Err(e) => Err(s3_error("DeleteBucket", bucket, e)),
        }
    }

    async fn delete_objects(&self, ids: Vec<ObjectIdentifier>) -> Result<()> {
        for chunk in ids.chunks(1000) {
            let delete = Delete::builder()
                .set_objects(Some(chunk.to_vec()))
                .quiet(true)
                .build()
                .map_err(build_error)?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| s3_error("DeleteObjects", &self.bucket, e))?;
            if let Some(err) = out.errors().first() {
                return Err(Error::Unavailable(format!(
                    "S3.DeleteObjects failed for {} key(s) of {}, first {:?}: {:?} {:?}",
                    out.errors().len(),
                    self.bucket,
                    err.key(),
                    err.code(),
                    err.message()
                )));
            }
        }
        Ok(())
    }
}

/// Percent-encodes an object key for `x-amz-copy-source`: unreserved characters and `/` stay.
fn encode_copy_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn to_chrono(t: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, bytes: Bytes, sha256_hex: &str) -> Result<()> {
        let raw = hex::decode(sha256_hex)
            .ok()
            .filter(|raw| raw.len() == 32)
            .ok_or_else(|| {
                Error::Internal(format!("invalid SHA-256 hex for {key}: {sha256_hex:?}"))
            })?;
        let checksum = base64::engine::general_purpose::STANDARD.encode(raw);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_sha256(checksum)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| s3_error("PutObject", &self.what(key), e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| s3_error("GetObject", &self.what(key), e))?;
        let body = out.body.collect().await.map_err(|e| {
            let text = DisplayErrorContext(&e).to_string();
            // The SDK validates the stored checksum while streaming (checksum mode enabled).
            if text.to_ascii_lowercase().contains("checksum") {
                Error::Integrity(format!("S3.GetObject {}: {text}", self.what(key)))
            } else {
                Error::Unavailable(format!(
                    "S3.GetObject {}: reading the body failed: {text}",
                    self.what(key)
                ))
            }
        })?;
        Ok(body.into_bytes())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match s3_error("DeleteObject", &self.what(key), e) {
                Error::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(format!("{}/{}", self.bucket, encode_copy_key(from)))
            .send()
            .await
            .map_err(|e| s3_error("CopyObject", &self.what(from), e))?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
            Err(e) => match s3_error("HeadObject", &self.what(key), e) {
                Error::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn start_multipart(&self, key: &str) -> Result<Option<Box<dyn MultipartUpload>>> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("CreateMultipartUpload", &self.what(key), e))?;
        let upload_id = out.upload_id().map(str::to_owned).ok_or_else(|| {
            Error::Unavailable(format!(
                "S3.CreateMultipartUpload {} returned no upload id",
                self.what(key)
            ))
        })?;
        Ok(Some(Box::new(S3Upload {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
        })))
    }

    async fn list(
        &self,
        prefix: &str,
        start: Option<String>,
        limit: usize,
    ) -> Result<(Vec<BlobMeta>, Option<String>)> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_start_after(start)
            .max_keys(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| s3_error("ListObjectsV2", &self.what(prefix), e))?;
        let metas: Vec<BlobMeta> = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(BlobMeta {
                    key: o.key()?.to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().and_then(to_chrono),
                })
            })
            .collect();
        let next = if out.is_truncated() == Some(true) {
            metas.last().map(|m| m.key.clone())
        } else {
            None
        };
        Ok((metas, next))
    }

    async fn archive(&self, key: &str) -> Result<()> {
        match self.tier(key).await? {
            BlobTier::Standard => self.change_class(key, self.archive_class.clone()).await,
            _ => Ok(()),
        }
    }

    async fn tier(&self, key: &str) -> Result<BlobTier> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("HeadObject", &self.what(key), e))?;
        let archived = matches!(
            out.storage_class(),
            Some(StorageClass::Glacier) | Some(StorageClass::DeepArchive)
        );
        Ok(match (archived, out.restore()) {
            (false, _) => BlobTier::Standard,
            (true, None) => BlobTier::Archived,
            (true, Some(r)) if r.contains("ongoing-request=\"true\"") => BlobTier::Restoring,
            (true, Some(_)) => BlobTier::Restored,
        })
    }

    async fn request_restore(&self, key: &str) -> Result<()> {
        let job = GlacierJobParameters::builder()
            .tier(Tier::Standard)
            .build()
            .map_err(build_error)?;
        let request = RestoreRequest::builder()
            .days(RESTORE_DAYS)
            .glacier_job_parameters(job)
            .build();
        match self
            .client
            .restore_object()
            .bucket(&self.bucket)
            .key(key)
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already under way, or not in an archive class (nothing to restore).
            Err(e)
                if matches!(
                    e.code(),
                    Some("RestoreAlreadyInProgress") | Some("InvalidObjectState")
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(s3_error("RestoreObject", &self.what(key), e)),
        }
    }

    async fn unarchive(&self, key: &str) -> Result<()> {
        match self.tier(key).await? {
            BlobTier::Standard => Ok(()),
            BlobTier::Restored => self.change_class(key, StorageClass::Standard).await,
            BlobTier::Archived | BlobTier::Restoring => Err(Error::Archived(format!(
                "blob {} has not been restored yet",
                self.what(key)
            ))),
        }
    }
}

/// An S3 multipart upload: `CreateMultipartUpload`, one `UploadPart` per part,
/// `CompleteMultipartUpload` (or `AbortMultipartUpload`).
struct S3Upload {
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
}

impl S3Upload {
    fn what(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

#[async_trait]
impl MultipartUpload for S3Upload {
    async fn write_part(&mut self, bytes: Bytes) -> Result<()> {
        let number = self.parts.len() as i32 + 1;
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| s3_error("UploadPart", &self.what(), e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<()> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("CompleteMultipartUpload", &self.what(), e))?;
        Ok(())
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
            .map_err(|e| s3_error("AbortMultipartUpload", &self.what(), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn copy_source_keys_are_encoded() {
        assert_eq!(
            encode_copy_key("programs/2026/a b+c.json"),
            "programs/2026/a%20b%2Bc.json"
        );
        assert_eq!(encode_copy_key("ü?#"), "%C3%BC%3F%23");
    }
}
