//! Envelope encryption of program blobs with data keys from a key service.
//!
//! Each blob is sealed with AES-256-GCM (the codec's format) under a DATA key; the data key is
//! kept only wrapped (encrypted by a master key that never leaves the key service) in the blob's
//! record ([`crate::blob::codec::BlobInfo::wrapped_key`]), next to the id of the master key. A new
//! process reads any blob by unwrapping its data key; rotating the master key needs no
//! re-encryption (old blobs name the key that wrapped them).
//!
//! [`KmsDataKeys`]: AWS KMS (`GenerateDataKey` AES_256 for new blobs, `Decrypt` to unwrap). A data
//! key is reused for new blobs for at most its TTL (default 5 minutes) and a bounded number of
//! blobs, and unwrapped keys are cached for the same TTL, so a warm function makes about one KMS
//! call per TTL instead of one per request. The embedded backend keeps the static local keys of
//! the codec's [`crate::blob::codec::Keyring`] (`--encryption-key`, or a key file).
//!
//! A blob that names a key this process cannot use, or whose data key does not unwrap, is
//! [`Error::Integrity`] (`422`), never garbage; a key service that cannot be reached is
//! `Unavailable`/`Throttled` (`503`/`429`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::error::{Error, Result};

/// A data key: what seals new blobs.
#[derive(Clone)]
pub struct DataKey {
    /// Id of the master key that wrapped it (recorded with each blob).
    pub key_id: String,
    pub plaintext: [u8; 32],
    /// The data key encrypted by the master key (recorded with each blob).
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .field("wrapped_len", &self.wrapped.len())
            .finish()
    }
}

/// Where data keys come from.
#[async_trait]
pub trait DataKeyProvider: Send + Sync + 'static {
    /// A data key for a new blob.
    async fn data_key(&self) -> Result<DataKey>;
    /// The plaintext of a data key wrapped by master key `key_id`.
    async fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<[u8; 32]>;
}

/// How long and for how many blobs a data key is reused.
#[derive(Debug, Clone, Copy)]
pub struct DataKeyCache {
    pub ttl: Duration,
    pub max_uses: u64,
    /// Unwrapped keys kept (least recently inserted out).
    pub max_unwrapped: usize,
}

impl Default for DataKeyCache {
    fn default() -> Self {
        DataKeyCache {
            ttl: Duration::from_secs(300),
            max_uses: 10_000,
            max_unwrapped: 1024,
        }
    }
}

/// A data key provider with the bounded caches of [`DataKeyCache`] over a key service's two
/// calls. Generic so tests can count and fail the calls.
pub struct CachedDataKeys<S> {
    service: S,
    cache: DataKeyCache,
    /// The data key for new blobs: born when, used how often.
    current: Mutex<Option<(DataKey, Instant, u64)>>,
    unwrapped: Mutex<UnwrappedKeys>,
}

/// Unwrapped data keys by master key id and wrapped form, with the time they were unwrapped.
type UnwrappedKeys = HashMap<Vec<u8>, ([u8; 32], Instant)>;

/// The two calls of a key service.
#[async_trait]
pub trait KeyService: Send + Sync + 'static {
    async fn generate(&self) -> Result<DataKey>;
    async fn decrypt(&self, key_id: &str, wrapped: &[u8]) -> Result<[u8; 32]>;
}

impl<S: KeyService> CachedDataKeys<S> {
    pub fn new(service: S, cache: DataKeyCache) -> Self {
        CachedDataKeys {
            service,
            cache,
            current: Mutex::new(None),
            unwrapped: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl<S: KeyService> DataKeyProvider for CachedDataKeys<S> {
    async fn data_key(&self) -> Result<DataKey> {
        {
            let mut cur = self.current.lock().expect("lock");
            if let Some((key, born, uses)) = cur.as_mut() {
                if born.elapsed() < self.cache.ttl && *uses < self.cache.max_uses {
                    *uses += 1;
                    return Ok(key.clone());
                }
            }
        }
        let key = self.service.generate().await?;
        *self.current.lock().expect("lock") = Some((key.clone(), Instant::now(), 1));
        Ok(key)
    }

    async fn unwrap(&self, key_id: &str, wrapped: &[u8]) -> Result<[u8; 32]> {
        let cache_key = [key_id.as_bytes(), b"\0", wrapped].concat();
        if let Some((k, born)) = self.unwrapped.lock().expect("lock").get(&cache_key) {
            if born.elapsed() < self.cache.ttl {
                return Ok(*k);
            }
        }
        let key = self.service.decrypt(key_id, wrapped).await?;
        let mut map = self.unwrapped.lock().expect("lock");
        map.retain(|_, (_, born)| born.elapsed() < self.cache.ttl);
        if map.len() >= self.cache.max_unwrapped {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, born))| *born)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(cache_key, (key, Instant::now()));
        Ok(key)
    }
}

/// AWS KMS as the key service: data keys under `key_id` (a key id, ARN or `alias/…`).
pub struct Kms {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl Kms {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Kms {
            client,
            key_id: key_id.into(),
        }
    }
}

/// KMS error codes that mean the data key cannot be unwrapped with what we have.
const KMS_KEY_ERRORS: &[&str] = &[
    "InvalidCiphertextException",
    "IncorrectKeyException",
    "NotFoundException",
    "DisabledException",
    "KMSInvalidStateException",
    "AccessDeniedException",
    "InvalidKeyUsageException",
];

fn kms_error<E>(op: &str, err: aws_sdk_kms::error::SdkError<E>) -> Error
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    let code = err.code().unwrap_or("").to_owned();
    if op == "Decrypt" && KMS_KEY_ERRORS.contains(&code.as_str()) {
        return Error::Integrity(format!(
            "the program's data key cannot be unwrapped by KMS ({code}): wrong or missing key"
        ));
    }
    crate::backend::aws::classify_kms(op, &err)
}

#[async_trait]
impl KeyService for Kms {
    async fn generate(&self) -> Result<DataKey> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .send()
            .await
            .map_err(|e| kms_error("GenerateDataKey", e))?;
        let plaintext: [u8; 32] = out
            .plaintext()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default()
            .try_into()
            .map_err(|_| {
                Error::Unavailable("KMS returned a data key that is not 32 bytes".into())
            })?;
        let wrapped = out
            .ciphertext_blob()
            .map(|b| b.as_ref().to_vec())
            .ok_or_else(|| Error::Unavailable("KMS returned no wrapped data key".into()))?;
        Ok(DataKey {
            // The ARN KMS answers with, so a blob names its master key even behind an alias.
            key_id: out.key_id().unwrap_or(&self.key_id).to_owned(),
            plaintext,
            wrapped,
        })
    }

    async fn decrypt(&self, key_id: &str, wrapped: &[u8]) -> Result<[u8; 32]> {
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(aws_smithy_types::Blob::new(wrapped.to_vec()))
            .send()
            .await
            .map_err(|e| kms_error("Decrypt", e))?;
        out.plaintext()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default()
            .try_into()
            .map_err(|_| Error::Integrity("the program's data key is not 32 bytes".into()))
    }
}

/// A KMS data key provider with a client built from `sdk` (`AWS_ENDPOINT_URL` honoured).
pub fn kms_provider(
    sdk: &aws_config::SdkConfig,
    key_id: &str,
    cache: DataKeyCache,
) -> std::sync::Arc<dyn DataKeyProvider> {
    // KMS calls are not behind the backend retry decorator: the SDK's standard retries are
    // their one retry layer (the shared configuration turns them off for the decorated clients).
    let client = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::standard())
            .build(),
    );
    std::sync::Arc::new(CachedDataKeys::new(Kms::new(client, key_id), cache))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A fake key service: "wraps" by XOR with a per-key pad; counts calls.
    #[derive(Clone, Default)]
    struct Fake {
        generated: Arc<AtomicU64>,
        decrypted: Arc<AtomicU64>,
    }

    #[async_trait]
    impl KeyService for Fake {
        async fn generate(&self) -> Result<DataKey> {
            let n = self.generated.fetch_add(1, Ordering::SeqCst) as u8;
            let plaintext = [n.wrapping_add(1); 32];
            Ok(DataKey {
                key_id: "fake".into(),
                plaintext,
                wrapped: plaintext.iter().map(|b| b ^ 0x5a).collect(),
            })
        }
        async fn decrypt(&self, key_id: &str, wrapped: &[u8]) -> Result<[u8; 32]> {
            self.decrypted.fetch_add(1, Ordering::SeqCst);
            if key_id != "fake" {
                return Err(Error::Integrity("unknown key".into()));
            }
            wrapped
                .iter()
                .map(|b| b ^ 0x5a)
                .collect::<Vec<_>>()
                .try_into()
                .map_err(|_| Error::Integrity("bad".into()))
        }
    }

    #[tokio::test]
    async fn data_keys_are_reused_within_their_ttl_and_uses() {
        let fake = Fake::default();
        let p = CachedDataKeys::new(
            fake.clone(),
            DataKeyCache {
                ttl: Duration::from_millis(200),
                max_uses: 3,
                max_unwrapped: 2,
            },
        );
        let k1 = p.data_key().await.unwrap();
        p.data_key().await.unwrap();
        p.data_key().await.unwrap();
        assert_eq!(fake.generated.load(Ordering::SeqCst), 1);
        let k2 = p.data_key().await.unwrap(); // 4th use: a new key
        assert_eq!(fake.generated.load(Ordering::SeqCst), 2);
        assert_ne!(k1.plaintext, k2.plaintext);
        tokio::time::sleep(Duration::from_millis(250)).await;
        p.data_key().await.unwrap(); // expired: a new key
        assert_eq!(fake.generated.load(Ordering::SeqCst), 3);
        // Unwrapping is cached too, and bounded.
        assert_eq!(p.unwrap("fake", &k1.wrapped).await.unwrap(), k1.plaintext);
        assert_eq!(p.unwrap("fake", &k1.wrapped).await.unwrap(), k1.plaintext);
        assert_eq!(fake.decrypted.load(Ordering::SeqCst), 1);
        p.unwrap("fake", &k2.wrapped).await.unwrap();
        p.unwrap("fake", &[1u8; 32]).await.unwrap();
        assert!(p.unwrapped.lock().unwrap().len() <= 2);
        assert!(matches!(
            p.unwrap("other", &k1.wrapped).await,
            Err(Error::Integrity(_))
        ));
    }
}
