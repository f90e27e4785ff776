//! Every setting of a function, read ONCE: per Lambda cold start ([`Env::lambda`], from the
//! function's environment) and per `dspy-storage serve` ([`Env::around`], around the store the
//! CLI's flags describe — they read the same `DSPY_STORAGE_*` variables). Both end in
//! [`Env::state`]: one path from settings to the handlers' [`AppState`], every AWS client built
//! from the one [`AwsConfig`] of the process.

use std::sync::Arc;

use dspy_storage_core::backup::BackupLocation;
use dspy_storage_core::open::{AwsConfig, AwsLocation, BackendSettings, Settings};
use dspy_storage_core::retention::Policy;
use dspy_storage_core::{Error, Result};

use crate::auth::{AccessControl, LambdaAuth};
use crate::AppState;

/// The settings of one process.
#[derive(Debug, Clone)]
pub struct Env {
    /// How the store is opened.
    pub storage: Settings,
    /// `DSPY_STORAGE_BACKUP_BUCKET`: backups in a bucket of their own (default: the program
    /// store, under `backups/`).
    pub backup_bucket: Option<String>,
    /// `DSPY_STORAGE_BACKUP_RETAIN`: complete backups kept after a new one (default 30).
    pub backup_retain: usize,
    /// The retention policy: the defaults overridden by `DSPY_STORAGE_KEEP_LATEST`,
    /// `DSPY_STORAGE_ARCHIVE_AFTER_DAYS`, ... (see [`Policy::from_env`]).
    pub policy: Policy,
}

/// A variable's value: trimmed, `None` when unset or empty.
fn get(var: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    var(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn required(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<String> {
    get(var, name)
        .ok_or_else(|| Error::invalid(name, format!("environment variable {name} is not set")))
}

impl Env {
    /// A Lambda function's settings: `DSPY_STORAGE_TABLE` and `DSPY_STORAGE_BUCKET` (required),
    /// every optional variable of [`Settings`], and those of [`Env::around`].
    pub fn lambda(var: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let location = AwsLocation {
            table: required(&var, "DSPY_STORAGE_TABLE")?,
            bucket: required(&var, "DSPY_STORAGE_BUCKET")?,
        };
        let storage = Settings {
            compression: get(&var, "DSPY_STORAGE_COMPRESSION"),
            encryption_key: get(&var, "DSPY_STORAGE_ENCRYPTION_KEY"),
            encryption_key_file: get(&var, "DSPY_STORAGE_ENCRYPTION_KEY_FILE").map(Into::into),
            archive_class: get(&var, "DSPY_STORAGE_ARCHIVE_CLASS"),
            kms_key_id: get(&var, "DSPY_STORAGE_KMS_KEY_ID"),
            kms_data_key_ttl: get(&var, "DSPY_STORAGE_KMS_DATA_KEY_TTL"),
            event_bus: get(&var, "DSPY_STORAGE_EVENT_BUS"),
            events_file: get(&var, "DSPY_STORAGE_EVENTS_FILE").map(Into::into),
            cursor_secret_arn: get(&var, "DSPY_STORAGE_CURSOR_SECRET_ARN"),
            cursor_secret_file: get(&var, "DSPY_STORAGE_CURSOR_SECRET_FILE").map(Into::into),
            ..Settings::new(BackendSettings::Aws {
                location,
                create: false,
            })
        };
        Env::around(storage, var)
    }

    /// The settings around a store described elsewhere: backups and the retention policy.
    pub fn around(storage: Settings, var: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let backup_retain = match get(&var, "DSPY_STORAGE_BACKUP_RETAIN") {
            None => dspy_storage_core::backup::DEFAULT_RETAIN,
            Some(retain) => retain
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| {
                    Error::invalid(
                        "DSPY_STORAGE_BACKUP_RETAIN",
                        format!(
                        "DSPY_STORAGE_BACKUP_RETAIN must be a count of at least 1, not {retain:?}"
                    ),
                    )
                })?,
        };
        Ok(Env {
            storage,
            backup_bucket: get(&var, "DSPY_STORAGE_BACKUP_BUCKET"),
            backup_retain,
            policy: Policy::from_env(&var)?,
        })
    }

    /// The handlers' state: the store opened, the backup location, retention; access control
    /// off (the caller sets it).
    pub async fn state(&self, aws: &AwsConfig) -> Result<AppState> {
        let storage = self.storage.open(aws).await?;
        let mut state = AppState::new(Arc::new(storage));
        if let Some(bucket) = &self.backup_bucket {
            state.backup = Some(BackupLocation::s3_bucket(aws.get().await, bucket));
        }
        state.backup_retain = self.backup_retain;
        state.policy = self.policy.clone();
        Ok(state)
    }
}

/// A Lambda function's access control: from the API Gateway authorizer context (see
/// [`crate::auth`]) — unless `DSPY_STORAGE_ACCESS_CONTROL=off`, meant only for the local Lambda
/// loop (`cargo lambda watch` sends no authorizer context); the stack never sets it.
pub fn lambda_access(var: impl Fn(&str) -> Option<String>) -> Result<AccessControl> {
    if get(&var, "DSPY_STORAGE_ACCESS_CONTROL").as_deref() == Some("off") {
        tracing::warn!("ACCESS CONTROL IS OFF (DSPY_STORAGE_ACCESS_CONTROL=off): every caller may do everything; never deploy this");
        return Ok(AccessControl::Off);
    }
    let auth = LambdaAuth::from_env().map_err(|e| Error::invalid("DSPY_STORAGE_IAM_ROLE", e))?;
    Ok(AccessControl::Lambda(auth))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_lambda_reads_every_variable_once_into_one_settings() {
        let env = Env::lambda(vars(&[
            ("DSPY_STORAGE_TABLE", "t"),
            ("DSPY_STORAGE_BUCKET", " b "),
            ("DSPY_STORAGE_COMPRESSION", "gzip"),
            ("DSPY_STORAGE_KMS_KEY_ID", "alias/k"),
            ("DSPY_STORAGE_KMS_DATA_KEY_TTL", "90s"),
            ("DSPY_STORAGE_EVENTS_FILE", ""),
            ("DSPY_STORAGE_BACKUP_RETAIN", "3"),
            ("DSPY_STORAGE_BACKUP_BUCKET", "bk"),
            ("DSPY_STORAGE_KEEP_LATEST", "7"),
        ]))
        .unwrap();
        assert_eq!(
            env.storage.backend,
            BackendSettings::Aws {
                location: AwsLocation {
                    table: "t".into(),
                    bucket: "b".into()
                },
                create: false
            }
        );
        assert_eq!(env.storage.compression.as_deref(), Some("gzip"));
        assert_eq!(env.storage.kms_key_id.as_deref(), Some("alias/k"));
        assert_eq!(env.storage.kms_data_key_ttl.as_deref(), Some("90s"));
        assert_eq!(env.storage.events_file, None);
        assert_eq!(env.backup_retain, 3);
        assert_eq!(env.backup_bucket.as_deref(), Some("bk"));
        assert_eq!(env.policy.keep_latest, 7);
    }

    #[test]
    fn missing_or_bad_variables_are_named() {
        let e = Env::lambda(vars(&[("DSPY_STORAGE_TABLE", "t")])).unwrap_err();
        assert!(e.to_string().contains("DSPY_STORAGE_BUCKET"), "{e}");
        let e = Env::lambda(vars(&[
            ("DSPY_STORAGE_TABLE", "t"),
            ("DSPY_STORAGE_BUCKET", "b"),
            ("DSPY_STORAGE_BACKUP_RETAIN", "0"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("DSPY_STORAGE_BACKUP_RETAIN"), "{e}");
    }
}
