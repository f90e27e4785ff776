//! Counting the requests the SDK clients actually send, and the DynamoDB capacity they consume.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

/// An SDK interceptor counting every request attempt sent (retries count again), keyed
/// `"<service>.<operation>"` with the names the SDK's operation [`Metadata`] carries: the service is
/// `"DynamoDB"` for aws-sdk-dynamodb and `"S3"` for aws-sdk-s3, the operation its API name, e.g.
/// `"DynamoDB.TransactWriteItems"`, `"DynamoDB.Query"`, `"S3.PutObject"`, `"S3.GetObject"`.
///
/// It also measures ROUND TRIPS ([`RequestCounter::round_trips`]): each request attempt gets a
/// depth, one more than the deepest attempt that had finished when it was sent. Requests sent
/// together (before either answers) share a depth; a request sent after another answered is one
/// deeper. The deepest depth since the last reset is the number of sequential round trips.
///
/// Clones share their counts: give one clone to [`super::clients`] and keep another to read.
///
/// It also asks DynamoDB for `ReturnConsumedCapacity=INDEXES` on the item operations and adds up
/// the capacity units each answer reports, by the same key ([`RequestCounter::capacity`]), and
/// apart for the table and for each secondary index ([`RequestCounter::capacity_breakdown`]).
/// Only the answers of clients carrying a counter grow by that field; nothing else changes.
#[derive(Clone, Default, Debug)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    capacity: Arc<Mutex<BTreeMap<String, f64>>>,
    /// Capacity by operation, then by `"table"` or index name.
    parts: Arc<Mutex<BTreeMap<String, BTreeMap<String, f64>>>>,
    depths: Arc<Mutex<Depths>>,
}

/// Round-trip depths since the last reset: the deepest attempt sent, and the deepest finished.
#[derive(Debug, Default, Clone, Copy)]
struct Depths {
    sent: u64,
    finished: u64,
}

/// The depth of one request attempt, kept in its config bag from send to finish.
#[derive(Debug, Clone, Copy)]
struct AttemptDepth(u64);

impl Storable for AttemptDepth {
    type Storer = StoreReplace<Self>;
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

    /// Forgets every count (requests, capacity and round trips).
    pub fn reset(&self) {
        self.lock().clear();
        self.capacity_lock().clear();
        self.parts_lock().clear();
        *self.depths_lock() = Depths::default();
    }

    fn depths_lock(&self) -> MutexGuard<'_, Depths> {
        self.depths.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sequential round trips since the last reset (see the type's documentation).
    pub fn round_trips(&self) -> u64 {
        self.depths_lock().sent
    }

    /// Marks a request attempt sent: its depth.
    fn sent(&self) -> u64 {
        let mut d = self.depths_lock();
        let depth = d.finished + 1;
        d.sent = d.sent.max(depth);
        depth
    }

    /// Marks a request attempt of `depth` finished (answered or failed).
    fn finished(&self, depth: u64) {
        let mut d = self.depths_lock();
        d.finished = d.finished.max(depth);
    }

    fn capacity_lock(&self) -> MutexGuard<'_, BTreeMap<String, f64>> {
        self.capacity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds DynamoDB capacity units consumed by one answer of `key` (`"DynamoDB.Query"`).
    pub fn record_capacity(&self, key: &str, units: f64) {
        *self.capacity_lock().entry(key.to_owned()).or_insert(0.0) += units;
    }

    fn parts_lock(&self) -> MutexGuard<'_, BTreeMap<String, BTreeMap<String, f64>>> {
        self.parts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds capacity units one answer of `key` reports for `part` (`"table"` or an index name).
    pub fn record_capacity_part(&self, key: &str, part: &str, units: f64) {
        *self
            .parts_lock()
            .entry(key.to_owned())
            .or_default()
            .entry(part.to_owned())
            .or_insert(0.0) += units;
    }

    /// The capacity units of one operation (`"DynamoDB.TransactWriteItems"`) so far, split into
    /// the table's (`"table"`) and each secondary index's (by index name), as the answers
    /// reported them (an emulator may leave the split out: then this is empty).
    pub fn capacity_breakdown(&self, operation: &str) -> BTreeMap<String, f64> {
        self.parts_lock()
            .get(operation)
            .cloned()
            .unwrap_or_default()
    }

    /// DynamoDB capacity units consumed so far, by `"DynamoDB.<operation>"`, as the answers
    /// reported them (`ConsumedCapacity.CapacityUnits`, summed over tables and indexes).
    pub fn capacity_snapshot(&self) -> BTreeMap<String, f64> {
        self.capacity_lock().clone()
    }

    /// Capacity units of one operation or of every operation under a prefix (as [`Self::count`]).
    pub fn capacity(&self, prefix_or_name: &str) -> f64 {
        let p = prefix_or_name;
        self.capacity_lock()
            .iter()
            .filter(|(key, _)| {
                key.as_str() == p
                    || (key.starts_with(p) && (p.ends_with('.') || key[p.len()..].starts_with('.')))
            })
            .map(|(_, n)| *n)
            .sum()
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
        let depth = self.sent();
        cfg.interceptor_state().store_put(AttemptDepth(depth));
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(AttemptDepth(depth)) = cfg.load::<AttemptDepth>().copied() {
            self.finished(depth);
        }
        Ok(())
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        capacity::request_total(context.input_mut());
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Ok(output) = context.output_or_error() {
            if let Some(units) = capacity::units(output) {
                let key = match cfg.load::<Metadata>() {
                    Some(m) => format!("{}.{}", m.service(), m.name()),
                    None => "unknown.unknown".to_owned(),
                };
                self.record_capacity(&key, units);
                for (part, units) in capacity::parts(output) {
                    self.record_capacity_part(&key, &part, units);
                }
            }
        }
        Ok(())
    }
}

/// `ReturnConsumedCapacity` on the DynamoDB item operations, read back from their outputs.
mod capacity {
    use aws_sdk_dynamodb::operation::{
        batch_get_item::{BatchGetItemInput, BatchGetItemOutput},
        batch_write_item::{BatchWriteItemInput, BatchWriteItemOutput},
        delete_item::{DeleteItemInput, DeleteItemOutput},
        get_item::{GetItemInput, GetItemOutput},
        put_item::{PutItemInput, PutItemOutput},
        query::{QueryInput, QueryOutput},
        scan::{ScanInput, ScanOutput},
        transact_get_items::{TransactGetItemsInput, TransactGetItemsOutput},
        transact_write_items::{TransactWriteItemsInput, TransactWriteItemsOutput},
        update_item::{UpdateItemInput, UpdateItemOutput},
    };
    use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
    use aws_smithy_runtime_api::client::interceptors::context::{Input, Output};

    /// Asks for `INDEXES` (the total and its split by table and index) where the caller did not
    /// choose (S3 and other inputs are left alone).
    pub(super) fn request_total(input: &mut Input) {
        macro_rules! ask {
            ($($t:ty),*) => {$(
                if let Some(i) = input.downcast_mut::<$t>() {
                    i.return_consumed_capacity.get_or_insert(ReturnConsumedCapacity::Indexes);
                    return;
                }
            )*};
        }
        ask!(
            GetItemInput,
            QueryInput,
            ScanInput,
            PutItemInput,
            UpdateItemInput,
            DeleteItemInput,
            TransactWriteItemsInput,
            TransactGetItemsInput,
            BatchWriteItemInput,
            BatchGetItemInput
        );
    }

    fn sum<'a>(c: impl IntoIterator<Item = &'a ConsumedCapacity>) -> f64 {
        c.into_iter().filter_map(|c| c.capacity_units).sum()
    }

    /// The split of what an output reports: `("table", units)` and `(index name, units)`.
    pub(super) fn parts(output: &Output) -> Vec<(String, f64)> {
        fn split<'a>(c: impl IntoIterator<Item = &'a ConsumedCapacity>) -> Vec<(String, f64)> {
            let mut out = Vec::new();
            for c in c {
                if let Some(t) = c.table.as_ref().and_then(|t| t.capacity_units) {
                    out.push(("table".to_owned(), t));
                }
                for map in [&c.global_secondary_indexes, &c.local_secondary_indexes]
                    .into_iter()
                    .flatten()
                {
                    for (name, cap) in map {
                        if let Some(u) = cap.capacity_units {
                            out.push((name.clone(), u));
                        }
                    }
                }
            }
            out
        }
        macro_rules! one {
            ($($t:ty),*) => {$(
                if let Some(o) = output.downcast_ref::<$t>() {
                    return o.consumed_capacity.as_ref().map(|c| split([c])).unwrap_or_default();
                }
            )*};
        }
        macro_rules! many {
            ($($t:ty),*) => {$(
                if let Some(o) = output.downcast_ref::<$t>() {
                    return o.consumed_capacity.as_ref().map(|c| split(c)).unwrap_or_default();
                }
            )*};
        }
        one!(
            GetItemOutput,
            QueryOutput,
            ScanOutput,
            PutItemOutput,
            UpdateItemOutput,
            DeleteItemOutput
        );
        many!(
            TransactWriteItemsOutput,
            TransactGetItemsOutput,
            BatchWriteItemOutput,
            BatchGetItemOutput
        );
        Vec::new()
    }

    /// The capacity units an output reports, if it is a DynamoDB item operation's.
    pub(super) fn units(output: &Output) -> Option<f64> {
        macro_rules! one {
            ($($t:ty),*) => {$(
                if let Some(o) = output.downcast_ref::<$t>() {
                    return o.consumed_capacity.as_ref().map(|c| sum([c]));
                }
            )*};
        }
        macro_rules! many {
            ($($t:ty),*) => {$(
                if let Some(o) = output.downcast_ref::<$t>() {
                    return o.consumed_capacity.as_ref().map(|c| sum(c));
                }
            )*};
        }
        one!(
            GetItemOutput,
            QueryOutput,
            ScanOutput,
            PutItemOutput,
            UpdateItemOutput,
            DeleteItemOutput
        );
        many!(
            TransactWriteItemsOutput,
            TransactGetItemsOutput,
            BatchWriteItemOutput,
            BatchGetItemOutput
        );
        None
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
        shared.record_capacity("DynamoDB.Query", 0.5);
        shared.record_capacity("DynamoDB.TransactWriteItems", 3.0);
        assert_eq!(c.capacity("DynamoDB"), 3.5);
        assert_eq!(c.capacity("DynamoDB.Query"), 0.5);
        c.reset();
        assert_eq!(shared.total(), 0);
        // Two sent together, then one after the first answered: two round trips.
        let (a, b) = (c.sent(), c.sent());
        assert_eq!((a, b), (1, 1));
        c.finished(a);
        let third = c.sent();
        assert_eq!(third, 2);
        c.finished(b);
        c.finished(third);
        assert_eq!(shared.round_trips(), 2);
        c.reset();
        assert_eq!(c.round_trips(), 0);
        assert_eq!(c.capacity("DynamoDB"), 0.0);
    }
}
