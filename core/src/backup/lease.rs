//! The job lease: one backup and one restore at a time (a status item with an owner and an
//! expiry, renewed while the job runs, released at its end or left to expire).

use chrono::{DateTime, Utc};

use crate::backend::{Condition, Item, WriteOp};
use crate::error::{Error, Result};
use crate::model::keys::{self};
use crate::storage::Storage;

const LEASE_SECS: i64 = 20 * 60;

/// What a lease is for: one backup at a time, one restore at a time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Job {
    Backup,
    Restore,
}

impl Job {
    fn sk(self) -> &'static str {
        match self {
            Job::Backup => keys::BACKUP_LOCK_SK,
            Job::Restore => keys::RESTORE_LOCK_SK,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Job::Backup => "backup",
            Job::Restore => "restore",
        }
    }
}

/// One job of a kind at a time: a lease item `STATUS`/`LOCK#<job>` taken with a conditional
/// write, renewed while the job runs, released when it ends.
pub(crate) struct Lease {
    job: Job,
    owner: String,
    expires: i64,
}

impl Lease {
    pub(crate) async fn acquire(storage: &Storage, job: Job) -> Result<Lease> {
        let items = storage.items();
        let now = Utc::now().timestamp();
        let what = job.name();
        let current = items.get(keys::STATUS_PK, job.sk()).await?;
        let condition = match &current {
            None => Condition::NotExists,
            Some(item) => {
                let exp = item.get("expires_at").unwrap_or("0");
                if exp.parse::<i64>().unwrap_or(0) > now {
                    return Err(Error::Precondition(format!(
                        "another {what} is running (its lease expires at {})",
                        DateTime::from_timestamp(exp.parse().unwrap_or(0), 0)
                            .map(|t| crate::domain::format_time(&t))
                            .unwrap_or_default()
                    )));
                }
                Condition::AttrEquals("expires_at".into(), exp.to_owned())
            }
        };
        let lease = Lease {
            job,
            owner: uuid::Uuid::now_v7().to_string(),
            expires: now + LEASE_SECS,
        };
        match items
            .transact(vec![WriteOp::put(lease.item(), condition)])
            .await
        {
            Ok(()) => Ok(lease),
            Err(Error::ConditionFailed { .. }) => Err(Error::Precondition(format!(
                "another {what} is running (it took the lease first)"
            ))),
            Err(e) => {
                // The write may have happened all the same (a timeout): if the lease is ours,
                // give it back, so that it does not refuse every job until it expires.
                if let Ok(Some(item)) = items.get(keys::STATUS_PK, job.sk()).await {
                    if item.get("owner") == Some(lease.owner.as_str()) {
                        lease.release(storage).await;
                    }
                }
                Err(e)
            }
        }
    }

    fn item(&self) -> Item {
        Item::new(keys::STATUS_PK, self.job.sk())
            .with("owner", self.owner.clone())
            .with("expires_at", self.expires.to_string())
    }

    /// Extends the lease when less than half of it is left.
    pub(crate) async fn renew(&mut self, storage: &Storage) -> Result<()> {
        let now = Utc::now().timestamp();
        if self.expires - now > LEASE_SECS / 2 {
            return Ok(());
        }
        self.expires = now + LEASE_SECS;
        let what = self.job.name();
        storage
            .items()
            .transact(vec![WriteOp::put(
                self.item(),
                Condition::AttrEquals("owner".into(), self.owner.clone()),
            )])
            .await
            .map_err(|e| match e {
                Error::ConditionFailed { .. } => {
                    Error::Precondition(format!("the {what} lost its lease to another {what}"))
                }
                e => e,
            })
    }

    /// Gives the lease back, retrying a failed release (a lease left behind would refuse every
    /// job until it expires). A lease no longer ours (`ConditionFailed`) is left alone.
    pub(crate) async fn release(self, storage: &Storage) {
        let what = self.job.name();
        let op = WriteOp::delete(
            keys::STATUS_PK,
            self.job.sk(),
            Condition::AttrEquals("owner".into(), self.owner),
        );
        for attempt in 1..=5u32 {
            match storage.items().transact(vec![op.clone()]).await {
                Ok(()) | Err(Error::ConditionFailed { .. }) => return,
                Err(e) if attempt < 5 => {
                    tracing::debug!(error = %e, attempt, what, "releasing a lease; retrying");
                    crate::retry::backoff(attempt).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, what, "could not release a lease; it expires by itself")
                }
            }
        }
    }
}
