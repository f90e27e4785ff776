//! Cold archive and restore of one program's blob (`POST /programs/{id}/archive`,
//! `/restore`), also applied by the cleanup run ([`super::cleanup`]).
//!
//! * **Archive** = blob first to the archive tier, then the record to `archived` (conditional). A
//!   crash in between leaves an active record over an archived blob: loads answer `409
//!   archived` (never wrong data) and the next run finishes the archive. When the record's
//!   write fails or loses (the program changed meanwhile), the blob is asked back.
//! * **Restore** = a restore request, status `restoring` until the copy is readable, then the blob
//!   back to the standard tier and status `active` — finished by the restore call itself when the
//!   copy is ready at once (embedded), else by the next load or cleanup run.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use crate::access::Principal;
use crate::backend::{attr, BlobTier, Condition, WriteOp};
use crate::domain::{format_time, ProgramId, ProgramStatus};
use crate::error::{Error, Result};
use crate::events::{Event, EventType};
use crate::model::keys;
use crate::model::record::{ProgramRecord, SignatureHead};
use crate::retry::backoff;
use crate::storage::Storage;

/// The answer of an archive or restore call.
#[derive(Debug, Clone, Serialize)]
pub struct TierChange {
    pub id: ProgramId,
    pub signature: String,
    pub version: String,
    pub status: ProgramStatus,
    pub updated_at: String,
}

impl TierChange {
    fn of(r: &ProgramRecord) -> Self {
        TierChange {
            id: r.id,
            signature: r.signature.to_string(),
            version: r.version.to_string(),
            status: r.status,
            updated_at: format_time(&r.updated_at),
        }
    }
}

impl Storage {
    /// Writes a record changed from `old` (status, restore time), conditioned on `old`'s
    /// revision and, when given, on the head's revision.
    async fn put_record_change(
        &self,
        old: &ProgramRecord,
        new: &ProgramRecord,
        head: Option<&SignatureHead>,
    ) -> Result<()> {
        let mut ops = vec![WriteOp::put(
            new.to_item(),
            Condition::AttrEquals(attr::REV.into(), format_time(&old.updated_at)),
        )];
        if let Some(h) = head {
            ops.push(WriteOp::Check {
                pk: old.signature_pk(),
                sk: keys::HEAD_SK.into(),
                condition: crate::model::record::rev_of(h),
            });
        }
        self.items.transact(ops).await?;
        self.programs.remove(&old.id);
        Ok(())
    }

    // ----- archive -----------------------------------------------------------------------------

    /// `POST /programs/{id}/archive`: moves the program's blob to the archive tier and marks it
    /// `archived`. Archiving an archived program is a no-op.
    pub async fn archive_program(&self, who: &Principal, id: &ProgramId) -> Result<TierChange> {
        self.archive_guarded(who, id, None)
            .await
            .map(|r| TierChange::of(&r))
    }

    /// Archives; with `planned` (retention), only if the record is unchanged since it was planned
    /// and it is neither the signature's latest version nor an alias target.
    pub(super) async fn archive_guarded(
        &self,
        who: &Principal,
        id: &ProgramId,
        planned: Option<DateTime<Utc>>,
    ) -> Result<ProgramRecord> {
        let rec = self.get_record(who, id).await?;
        if let Some(p) = planned {
            if rec.updated_at != p {
                return Err(Error::Precondition(format!(
                    "program {id} changed since the plan was made"
                )));
            }
        }
        if rec.status == ProgramStatus::Archived {
            return Ok(rec);
        }
        let head = if planned.is_some() {
            let head = self.read_head(&rec.project, &rec.signature).await?;
            if let Some(h) = &head {
                if h.latest_id == *id || h.aliases.values().any(|t| t.id == *id) {
                    return Err(Error::Precondition(format!(
                        "program {id} became the latest version or an alias target"
                    )));
                }
            }
            head
        } else {
            None
        };
        if let Err(e) = self.blobs.archive(&rec.blob_key).await {
            // The move may have happened all the same (a timeout): never leave an active record
            // over an archived blob — ask it back (or mark the record `restoring`).
            self.undo_archive(id).await;
            return Err(e);
        }
        let mut new = rec.clone();
        new.status = ProgramStatus::Archived;
        new.updated_at = crate::storage::registry::next_time(rec.updated_at, crate::domain::now());
        match self.put_record_change(&rec, &new, head.as_ref()).await {
            Ok(()) => {
                self.emit(vec![tier_event(EventType::ProgramArchived, &new)])
                    .await;
                Ok(new)
            }
            Err(e) => {
                self.undo_archive(id).await;
                match e {
                    Error::ConditionFailed { .. } => Err(Error::Precondition(format!(
                        "program {id} changed meanwhile; not archived"
                    ))),
                    e => Err(e),
                }
            }
        }
    }

    /// After a failed archive write: if the record is still active, its blob is brought back by
    /// the restore path ([`Self::finish_restore`]), which leaves an active record as it is when
    /// the copy is readable at once (the embedded store; S3 emulators) — an archive undone is not
    /// a restore, so the retention clock (`restored_at`) is not reset — and marks it `restoring`
    /// when it is not (S3 Glacier: hours), so a load or cleanup finishes it.
    async fn undo_archive(&self, id: &ProgramId) {
        let result: Result<()> = async {
            let rec = self.record(id).await?;
            if rec.status == ProgramStatus::Active {
                self.finish_restore(rec).await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            match e {
                Error::NotFound(_) => {}
                e => {
                    tracing::warn!(%id, error = %e, "could not undo an archive; the next load or cleanup sees an archived blob")
                }
            }
        }
    }

    // ----- restore -----------------------------------------------------------------------------

    /// `POST /programs/{id}/restore`: asks for the blob back. The answer's status is `active`
    /// when it is readable again (at once on the embedded backend), else `restoring` (a later
    /// load, restore call or cleanup run finishes it). Restoring an active program is a no-op.
    pub async fn restore_program(&self, who: &Principal, id: &ProgramId) -> Result<TierChange> {
        let mut n = 0u32;
        loop {
            n += 1;
            let rec = self.get_record(who, id).await?;
            let result = match rec.status {
                // Normally a no-op; but an archive cut short after its blob moved leaves an
                // active record over an archived blob (loads answer 409): bring that back too.
                ProgramStatus::Active => match self.blobs.tier(&rec.blob_key).await {
                    Ok(BlobTier::Standard) | Err(Error::NotFound(_)) => {
                        return Ok(TierChange::of(&rec))
                    }
                    Ok(_) => self.finish_restore(rec).await,
                    Err(e) => return Err(e),
                },
                ProgramStatus::Archived => {
                    self.blobs.request_restore(&rec.blob_key).await?;
                    self.finish_restore(rec).await
                }
                ProgramStatus::Restoring => self.finish_restore(rec).await,
            };
            match result {
                Ok(r) => return Ok(TierChange::of(&r)),
                Err(Error::ConditionFailed { .. }) if n < 5 => backoff(n).await,
                Err(Error::ConditionFailed { .. }) => {
                    return Err(Error::Unavailable(format!(
                        "program {id} is changing too fast; retry the restore"
                    )))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves a restore forward from the blob's tier: readable → standard tier and `active`;
    /// under way → `restoring`; not asked for (or its copy expired) → asked again, `restoring`.
    /// Returns the record as it now is.
    pub(crate) async fn finish_restore(&self, rec: ProgramRecord) -> Result<ProgramRecord> {
        let tier = match self.blobs.tier(&rec.blob_key).await {
            Ok(t) => t,
            Err(Error::NotFound(_)) => {
                return Err(Error::Integrity(format!(
                    "the stored program {} is missing from the blob store",
                    rec.id
                )))
            }
            Err(e) => return Err(e),
        };
        let status = match tier {
            BlobTier::Standard => ProgramStatus::Active,
            BlobTier::Restored => {
                self.blobs.unarchive(&rec.blob_key).await?;
                ProgramStatus::Active
            }
            BlobTier::Restoring => ProgramStatus::Restoring,
            BlobTier::Archived => {
                self.blobs.request_restore(&rec.blob_key).await?;
                match self.blobs.tier(&rec.blob_key).await? {
                    BlobTier::Standard => ProgramStatus::Active,
                    BlobTier::Restored => {
                        self.blobs.unarchive(&rec.blob_key).await?;
                        ProgramStatus::Active
                    }
                    _ => ProgramStatus::Restoring,
                }
            }
        };
        if status == rec.status {
            return Ok(rec);
        }
        let mut new = rec.clone();
        new.status = status;
        new.updated_at = crate::storage::registry::next_time(rec.updated_at, crate::domain::now());
        if status == ProgramStatus::Active {
            new.restored_at = Some(new.updated_at);
        }
        self.put_record_change(&rec, &new, None).await?;
        if new.status == ProgramStatus::Active {
            self.emit(vec![tier_event(EventType::ProgramRestored, &new)])
                .await;
        }
        Ok(new)
    }

    /// A load of a `restoring` program: finishes the restore when the copy is ready, else
    /// `Archived` ("still being restored").
    pub(crate) async fn load_restoring(&self, rec: ProgramRecord) -> Result<ProgramRecord> {
        let id = rec.id;
        let new = match self.finish_restore(rec).await {
            Ok(r) => r,
            Err(Error::ConditionFailed { .. }) => self.record(&id).await?,
            Err(e) => return Err(e),
        };
        if new.status == ProgramStatus::Active {
            Ok(new)
        } else {
            Err(Error::Archived(format!(
                "program {id} is being restored from cold storage; try again later"
            )))
        }
    }
}

/// The event of an archive or a finished restore.
fn tier_event(kind: EventType, r: &ProgramRecord) -> Event {
    Event::new(
        kind,
        json!({
            "project": r.project.to_string(),
            "signature": r.signature.to_string(),
            "version": r.version.to_string(),
            "program_id": r.id.to_string(),
            "status": r.status,
        }),
    )
}
