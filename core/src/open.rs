//! Opening a [`Storage`] on either backend, and the one AWS configuration of a process.
//!
//! Every AWS client of a process (DynamoDB, S3, EventBridge, KMS, Secrets Manager, a backup
//! bucket) is built from ONE [`SdkConfig`], loaded once: a Lambda cold start or a CLI run makes an
//! [`AwsConfig`] and passes it by reference to every constructor that needs one. It is loaded on
//! first use, so a process that reaches no AWS service (the embedded backend with local keys)
//! never reads the AWS environment.

use std::path::Path;
use std::sync::Arc;

pub use aws_config::SdkConfig;

use crate::backend::aws::{clients, sdk_config, DynamoItemStore, RequestCounter, S3BlobStore};
use crate::config::StorageConfig;
use crate::error::Result;
use crate::storage::Storage;

/// The embedded backend under `data_dir` (created if missing; cargo feature `embedded`).
#[cfg(feature = "embedded")]
pub fn embedded(data_dir: &Path, config: StorageConfig) -> Result<Storage> {
    let (items, blobs) = crate::backend::embedded::open(data_dir)?;
    let mut storage = Storage::new(
        Arc::new(items),
        Arc::new(blobs),
        config,
        format!("embedded ({})", data_dir.display()),
    )
    .with_metric_conversion_on_read();
    // A store from before the text index gets it at its first indexed search (or at once
    // through [`Settings::open`]).
    storage.reindex_on_open = true;
    Ok(storage)
}

/// The AWS configuration of one process ([`sdk_config`]: the standard environment, SDK retries
/// off), loaded on the first [`AwsConfig::get`] and shared by every clone.
#[derive(Clone, Default)]
pub struct AwsConfig(Arc<tokio::sync::OnceCell<SdkConfig>>);

impl AwsConfig {
    /// A configuration loaded from the environment on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// A configuration already loaded (tests build one per fixture).
    pub fn from_sdk(sdk: SdkConfig) -> Self {
        AwsConfig(Arc::new(tokio::sync::OnceCell::new_with(Some(sdk))))
    }

    /// The configuration, loading it the first time.
    pub async fn get(&self) -> &SdkConfig {
        self.0.get_or_init(sdk_config).await
    }
}

impl std::fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConfig")
            .field("loaded", &self.0.initialized())
            .finish()
    }
}

/// Where the AWS backend lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsLocation {
    pub table: String,
    pub bucket: String,
}

/// The AWS backend with the clients of `sdk` (the standard AWS configuration: env, profile,
/// role; endpoints from `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_S3`).
/// With `create`, the table (with its indexes) and the bucket are made when missing.
pub async fn aws(
    sdk: &SdkConfig,
    location: &AwsLocation,
    config: StorageConfig,
    create: bool,
    counter: Option<RequestCounter>,
) -> Result<Storage> {
    let (ddb, s3) = clients(sdk, counter);
    let items = DynamoItemStore::new(ddb, location.table.clone());
    let blobs = S3BlobStore::new(s3, location.bucket.clone())
        .with_archive_class(&config.archive_storage_class)?;
    let mut created = false;
    let mut fresh = false;
    if create {
        created = items.create_table().await?;
        blobs.create_bucket().await?;
        // A table with no item holds no metric record of the per-record layout.
        use crate::backend::ItemStore;
        fresh = items.scan(None, 1).await?.items.is_empty();
    }
    let storage = Storage::new(
        Arc::new(items),
        Arc::new(blobs),
        config,
        format!("aws (table {}, bucket {})", location.table, location.bucket),
    );
    if fresh {
        storage.mark_metrics_converted().await?;
    }
    if created {
        // A new table holds no program: its text index is complete from the start.
        storage.mark_text_index_complete().await?;
    }
    Ok(storage)
}

/// The DynamoDB table of the AWS backend alone (maintenance of the table itself, e.g.
/// [`DynamoItemStore::migrate_indexes`]), with the clients of `sdk`.
pub fn aws_table(sdk: &SdkConfig, table: &str) -> DynamoItemStore {
    DynamoItemStore::new(clients(sdk, None).0, table)
}

/// Where change events go (see [`crate::events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsTarget {
    /// `PutEvents` on this EventBridge bus (name or ARN), through the standard AWS configuration.
    EventBridge(String),
    /// One JSON object per line appended to this file.
    File(std::path::PathBuf),
}

impl EventsTarget {
    /// From the configuration values `DSPY_STORAGE_EVENT_BUS` / `DSPY_STORAGE_EVENTS_FILE` (empty
    /// means unset; the bus wins when both are given).
    pub fn from_settings(bus: Option<&str>, file: Option<&Path>) -> Option<Self> {
        match (bus.map(str::trim).filter(|b| !b.is_empty()), file) {
            (Some(bus), _) => Some(EventsTarget::EventBridge(bus.to_owned())),
            (None, Some(f)) if !f.as_os_str().is_empty() => Some(EventsTarget::File(f.to_owned())),
            _ => None,
        }
    }
}

/// The publisher of a target (the EventBridge client, built from `aws`, counts its requests on
/// `counter`).
pub async fn event_publisher(
    target: &EventsTarget,
    aws: &AwsConfig,
    counter: Option<RequestCounter>,
) -> Arc<dyn crate::events::EventPublisher> {
    match target {
        EventsTarget::EventBridge(bus) => {
            Arc::new(crate::backend::aws::EventBridgePublisher::from_sdk(
                aws.get().await,
                bus.clone(),
                counter,
            ))
        }
        EventsTarget::File(path) => Arc::new(crate::events::JsonLinesPublisher::new(path)),
    }
}

// ----- settings → Storage -------------------------------------------------------------------------

/// Which backend [`Settings::open`] opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSettings {
    /// Local files and an embedded database under this directory (created if missing; cargo
    /// feature `embedded`).
    #[cfg(feature = "embedded")]
    Embedded { data_dir: std::path::PathBuf },
    /// DynamoDB and S3; with `create`, the table and bucket are made when missing.
    Aws { location: AwsLocation, create: bool },
}

/// Everything that decides how a [`Storage`] is opened: ONE path from settings to a store for
/// every entry point. The Lambda functions fill it from their environment, the CLI from its flags
/// (which read the same `DSPY_STORAGE_*` variables); an empty value counts as unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub backend: BackendSettings,
    /// `DSPY_STORAGE_COMPRESSION`: zstd (default), gzip, lz4 or none.
    pub compression: Option<String>,
    /// `DSPY_STORAGE_ENCRYPTION_KEY`: an AES-256-GCM key (32 bytes, hex or base64).
    pub encryption_key: Option<String>,
    /// `DSPY_STORAGE_ENCRYPTION_KEY_FILE`: a keyring file (the first key encrypts).
    pub encryption_key_file: Option<std::path::PathBuf>,
    /// `DSPY_STORAGE_ARCHIVE_CLASS`: GLACIER (default) or DEEP_ARCHIVE.
    pub archive_class: Option<String>,
    /// `DSPY_STORAGE_KMS_KEY_ID`: envelope encryption with data keys of this KMS key.
    pub kms_key_id: Option<String>,
    /// `DSPY_STORAGE_KMS_DATA_KEY_TTL`: how long a data key is reused (default `5m`).
    pub kms_data_key_ttl: Option<String>,
    /// `DSPY_STORAGE_EVENT_BUS`: publish change events to this EventBridge bus (wins over the
    /// file).
    pub event_bus: Option<String>,
    /// `DSPY_STORAGE_EVENTS_FILE`: append change events to this JSON Lines file.
    pub events_file: Option<std::path::PathBuf>,
    /// `DSPY_STORAGE_CURSOR_SECRET_ARN`: the Secrets Manager secret cursors are signed with (wins
    /// over the file).
    pub cursor_secret_arn: Option<String>,
    /// `DSPY_STORAGE_CURSOR_SECRET_FILE`: the file holding the cursor secret (created, mode
    /// 0600, when missing; default with the embedded backend: `<data_dir>/cursor-secret`).
    pub cursor_secret_file: Option<std::path::PathBuf>,
}

/// A set value: trimmed, `None` when empty.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn set_path(value: &Option<std::path::PathBuf>) -> Option<&Path> {
    value.as_deref().filter(|p| !p.as_os_str().is_empty())
}

impl Settings {
    /// The defaults for `backend`: nothing else set.
    pub fn new(backend: BackendSettings) -> Self {
        Settings {
            backend,
            compression: None,
            encryption_key: None,
            encryption_key_file: None,
            archive_class: None,
            kms_key_id: None,
            kms_data_key_ttl: None,
            event_bus: None,
            events_file: None,
            cursor_secret_arn: None,
            cursor_secret_file: None,
        }
    }

    /// The storage configuration (compression, local keys, archive class).
    pub fn config(&self) -> Result<StorageConfig> {
        let mut config = StorageConfig::default();
        if let Some(c) = set(&self.compression) {
            config.compression = c.parse()?;
        }
        if let Some(f) = set_path(&self.encryption_key_file) {
            config = config.with_key_file(f)?;
        }
        if let Some(k) = set(&self.encryption_key) {
            config = config.with_encryption_key(k)?;
        }
        if let Some(c) = set(&self.archive_class) {
            config.archive_storage_class = c.to_owned();
        }
        Ok(config)
    }

    /// Where change events go, if anywhere.
    pub fn events_target(&self) -> Option<EventsTarget> {
        EventsTarget::from_settings(set(&self.event_bus), set_path(&self.events_file))
    }

    /// The cursor secret file: the one set, else the embedded data directory's.
    pub fn cursor_secret_path(&self) -> Option<std::path::PathBuf> {
        if let Some(path) = set_path(&self.cursor_secret_file) {
            return Some(path.to_owned());
        }
        match &self.backend {
            #[cfg(feature = "embedded")]
            BackendSettings::Embedded { data_dir } => {
                Some(data_dir.join(crate::paging::SECRET_FILE))
            }
            BackendSettings::Aws { .. } => None,
        }
    }

    /// The store these settings describe, every AWS client built from `aws`: the backend, KMS
    /// data keys, the cursor secret (none set with the AWS backend: an ephemeral one, so cursors
    /// work within this process only) and the events publisher.
    pub async fn open(&self, aws: &AwsConfig) -> Result<Storage> {
        let config = self.config()?;
        let mut storage = match &self.backend {
            #[cfg(feature = "embedded")]
            BackendSettings::Embedded { data_dir } => {
                let storage = embedded(data_dir, config)?;
                // The embedded store migrates on open: programs stored before the text index
                // get their entries now (once; a no-op when the index is complete).
                storage.text_index_ready().await?;
                storage
            }
            BackendSettings::Aws { location, create } => {
                self::aws(aws.get().await, location, config, *create, None).await?
            }
        };
        if let Some(key_id) = set(&self.kms_key_id) {
            let mut cache = crate::blob::envelope::DataKeyCache::default();
            if let Some(ttl) = set(&self.kms_data_key_ttl) {
                cache.ttl = crate::config::parse_duration("DSPY_STORAGE_KMS_DATA_KEY_TTL", ttl)?;
            }
            storage = storage.with_data_keys(crate::blob::envelope::kms_provider(
                aws.get().await,
                key_id,
                cache,
            ));
        }
        let keys = match (set(&self.cursor_secret_arn), self.cursor_secret_path()) {
            (Some(arn), _) => {
                Some(crate::paging::CursorKeys::from_secrets_manager(aws.get().await, arn).await?)
            }
            (None, Some(path)) => Some(crate::paging::CursorKeys::load_or_create(&path)?),
            (None, None) => None,
        };
        match keys {
            Some(keys) => {
                tracing::info!(source = keys.source(), "cursor secret loaded");
                storage = storage.with_cursor_keys(keys);
            }
            None => {
                tracing::info!("no cursor secret configured: cursors work within this process only")
            }
        }
        if let Some(target) = self.events_target() {
            storage = storage.with_events(event_publisher(&target, aws, None).await);
        }
        Ok(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset_and_bad_ones_are_refused() {
        let dir = std::env::temp_dir();
        let mut s = Settings::new(BackendSettings::Embedded {
            data_dir: dir.clone(),
        });
        s.compression = Some(" ".into());
        s.archive_class = Some(String::new());
        s.events_file = Some(std::path::PathBuf::new());
        let c = s.config().unwrap();
        assert_eq!(c.compression, StorageConfig::default().compression);
        assert_eq!(c.archive_storage_class, "GLACIER");
        assert_eq!(s.events_target(), None);
        assert_eq!(
            s.cursor_secret_path(),
            Some(dir.join(crate::paging::SECRET_FILE))
        );
        s.compression = Some("brotli".into());
        assert!(s.config().is_err());
        s.compression = Some("gzip".into());
        s.event_bus = Some("bus".into());
        s.events_file = Some("events.jsonl".into());
        assert_eq!(
            s.config().unwrap().compression,
            crate::blob::codec::Compression::Gzip
        );
        assert_eq!(
            s.events_target(),
            Some(EventsTarget::EventBridge("bus".into()))
        );
        let aws = Settings::new(BackendSettings::Aws {
            location: AwsLocation {
                table: "t".into(),
                bucket: "b".into(),
            },
            create: false,
        });
        assert_eq!(aws.cursor_secret_path(), None);
    }
}
