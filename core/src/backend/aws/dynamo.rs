//! [`ItemStore`] over one DynamoDB table.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    IndexStatus, KeySchemaElement, KeyType, KeysAndAttributes, Projection, ProjectionType, Put,
    PutRequest, ScalarAttributeType, TableStatus, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use base64::Engine;

use super::{build_error, dynamo_error};
use crate::backend::{
    attr, Condition, Index, Item, ItemStore, Page, PageKey, Query, SkRange, WriteOp, BATCH_CHUNK,
};
use crate::error::{Error, Result};

type AttrMap = HashMap<String, AttributeValue>;

/// The DynamoDB item store: one table, keys `PK`/`SK`, keys-only GSIs `GSI1K`..`GSI4K` keyed
/// `GSInPK`/`GSInSK` (a query reads the items it found with `BatchGetItem`), all attributes
/// strings. On a table created before those indexes, it reads the old ones (`GSI1`..`GSI4`, every
/// attribute copied) while the new one is missing or still filling (see
/// [`DynamoItemStore::migrate_indexes`]).
#[derive(Clone, Debug)]
pub struct DynamoItemStore {
    client: Client,
    table: String,
    /// Indexes found missing (or filling) under their new name, until when their old name is
    /// read without asking again.
    legacy: std::sync::Arc<std::sync::Mutex<HashMap<Index, std::time::Instant>>>,
}

/// How long an index found missing under its new name is read under its old one before the
/// new name is tried again (a migration may have added it meanwhile).
const LEGACY_RECHECK: Duration = Duration::from_secs(60);

/// Whether a query error says the index named is not there (or not readable yet): DynamoDB
/// answers `ValidationException` "The table does not have the specified index" for a missing
/// index and "Cannot read from backfilling global secondary index" while a new one fills;
/// LocalStack answers `ResourceNotFoundException` "Index not found" for a missing one.
fn index_unavailable<E: ProvideErrorMetadata>(err: &E) -> bool {
    let message = err.message().unwrap_or_default().to_ascii_lowercase();
    match err.code() {
        Some("ValidationException") => {
            message.contains("specified index") || message.contains("backfilling")
        }
        Some("ResourceNotFoundException") => message.contains("index"),
        _ => false,
    }
}

impl DynamoItemStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoItemStore {
            client,
            table: table.into(),
            legacy: Default::default(),
        }
    }

    /// Whether `index` is read under its old name now (found missing under its new name less
    /// than [`LEGACY_RECHECK`] ago).
    fn reads_legacy(&self, index: Index) -> bool {
        let mut legacy = self.legacy.lock().unwrap_or_else(|e| e.into_inner());
        match legacy.get(&index) {
            Some(until) if *until > std::time::Instant::now() => true,
            Some(_) => {
                legacy.remove(&index);
                false
            }
            None => false,
        }
    }

    fn unmark_legacy(&self, index: Index) {
        self.legacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index);
    }

    fn mark_legacy(&self, index: Index) {
        self.legacy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, std::time::Instant::now() + LEGACY_RECHECK);
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates the table with its four GSIs (on-demand capacity) unless it exists, then waits
    /// (bounded, about two minutes) until the table and its indexes are ACTIVE. True when this
    /// call created it.
    pub async fn create_table(&self) -> Result<bool> {
        let string_attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_error)
        };
        let mut req = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attr(attr::PK)?)
            .attribute_definitions(string_attr(attr::SK)?)
            .key_schema(key(attr::PK, KeyType::Hash)?)
            .key_schema(key(attr::SK, KeyType::Range)?);
        for index in Index::GSIS {
            req = req
                .attribute_definitions(string_attr(index.pk_attr())?)
                .attribute_definitions(string_attr(index.sk_attr())?)
                .global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(index.name())
                        .key_schema(key(index.pk_attr(), KeyType::Hash)?)
                        .key_schema(key(index.sk_attr(), KeyType::Range)?)
                        .projection(projection_of(index))
                        .build()
                        .map_err(build_error)?,
                );
        }
        let created = match req.send().await {
            Ok(_) => true,
            Err(e) if e.code() == Some("ResourceInUseException") => false,
            Err(e) => return Err(dynamo_error("CreateTable", e)),
        };
        self.wait_active().await?;
        Ok(created)
    }

    async fn wait_active(&self) -> Result<()> {
        let mut pause = Duration::from_millis(100);
        for _ in 0..80 {
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await;
            match out {
                Ok(out) => {
                    if let Some(t) = out.table() {
                        let indexes_active = t
                            .global_secondary_indexes()
                            .iter()
                            .all(|i| i.index_status() == Some(&IndexStatus::Active));
                        if t.table_status() == Some(&TableStatus::Active) && indexes_active {
                            return Ok(());
                        }
                    }
                }
                // Just created: eventually consistent control plane.
                Err(e) if e.code() == Some("ResourceNotFoundException") => {}
                Err(e) => return Err(dynamo_error("DescribeTable", e)),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        Err(Error::Unavailable(format!(
            "table {} did not become ACTIVE in time",
            self.table
        )))
    }

    /// One page of `query` from the table (`name` `None`) or the index of that name.
    async fn query_named(
        &self,
        query: &Query,
        name: Option<&str>,
    ) -> std::result::Result<Page<Item>, QueryError> {
        let index = query.index;
        let mut names = HashMap::from([("#pk".to_owned(), index.pk_attr().to_owned())]);
        let mut values = HashMap::from([(":pk".to_owned(), s(&query.pk))]);
        let sk_condition = match &query.sk {
            SkRange::All => None,
            SkRange::BeginsWith(p) => {
                values.insert(":a".to_owned(), s(p));
                Some("begins_with(#sk, :a)")
            }
            SkRange::Between(a, b) => {
                values.insert(":a".to_owned(), s(a));
                values.insert(":b".to_owned(), s(b));
                Some("#sk BETWEEN :a AND :b")
            }
            SkRange::Gte(a) => {
                values.insert(":a".to_owned(), s(a));
                Some("#sk >= :a")
            }
            SkRange::Lte(a) => {
                values.insert(":a".to_owned(), s(a));
                Some("#sk <= :a")
            }
        };
        let key_condition = match sk_condition {
            Some(c) => {
                names.insert("#sk".to_owned(), index.sk_attr().to_owned());
                format!("#pk = :pk AND {c}")
            }
            None => "#pk = :pk".to_owned(),
        };
        let mut req = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression(key_condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(query.forward)
            .limit(clamp_limit(query.limit))
            .set_exclusive_start_key(query.start.as_ref().map(page_key_to_map));
        match name {
            None => req = req.consistent_read(true),
            Some(name) => req = req.index_name(name),
        }
        let out = match req.send().await {
            Ok(out) => out,
            Err(e) if name.is_some() && e.as_service_error().is_some_and(index_unavailable) => {
                return Err(QueryError::IndexUnavailable)
            }
            Err(e) => return Err(QueryError::Other(dynamo_error("Query", e))),
        };
        let next = out.last_evaluated_key.as_ref().map(map_to_page_key);
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(map_to_item)
            .collect::<Result<Vec<_>>>()
            .map_err(QueryError::Other)?;
        Ok(Page { items, next })
    }

    /// The whole items a page of a keys-only index stands for, in its order (strongly
    /// consistent `BatchGetItem`s of up to 100 keys, together): an item gone since, or no longer
    /// in the partition read, is left out; each keeps the index sort key it was found under, so
    /// the page's positions (cursors) are those of the index.
    async fn whole_items(&self, query: &Query, page: Page<Item>) -> Result<Page<Item>> {
        let keys: Vec<(String, String)> = page
            .items
            .iter()
            .map(|i| (i.pk.clone(), i.sk.clone()))
            .collect();
        let reads = keys.chunks(100).map(|c| self.get_many(c));
        let found = futures::future::try_join_all(reads).await?;
        let (pk_attr, sk_attr) = (query.index.pk_attr(), query.index.sk_attr());
        let items = page
            .items
            .into_iter()
            .zip(found.into_iter().flatten())
            .filter_map(|(entry, item)| {
                let mut item = item?;
                if item.get(pk_attr) != Some(query.pk.as_str()) {
                    return None;
                }
                if let Some(sk) = entry.get(sk_attr) {
                    item.attrs.insert(sk_attr.to_owned(), sk.to_owned());
                }
                Some(item)
            })
            .collect();
        Ok(Page {
            items,
            next: page.next,
        })
    }

    /// Moves a table created before the keys-only indexes onto them, one index change at a
    /// time (DynamoDB allows one per `UpdateTable`, and only on an ACTIVE table): creates each
    /// missing `GSInK` and waits until it has filled from the existing items (same key
    /// attributes: no item is rewritten), then, unless `keep_old`, deletes each old `GSIn`.
    /// Resumable: every step starts from what `DescribeTable` shows, so running it again after
    /// an interruption continues; on a migrated table it changes nothing. Returns the steps
    /// taken (`"created GSI1K"`, `"deleted GSI1"`). Every query reads the new index as soon as
    /// it is ACTIVE and the old one until then; delete the old ones only once no process of an
    /// older build reads the table.
    pub async fn migrate_indexes(&self, keep_old: bool) -> Result<Vec<String>> {
        use aws_sdk_dynamodb::types::{
            CreateGlobalSecondaryIndexAction, DeleteGlobalSecondaryIndexAction,
            GlobalSecondaryIndexUpdate,
        };
        let mut steps = Vec::new();
        loop {
            // Every index ACTIVE first (a step of an interrupted run may still be under way).
            self.wait_active().await?;
            let out = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(|e| dynamo_error("DescribeTable", e))?;
            let present: Vec<String> = out
                .table()
                .map(|t| {
                    t.global_secondary_indexes()
                        .iter()
                        .filter_map(|i| i.index_name().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let has = |name: &str| present.iter().any(|p| p == name);
            let update = if let Some(index) = Index::GSIS.into_iter().find(|i| !has(i.name())) {
                steps.push(format!("created {}", index.name()));
                let key = |name: &str, kind: KeyType| {
                    KeySchemaElement::builder()
                        .attribute_name(name)
                        .key_type(kind)
                        .build()
                        .map_err(build_error)
                };
                let create = CreateGlobalSecondaryIndexAction::builder()
                    .index_name(index.name())
                    .key_schema(key(index.pk_attr(), KeyType::Hash)?)
                    .key_schema(key(index.sk_attr(), KeyType::Range)?)
                    .projection(projection_of(index))
                    .build()
                    .map_err(build_error)?;
                let string_attr = |name: &str| {
                    AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .map_err(build_error)
                };
                self.client
                    .update_table()
                    .table_name(&self.table)
                    .attribute_definitions(string_attr(index.pk_attr())?)
                    .attribute_definitions(string_attr(index.sk_attr())?)
                    .global_secondary_index_updates(
                        GlobalSecondaryIndexUpdate::builder().create(create).build(),
                    )
            } else if let Some(index) = Index::GSIS
                .into_iter()
                .find(|i| !keep_old && has(i.legacy_name()))
            {
                steps.push(format!("deleted {}", index.legacy_name()));
                let delete = DeleteGlobalSecondaryIndexAction::builder()
                    .index_name(index.legacy_name())
                    .build()
                    .map_err(build_error)?;
                self.client
                    .update_table()
                    .table_name(&self.table)
                    .global_secondary_index_updates(
                        GlobalSecondaryIndexUpdate::builder().delete(delete).build(),
                    )
            } else {
                return Ok(steps);
            };
            update
                .send()
                .await
                .map_err(|e| dynamo_error("UpdateTable", e))?;
            tracing::info!(table = %self.table, step = steps.last().map(String::as_str).unwrap_or_default(), "index migration step");
            // A new index is read as soon as it is ACTIVE: forget what was found missing.
            self.legacy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
    }

    /// Creates a table as this build did before the keys-only indexes (`GSI1`..`GSI4`, every
    /// attribute copied), for tests of [`Self::migrate_indexes`] and of reading such a table.
    #[doc(hidden)]
    pub async fn create_legacy_table(&self) -> Result<()> {
        let string_attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error)
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_error)
        };
        let mut req = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(string_attr(attr::PK)?)
            .attribute_definitions(string_attr(attr::SK)?)
            .key_schema(key(attr::PK, KeyType::Hash)?)
            .key_schema(key(attr::SK, KeyType::Range)?);
        for index in Index::GSIS {
            req = req
                .attribute_definitions(string_attr(index.pk_attr())?)
                .attribute_definitions(string_attr(index.sk_attr())?)
                .global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(index.legacy_name())
                        .key_schema(key(index.pk_attr(), KeyType::Hash)?)
                        .key_schema(key(index.sk_attr(), KeyType::Range)?)
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::All)
                                .build(),
                        )
                        .build()
                        .map_err(build_error)?,
                );
        }
        req.send()
            .await
            .map_err(|e| dynamo_error("CreateTable", e))?;
        self.wait_active().await
    }

    /// The names of the table's secondary indexes.
    pub async fn index_names(&self) -> Result<Vec<String>> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| dynamo_error("DescribeTable", e))?;
        Ok(out
            .table()
            .map(|t| {
                t.global_secondary_indexes()
                    .iter()
                    .filter_map(|i| i.index_name().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Deletes the table (a missing table is not an error).
    pub async fn delete_table(&self) -> Result<()> {
        match self
            .client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(dynamo_error("DeleteTable", e)),
        }
    }
}

/// What a GSI holds besides the keys: nothing (`KEYS_ONLY`) or its [`Index::projected`]
/// attributes (`INCLUDE`).
pub fn projection_of(index: Index) -> Projection {
    let extra = index.projected();
    if extra.is_empty() {
        Projection::builder()
            .projection_type(ProjectionType::KeysOnly)
            .build()
    } else {
        Projection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(extra.iter().map(|a| (*a).to_owned()).collect()))
            .build()
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn key_map(pk: &str, sk: &str) -> AttrMap {
    HashMap::from([(attr::PK.to_owned(), s(pk)), (attr::SK.to_owned(), s(sk))])
}

/// Attributes are strings, but binary attributes ([`attr::BINARY_PREFIX`]) holding base64 are
/// written as bytes, and number attributes ([`attr::NUMBER_PREFIX`]) holding an integer
/// are written as numbers (so counters stay addable after a plain put, e.g. a restore).
fn item_to_map(item: &Item) -> AttrMap {
    let mut map: AttrMap = item
        .attrs
        .iter()
        .map(|(k, v)| {
            let value = if k.starts_with(attr::NUMBER_PREFIX) && v.parse::<i64>().is_ok() {
                AttributeValue::N(v.clone())
            } else if let Some(bytes) = k
                .starts_with(attr::BINARY_PREFIX)
                .then(|| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .flatten()
            {
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(bytes))
            } else {
                s(v)
            };
            (k.clone(), value)
        })
        .collect();
    map.insert(attr::PK.to_owned(), s(&item.pk));
    map.insert(attr::SK.to_owned(), s(&item.sk));
    map
}

/// Converts a stored item back; numbers (counters of [`WriteOp::Add`]) become their decimal
/// text, binary attributes ([`attr::BINARY_PREFIX`]) their base64 text, other non-string
/// attributes are ignored.
fn map_to_item(mut map: AttrMap) -> Result<Item> {
    let mut take_key = |name: &str| match map.remove(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(Error::Internal(format!(
            "DynamoDB item without a string {name} attribute"
        ))),
    };
    let pk = take_key(attr::PK)?;
    let sk = take_key(attr::SK)?;
    let attrs = map
        .into_iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::S(v) | AttributeValue::N(v) => Some((k, v)),
            AttributeValue::B(b) => Some((
                k,
                base64::engine::general_purpose::STANDARD.encode(b.as_ref()),
            )),
            _ => None,
        })
        .collect();
    Ok(Item { pk, sk, attrs })
}

fn page_key_to_map(key: &PageKey) -> AttrMap {
    key.iter().map(|(k, v)| (k.clone(), s(v))).collect()
}

fn map_to_page_key(map: &AttrMap) -> PageKey {
    map.iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.clone(), v.clone())))
        .collect()
}

/// A condition expression with its names and values.
#[derive(Default)]
struct CondExpr {
    expression: Option<String>,
    names: Option<HashMap<String, String>>,
    values: Option<AttrMap>,
}

fn condition_expr(condition: &Condition) -> CondExpr {
    match condition {
        Condition::None => CondExpr::default(),
        Condition::NotExists => CondExpr {
            expression: Some(format!("attribute_not_exists({})", attr::PK)),
            ..CondExpr::default()
        },
        Condition::Exists => CondExpr {
            expression: Some(format!("attribute_exists({})", attr::PK)),
            ..CondExpr::default()
        },
        Condition::AttrEquals(name, value) => CondExpr {
            expression: Some("#a = :v".to_owned()),
            names: Some(HashMap::from([("#a".to_owned(), name.clone())])),
            values: Some(HashMap::from([(":v".to_owned(), s(value))])),
        },
    }
}

/// Builds the transaction items; returns them with, for each, its index in `ops`. `Check`
/// operations without a condition are skipped (DynamoDB requires a condition on a check).
fn transact_items(table: &str, ops: &[WriteOp]) -> Result<(Vec<TransactWriteItem>, Vec<usize>)> {
    let mut items = Vec::with_capacity(ops.len());
    let mut origin = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let item = match op {
            WriteOp::Put { item, condition } => {
                let c = condition_expr(condition);
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(table)
                            .set_item(Some(item_to_map(item)))
                            .set_condition_expression(c.expression)
                            .set_expression_attribute_names(c.names)
                            .set_expression_attribute_values(c.values)
                            .build()
                            .map_err(build_error)?,
                    )
                    .build()
            }
            WriteOp::Delete { pk, sk, condition } => {
                let c = condition_expr(condition);
                TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(table)
                            .set_key(Some(key_map(pk, sk)))
                            .set_condition_expression(c.expression)
                            .set_expression_attribute_names(c.names)
                            .set_expression_attribute_values(c.values)
                            .build()
                            .map_err(build_error)?,
                    )
                    .build()
            }
            WriteOp::Check { pk, sk, condition } => {
                let c = condition_expr(condition);
                if c.expression.is_none() {
                    continue;
                }
                TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(table)
                            .set_key(Some(key_map(pk, sk)))
                            .set_condition_expression(c.expression)
                            .set_expression_attribute_names(c.names)
                            .set_expression_attribute_values(c.values)
                            .build()
                            .map_err(build_error)?,
                    )
                    .build()
            }
            WriteOp::Add {
                pk,
                sk,
                add,
                set,
                remove,
            } => {
                op.check_numbers()?;
                TransactWriteItem::builder()
                    .update(update_of(table, pk, sk, add, set, remove)?)
                    .build()
            }
        };
        items.push(item);
        origin.push(i);
    }
    Ok((items, origin))
}

/// The `Update` of a [`WriteOp::Add`]: `SET #s0 = :s0, … ADD #a0 :a0, … REMOVE #r0, …`.
fn update_of(
    table: &str,
    pk: &str,
    sk: &str,
    add: &[(String, i64)],
    set: &[(String, String)],
    remove: &[String],
) -> Result<Update> {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut sets = Vec::new();
    for (i, (name, v)) in set.iter().enumerate() {
        names.insert(format!("#s{i}"), name.clone());
        values.insert(format!(":s{i}"), s(v));
        sets.push(format!("#s{i} = :s{i}"));
    }
    let mut adds = Vec::new();
    for (i, (name, n)) in add.iter().enumerate() {
        names.insert(format!("#a{i}"), name.clone());
        values.insert(format!(":a{i}"), AttributeValue::N(n.to_string()));
        adds.push(format!("#a{i} :a{i}"));
    }
    let mut expression = String::new();
    if !sets.is_empty() {
        expression.push_str(&format!("SET {}", sets.join(", ")));
    }
    if !adds.is_empty() {
        if !expression.is_empty() {
            expression.push(' ');
        }
        expression.push_str(&format!("ADD {}", adds.join(", ")));
    }
    let removes: Vec<String> = (0..remove.len()).map(|i| format!("#r{i}")).collect();
    for (i, name) in remove.iter().enumerate() {
        names.insert(format!("#r{i}"), name.clone());
    }
    if !removes.is_empty() {
        if !expression.is_empty() {
            expression.push(' ');
        }
        expression.push_str(&format!("REMOVE {}", removes.join(", ")));
    }
    Update::builder()
        .table_name(table)
        .set_key(Some(key_map(pk, sk)))
        .update_expression(expression)
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values((!values.is_empty()).then_some(values))
        .build()
        .map_err(build_error)
}

/// Interprets the cancellation reasons of a cancelled transaction. `origin[i]` is the index in
/// the caller's ops of the i-th item sent.
fn cancellation_error(reasons: &[Option<&str>], origin: &[usize], message: &str) -> Error {
    let failed: Vec<usize> = reasons
        .iter()
        .enumerate()
        .filter(|(_, code)| **code == Some("ConditionalCheckFailed"))
        .filter_map(|(i, _)| origin.get(i).copied())
        .collect();
    if !failed.is_empty() {
        return Error::ConditionFailed { ops: failed };
    }
    let transient = reasons.iter().flatten().any(|code| {
        matches!(
            *code,
            "TransactionConflict"
                | "ThrottlingError"
                | "ProvisionedThroughputExceeded"
                | "RequestLimitExceeded"
                | "ThrottlingException"
                | "ProvisionedThroughputExceededException"
        )
    });
    let codes: Vec<&str> = reasons.iter().map(|c| c.unwrap_or("?")).collect();
    let text = format!(
        "DynamoDB transaction cancelled ({}): {message}",
        codes.join(", ")
    );
    if transient {
        Error::Throttled(text)
    } else {
        Error::Unavailable(text)
    }
}

/// Why a query of a named index failed.
enum QueryError {
    /// The index is not there, or not readable yet: read its old name.
    IndexUnavailable,
    Other(Error),
}

impl QueryError {
    fn into_error(self) -> Error {
        match self {
            QueryError::IndexUnavailable => {
                Error::Unavailable("the table has neither the index nor its old name".into())
            }
            QueryError::Other(e) => e,
        }
    }
}

fn clamp_limit(limit: usize) -> i32 {
    limit.clamp(1, i32::MAX as usize) as i32
}

#[async_trait]
impl ItemStore for DynamoItemStore {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_map(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", e))?;
        out.item.map(map_to_item).transpose()
    }

    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Option<Item>>> {
        if keys.len() > 100 {
            return Err(Error::Internal(format!(
                "one BatchGetItem reads at most 100 items, not {}",
                keys.len()
            )));
        }
        let mut found: HashMap<(String, String), Item> = HashMap::with_capacity(keys.len());
        let mut pending: Vec<AttrMap> = keys.iter().map(|(pk, sk)| key_map(pk, sk)).collect();
        let mut round = 0u32;
        while !pending.is_empty() {
            if round > 0 {
                // DynamoDB left keys unprocessed (capacity): ask again after a short pause.
                tokio::time::sleep(Duration::from_millis(20 << round.min(6))).await;
            }
            round += 1;
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut pending)))
                .consistent_read(true)
                .build()
                .map_err(build_error)?;
            let out = self
                .client
                .batch_get_item()
                .request_items(self.table.clone(), request)
                .send()
                .await
                .map_err(|e| dynamo_error("BatchGetItem", e))?;
            for map in out
                .responses
                .unwrap_or_default()
                .remove(&self.table)
                .unwrap_or_default()
            {
                let item = map_to_item(map)?;
                found.insert((item.pk.clone(), item.sk.clone()), item);
            }
            if let Some(mut left) = out.unprocessed_keys {
                if let Some(k) = left.remove(&self.table) {
                    pending = k.keys;
                }
            }
            if round >= 10 && !pending.is_empty() {
                return Err(Error::Throttled(
                    "BatchGetItem left keys unprocessed ten times".into(),
                ));
            }
        }
        Ok(keys.iter().map(|k| found.remove(k)).collect())
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<()> {
        let (items, origin) = transact_items(&self.table, &ops)?;
        if items.is_empty() {
            return Ok(());
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
                    let reasons: Vec<Option<&str>> =
                        e.cancellation_reasons().iter().map(|r| r.code()).collect();
                    Err(cancellation_error(
                        &reasons,
                        &origin,
                        e.message().unwrap_or_default(),
                    ))
                }
                _ => Err(dynamo_error("TransactWriteItems", err)),
            },
        }
    }

    async fn query(&self, query: &Query) -> Result<Page<Item>> {
        let index = query.index;
        if index == Index::Table {
            return self
                .query_named(query, None)
                .await
                .map_err(QueryError::into_error);
        }
        // The new index, or the old one on a table not migrated yet (tried first while the
        // new one was found missing less than a minute ago).
        let names = if self.reads_legacy(index) {
            [index.legacy_name(), index.name()]
        } else {
            [index.name(), index.legacy_name()]
        };
        for name in names {
            let legacy = name == index.legacy_name();
            match self.query_named(query, Some(name)).await {
                // The old index copies every attribute: its items are whole.
                Ok(page) if legacy || query.keys_only => return Ok(page),
                Ok(page) => return self.whole_items(query, page).await,
                Err(QueryError::IndexUnavailable) if legacy => self.unmark_legacy(index),
                Err(QueryError::IndexUnavailable) => self.mark_legacy(index),
                Err(QueryError::Other(e)) => return Err(e),
            }
        }
        Err(QueryError::IndexUnavailable.into_error())
    }

    async fn batch_put(&self, items: Vec<Item>) -> Result<()> {
        crate::backend::put_all(self, items).await
    }

    async fn batch_put_once(&self, items: Vec<Item>) -> Result<Vec<Item>> {
        if items.len() > BATCH_CHUNK {
            return Err(Error::Internal(format!(
                "one BatchWriteItem takes at most {BATCH_CHUNK} items, not {}",
                items.len()
            )));
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // PutRequest's only required field is the item, which is set. `put_all` has already
        // split the items where a key repeats (DynamoDB refuses a key twice in one batch).
        let requests: Vec<WriteRequest> = items
            .iter()
            .filter_map(|item| {
                PutRequest::builder()
                    .set_item(Some(item_to_map(item)))
                    .build()
                    .ok()
            })
            .map(|put| WriteRequest::builder().put_request(put).build())
            .collect();
        let out = self
            .client
            .batch_write_item()
            .request_items(self.table.clone(), requests)
            .send()
            .await
            .map_err(|e| dynamo_error("BatchWriteItem", e))?;
        let mut unprocessed = out.unprocessed_items.unwrap_or_default();
        unprocessed
            .remove(&self.table)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|w| w.put_request.map(|p| map_to_item(p.item)))
            .collect()
    }

    async fn scan(&self, start: Option<PageKey>, limit: usize) -> Result<Page<Item>> {
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .limit(clamp_limit(limit))
            .consistent_read(true)
            .set_exclusive_start_key(start.as_ref().map(page_key_to_map))
            .send()
            .await
            .map_err(|e| dynamo_error("Scan", e))?;
        let next = out.last_evaluated_key.as_ref().map(map_to_page_key);
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(map_to_item)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, next })
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn cancellation_reasons_map_to_original_indexes() {
        // ops 0, 2, 3 sent (op 1 was a skipped unconditional check).
        let origin = [0, 2, 3];
        match cancellation_error(
            &[Some("None"), Some("ConditionalCheckFailed"), Some("None")],
            &origin,
            "",
        ) {
            Error::ConditionFailed { ops } => assert_eq!(ops, vec![2]),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            cancellation_error(&[Some("TransactionConflict"), None, None], &origin, ""),
            Error::Throttled(_)
        ));
        assert!(matches!(
            cancellation_error(&[Some("ValidationError")], &origin, ""),
            Error::Unavailable(_)
        ));
    }

    #[test]
    fn items_convert_both_ways() {
        let item = Item::new("PK1", "SK1")
            .with("data", "{}")
            .with("GSI1PK", "x");
        let mut map = item_to_map(&item);
        assert_eq!(map_to_item(map.clone()).unwrap(), item);
        // Counters (numbers) read back as their text; other types are ignored.
        map.insert("n".to_owned(), AttributeValue::N("12".to_owned()));
        map.insert("b".to_owned(), AttributeValue::Bool(true));
        assert_eq!(map_to_item(map).unwrap(), item.clone().with("n", "12"));
        // Number attributes are written as numbers when they hold an integer.
        let counter = item.with("n_programs", "3").with("n_note", "x");
        let map = item_to_map(&counter);
        assert_eq!(map["n_programs"], AttributeValue::N("3".into()));
        assert_eq!(map["n_note"], AttributeValue::S("x".into()));
        assert_eq!(map_to_item(map).unwrap(), counter.clone());
        // Binary attributes are written as bytes and read back as their base64 text.
        let blob = counter
            .with("b_x", "AAEC/w==")
            .with("b_text", "not base64!");
        let map = item_to_map(&blob);
        assert_eq!(
            map["b_x"],
            AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(vec![
                0u8, 1, 2, 255
            ]))
        );
        assert_eq!(map["b_text"], AttributeValue::S("not base64!".into()));
        assert_eq!(map_to_item(map).unwrap(), blob);
    }
}
