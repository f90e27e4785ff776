//! Change events: what teams hook deployments and notifications to ("a new version of S was
//! stored", "the `production` alias moved").
//!
//! Events are published **after** the change has committed, so an event never announces a change
//! that did not happen. Publishing is at-most-once and best effort: a publisher failure is retried
//! (transient errors, with backoff) and then logged, never turned into a failed store — the store
//! already succeeded and the registry remains the source of truth (a consumer that must not miss a
//! version reconciles with `GET /signatures/{s}/versions`).
//!
//! Publishers: [`EventBridgePublisher`](crate::backend::aws::EventBridgePublisher) (`PutEvents` on a
//! custom bus, source [`EVENT_SOURCE`], detail-type = the [`EventType`] name) and
//! [`JsonLinesPublisher`] (one JSON object per line appended to a local file; the embedded
//! backend's hook). Either works with either backend.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The `source` of every event.
pub const EVENT_SOURCE: &str = "dspy-storage";

/// What happened. The name is the EventBridge `detail-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum EventType {
    /// A new program version was stored (also by a rollback, with `rollback_to` set).
    ProgramStored,
    /// A program was deleted.
    ProgramDeleted,
    /// A program's tags, environment, description or custom metadata changed.
    MetadataUpdated,
    /// An alias now points at a (new) version.
    AliasMoved,
    /// An alias was removed.
    AliasRemoved,
    /// A program's blob moved to cold storage.
    ProgramArchived,
    /// An archived program is readable again.
    ProgramRestored,
    /// A retention run finished.
    CleanupCompleted,
    /// A backup finished.
    BackupCompleted,
    /// A restore from a backup finished (the detail is its report).
    BackupRestored,
}

impl EventType {
    pub fn name(self) -> &'static str {
        match self {
            EventType::ProgramStored => "ProgramStored",
            EventType::ProgramDeleted => "ProgramDeleted",
            EventType::MetadataUpdated => "MetadataUpdated",
            EventType::AliasMoved => "AliasMoved",
            EventType::AliasRemoved => "AliasRemoved",
            EventType::ProgramArchived => "ProgramArchived",
            EventType::ProgramRestored => "ProgramRestored",
            EventType::CleanupCompleted => "CleanupCompleted",
            EventType::BackupCompleted => "BackupCompleted",
            EventType::BackupRestored => "BackupRestored",
        }
    }
}

/// One event: its type, when it happened and a JSON detail (always an object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(rename = "detail-type")]
    pub detail_type: EventType,
    pub source: &'static str,
    #[serde(serialize_with = "serialize_time")]
    pub time: DateTime<Utc>,
    pub detail: Value,
}

impl Event {
    /// An event happening now. `detail` should be a JSON object.
    pub fn new(detail_type: EventType, detail: Value) -> Self {
        Event {
            detail_type,
            source: EVENT_SOURCE,
            time: crate::domain::now(),
            detail,
        }
    }
}

fn serialize_time<S: serde::Serializer>(
    t: &DateTime<Utc>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&crate::domain::format_time(t))
}

/// Where events go.
#[async_trait]
pub trait EventPublisher: Send + Sync + std::fmt::Debug {
    /// Publishes the events (in order). An error means some were not delivered.
    async fn publish(&self, events: &[Event]) -> Result<()>;
}

/// Appends each event as one JSON line to a local file (created when missing). Lines are written
/// whole under a lock, so concurrent publishers never interleave within a line.
#[derive(Debug)]
pub struct JsonLinesPublisher {
    path: PathBuf,
    lock: tokio::sync::Mutex<()>,
}

impl JsonLinesPublisher {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        JsonLinesPublisher {
            path: path.into(),
            lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait]
impl EventPublisher for JsonLinesPublisher {
    async fn publish(&self, events: &[Event]) -> Result<()> {
        use std::io::Write;
        let mut text = String::new();
        for event in events {
            text.push_str(
                &serde_json::to_string(event).map_err(|e| Error::Internal(e.to_string()))?,
            );
            text.push('\n');
        }
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            file.write_all(text.as_bytes())?;
            file.flush()
        })
        .await
        .map_err(|e| Error::Internal(format!("event writer: {e}")))?
        .map_err(|e| Error::Unavailable(format!("writing events to {}: {e}", self.path.display())))
    }
}

/// Publishes through `publisher` (when configured), retrying refusals (throttling), and logs what
/// could not be delivered. Never fails: the change the events describe has already committed.
pub async fn emit(publisher: Option<&Arc<dyn EventPublisher>>, events: Vec<Event>) {
    let Some(publisher) = publisher else { return };
    if events.is_empty() {
        return;
    }
    // A throttled publish was refused, so it is repeated (the retry policy's budget); a publisher
    // repeats its own rejected entries (EventBridge's partial failures); any other failure may
    // have delivered some events, and is logged, not repeated.
    if let Err(e) =
        crate::retry::retrying(crate::retry::refused, || publisher.publish(&events)).await
    {
        let types: Vec<&str> = events.iter().map(|e| e.detail_type.name()).collect();
        tracing::warn!(error = %e, events = ?types, "events not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn json_lines_are_appended_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/events.jsonl");
        let publisher: Arc<dyn EventPublisher> = Arc::new(JsonLinesPublisher::new(&path));
        let a = Event::new(
            EventType::ProgramStored,
            serde_json::json!({"version": "1.0.0"}),
        );
        let b = Event::new(
            EventType::AliasMoved,
            serde_json::json!({"alias": "production"}),
        );
        emit(Some(&publisher), vec![a]).await;
        emit(Some(&publisher), vec![b]).await;
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["detail-type"], "ProgramStored");
        assert_eq!(lines[0]["source"], "dspy-storage");
        assert_eq!(lines[0]["detail"]["version"], "1.0.0");
        assert_eq!(lines[1]["detail-type"], "AliasMoved");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[derive(Debug, Default)]
    struct Flaky {
        calls: std::sync::Mutex<u32>,
        fail_first: u32,
        transient: bool,
    }

    #[async_trait]
    impl EventPublisher for Flaky {
        async fn publish(&self, _events: &[Event]) -> Result<()> {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            if *calls <= self.fail_first {
                return Err(if self.transient {
                    Error::Throttled("slow down".into())
                } else {
                    Error::Internal("bad bus".into())
                });
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_permanent_ones_are_not() {
        let e = || vec![Event::new(EventType::ProgramStored, serde_json::json!({}))];
        let flaky = Arc::new(Flaky {
            fail_first: 2,
            transient: true,
            ..Default::default()
        });
        let p: Arc<dyn EventPublisher> = flaky.clone();
        emit(Some(&p), e()).await;
        assert_eq!(
            *flaky.calls.lock().unwrap(),
            3,
            "two throttles, then delivered"
        );

        let broken = Arc::new(Flaky {
            fail_first: 10,
            transient: false,
            ..Default::default()
        });
        let p: Arc<dyn EventPublisher> = broken.clone();
        emit(Some(&p), e()).await;
        assert_eq!(
            *broken.calls.lock().unwrap(),
            1,
            "a permanent error is not retried"
        );
    }
}
