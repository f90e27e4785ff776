//! Publishing change events to an EventBridge bus.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::error::{Error, Result};
use crate::events::{Event, EventPublisher};

/// At most this many entries per `PutEvents` call (the API's limit).
const MAX_ENTRIES: usize = 10;

/// `PutEvents` on one bus (a custom bus: give its name or ARN). Entries that EventBridge reports
/// as failed are sent again (up to three rounds in all); what still fails is an error.
#[derive(Debug, Clone)]
pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: impl Into<String>) -> Self {
        EventBridgePublisher {
            client,
            bus: bus.into(),
        }
    }

    /// The client from the shared SDK configuration, with the request counter when given.
    pub fn from_sdk(
        sdk: &aws_config::SdkConfig,
        bus: impl Into<String>,
        counter: Option<super::RequestCounter>,
    ) -> Self {
        let mut builder = aws_sdk_eventbridge::config::Builder::from(sdk);
        if let Some(counter) = counter {
            builder = builder.interceptor(counter);
        }
        Self::new(aws_sdk_eventbridge::Client::from_conf(builder.build()), bus)
    }

    fn entry(&self, event: &Event) -> Result<PutEventsRequestEntry> {
        let detail =
            serde_json::to_string(&event.detail).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(event.source)
            .detail_type(event.detail_type.name())
            .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(
                event.time.timestamp_millis(),
            ))
            .detail(detail)
            .build())
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[Event]) -> Result<()> {
        for chunk in events.chunks(MAX_ENTRIES) {
            let mut pending: Vec<PutEventsRequestEntry> =
                chunk.iter().map(|e| self.entry(e)).collect::<Result<_>>()?;
            let mut round = 0;
            while !pending.is_empty() {
                round += 1;
                let out = self
                    .client
                    .put_events()
                    .set_entries(Some(pending.clone()))
                    .send()
                    .await
                    .map_err(|e| super::classify_eventbridge("PutEvents", e))?;
                if out.failed_entry_count() == 0 {
                    break;
                }
                // Result entries are in request order; keep the failed ones.
                let failed: Vec<(PutEventsRequestEntry, String)> = pending
                    .into_iter()
                    .zip(out.entries())
                    .filter(|(_, r)| r.error_code().is_some())
                    .map(|(e, r)| {
                        let why = format!(
                            "{}: {}",
                            r.error_code().unwrap_or(""),
                            r.error_message().unwrap_or("")
                        );
                        (e, why)
                    })
                    .collect();
                if round >= crate::retry::MAX_ATTEMPTS {
                    let why = failed.first().map(|f| f.1.clone()).unwrap_or_default();
                    return Err(Error::Unavailable(format!(
                        "EventBridge rejected {} event(s) on bus {}: {why}",
                        failed.len(),
                        self.bus
                    )));
                }
                crate::retry::backoff(round).await;
                pending = failed.into_iter().map(|f| f.0).collect();
            }
        }
        Ok(())
    }
}
