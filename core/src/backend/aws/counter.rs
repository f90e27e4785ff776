//! Counting the requests the SDK clients actually send.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// An SDK interceptor counting every request attempt sent (retries count again), keyed
/// `"<service>.<operation>"` with the names the SDK's operation [`Metadata`] carries: the service is
/// `"DynamoDB"` for aws-sdk-dynamodb and `"S3"` for aws-sdk-s3, the operation its API name, e.g.
/// `"DynamoDB.TransactWriteItems"`, `"DynamoDB.Query"`, `"S3.PutObject"`, `"S3.GetObject"`.
///
/// Clones share their counts: give one clone to [`super::clients`] and keep another to read.
#[derive(Clone, Default, Debug)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl RequestCounter {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        // A panic while holding the lock cannot leave the map inconsistent: ignore poisoning.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one request under `key` (`"<service>.<operation>"`).
    pub fn record(&self, key: &str) {
        *self.lock().entry(key.to_owned()).or_insert(0) += 1;
    }

    /// Every count so far, by `"<service>.<operation>"`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.lock().clone()
    }

    /// Forgets every count.
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// All requests counted.
    pub fn total(&self) -> u64 {
        self.lock().values().sum()
    }

    /// Requests of one operation (`"DynamoDB.Query"`) or of every operation under a prefix
    /// (`"DynamoDB"` or `"DynamoDB."` for the whole service).
    pub fn count(&self, prefix_or_name: &str) -> u64 {
        let p = prefix_or_name;
        self.lock()
            .iter()
            .filter(|(key, _)| {
                key.as_str() == p
                    || (key.starts_with(p) && (p.ends_with('.') || key[p.len()..].starts_with('.')))
            })
            .map(|(_, n)| *n)
            .sum()
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let key = match cfg.load::<Metadata>() {
            Some(m) => format!("{}.{}", m.service(), m.name()),
            None => "unknown.unknown".to_owned(),
        };
        self.record(&key);
        Ok(())
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn counts_by_name_and_prefix() {
        let c = RequestCounter::default();
        let shared = c.clone();
        shared.record("DynamoDB.Query");
        shared.record("DynamoDB.Query");
        shared.record("DynamoDB.TransactWriteItems");
        shared.record("S3.PutObject");
        assert_eq!(c.total(), 4);
        assert_eq!(c.count("DynamoDB.Query"), 2);
        assert_eq!(c.count("DynamoDB"), 3);
        assert_eq!(c.count("DynamoDB."), 3);
        assert_eq!(c.count("Dynamo"), 0);
        assert_eq!(c.count("S3"), 1);
        assert_eq!(c.snapshot().get("S3.PutObject"), Some(&1));
        c.reset();
        assert_eq!(shared.total(), 0);
    }
}
