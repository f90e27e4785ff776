//! Change events through the HTTP API: the embedded store publishes to a JSON Lines file, the AWS
//! store to an EventBridge custom bus (LocalStack's EventBridge here; a rule forwards the bus's events to
//! an SQS queue, which the test reads). Same sequence of operations, same events, on both.

use dspy_storage_core::access::OPERATOR;
use std::sync::Arc;
use std::time::Duration;

use dspy_storage_core::backend::aws::{sdk_config, EventBridgePublisher};
use dspy_storage_core::events::{EventPublisher, JsonLinesPublisher};
use dspy_storage_tests::{backends, unique_name, Client, Kind, TestStore};
use http::Method;
use serde_json::{json, Value};

/// Where a test reads back what was published.
enum Sink {
    File(std::path::PathBuf),
    Queue {
        sqs: aws_sdk_sqs::Client,
        url: String,
    },
}

impl Sink {
    /// Every event published so far (waits for the queue to deliver `expected` of them).
    async fn events(&self, expected: usize) -> Vec<Value> {
        match self {
            Sink::File(path) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect(),
            Sink::Queue { sqs, url } => {
                let mut out: Vec<Value> = Vec::new();
                // Until `expected` arrived, plus one more poll to catch any extra event.
                let mut extra_poll_done = false;
                for _ in 0..50 {
                    if out.len() >= expected {
                        if extra_poll_done {
                            break;
                        }
                        extra_poll_done = true;
                    }
                    let got = sqs
                        .receive_message()
                        .queue_url(url)
                        .max_number_of_messages(10)
                        .wait_time_seconds(1)
                        .send()
                        .await
                        .expect("ReceiveMessage");
                    for m in got.messages() {
                        out.push(serde_json::from_str(m.body().unwrap_or("")).expect("JSON body"));
                        // Read once: undeleted messages come back after the visibility timeout.
                        if let Some(handle) = m.receipt_handle() {
                            sqs.delete_message()
                                .queue_url(url)
                                .receipt_handle(handle)
                                .send()
                                .await
                                .expect("DeleteMessage");
                        }
                    }
                }
                // SQS does not promise order: put them back in the order they happened.
                out.sort_by_key(|e| e["time"].as_str().unwrap_or("").to_owned());
                out
            }
        }
    }
}

/// A custom bus whose events a rule forwards to a fresh queue. A bus of its own, as the SAM stack
/// creates one: the default bus is shared by every test (and some emulators fail `PutEvents` on it
/// once a schedule rule exists).
async fn bus_with_queue() -> (String, aws_sdk_sqs::Client, String) {
    let sdk = sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let bus = unique_name("dspy-bus");
    // Rule names unique too: tests run in parallel on one account.
    let rule = unique_name("all-dspy-storage");
    events
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("CreateEventBus");
    let url = sqs
        .create_queue()
        .queue_name(unique_name("dspy-events"))
        .send()
        .await
        .expect("CreateQueue")
        .queue_url()
        .expect("queue url")
        .to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("GetQueueAttributes")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .expect("queue arn")
        .clone();
    events
        .put_rule()
        .name(&rule)
        .event_bus_name(&bus)
        .event_pattern(json!({"source": ["dspy-storage"]}).to_string())
        .send()
        .await
        .expect("PutRule");
    events
        .put_targets()
        .rule(&rule)
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("PutTargets");
    (bus, sqs, url)
}

/// The store with a publisher attached, and where its events can be read.
async fn with_events(store: TestStore) -> (TestStore, Sink, Option<tempfile::TempDir>) {
    let (publisher, sink, dir): (Arc<dyn EventPublisher>, Sink, _) = match store.kind {
        Kind::Embedded => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events.jsonl");
            (
                Arc::new(JsonLinesPublisher::new(&path)),
                Sink::File(path),
                Some(dir),
            )
        }
        Kind::Aws => {
            let (bus, sqs, url) = bus_with_queue().await;
            let sdk = sdk_config().await;
            (
                Arc::new(EventBridgePublisher::from_sdk(
                    &sdk,
                    bus,
                    store.counter.clone(),
                )),
                Sink::Queue { sqs, url },
                None,
            )
        }
    };
    let TestStore {
        kind,
        storage,
        counter,
        location,
        data_dir,
    } = store;
    let storage = Arc::try_unwrap(storage).expect("a fresh store has one owner");
    let store = TestStore {
        kind,
        storage: Arc::new(storage.with_events(publisher)),
        counter,
        location,
        data_dir,
    };
    (store, sink, dir)
}

async fn send(
    c: &Client,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> dspy_storage_tests::Answer {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    c.request(method, uri, &[("content-type", "application/json")], body)
        .await
}

fn store_body(version: &str, n: u32) -> Value {
    json!({
        "program": {"predictors": {"answer": {"instructions": format!("v{n}")}}},
        "metadata": {"signature": "ev.QA", "version": version, "performance": 0.5 + f64::from(n) / 10.0}
    })
}

#[tokio::test]
async fn committed_changes_publish_events_in_order() {
    for store in backends().await {
        let (store, sink, _dir) = with_events(store).await;
        let k = store.kind;
        let c = store.client();

        let v1 = send(&c, Method::POST, "/programs", Some(store_body("1.0.0", 1)))
            .await
            .expect(k, "store 1.0.0", 201);
        let v2 = send(&c, Method::POST, "/programs", Some(store_body("1.1.0", 2)))
            .await
            .expect(k, "store 1.1.0", 201);
        // A refused store (the version is taken) publishes nothing.
        send(&c, Method::POST, "/programs", Some(store_body("1.1.0", 3)))
            .await
            .expect_error(k, "store 1.1.0 again", 409, "conflict");
        send(
            &c,
            Method::PUT,
            "/signatures/ev.QA/aliases/production",
            Some(json!({"version": "1.0.0"})),
        )
        .await
        .expect(k, "alias production → 1.0.0", 200);
        let rolled = send(
            &c,
            Method::POST,
            "/signatures/ev.QA/rollback",
            Some(json!({"to_version": "1.0.0"})),
        )
        .await
        .expect(k, "rollback to 1.0.0", 201);
        send(
            &c,
            Method::PATCH,
            &format!("/programs/{}/metadata", s(&v2["id"])),
            Some(json!({"description": "second"})),
        )
        .await
        .expect(k, "patch 1.1.0", 200);
        send(
            &c,
            Method::DELETE,
            "/signatures/ev.QA/aliases/production",
            None,
        )
        .await
        .expect_status(k, "remove alias", 204);
        send(
            &c,
            Method::DELETE,
            &format!("/programs/{}", s(&v2["id"])),
            None,
        )
        .await
        .expect_status(k, "delete 1.1.0", 204);

        let events = sink.events(7).await;
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["detail-type"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(
            types,
            [
                "ProgramStored",
                "ProgramStored",
                "AliasMoved",
                "ProgramStored",
                "MetadataUpdated",
                "AliasRemoved",
                "ProgramDeleted"
            ],
            "{k:?}: {events:#?}"
        );
        for e in &events {
            assert_eq!(e["source"], "dspy-storage", "{k:?}");
            assert_eq!(e["detail"]["signature"], "ev.QA", "{k:?}: {e}");
            assert_eq!(e["detail"]["project"], "default", "{k:?}: {e}");
        }
        assert_eq!(events[0]["detail"]["id"], v1["id"], "{k:?}");
        assert_eq!(events[0]["detail"]["version"], "1.0.0", "{k:?}");
        assert_eq!(events[0]["detail"]["sha256"], v1["sha256"], "{k:?}");
        assert_eq!(events[1]["detail"]["version"], "1.1.0", "{k:?}");
        assert_eq!(events[2]["detail"]["alias"], "production", "{k:?}");
        assert_eq!(events[2]["detail"]["version"], "1.0.0", "{k:?}");
        assert_eq!(events[2]["detail"]["program_id"], v1["id"], "{k:?}");
        // The alias history's facts: from where, by whom, what kind of move, its history entry.
        assert_eq!(events[2]["detail"]["from_version"], Value::Null, "{k:?}");
        assert_eq!(events[2]["detail"]["by"], "anonymous", "{k:?}");
        assert_eq!(events[2]["detail"]["action"], "move", "{k:?}");
        let history = send(
            &c,
            Method::GET,
            "/signatures/ev.QA/aliases/production/history",
            None,
        )
        .await
        .expect(k, "alias history", 200);
        let entries = history["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{k:?}: the move and the removal");
        assert_eq!(events[2]["detail"]["history_id"], entries[1]["id"], "{k:?}");
        assert_eq!(events[5]["detail"]["history_id"], entries[0]["id"], "{k:?}");
        assert_eq!(events[5]["detail"]["from_version"], "1.0.0", "{k:?}");
        assert_eq!(events[5]["detail"]["by"], "anonymous", "{k:?}");
        assert_eq!(events[3]["detail"]["id"], rolled["id"], "{k:?}");
        assert_eq!(events[3]["detail"]["rollback_to"], "1.0.0", "{k:?}");
        assert_eq!(events[4]["detail"]["program_id"], v2["id"], "{k:?}");
        assert_eq!(events[6]["detail"]["program_id"], v2["id"], "{k:?}");
        assert_eq!(events[6]["detail"]["version"], "1.1.0", "{k:?}");
    }
}

#[tokio::test]
async fn a_store_with_events_costs_one_put_events_more_and_survives_a_missing_bus() {
    let Some(store) = dspy_storage_tests::aws().await else {
        return;
    };
    let counter = store.counter.clone().unwrap();
    // A bus that does not exist: publishing fails, the store still succeeds and is readable.
    let sdk = sdk_config().await;
    let publisher = Arc::new(EventBridgePublisher::from_sdk(
        &sdk,
        unique_name("no-such-bus"),
        Some(counter.clone()),
    ));
    let TestStore {
        kind,
        storage,
        counter: c2,
        location,
        data_dir,
    } = store;
    let storage = Arc::try_unwrap(storage).unwrap().with_events(publisher);
    let store = TestStore {
        kind,
        storage: Arc::new(storage),
        counter: c2,
        location,
        data_dir,
    };
    let c = store.client();
    counter.reset();
    let stored = send(&c, Method::POST, "/programs", Some(store_body("1.0.0", 1)))
        .await
        .expect(kind, "store with a broken bus", 201);
    let snapshot = counter.snapshot();
    println!("store with events on a missing bus: {snapshot:?}");
    assert_eq!(snapshot.get("DynamoDB.TransactWriteItems"), Some(&1));
    assert_eq!(snapshot.get("S3.PutObject"), Some(&1));
    let put_events = snapshot.get("EventBridge.PutEvents").copied().unwrap_or(0);
    assert!(
        (1..=3).contains(&put_events),
        "PutEvents tried (and retried at most twice): {put_events}"
    );
    let loaded = c.get(&format!("/programs/{}", s(&stored["id"]))).await;
    loaded.expect(kind, "load after the failed publish", 200);

    // On a real bus: exactly one PutEvents per store.
    let (bus, _sqs, _url) = bus_with_queue().await;
    let publisher = Arc::new(EventBridgePublisher::from_sdk(
        &sdk,
        bus,
        Some(counter.clone()),
    ));
    let storage = dspy_storage_core::open::aws(
        &dspy_storage_core::backend::aws::sdk_config().await,
        store.location.as_ref().unwrap(),
        Default::default(),
        false,
        Some(counter.clone()),
    )
    .await
    .unwrap()
    .with_events(publisher);
    counter.reset();
    let metadata = dspy_storage_core::domain::NewMetadata::parse(
        json!({"signature": "ev.QA"}),
        chrono::Utc::now(),
    )
    .unwrap();
    let program = serde_json::value::RawValue::from_string("{\"a\":1}".into()).unwrap();
    storage
        .store(&OPERATOR, &program, metadata, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let snapshot = counter.snapshot();
    println!("store with events: {snapshot:?}");
    assert_eq!(
        snapshot.get("EventBridge.PutEvents"),
        Some(&1),
        "{snapshot:?}"
    );
    assert_eq!(snapshot.get("DynamoDB.TransactWriteItems"), Some(&1));
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn archive_restore_cleanup_and_backup_publish_events() {
    for store in backends().await {
        let (store, sink, _dir) = with_events(store).await;
        let k = store.kind;
        let c = store.client();
        let v1 = send(&c, Method::POST, "/programs", Some(store_body("1.0.0", 1)))
            .await
            .expect(k, "store 1.0.0", 201);
        send(&c, Method::POST, "/programs", Some(store_body("1.1.0", 2)))
            .await
            .expect(k, "store 1.1.0", 201);
        let id = s(&v1["id"]);
        let archived = send(&c, Method::POST, &format!("/programs/{id}/archive"), None)
            .await
            .expect(k, "archive 1.0.0", 200);
        assert_eq!(archived["status"], "archived", "{k:?}");
        // Archiving again is a no-op: no second event.
        send(&c, Method::POST, &format!("/programs/{id}/archive"), None)
            .await
            .expect(k, "archive 1.0.0 again", 200);
        let mut restored = Value::Null;
        for _ in 0..20 {
            let a = send(&c, Method::POST, &format!("/programs/{id}/restore"), None).await;
            if a.status.as_u16() == 200 {
                restored = a.json();
                break;
            }
            a.expect_status(k, "restore under way", 202);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(restored["status"], "active", "{k:?}: {restored}");
        send(
            &c,
            Method::POST,
            "/maintenance/cleanup",
            Some(json!({"dry_run": false})),
        )
        .await
        .expect(k, "cleanup run", 200);
        let backup = send(&c, Method::POST, "/backups", Some(json!({})))
            .await
            .expect(k, "backup", 201);
        // Restoring it into the same store writes nothing, and says so.
        send(
            &c,
            Method::POST,
            &format!(
                "/backups/{}/restore",
                backup["backup_name"].as_str().unwrap()
            ),
            Some(json!({})),
        )
        .await
        .expect(k, "restore", 200);
        // A dry run changes nothing and announces nothing.
        send(
            &c,
            Method::POST,
            "/maintenance/cleanup",
            Some(json!({"dry_run": true})),
        )
        .await
        .expect(k, "cleanup dry run", 200);

        let events = sink.events(7).await;
        let types: Vec<&str> = events
            .iter()
            .map(|e| e["detail-type"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(
            types,
            [
                "ProgramStored",
                "ProgramStored",
                "ProgramArchived",
                "ProgramRestored",
                "CleanupCompleted",
                "BackupCompleted",
                "BackupRestored"
            ],
            "{k:?}: {events:#?}"
        );
        assert_eq!(events[2]["detail"]["program_id"], v1["id"], "{k:?}");
        assert_eq!(events[2]["detail"]["status"], "archived", "{k:?}");
        assert_eq!(events[3]["detail"]["status"], "active", "{k:?}");
        assert_eq!(events[4]["detail"]["complete"], true, "{k:?}");
        assert_eq!(events[5]["detail"]["programs"], 2, "{k:?}");
        assert_eq!(events[5]["detail"]["status"], "ok", "{k:?}");
        assert_eq!(events[6]["detail"]["already_present_programs"], 2, "{k:?}");
        assert_eq!(events[6]["detail"]["restored_programs"], 0, "{k:?}");
    }
}
