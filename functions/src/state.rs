//! What every handler shares: the [`AppState`] a router is built with.

use std::sync::Arc;

use dspy_storage_core::backup::BackupLocation;
use dspy_storage_core::config::DEFAULT_MAX_BODY_BYTES;
use dspy_storage_core::retention::Policy;
use dspy_storage_core::Storage;

use crate::auth::AccessControl;

/// Shared state of every handler (built once: per Lambda cold start, per `dspy-storage serve`).
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<Storage>,
    pub max_body_bytes: usize,
    /// Who may call what (see [`crate::auth`]); off unless the server or Lambda turns it on.
    pub access: AccessControl,
    /// Where backups go (`None`: the program blob store, under `backups/`).
    pub backup: Option<BackupLocation>,
    /// Complete backups kept after a new one (`DSPY_STORAGE_BACKUP_RETAIN`, default 30).
    pub backup_retain: usize,
    /// The configured retention policy (`DSPY_STORAGE_KEEP_LATEST`, ...): what the scheduled
    /// cleanup applies and what a cleanup request's `policy` overrides.
    pub policy: Policy,
}

impl AppState {
    pub fn new(storage: Arc<Storage>) -> Self {
        AppState {
            storage,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            access: AccessControl::Off,
            backup: None,
            backup_retain: dspy_storage_core::backup::DEFAULT_RETAIN,
            policy: Policy::default(),
        }
    }

    /// The same state with access control `access`.
    pub fn with_access(mut self, access: AccessControl) -> Self {
        self.access = access;
        self
    }

    /// Where this state's backups live.
    pub fn backup_location(&self) -> BackupLocation {
        self.backup
            .clone()
            .unwrap_or_else(|| BackupLocation::new(self.storage.blobs().clone()))
    }
}
