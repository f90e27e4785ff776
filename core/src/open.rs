//! Opening a [`Storage`] on either backend.

use std::path::Path;
use std::sync::Arc;

use crate::backend::aws::{clients, sdk_config, DynamoItemStore, RequestCounter, S3BlobStore};
use crate::backend::embedded;
use crate::config::StorageConfig;
use crate::error::Result;
use crate::storage::Storage;

/// The embedded backend under `data_dir` (created if missing).
pub fn embedded(data_dir: &Path, config: StorageConfig) -> Result<Storage> {
    let (items, blobs) = embedded::open(data_dir)?;
    Ok(Storage::new(
        Arc::new(items),
        Arc::new(blobs),
        config,
        format!("embedded ({})", data_dir.display()),
    ))
}

/// Where the AWS backend lives.
#[derive(Debug, Clone)]
pub struct AwsLocation {
    pub table: String,
    pub bucket: String,
}

/// The AWS backend through the standard AWS configuration (env, profile, role; endpoints from
/// `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_S3`). With `create`, the
/// table (with its indexes) and the bucket are made when missing.
pub async fn aws(
    location: &AwsLocation,
    config: StorageConfig,
    create: bool,
    counter: Option<RequestCounter>,
) -> Result<Storage> {
    let sdk = sdk_config().await;
    let (ddb, s3) = clients(&sdk, counter);
    let items = DynamoItemStore::new(ddb, location.table.clone());
    let blobs = S3BlobStore::new(s3, location.bucket.clone())
        .with_archive_class(&config.archive_storage_class)?;
    if create {
        items.create_table().await?;
        blobs.create_bucket().await?;
    }
    Ok(Storage::new(
        Arc::new(items),
        Arc::new(blobs),
        config,
        format!("aws (table {}, bucket {})", location.table, location.bucket),
    ))
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

/// The publisher of a target (the EventBridge client counts its requests on `counter`).
pub async fn event_publisher(
    target: &EventsTarget,
    counter: Option<RequestCounter>,
) -> Arc<dyn crate::events::EventPublisher> {
    match target {
        EventsTarget::EventBridge(bus) => {
            let sdk = sdk_config().await;
            Arc::new(crate::backend::aws::EventBridgePublisher::from_sdk(
                &sdk,
                bus.clone(),
                counter,
            ))
        }
        EventsTarget::File(path) => Arc::new(crate::events::JsonLinesPublisher::new(path)),
    }
}
