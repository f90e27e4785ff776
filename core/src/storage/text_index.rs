//! Keeping the free-text index ([`crate::model::text`]) in step with the program records, and
//! building it for programs stored before it existed.
//!
//! * **Writes.** A store writes a program's entries (one `BatchWriteItem` per 25) together with
//!   its blob upload and head read, before the record's transaction: when the store returns, the
//!   program is found. A metadata change writes the entries of new words before its
//!   transaction; the entries of words it drops stay (removing them could race with a later
//!   change adding the word back). A delete removes the program's entries after its transaction,
//!   best effort. A left-over entry costs a search one record read, never a wrong answer: every
//!   candidate's record is checked.
//! * **Existing data.** The index is *complete* once every program has its entries; the state
//!   item `STATUS` / `TEXTINDEX` says so. Until then searches read the project's programs as
//!   before (correct, slower). [`Storage::reindex_text`] walks the table page by page (a
//!   maintenance scan), writes each program's entries and keeps its position in the state item,
//!   so it resumes where a run stopped; `dspy-storage reindex` runs it, and so does every real
//!   cleanup run (daily on AWS) until it is complete. A table this build creates starts
//!   complete, and the embedded backend completes it when it is opened (or, for a library
//!   user that opens one directly, at its first indexed search).

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::access::Principal;
use crate::backend::{attr, put_all, Condition, Item, PageKey, WriteOp};
use crate::domain::format_time;
use crate::error::Result;
use crate::model::keys;
use crate::model::record::{from_item, ProgramRecord};
use crate::storage::Storage;

/// Items read per page of a reindex scan.
const REINDEX_PAGE: usize = 500;
/// Deletes per transaction when entries are removed (DynamoDB's limit is 100).
const DELETE_CHUNK: usize = 100;

/// The text index's state item (`STATUS` / `TEXTINDEX`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TextIndexState {
    /// Every program has its entries.
    pub complete: bool,
    /// Where the reindex scan stopped (absent when complete or not started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<PageKey>,
    /// Programs indexed by reindex runs so far.
    #[serde(default)]
    pub programs_indexed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// What one reindex run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReindexReport {
    /// The index is complete (now or already before).
    pub complete: bool,
    /// Programs whose entries this run wrote.
    pub programs_indexed: u64,
    /// Entries this run wrote.
    pub entries_written: u64,
}

impl Storage {
    /// Writes index entries (before the record that needs them).
    pub(crate) async fn put_text_entries(&self, entries: Vec<Item>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        put_all(self.items.as_ref(), entries).await
    }

    /// Removes index entries, best effort (a left-over entry is filtered by the record check).
    pub(crate) async fn remove_text_entries(&self, entries: Vec<Item>) {
        for chunk in entries.chunks(DELETE_CHUNK) {
            let ops = chunk
                .iter()
                .map(|e| WriteOp::delete(e.pk.clone(), e.sk.clone(), Condition::None))
                .collect();
            if let Err(e) = self.items.transact(ops).await {
                tracing::warn!(error = %e, "could not remove text index entries; searches filter them");
                return;
            }
        }
    }

    /// The text index's state item (the default, incomplete, when there is none).
    pub async fn text_index_state(&self) -> Result<TextIndexState> {
        match self
            .items
            .get(keys::STATUS_PK, keys::TEXT_INDEX_STATUS_SK)
            .await?
        {
            Some(item) => from_item(&item),
            None => Ok(TextIndexState::default()),
        }
    }

    async fn write_text_index_state(&self, state: &TextIndexState) -> Result<()> {
        let item = Item::new(keys::STATUS_PK, keys::TEXT_INDEX_STATUS_SK).with(
            attr::DATA,
            serde_json::to_string(state).expect("serializable"),
        );
        self.items
            .transact(vec![WriteOp::put(item, Condition::None)])
            .await
    }

    /// Marks the index complete without a walk: for a store known to hold no program yet (a
    /// table just created).
    pub async fn mark_text_index_complete(&self) -> Result<()> {
        let now = format_time(&crate::domain::now());
        self.write_text_index_state(&TextIndexState {
            complete: true,
            started_at: Some(now.clone()),
            finished_at: Some(now),
            ..Default::default()
        })
        .await?;
        self.text_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Whether searches may use the index (it is complete). Remembered once true; until then one
    /// item read per call. The embedded backend builds it here when it is not complete yet (its
    /// migration on open: [`crate::open::Settings::open`] calls this; a library user opening an
    /// embedded store directly may too, else its first indexed search does).
    pub async fn text_index_ready(&self) -> Result<bool> {
        if self.text_ready.load(Ordering::Relaxed) {
            return Ok(true);
        }
        if self.text_index_state().await?.complete {
            self.text_ready.store(true, Ordering::Relaxed);
            return Ok(true);
        }
        if self.reindex_on_open {
            return Ok(self
                .reindex_text(&crate::access::OPERATOR, None, false)
                .await?
                .complete);
        }
        Ok(false)
    }

    /// Builds the text index for every program that has no entries yet: a resumable walk of the
    /// table (see the module doc), a whole-store operation. Stops after the page it is on once
    /// `deadline` has passed (the next run resumes). `restart` walks from the beginning even
    /// when the index is complete (entries are rewritten; none is removed).
    pub async fn reindex_text(
        &self,
        who: &Principal,
        deadline: Option<Instant>,
        restart: bool,
    ) -> Result<ReindexReport> {
        who.whole_store("reindex")?;
        let _one_at_a_time = self.reindex_lock.lock().await;
        let mut state = if restart {
            TextIndexState::default()
        } else {
            self.text_index_state().await?
        };
        let mut report = ReindexReport {
            complete: state.complete,
            programs_indexed: 0,
            entries_written: 0,
        };
        if state.complete {
            self.text_ready.store(true, Ordering::Relaxed);
            return Ok(report);
        }
        let before = state.programs_indexed;
        if state.started_at.is_none() {
            state.started_at = Some(format_time(&crate::domain::now()));
        }
        loop {
            let page = self.items.scan(state.cursor.clone(), REINDEX_PAGE).await?;
            let mut entries = Vec::new();
            for item in &page.items {
                if keys::entity_kind(&item.pk, &item.sk) != keys::EntityKind::Program {
                    continue;
                }
                let record: ProgramRecord = from_item(item)?;
                entries.extend(crate::model::text::index_items(&record));
                report.programs_indexed += 1;
            }
            report.entries_written += entries.len() as u64;
            self.put_text_entries(entries).await?;
            state.cursor = page.next;
            if state.cursor.is_none() {
                state.complete = true;
                state.finished_at = Some(format_time(&crate::domain::now()));
            }
            state.programs_indexed = before + report.programs_indexed;
            self.write_text_index_state(&state).await?;
            if state.complete {
                self.text_ready.store(true, Ordering::Relaxed);
                tracing::info!(
                    programs = report.programs_indexed,
                    entries = report.entries_written,
                    "text index complete"
                );
                report.complete = true;
                return Ok(report);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(report);
            }
        }
    }
}
