//! [`CheckpointStore`] and [`AuditStore`] in the daemon's own DynamoDB tables.
//!
//! # Tables (created by [`DynamoStore::init`], on-demand billing)
//!
//! **streams** (`TableNames::streams`) — one row per (audited table, stream):
//! `table_name` (S, partition key), `stream_arn` (S, sort key),
//! `is_enabled` (BOOL), `drained` (BOOL), `updated_at` (S, RFC 3339).
//!
//! **shards** (`TableNames::shards`) — one row per (stream, shard):
//! `stream_arn` (S, partition key), `shard_id` (S, sort key), `table_name` (S),
//! `parent_shard_id` (S, absent for a root shard), `sequence_no` (S, the last
//! sequence number durably written), `sequence_key` (S, `sequence_no`
//! zero-padded to 40 digits, so a condition can compare positions as text),
//! `status` (S: `open` | `closed` | `drained`), `last_record_time` (S),
//! `updated_at` (S). Reserved for leases between replicas (not written yet):
//! `lease_owner` (S), `lease_expires_at` (N, epoch milliseconds),
//! `lease_counter` (N). Rows are written with UpdateItem touching only the
//! attributes above, so those lease attributes will survive checkpoints.
//!
//! **audit** (`TableNames::audit`) — `pk` (S, partition key), `sk` (S, sort key):
//! - an entry: `pk` = [`item_partition_key`], `sk` = [`entry_sort_key`]
//!   (`<stream label>#<sequence number, 40 digits>`), the entry's JSON as
//!   `entry_z` (B, raw deflate) or, when the item fits 1 KB as it is or
//!   deflating saves nothing, `entry` (S);
//!   `event`, `shard_id`, `stream_arn`, `sequence_number`, the index keys
//!   (`ts`, `ix_table`, `ix_actor`, `ix_corr`), the chain link (`hash`,
//!   `prev_hash`), `expires_at` with `[retention]`, and `item_key` (S, the
//!   canonical key JSON) when the key was too long to sit in `pk` itself.
//!   A SNAPSHOT entry adds its place in its run's segment chain:
//!   `chain_shard` (S, `segment-00003`) and `chain_position` (S, 1, 2, …).
//!   Entries written by earlier versions have `entry` (S) and also
//!   `table_name`, `actor`, `event_time` and `written_at`.
//! - an entry too big for one item: parts first, each `sk` =
//!   `<entry sk>#part#<16 hex digits of the JSON's FNV-1a>#<0001..>` with
//!   `chunk` (S), `part` (N), `parts` (N); then the head (`sk` = the entry's
//!   `sk`, the attributes above without `entry`, plus `parts` (N),
//!   `parts_hash` (S) and `entry_bytes` (N)). The head is written last, so its
//!   presence means every part is there. A part's `sk` extends its head's, so
//!   an ascending Query still lists heads in stream order, each followed by
//!   its parts. The content hash in the part `sk` keeps a re-delivery whose
//!   JSON differs (say, after an upgrade) from mixing its parts with those of
//!   an earlier, interrupted attempt.
//! - a gap: `pk` = `#gaps` (no table name contains `#`), `sk` = [`gap_sort_key`]
//!   (table, stream, shard and the sequence number it follows: the same gap
//!   detected twice, e.g. after a crash, is written once), `gap` (S, JSON),
//!   `table_name`, `stream_arn`, `shard_id`, `detected_at`.
//!
//! - an attribution record (CloudTrail, see `attribution::dynamo`): the
//!   entry's `pk`, `sk` = `<entry sk>#attribution`, `attribution` (S, JSON);
//!   `history` merges it into its entry.
//!
//! Entries, gaps and attributions are written once (`attribute_not_exists(pk)`)
//! and never updated or deleted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as DAttr, BillingMode, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, KeysAndAttributes,
    Projection, ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification,
    TimeToLiveStatus,
};
use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::aws::{classify, Classified, ErrorKind};
use crate::entry::{AuditEntry, Gap};
use crate::store::{
    index_attrs, AuditStore, CheckpointStore, HistoryPage, Index, IndexHit, IndexPage, Position,
    PutOutcome, ReadCost, ReadStore, ScanPage, SegmentProgress, ShardCheckpoint, ShardStatus,
    SnapshotRun, SnapshotStore, SourceInfo, StoreError, StoreResult, StreamRow, TableHealthRow,
    TableNames, TsRange, TIME_ATTRIBUTE,
};
use crate::stream::stream_label;
use crate::value::{canonical_key_json, fnv1a64};
use crate::value::{AttrValue, Item};

pub mod proof;

/// An entry JSON longer than this is split across several items. DynamoDB's
/// limit is 400 KB per item, names and keys included; the margin covers the
/// keys (up to ~1 KB here) and the index attributes.
pub const INLINE_ENTRY_LIMIT: usize = 350_000;
/// The partition key of every gap.
pub const GAPS_PK: &str = "#gaps";
/// Canonical key JSON longer than this is replaced in `pk` by its hash
/// (DynamoDB allows 2,048 bytes of partition key; a table's own key may be
/// 2,048 + 1,024 bytes).
const MAX_INLINE_KEY: usize = 1024;
/// The streams-table row (sort key) where a table's state is kept; a stream
/// ARN never starts with `#`.
const HEALTH_SORT_KEY: &str = "#health";

/// The shards table's TTL attribute (epoch seconds), set on drained rows.
pub const SHARD_TTL_ATTRIBUTE: &str = "expires_at";
/// How long a drained shard's row is kept at most. A row must outlive its
/// shard's listing and its children's (a restart would otherwise take a
/// listed shard for new, or a child's parent for unseen). Shards are listed
/// for about 48 h (open ~4–24 h, then retained 24 h), but nothing bounds how
/// long a shard stays open, so this is only the backstop: the daemon
/// shortens it to [`RELEASED_SHARD_ROW_TTL`] once no listed shard needs the
/// row (`CheckpointStore::release_shard`).
pub const DRAINED_SHARD_ROW_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a drained row is kept once the stream neither lists its shard
/// nor names it as a parent: a day, against a listing that briefly omits a
/// shard. What a stream start loads is then what the stream lists plus a
/// day of rotations, whatever the table's age.
pub const RELEASED_SHARD_ROW_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long `init` waits for new indexes to be backfilled.
const INDEX_ACTIVE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// How long `init` waits for a new table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Both stores in DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    names: TableNames,
    /// Shared by clones: what the read side's calls cost.
    counters: Arc<ReadCounters>,
    /// `[retention] days`: entries carry `expires_at` (TTL) when set.
    retention_days: Option<u64>,
}

#[derive(Debug, Default)]
struct ReadCounters {
    query_calls: AtomicU64,
    batch_get_calls: AtomicU64,
    items_read: AtomicU64,
}

/// What [`DynamoStore::init`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    pub created: Vec<String>,
    pub existed: Vec<String>,
    /// Indexes added to an existing audit table.
    pub indexes_added: Vec<String>,
}

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, names: TableNames) -> Self {
        DynamoStore {
            client,
            names,
            counters: Arc::default(),
            retention_days: None,
        }
    }

    /// Entries written from now on expire `days` after they were written.
    pub fn with_retention(mut self, days: Option<u64>) -> Self {
        self.retention_days = days;
        self
    }

    pub fn from_config(config: &SdkConfig, names: TableNames) -> Self {
        DynamoStore::new(crate::aws::dynamodb_client(config), names)
    }

    pub fn names(&self) -> &TableNames {
        &self.names
    }

    /// For adapters of the same tables in other modules (`attribution`).
    pub fn client(&self) -> &aws_sdk_dynamodb::Client {
        &self.client
    }

    /// Create the three tables unless they exist, and wait until all are
    /// ACTIVE. Safe to run any number of times, also concurrently. An existing
    /// table with a different key schema is an error (it is someone else's).
    /// Returns `Ok(None)` when `cancel` fired before every table was ACTIVE.
    pub async fn init(&self, cancel: &CancellationToken) -> StoreResult<Option<InitReport>> {
        let specs = [
            (&self.names.streams, "table_name", "stream_arn"),
            (&self.names.shards, "stream_arn", "shard_id"),
            (&self.names.audit, "pk", "sk"),
        ];
        let mut report = InitReport::default();
        for (table, hash, range) in specs {
            if self.ensure_table(table, hash, range).await? {
                tracing::info!(table = %table, "created table");
                report.created.push(table.clone());
            } else {
                tracing::info!(table = %table, "table already exists");
                report.existed.push(table.clone());
            }
        }
        for (table, _, _) in specs {
            if !self.wait_active(table, cancel).await? {
                return Ok(None);
            }
        }
        match self.ensure_indexes(cancel).await? {
            Some(added) => report.indexes_added = added,
            None => return Ok(None),
        }
        self.ensure_ttl(&self.names.shards, SHARD_TTL_ATTRIBUTE)
            .await?;
        Ok(Some(report))
    }

    /// Turns on DynamoDB's TTL on `attribute` unless it is on already.
    async fn ensure_ttl(&self, table: &str, attribute: &str) -> StoreResult<()> {
        let current = self
            .client
            .describe_time_to_live()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        let on = current.time_to_live_description().is_some_and(|d| {
            d.attribute_name() == Some(attribute)
                && matches!(
                    d.time_to_live_status(),
                    Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
                )
        });
        if on {
            return Ok(());
        }
        let spec = TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name(attribute)
            .build()
            .map_err(|e| {
                StoreError::Other(format!("building UpdateTimeToLive for {table}: {e}"))
            })?;
        self.client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(spec)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        tracing::info!(table = %table, attribute, "enabled TTL");
        Ok(())
    }

    /// Adds the read side's indexes to an audit table that lacks them (one
    /// UpdateTable per index: DynamoDB builds one at a time per table), and
    /// waits for each to be ACTIVE. Entries written before an index existed
    /// lack its attributes and stay out of it; `history`, `show`, `diff` and
    /// `revert` read the item partition and see them all.
    /// `None` when `cancel` fired first.
    async fn ensure_indexes(&self, cancel: &CancellationToken) -> StoreResult<Option<Vec<String>>> {
        let table = &self.names.audit;
        let mut added = Vec::new();
        for index in Index::ALL {
            let existing = self.index_statuses().await?;
            if existing.iter().any(|(name, _)| name == index.name()) {
                continue;
            }
            let mut keyed: Vec<Index> = Index::ALL
                .into_iter()
                .filter(|i| existing.iter().any(|(name, _)| name == i.name()))
                .collect();
            keyed.push(index);
            let result = self
                .client
                .update_table()
                .table_name(table)
                .set_attribute_definitions(Some(audit_attribute_definitions(&keyed)?))
                .global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder()
                        .create(
                            aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
                                .index_name(index.name())
                                .set_key_schema(Some(index_key_schema(index)?))
                                .projection(index_projection())
                                .build()
                                .map_err(|e| build_error(table, e))?,
                        )
                        .build(),
                )
                .send()
                .await;
            match result {
                Ok(_) => {
                    tracing::info!(table = %table, index = index.name(), "adding index");
                    added.push(index.name().to_string());
                }
                Err(e) => {
                    let c = classify(&e);
                    // Another `init` is adding it (or another index) right now.
                    if c.kind != ErrorKind::ResourceInUse {
                        return Err(store_error(c, table));
                    }
                }
            }
            if !self.wait_indexes_active(cancel).await? {
                return Ok(None);
            }
        }
        if !self.wait_indexes_active(cancel).await? {
            return Ok(None);
        }
        Ok(Some(added))
    }

    async fn index_statuses(&self) -> StoreResult<Vec<(String, Option<IndexStatus>)>> {
        let table = &self.names.audit;
        let out = self
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        Ok(out
            .table()
            .map(|t| {
                t.global_secondary_indexes()
                    .iter()
                    .map(|g| {
                        (
                            g.index_name().unwrap_or_default().to_string(),
                            g.index_status().cloned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Backfilling an index of a big table can take long: wait as long as
    /// it takes (a day at most), saying so now and then. False when
    /// cancelled first.
    async fn wait_indexes_active(&self, cancel: &CancellationToken) -> StoreResult<bool> {
        let table = &self.names.audit;
        let what = format!("waiting for the indexes of {table} to become ACTIVE");
        let ready = super::wait_until_ready(&what, INDEX_ACTIVE_TIMEOUT, cancel, || async {
            let pending: Vec<String> = self
                .index_statuses()
                .await?
                .into_iter()
                .filter(|(_, st)| st.as_ref().is_some_and(|s| *s != IndexStatus::Active))
                .map(|(name, _)| name)
                .collect();
            if !pending.is_empty() {
                tracing::debug!(table = %table, indexes = ?pending, "indexes not yet ACTIVE");
            }
            Ok(pending.is_empty())
        })
        .await?;
        Ok(ready && self.wait_active(table, cancel).await?)
    }

    /// For `run` without `init` (tables made by CloudFormation or by hand):
    /// checks that the three tables exist, are ACTIVE, and have the keys
    /// ddb-audit writes. Every problem is reported at once, each naming the
    /// table, what is wrong and the fix.
    pub async fn check_tables(&self) -> StoreResult<()> {
        let specs = [
            (
                &self.names.streams,
                "table_name",
                "stream_arn",
                "storage.streams_table",
            ),
            (
                &self.names.shards,
                "stream_arn",
                "shard_id",
                "storage.shards_table",
            ),
            (&self.names.audit, "pk", "sk", "storage.audit_table"),
        ];
        let mut problems = Vec::new();
        for (table, hash, range, key) in specs {
            match self.client.describe_table().table_name(table).send().await {
                Ok(out) => {
                    let Some(t) = out.table() else {
                        problems.push(format!(
                            "table {table}: DescribeTable returned no description"
                        ));
                        continue;
                    };
                    let keys: Vec<(String, String)> = t
                        .key_schema()
                        .iter()
                        .map(|k| {
                            (
                                k.attribute_name().to_string(),
                                k.key_type().as_str().to_string(),
                            )
                        })
                        .collect();
                    let types: Vec<(String, String)> = t
                        .attribute_definitions()
                        .iter()
                        .map(|d| {
                            (
                                d.attribute_name().to_string(),
                                d.attribute_type().as_str().to_string(),
                            )
                        })
                        .collect();
                    let status = t.table_status().map(|s| s.as_str().to_string());
                    if table == &self.names.audit {
                        // Auditing works without them; `query` does not.
                        let missing: Vec<&str> = Index::ALL
                            .iter()
                            .map(|i| i.name())
                            .filter(|n| {
                                !t.global_secondary_indexes()
                                    .iter()
                                    .any(|g| g.index_name() == Some(*n))
                            })
                            .collect();
                        if !missing.is_empty() {
                            tracing::warn!(table = %table, missing = ?missing,
                                "the audit table lacks the read side's indexes: `query` cannot use them \
                                 until `ddb-audit init` (with UpdateTable rights) or a stack update adds them");
                        }
                    }
                    problems.extend(schema_problems(
                        table,
                        key,
                        hash,
                        range,
                        &keys,
                        &types,
                        status.as_deref(),
                    ));
                }
                Err(e) => {
                    let c = classify(&e);
                    match c.kind {
                        ErrorKind::NotFound => problems.push(format!(
                            "table {table} (`{key}`) does not exist: run `ddb-audit init`, deploy \
                             infra/cloudformation/ddb-audit.yaml, or set `{key}` to the table's name"
                        )),
                        _ => return Err(store_error(c, table)),
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Other(format!(
                "ddb-audit's own tables are not usable:\n  {}",
                problems.join("\n  ")
            )))
        }
    }

    /// True when this call created the table.
    async fn ensure_table(&self, table: &str, hash: &str, range: &str) -> StoreResult<bool> {
        match self.client.describe_table().table_name(table).send().await {
            Ok(out) => {
                let schema: Vec<(String, String)> = out
                    .table()
                    .map(|t| {
                        t.key_schema()
                            .iter()
                            .map(|k| {
                                (
                                    k.attribute_name().to_string(),
                                    k.key_type().as_str().to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let named = |kind: &str| {
                    schema
                        .iter()
                        .find(|(_, k)| k == kind)
                        .map(|(name, _)| name.as_str())
                };
                let matches = schema.len() == 2
                    && named("HASH") == Some(hash)
                    && named("RANGE") == Some(range);
                if !matches {
                    return Err(StoreError::Other(format!(
                        "table {table} exists with key schema {schema:?}, but ddb-audit needs \
                         {hash} (HASH) + {range} (RANGE); configure another table name"
                    )));
                }
                return Ok(false);
            }
            Err(e) => {
                let c = classify(&e);
                if c.kind != ErrorKind::NotFound {
                    return Err(store_error(c, table));
                }
            }
        }
        let built = (|| {
            Ok::<_, aws_sdk_dynamodb::error::BuildError>((
                AttributeDefinition::builder()
                    .attribute_name(hash)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
                AttributeDefinition::builder()
                    .attribute_name(range)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
                KeySchemaElement::builder()
                    .attribute_name(hash)
                    .key_type(KeyType::Hash)
                    .build()?,
                KeySchemaElement::builder()
                    .attribute_name(range)
                    .key_type(KeyType::Range)
                    .build()?,
            ))
        })()
        .map_err(|e| StoreError::Other(format!("building CreateTable for {table}: {e}")))?;
        let (def_hash, def_range, key_hash, key_range) = built;
        let mut call = self
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key_hash)
            .key_schema(key_range);
        if table == self.names.audit {
            call = call.set_attribute_definitions(Some(audit_attribute_definitions(&Index::ALL)?));
            for index in Index::ALL {
                call = call.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(index.name())
                        .set_key_schema(Some(index_key_schema(index)?))
                        .projection(index_projection())
                        .build()
                        .map_err(|e| build_error(table, e))?,
                );
            }
        } else {
            call = call
                .attribute_definitions(def_hash)
                .attribute_definitions(def_range);
        }
        let created = call.send().await;
        match created {
            Ok(_) => Ok(true),
            Err(e) => {
                let c = classify(&e);
                // Another `init` won the race: the table exists, which is all we want.
                if c.kind == ErrorKind::ResourceInUse {
                    Ok(false)
                } else {
                    Err(store_error(c, table))
                }
            }
        }
    }

    /// False when cancelled first.
    async fn wait_active(&self, table: &str, cancel: &CancellationToken) -> StoreResult<bool> {
        let what = format!("waiting for table {table} to become ACTIVE");
        super::wait_until_ready(&what, ACTIVE_TIMEOUT, cancel, || async {
            let out = self
                .client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|e| sdk_store_error(&e, table))?;
            let status = out.table().and_then(|t| t.table_status());
            tracing::debug!(table = %table, status = ?status.map(|s| s.as_str()), "table status");
            Ok(matches!(status, Some(TableStatus::Active)))
        })
        .await
    }

    /// A write-once PutItem: `AlreadyPresent` when the key is taken.
    async fn put_once(&self, item: HashMap<String, DAttr>) -> StoreResult<PutOutcome> {
        let table = &self.names.audit;
        let result = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) => {
                let c = classify(&e);
                if c.kind == ErrorKind::ConditionFailed {
                    Ok(PutOutcome::AlreadyPresent)
                } else {
                    Err(store_error(c, table))
                }
            }
        }
    }

    async fn head_exists(&self, pk: &str, sk: &str) -> StoreResult<bool> {
        let table = &self.names.audit;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        Ok(out.item().is_some())
    }

    /// Every item of one partition (`key_name = value`), all pages,
    /// ascending by sort key, strongly consistent.
    async fn query_all(
        &self,
        table: &str,
        key_name: &str,
        value: &str,
    ) -> StoreResult<Vec<HashMap<String, DAttr>>> {
        self.client
            .query()
            .table_name(table)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", key_name)
            .expression_attribute_values(":v", s(value))
            .consistent_read(true)
            .scan_index_forward(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_store_error(&e, table))
    }

    /// Every item of one audit partition, ascending by `sk`.
    async fn query_partition(&self, pk: &str) -> StoreResult<Vec<HashMap<String, DAttr>>> {
        self.query_all(&self.names.audit, "pk", pk).await
    }
}

impl AuditStore for DynamoStore {
    async fn put_entry(&self, entry: &AuditEntry) -> StoreResult<PutOutcome> {
        self.put_entry_with(entry, None, Vec::new()).await
    }

    async fn put_linked_entry(
        &self,
        entry: &AuditEntry,
        link: &crate::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.put_entry_with(entry, Some(link), Vec::new()).await
    }

    async fn put_linked_gap(
        &self,
        gap: &Gap,
        link: &crate::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.put_gap_with(gap, Some(link)).await
    }

    async fn gap_link(&self, gap: &Gap) -> StoreResult<Option<crate::proof::Link>> {
        let table = &self.names.audit;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", s(GAPS_PK))
            .key("sk", s(gap_sort_key(gap)))
            .projection_expression("#h, prev_hash")
            .expression_attribute_names("#h", "hash")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let parse = |name: &str| get_s(item, name).and_then(crate::proof::chain::parse_hash);
        Ok(parse("hash").map(|hash| crate::proof::Link {
            prev_hash: parse("prev_hash"),
            hash,
        }))
    }

    async fn history(&self, table: &str, key: &Item) -> StoreResult<Vec<AuditEntry>> {
        self.history_items(table, key).await
    }

    async fn put_gap(&self, gap: &Gap) -> StoreResult<PutOutcome> {
        self.put_gap_with(gap, None).await
    }

    async fn gaps(&self) -> StoreResult<Vec<Gap>> {
        self.gap_items().await
    }
}

/// The chain link's attributes on an entry's (or gap's) item.
fn insert_link(item: &mut HashMap<String, DAttr>, link: Option<&crate::proof::Link>) {
    if let Some(link) = link {
        item.insert("hash".into(), s(hex::encode(link.hash)));
        if let Some(prev) = &link.prev_hash {
            item.insert("prev_hash".into(), s(hex::encode(prev)));
        }
    }
}

impl DynamoStore {
    async fn put_entry_with(
        &self,
        entry: &AuditEntry,
        link: Option<&crate::proof::Link>,
        extra: Vec<(&'static str, DAttr)>,
    ) -> StoreResult<PutOutcome> {
        let expires = self.expires_at();
        let mut items = entry_items(entry, link, expires.as_ref())?;
        items
            .head
            .extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        if items.parts.is_empty() {
            return self.put_once(items.head).await;
        }
        // Oversize: a re-delivery of a complete entry costs one read, not a
        // rewrite of every part.
        if self.head_exists(&items.pk, &items.sk).await? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        tracing::info!(
            table = %entry.table, stream = %entry.stream_arn, shard = %entry.shard_id,
            sequence = %entry.sequence_number, bytes = items.json_bytes, parts = items.parts.len(),
            "storing an oversize entry in parts"
        );
        for part in items.parts {
            // A part already there is from an interrupted earlier attempt with
            // the same content (the hash is in its key): fine.
            self.put_once(part).await?;
        }
        self.put_once(items.head).await
    }

    /// Loads entries into an audit table with BatchWriteItem, 25 a call:
    /// the same items `put_linked_entry` writes, but unconditionally, so
    /// NOT write-once. For filling a benchmark's or a test's empty table fast
    /// (`benches/read_trail.rs`); the daemon never calls it, and the shipped
    /// policies deny BatchWriteItem on the audit table to every role. Inline
    /// entries only (an oversize one is refused).
    #[doc(hidden)]
    pub async fn bulk_load_unchecked(
        &self,
        entries: &[(AuditEntry, Option<crate::proof::Link>)],
    ) -> StoreResult<()> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let table = &self.names.audit;
        let expires = self.expires_at();
        for batch in entries.chunks(25) {
            let mut requests = Vec::with_capacity(batch.len());
            for (entry, link) in batch {
                let items = entry_items(entry, link.as_ref(), expires.as_ref())?;
                if !items.parts.is_empty() {
                    return Err(StoreError::Other(format!(
                        "bulk load: the entry {} {} is oversize",
                        entry.table, entry.sequence_number
                    )));
                }
                let put = PutRequest::builder()
                    .set_item(Some(items.head))
                    .build()
                    .map_err(|e| build_error(table, e))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            let mut pending = Some(requests);
            let mut attempt = 0u32;
            while let Some(requests) = pending.take().filter(|r| !r.is_empty()) {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(table.clone(), requests)
                    .send()
                    .await
                    .map_err(|e| sdk_store_error(&e, table))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(table.as_str()));
                if pending.as_ref().is_some_and(|p| !p.is_empty()) {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt.min(50))))
                        .await;
                }
            }
        }
        Ok(())
    }

    async fn history_items(&self, table: &str, key: &Item) -> StoreResult<Vec<AuditEntry>> {
        let canonical = canonical_key_json(key);
        let pk = partition_key_from(table, &canonical);
        let hashed = pk_is_hashed(&pk);
        let items = self.query_partition(&pk).await?;

        let mut chunks: HashMap<&str, &str> = HashMap::new();
        for item in &items {
            if let (Some(sk), Some(chunk)) = (get_s(item, "sk"), get_s(item, "chunk")) {
                chunks.insert(sk, chunk);
            }
        }
        // Attribution records (CloudTrail) sort after their entries; merged
        // into them below.
        let mut attributions: HashMap<&str, crate::entry::Principal> = HashMap::new();
        for item in &items {
            let sk = get_s(item, "sk").unwrap_or_default();
            if let Some(json) = get_s(item, "attribution") {
                let record: crate::store::attribution::AttributionRecord =
                    serde_json::from_str(json).map_err(|e| {
                        StoreError::Corrupt(format!("{pk} {sk}: attribution record: {e}"))
                    })?;
                if let Some(entry_sk) =
                    sk.strip_suffix(crate::store::attribution::ATTRIBUTION_SUFFIX)
                {
                    attributions.insert(entry_sk, record.principal);
                }
            }
        }
        let mut entries = Vec::new();
        for item in &items {
            let sk = get_s(item, "sk").unwrap_or_default();
            if item.contains_key("chunk") || item.contains_key("attribution") {
                continue;
            }
            // A hashed pk may (in theory) be shared by two keys.
            if hashed && get_s(item, "item_key") != Some(canonical.as_str()) {
                continue;
            }
            let json = match (inline_entry_json(item)?, get_n(item, "parts")) {
                (Some(json), _) => json.into_owned(),
                (None, Some(parts)) => reassemble(item, sk, parts, &chunks)
                    .map_err(|m| StoreError::Corrupt(format!("{pk} {sk}: {m}")))?,
                (None, None) => {
                    return Err(StoreError::Corrupt(format!(
                        "{pk} {sk}: audit item has neither `entry` nor `parts`"
                    )))
                }
            };
            let mut entry =
                decode_entry(&json).map_err(|e| StoreError::Corrupt(format!("{pk} {sk}: {e}")))?;
            entry.stream_arn = get_s(item, "stream_arn").unwrap_or_default().to_string();
            if let Some(principal) = attributions.get(sk) {
                crate::store::attribution::apply(&mut entry, principal);
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn put_gap_with(
        &self,
        gap: &Gap,
        link: Option<&crate::proof::Link>,
    ) -> StoreResult<PutOutcome> {
        let json = serde_json::to_string(gap)
            .map_err(|e| StoreError::Other(format!("encoding gap: {e}")))?;
        let mut item = HashMap::from([
            ("pk".to_string(), s(GAPS_PK)),
            ("sk".to_string(), s(gap_sort_key(gap))),
            ("gap".to_string(), s(&json)),
            ("table_name".to_string(), s(&gap.table)),
            ("stream_arn".to_string(), s(&gap.stream_arn)),
            ("shard_id".to_string(), s(&gap.shard_id)),
            ("detected_at".to_string(), s(&gap.detected_at)),
        ]);
        insert_link(&mut item, link);
        self.put_once(item).await
    }

    async fn gap_items(&self) -> StoreResult<Vec<Gap>> {
        let items = self.query_partition(GAPS_PK).await?;
        let mut gaps = items
            .iter()
            .map(|item| {
                let sk = get_s(item, "sk").unwrap_or_default();
                let json = get_s(item, "gap").ok_or_else(|| {
                    StoreError::Corrupt(format!("{GAPS_PK} {sk}: gap item has no `gap`"))
                })?;
                serde_json::from_str::<Gap>(json)
                    .map_err(|e| StoreError::Corrupt(format!("{GAPS_PK} {sk}: {e}")))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Oldest first, as people read a list of incidents.
        gaps.sort_by(|a, b| {
            a.detected_at
                .cmp(&b.detected_at)
                .then_with(|| gap_sort_key(a).cmp(&gap_sort_key(b)))
        });
        Ok(gaps)
    }
}

impl DynamoStore {
    /// The parts of an oversize entry, read with one Query on its sort-key prefix.
    async fn parts_of(&self, pk: &str, head_sk: &str) -> StoreResult<HashMap<String, String>> {
        let table = &self.names.audit;
        let items: Vec<HashMap<String, DAttr>> = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(format!("{head_sk}#part#")))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        self.count(1, 0, items.len());
        Ok(items
            .iter()
            .filter_map(|i| Some((get_s(i, "sk")?.to_string(), get_s(i, "chunk")?.to_string())))
            .collect())
    }

    /// An audit head item as its entry (reassembling an oversize one).
    async fn decode_head(&self, item: &HashMap<String, DAttr>) -> StoreResult<AuditEntry> {
        let pk = get_s(item, "pk").unwrap_or_default();
        let sk = get_s(item, "sk").unwrap_or_default();
        let json = match (inline_entry_json(item)?, get_n(item, "parts")) {
            (Some(json), _) => json.into_owned(),
            (None, Some(parts)) => {
                let owned = self.parts_of(pk, sk).await?;
                let chunks: HashMap<&str, &str> = owned
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                reassemble(item, sk, parts, &chunks)
                    .map_err(|m| StoreError::Corrupt(format!("{pk} {sk}: {m}")))?
            }
            (None, None) => {
                return Err(StoreError::Corrupt(format!(
                    "{pk} {sk}: audit item has neither `entry` nor `parts`"
                )))
            }
        };
        let mut entry =
            decode_entry(&json).map_err(|e| StoreError::Corrupt(format!("{pk} {sk}: {e}")))?;
        entry.stream_arn = get_s(item, "stream_arn").unwrap_or_default().to_string();
        Ok(entry)
    }

    /// The CloudTrail attribution record of one entry, if any.
    async fn attribution_of(
        &self,
        pk: &str,
        head_sk: &str,
    ) -> StoreResult<Option<HashMap<String, DAttr>>> {
        let table = &self.names.audit;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", s(pk))
            .key(
                "sk",
                s(crate::store::attribution::attribution_sort_key(head_sk)),
            )
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        self.count(0, 0, usize::from(out.item().is_some()));
        Ok(out.item().cloned())
    }

    fn count(&self, queries: u64, batch_gets: u64, items: usize) {
        self.counters
            .query_calls
            .fetch_add(queries, Ordering::Relaxed);
        self.counters
            .batch_get_calls
            .fetch_add(batch_gets, Ordering::Relaxed);
        self.counters
            .items_read
            .fetch_add(items as u64, Ordering::Relaxed);
    }
}

impl ReadStore for DynamoStore {
    async fn index_page(
        &self,
        index: Index,
        partition: &str,
        range: &TsRange,
        descending: bool,
        after: Option<&Position>,
        limit: usize,
    ) -> StoreResult<IndexPage> {
        let table = &self.names.audit;
        let mut condition = "#p = :p".to_string();
        let mut call = self
            .client
            .query()
            .table_name(table)
            .index_name(index.name())
            .expression_attribute_names("#p", index.attribute())
            .expression_attribute_values(":p", s(partition))
            .scan_index_forward(!descending)
            .limit(limit.clamp(1, 1000) as i32);
        match (&range.since, &range.until) {
            (Some(a), Some(b)) => {
                condition.push_str(" AND #t BETWEEN :a AND :b");
                call = call
                    .expression_attribute_values(":a", s(a))
                    .expression_attribute_values(":b", s(b));
            }
            (Some(a), None) => {
                condition.push_str(" AND #t >= :a");
                call = call.expression_attribute_values(":a", s(a));
            }
            (None, Some(b)) => {
                condition.push_str(" AND #t <= :b");
                call = call.expression_attribute_values(":b", s(b));
            }
            (None, None) => {}
        }
        if range.since.is_some() || range.until.is_some() {
            call = call.expression_attribute_names("#t", TIME_ATTRIBUTE);
        }
        if let Some(p) = after {
            call = call.set_exclusive_start_key(Some(from_position(p)));
        }
        let out = call
            .key_condition_expression(condition)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        let items = out.items();
        self.count(1, 0, items.len());
        let index_attr = index.attribute();
        let hits = items
            .iter()
            .filter_map(|item| {
                let pk = get_s(item, "pk")?.to_string();
                let sk = get_s(item, "sk")?.to_string();
                let ts = get_s(item, TIME_ATTRIBUTE)?.to_string();
                let mut position = Position::new();
                position.insert("pk".into(), pk.clone());
                position.insert("sk".into(), sk.clone());
                position.insert(TIME_ATTRIBUTE.into(), ts.clone());
                position.insert(index_attr.into(), get_s(item, index_attr)?.to_string());
                // A by-principal row is an attribution record: the hit is
                // its entry (which `fetch_entries` reads with the record).
                let sk = match index {
                    Index::Principal => sk
                        .strip_suffix(crate::store::attribution::ATTRIBUTION_SUFFIX)?
                        .to_string(),
                    _ => sk,
                };
                Some(IndexHit {
                    pk,
                    sk,
                    ts,
                    event: get_s(item, "event").map(str::to_string),
                    position,
                })
            })
            .collect();
        Ok(IndexPage {
            hits,
            next: out.last_evaluated_key().map(to_position),
        })
    }

    async fn fetch_entries(
        &self,
        refs: &[(String, String)],
    ) -> StoreResult<Vec<Option<AuditEntry>>> {
        let table = &self.names.audit;
        let mut found: HashMap<(String, String), HashMap<String, DAttr>> = HashMap::new();
        // Each entry's CloudTrail attribution record too (absent ones cost
        // nothing but a key in the batch), merged below.
        let wanted: Vec<(String, String)> = refs
            .iter()
            .flat_map(|(pk, sk)| {
                [
                    (pk.clone(), sk.clone()),
                    (
                        pk.clone(),
                        crate::store::attribution::attribution_sort_key(sk),
                    ),
                ]
            })
            .collect();
        for chunk in wanted.chunks(100) {
            let mut keys: Vec<HashMap<String, DAttr>> = chunk
                .iter()
                .map(|(pk, sk)| {
                    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
                })
                .collect();
            keys.dedup();
            let mut delay = Duration::from_millis(50);
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| build_error(table, e))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(table, request)
                    .send()
                    .await
                    .map_err(|e| sdk_store_error(&e, table))?;
                let items = out.responses().and_then(|r| r.get(table.as_str()));
                self.count(0, 1, items.map_or(0, Vec::len));
                for item in items.into_iter().flatten() {
                    if let (Some(pk), Some(sk)) = (get_s(item, "pk"), get_s(item, "sk")) {
                        found.insert((pk.to_string(), sk.to_string()), item.clone());
                    }
                }
                // Unprocessed keys are the service shedding load, not an
                // error: ask again for just those, after a pause.
                if let Some(rest) = out.unprocessed_keys().and_then(|u| u.get(table.as_str())) {
                    keys = rest.keys().to_vec();
                    if !keys.is_empty() {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            out.push(match found.get(r) {
                Some(item) => {
                    let mut entry = self.decode_head(item).await?;
                    let key = (
                        r.0.clone(),
                        crate::store::attribution::attribution_sort_key(&r.1),
                    );
                    if let Some(record) = found.get(&key) {
                        merge_attribution(&mut entry, record)?;
                    }
                    Some(entry)
                }
                None => None,
            });
        }
        Ok(out)
    }

    async fn history_page(
        &self,
        table_name: &str,
        key: &Item,
        descending: bool,
        after: Option<&Position>,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        let table = &self.names.audit;
        let canonical = canonical_key_json(key);
        let pk = partition_key_from(table_name, &canonical);
        let hashed = pk_is_hashed(&pk);
        let mut call = self
            .client
            .query()
            .table_name(table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(&pk))
            .consistent_read(true)
            .scan_index_forward(!descending)
            // Parts of an oversize entry sit between heads: a little slack
            // keeps `--last 1` to one call in the common case.
            .limit((limit + 2).clamp(1, 1000) as i32);
        if let Some(p) = after {
            call = call.set_exclusive_start_key(Some(from_position(p)));
        }
        let out = call.send().await.map_err(|e| sdk_store_error(&e, table))?;
        let items = out.items();
        self.count(1, 0, items.len());
        let mut entries = Vec::new();
        // CloudTrail attribution records sit right after their entries (in
        // ascending order; right before them descending).
        let attributions: HashMap<&str, &HashMap<String, DAttr>> = items
            .iter()
            .filter(|i| i.contains_key("attribution"))
            .filter_map(|i| {
                let sk = get_s(i, "sk")?;
                Some((
                    sk.strip_suffix(crate::store::attribution::ATTRIBUTION_SUFFIX)?,
                    i,
                ))
            })
            .collect();
        for (n, item) in items.iter().enumerate() {
            if item.contains_key("chunk") || item.contains_key("attribution") {
                continue;
            }
            if hashed && get_s(item, "item_key") != Some(canonical.as_str()) {
                continue;
            }
            let mut entry = self.decode_head(item).await?;
            let head_sk = get_s(item, "sk").unwrap_or_default();
            match attributions.get(head_sk) {
                Some(record) => merge_attribution(&mut entry, record)?,
                // The page may have ended between an entry and its record.
                None if (!descending
                    && n + 1 == items.len()
                    && out.last_evaluated_key().is_some())
                    || (descending && n == 0 && after.is_some()) =>
                {
                    if let Some(record) = self.attribution_of(&pk, head_sk).await? {
                        merge_attribution(&mut entry, &record)?;
                    }
                }
                None => {}
            }
            let mut position = Position::new();
            position.insert("pk".into(), pk.clone());
            position.insert(
                "sk".into(),
                get_s(item, "sk").unwrap_or_default().to_string(),
            );
            entries.push((entry, position));
        }
        Ok(HistoryPage {
            entries,
            next: out.last_evaluated_key().map(to_position),
        })
    }

    fn read_cost(&self) -> ReadCost {
        ReadCost {
            query_calls: self.counters.query_calls.load(Ordering::Relaxed),
            batch_get_calls: self.counters.batch_get_calls.load(Ordering::Relaxed),
            items_read: self.counters.items_read.load(Ordering::Relaxed),
        }
    }
}

fn to_attr(v: &DAttr) -> Option<AttrValue> {
    // An SDK variant serde_dynamo does not know (a future type) cannot be
    // put back by a revert either: leave the attribute out, loudly.
    match v {
        DAttr::S(_)
        | DAttr::N(_)
        | DAttr::B(_)
        | DAttr::Bool(_)
        | DAttr::Null(_)
        | DAttr::M(_)
        | DAttr::L(_)
        | DAttr::Ss(_)
        | DAttr::Ns(_)
        | DAttr::Bs(_) => Some(serde_dynamo::AttributeValue::from(v.clone()).into()),
        _ => None,
    }
}

fn to_item(item: &HashMap<String, DAttr>) -> Item {
    item.iter()
        .filter_map(|(k, v)| match to_attr(v) {
            Some(v) => Some((k.clone(), v)),
            None => {
                tracing::warn!(attribute = %k, "skipping an attribute of an unknown type");
                None
            }
        })
        .collect()
}

fn from_item(item: &Item) -> HashMap<String, DAttr> {
    item.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_dynamo::AttributeValue::from(v.clone()).into(),
            )
        })
        .collect()
}

/// The snapshot bookkeeping rows live in the shards table, under a
/// partition no stream ARN can have.
pub(crate) fn snapshot_partition(table: &str) -> String {
    format!("snapshot:{table}")
}

impl SnapshotStore for DynamoStore {
    async fn describe_source(&self, table: &str) -> StoreResult<SourceInfo> {
        let out = self
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| match classify(&e) {
                c if c.kind == ErrorKind::NotFound => StoreError::Other(format!(
                    "table {table} does not exist: name an audited table with --table"
                )),
                c => store_error(c, table),
            })?;
        let t = out.table();
        Ok(SourceInfo {
            key_names: t
                .map(|t| {
                    t.key_schema()
                        .iter()
                        .map(|k| k.attribute_name().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            item_count: t.and_then(|t| t.item_count()).map(|n| n.max(0) as u64),
        })
    }

    async fn scan_page(
        &self,
        table: &str,
        segment: u32,
        segments: u32,
        start: Option<&Item>,
        limit: usize,
    ) -> StoreResult<ScanPage> {
        let out = self
            .client
            .scan()
            .table_name(table)
            .segment(segment as i32)
            .total_segments(segments as i32)
            .consistent_read(true)
            .limit(limit.clamp(1, 10_000) as i32)
            .set_exclusive_start_key(start.map(from_item))
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        let items: Vec<Item> = out.items().iter().map(to_item).collect();
        let reported = out.consumed_capacity().and_then(|c| c.capacity_units());
        let read_units = reported.unwrap_or_else(|| {
            // Strongly consistent: one unit per 4 KB read, rounded up per page.
            let bytes: usize = items
                .iter()
                .map(|i| serde_json::to_string(i).map_or(0, |j| j.len()))
                .sum();
            (bytes.div_ceil(4096)).max(1) as f64
        });
        Ok(ScanPage {
            items,
            next: out.last_evaluated_key().map(to_item),
            read_units,
        })
    }

    async fn load_snapshot(
        &self,
        table: &str,
    ) -> StoreResult<Option<(SnapshotRun, Vec<SegmentProgress>)>> {
        let rows = self
            .query_all(&self.names.shards, "stream_arn", &snapshot_partition(table))
            .await?;
        let Some(run) = rows.iter().find(|r| get_s(r, "shard_id") == Some("run")) else {
            return Ok(None);
        };
        let run = SnapshotRun {
            table: table.to_string(),
            run_id: get_s(run, "run_id").unwrap_or_default().to_string(),
            segments: get_n(run, "segments").unwrap_or(1) as u32,
            done: matches!(run.get("done"), Some(DAttr::Bool(true))),
        };
        let mut segments = Vec::new();
        for row in &rows {
            if get_s(row, "run_id") != Some(run.run_id.as_str()) {
                continue;
            }
            let Some(segment) = get_n(row, "segment") else {
                continue;
            };
            let last_key = match get_s(row, "last_key") {
                Some(json) => Some(serde_json::from_str::<Item>(json).map_err(|e| {
                    StoreError::Corrupt(format!("snapshot progress of {table}: {e}"))
                })?),
                None => None,
            };
            segments.push(SegmentProgress {
                segment: segment as u32,
                last_key,
                done: matches!(row.get("done"), Some(DAttr::Bool(true))),
                items: get_n(row, "items").unwrap_or(0) as u64,
                // Absent on a run begun before snapshots were chained: its
                // chain starts here, and `verify` says the entries before it
                // are not provable.
                chain: match get_s(row, "chain") {
                    Some(text) => crate::proof::ChainState::decode(text).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "snapshot progress of {table}: segment {segment} has a damaged chain \
                             state; start a new run with --restart"
                        ))
                    })?,
                    None => crate::proof::ChainState::default(),
                },
            });
        }
        Ok(Some((run, segments)))
    }

    async fn save_snapshot_run(&self, run: &SnapshotRun) -> StoreResult<()> {
        let table = &self.names.shards;
        self.client
            .put_item()
            .table_name(table)
            .item("stream_arn", s(snapshot_partition(&run.table)))
            .item("shard_id", s("run"))
            .item("table_name", s(&run.table))
            .item("run_id", s(&run.run_id))
            .item("segments", n(run.segments as usize))
            .item("done", DAttr::Bool(run.done))
            .item("updated_at", s(rfc3339(Utc::now())))
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        Ok(())
    }

    async fn save_segment(&self, run: &SnapshotRun, p: &SegmentProgress) -> StoreResult<()> {
        let table = &self.names.shards;
        let mut call = self
            .client
            .put_item()
            .table_name(table)
            .item("stream_arn", s(snapshot_partition(&run.table)))
            .item("shard_id", s(crate::store::segment_chain_id(p.segment)))
            .item("table_name", s(&run.table))
            .item("run_id", s(&run.run_id))
            .item("segment", n(p.segment as usize))
            .item("done", DAttr::Bool(p.done))
            .item("items", n(p.items as usize))
            .item("chain", s(p.chain.encode()))
            .item("updated_at", s(rfc3339(Utc::now())));
        if let Some(key) = &p.last_key {
            let json = serde_json::to_string(key)
                .map_err(|e| StoreError::Other(format!("encoding a scan position: {e}")))?;
            call = call.item("last_key", s(json));
        }
        call.send().await.map_err(|e| sdk_store_error(&e, table))?;
        Ok(())
    }

    async fn put_snapshot_entry(
        &self,
        entry: &AuditEntry,
        link: &crate::proof::Link,
        segment: u32,
        position: u64,
    ) -> StoreResult<PutOutcome> {
        let place = vec![
            (CHAIN_SHARD, s(crate::store::segment_chain_id(segment))),
            (CHAIN_POSITION, s(position.to_string())),
        ];
        self.put_entry_with(entry, Some(link), place).await
    }

    async fn snapshot_entry_link(
        &self,
        entry: &AuditEntry,
    ) -> StoreResult<Option<crate::proof::Link>> {
        let table = &self.names.audit;
        let canonical = canonical_key_json(&entry.key);
        let (pk, sk, _) = entry_head(entry, &canonical);
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .projection_expression("#h, prev_hash")
            .expression_attribute_names("#h", "hash")
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let parse = |name: &str| get_s(item, name).and_then(crate::proof::chain::parse_hash);
        Ok(parse("hash").map(|hash| crate::proof::Link {
            prev_hash: parse("prev_hash"),
            hash,
        }))
    }
}

/// A SNAPSHOT entry's segment chain and place in it (entries of a stream
/// have theirs in `shard_id` and `sequence_number`).
pub const CHAIN_SHARD: &str = "chain_shard";
pub const CHAIN_POSITION: &str = "chain_position";

impl CheckpointStore for DynamoStore {
    async fn check_tables(&self) -> StoreResult<()> {
        DynamoStore::check_tables(self).await
    }

    async fn load_shards(&self, stream_arn: &str) -> StoreResult<Vec<ShardCheckpoint>> {
        let now = Utc::now().timestamp();
        self.query_all(&self.names.shards, "stream_arn", stream_arn)
            .await?
            .iter()
            .filter(|item| !row_expired(item, now))
            .map(shard_from_item)
            .collect()
    }

    async fn load_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
    ) -> StoreResult<Option<ShardCheckpoint>> {
        let table = &self.names.shards;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("stream_arn", s(stream_arn))
            .key("shard_id", s(shard_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        out.item()
            .filter(|item| !row_expired(item, Utc::now().timestamp()))
            .map(shard_from_item)
            .transpose()
    }

    async fn release_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
        after: Duration,
    ) -> StoreResult<()> {
        let table = &self.names.shards;
        let expires = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("stream_arn", s(stream_arn))
            .key("shard_id", s(shard_id))
            .update_expression("SET #expires_at = :expires_at")
            .condition_expression(
                "#status = :drained AND (attribute_not_exists(#expires_at) OR #expires_at > :expires_at)",
            )
            .expression_attribute_names("#expires_at", SHARD_TTL_ATTRIBUTE)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":drained", s(ShardStatus::Drained.as_str()))
            .expression_attribute_values(":expires_at", DAttr::N(expires.timestamp().to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not drained, gone already, or expiring sooner: nothing to do.
            Err(e) if classify(&e).kind == ErrorKind::ConditionFailed => Ok(()),
            Err(e) => Err(sdk_store_error(&e, table)),
        }
    }

    async fn save_shard(&self, cp: &ShardCheckpoint) -> StoreResult<()> {
        let table = &self.names.shards;
        // Only the attributes we own are SET (lease attributes, later, stay
        // untouched). The condition makes a checkpoint move forward only:
        // the sequence never goes back and `drained` is final.
        let mut sets = vec![
            "#table_name = :table_name",
            "#status = :status",
            "#updated_at = :updated_at",
            "#caught_up = :caught_up",
            "#from_start = :from_start",
        ];
        let mut values = HashMap::from([
            (":table_name".to_string(), s(&cp.table)),
            (":status".to_string(), s(cp.status.as_str())),
            (":updated_at".to_string(), s(rfc3339(cp.updated_at))),
            (":caught_up".to_string(), DAttr::Bool(cp.caught_up)),
            (":from_start".to_string(), DAttr::Bool(cp.from_start)),
        ]);
        let mut names = HashMap::from([
            ("#table_name".to_string(), "table_name".to_string()),
            ("#status".to_string(), "status".to_string()),
            ("#updated_at".to_string(), "updated_at".to_string()),
            ("#caught_up".to_string(), "caught_up".to_string()),
            ("#from_start".to_string(), "from_start".to_string()),
            ("#sequence_key".to_string(), "sequence_key".to_string()),
        ]);
        if cp.status == ShardStatus::Drained {
            // A drained shard's row is needed while the stream still lists
            // the shard or its children (at most ~48 h); DynamoDB's TTL then
            // removes it, so the rows a stream start loads stay bounded.
            sets.push("#expires_at = :expires_at");
            names.insert("#expires_at".into(), SHARD_TTL_ATTRIBUTE.into());
            let expires =
                Utc::now() + chrono::Duration::from_std(DRAINED_SHARD_ROW_TTL).unwrap_or_default();
            values.insert(
                ":expires_at".into(),
                DAttr::N(expires.timestamp().to_string()),
            );
        }
        let mut conditions = Vec::new();
        if let Some(parent) = &cp.parent_shard_id {
            sets.push("#parent = :parent");
            names.insert("#parent".into(), "parent_shard_id".into());
            values.insert(":parent".into(), s(parent));
        }
        match &cp.sequence_no {
            Some(seq) => {
                let key = sequence_key(seq).ok_or_else(|| {
                    StoreError::Other(format!(
                        "shard {} of {}: {seq:?} is not a sequence number; refusing to checkpoint it",
                        cp.shard_id, cp.stream_arn
                    ))
                })?;
                sets.push("#sequence_no = :sequence_no");
                sets.push("#sequence_key = :sequence_key");
                names.insert("#sequence_no".into(), "sequence_no".into());
                values.insert(":sequence_no".into(), s(seq));
                values.insert(":sequence_key".into(), s(&key));
                conditions.push(
                    "(attribute_not_exists(#sequence_key) OR #sequence_key <= :sequence_key)",
                );
            }
            None => conditions.push("attribute_not_exists(#sequence_key)"),
        }
        if let Some(chain) = &cp.chain {
            sets.push("#chain = :chain");
            names.insert("#chain".into(), "chain".into());
            values.insert(":chain".into(), s(chain.encode()));
        }
        if let Some(tail) = &cp.lineage_tail {
            let mut m = HashMap::from([
                ("shard_id".to_string(), s(&tail.shard_id)),
                ("sequence_no".to_string(), s(&tail.sequence_no)),
            ]);
            if let Some(t) = tail.record_time {
                m.insert("record_time".to_string(), s(rfc3339(t)));
            }
            sets.push("#lineage_tail = :lineage_tail");
            names.insert("#lineage_tail".into(), "lineage_tail".into());
            values.insert(":lineage_tail".into(), DAttr::M(m));
        }
        if let Some(t) = cp.last_record_time {
            sets.push("#last_record_time = :last_record_time");
            names.insert("#last_record_time".into(), "last_record_time".into());
            values.insert(":last_record_time".into(), s(rfc3339(t)));
        }
        if cp.status != ShardStatus::Drained {
            conditions.push("(attribute_not_exists(#status) OR #status <> :drained)");
            values.insert(":drained".into(), s(ShardStatus::Drained.as_str()));
        }
        let result = self
            .client
            .update_item()
            .table_name(table)
            .key("stream_arn", s(&cp.stream_arn))
            .key("shard_id", s(&cp.shard_id))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                let c = classify(&e);
                if c.kind == ErrorKind::ConditionFailed {
                    tracing::warn!(
                        table = %cp.table, stream = %cp.stream_arn, shard = %cp.shard_id,
                        sequence = ?cp.sequence_no, status = cp.status.as_str(),
                        "stored checkpoint is already newer; kept it"
                    );
                    Ok(())
                } else {
                    Err(store_error(c, table))
                }
            }
        }
    }

    async fn save_stream(&self, row: &StreamRow) -> StoreResult<()> {
        let table = &self.names.streams;
        let mut call = self
            .client
            .update_item()
            .table_name(table)
            .key("table_name", s(&row.table_name))
            .key("stream_arn", s(&row.stream_arn))
            .update_expression("SET #en = :en, #dr = :dr, #up = :up")
            .expression_attribute_names("#en", "is_enabled")
            .expression_attribute_names("#dr", "drained")
            .expression_attribute_names("#up", "updated_at")
            .expression_attribute_values(":en", DAttr::Bool(row.is_enabled))
            .expression_attribute_values(":dr", DAttr::Bool(row.drained))
            .expression_attribute_values(":up", s(rfc3339(row.updated_at)));
        if !row.drained {
            // A drained stream stays drained.
            call = call.condition_expression("attribute_not_exists(#dr) OR #dr = :dr")
        }
        match call.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let c = classify(&e);
                if c.kind == ErrorKind::ConditionFailed {
                    tracing::warn!(
                        table = %row.table_name, stream = %row.stream_arn,
                        "stream is already recorded as drained; kept it"
                    );
                    Ok(())
                } else {
                    Err(store_error(c, table))
                }
            }
        }
    }

    async fn save_table_health(&self, row: &TableHealthRow) -> StoreResult<()> {
        let table = &self.names.streams;
        let mut item = HashMap::from([
            ("table_name".to_string(), s(&row.table_name)),
            ("stream_arn".to_string(), s(HEALTH_SORT_KEY)),
            ("state".to_string(), s(&row.state)),
            ("updated_at".to_string(), s(rfc3339(row.updated_at))),
        ]);
        if let Some(reason) = &row.reason {
            item.insert("reason".into(), s(reason));
        }
        self.client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_store_error(&e, table))
    }

    async fn load_table_health(&self, table_name: &str) -> StoreResult<Option<TableHealthRow>> {
        let table = &self.names.streams;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("table_name", s(table_name))
            .key("stream_arn", s(HEALTH_SORT_KEY))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        Ok(out.item().map(|item| TableHealthRow {
            table_name: table_name.to_string(),
            state: get_s(item, "state").unwrap_or("unknown").to_string(),
            reason: get_s(item, "reason").map(str::to_string),
            updated_at: get_s(item, "updated_at")
                .and_then(parse_time)
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        }))
    }

    async fn load_streams(&self, table_name: Option<&str>) -> StoreResult<Vec<StreamRow>> {
        let table = &self.names.streams;
        let items = match table_name {
            Some(name) => self.query_all(table, "table_name", name).await?,
            None => self
                .client
                .scan()
                .table_name(table)
                .consistent_read(true)
                .into_paginator()
                .items()
                .send()
                .try_collect()
                .await
                .map_err(|e| sdk_store_error(&e, table))?,
        };
        let mut rows = items
            .iter()
            .filter(|item| get_s(item, "stream_arn").is_none_or(|arn| !arn.starts_with('#')))
            .map(stream_from_item)
            .collect::<StoreResult<Vec<_>>>()?;
        rows.sort_by(|a, b| {
            (&a.table_name, stream_label(&a.stream_arn))
                .cmp(&(&b.table_name, stream_label(&b.stream_arn)))
        });
        Ok(rows)
    }
}

// ---------------------------------------------------------------- indexes

/// An entry's key and head item, without the entry JSON (or its parts).
/// Only what a reader needs without opening the body: the keys, what the
/// index rows project (`event`), the chain's `stream_arn`, `shard_id` and
/// `sequence_number` (verify and export select by them), and the index keys.
/// The table, the actor and the event time are in the body and in `pk` /
/// `ix_*` / `ts` already: repeating them would cost write units on every
/// change (entries written before kept them; readers accept both).
fn entry_head(entry: &AuditEntry, canonical: &str) -> (String, String, HashMap<String, DAttr>) {
    let pk = partition_key_from(&entry.table, canonical);
    let sk = entry_sort_key(&entry.stream_arn, &entry.sequence_number);
    let mut head = HashMap::from([
        ("pk".to_string(), s(&pk)),
        ("sk".to_string(), s(&sk)),
        ("event".to_string(), s(&entry.event)),
        ("shard_id".to_string(), s(&entry.shard_id)),
        ("stream_arn".to_string(), s(&entry.stream_arn)),
        ("sequence_number".to_string(), s(&entry.sequence_number)),
    ]);
    if pk_is_hashed(&pk) {
        head.insert("item_key".into(), s(canonical));
    }
    let attrs = index_attrs(entry, canonical, Utc::now());
    head.insert(TIME_ATTRIBUTE.into(), s(&attrs.ts));
    for (index, value) in attrs.keys {
        head.insert(index.attribute().into(), s(value));
    }
    (pk, sk, head)
}

/// The attribute holding an inline entry's JSON raw-deflated (B), written
/// instead of `entry` (S) when the item would pass 1 KB as it is and
/// deflating makes it smaller: DynamoDB bills the stored bytes per KB, and
/// the JSON's repeated names and type tags (`{"path":…,"old":{"S":`) are much
/// of an entry. Readers accept both (older entries have `entry`).
pub const ENTRY_Z: &str = "entry_z";

/// The body attribute of an inline entry: `entry_z` when deflating saves
/// bytes, else `entry`.
pub fn entry_body(json: &str) -> (&'static str, DAttr) {
    match deflate(json.as_bytes()) {
        Some(bytes) if ENTRY_Z.len() + bytes.len() < "entry".len() + json.len() => (
            ENTRY_Z,
            DAttr::B(aws_sdk_dynamodb::primitives::Blob::new(bytes)),
        ),
        _ => ("entry", s(json)),
    }
}

/// Raw deflate (RFC 1951) at the default level (the fast one leaves ~10 %
/// more: on a 1 KB INSERT, the difference between 3 write units and 4), with
/// one compressor per thread, reset between entries: a fresh one allocates
/// and zeroes some 300 KB of tables, more work than compressing a 2 KB entry.
fn deflate(input: &[u8]) -> Option<Vec<u8>> {
    use flate2::{Compress, Compression, FlushCompress, Status};
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Compress> =
            std::cell::RefCell::new(Compress::new(Compression::default(), false));
    }
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        // Deflate never grows data by more than a few bytes per 16 KB block.
        let mut out = Vec::with_capacity(input.len() + input.len() / 1000 + 64);
        let done = matches!(
            c.compress_vec(input, &mut out, FlushCompress::Finish),
            Ok(Status::StreamEnd)
        );
        done.then_some(out)
    })
}

/// The JSON of an audit item stored inline (`entry`, or `entry_z`
/// inflated); `None` when the item has neither (an oversize head, a part, a
/// gap, an attribution record).
pub fn inline_entry_json(
    item: &HashMap<String, DAttr>,
) -> StoreResult<Option<std::borrow::Cow<'_, str>>> {
    use std::io::Read as _;
    if let Some(json) = get_s(item, "entry") {
        return Ok(Some(std::borrow::Cow::Borrowed(json)));
    }
    let Some(DAttr::B(bytes)) = item.get(ENTRY_Z) else {
        return Ok(None);
    };
    let where_ = || {
        format!(
            "{} {}",
            get_s(item, "pk").unwrap_or_default(),
            get_s(item, "sk").unwrap_or_default()
        )
    };
    // Bounded: an inline entry is at most INLINE_ENTRY_LIMIT bytes of JSON,
    // so a damaged or forged body cannot inflate without limit.
    let mut json = String::new();
    flate2::read::DeflateDecoder::new(bytes.as_ref())
        .take(INLINE_ENTRY_LIMIT as u64 + 1)
        .read_to_string(&mut json)
        .map_err(|e| {
            StoreError::Corrupt(format!("{}: `{ENTRY_Z}` does not inflate: {e}", where_()))
        })?;
    if json.len() > INLINE_ENTRY_LIMIT {
        return Err(StoreError::Corrupt(format!(
            "{}: `{ENTRY_Z}` inflates past {INLINE_ENTRY_LIMIT} bytes",
            where_()
        )));
    }
    Ok(Some(std::borrow::Cow::Owned(json)))
}

/// Whether an audit item is an entry's head (inline or oversize).
pub fn is_entry_item(item: &HashMap<String, DAttr>) -> bool {
    item.contains_key("entry") || item.contains_key(ENTRY_Z) || item.contains_key("parts")
}

/// The audited table of an entry item: its `pk` prefix (`<table>|…`; table
/// names cannot contain `|`), or `table_name` on entries written before.
pub fn entry_item_table(item: &HashMap<String, DAttr>) -> Option<&str> {
    get_s(item, "table_name").or_else(|| get_s(item, "pk")?.split_once('|').map(|(t, _)| t))
}

/// Every item that writing `entry` puts, head last, as `put_entry` writes
/// them (so [`write_cost`] sizes exactly what is billed).
fn entry_items(
    entry: &AuditEntry,
    link: Option<&crate::proof::Link>,
    expires: Option<&DAttr>,
) -> StoreResult<EntryItems> {
    let json = encode_entry(entry)?;
    let canonical = canonical_key_json(&entry.key);
    let (pk, sk, mut head) = entry_head(entry, &canonical);
    insert_link(&mut head, link);
    if let Some(at) = expires {
        head.insert("expires_at".into(), at.clone());
    }
    if json.len() <= INLINE_ENTRY_LIMIT {
        // An item within 1 KB is one write unit however small: deflating it
        // would save nothing billed and cost CPU on the daemon's hot path.
        let plain = item_size(&head) + "entry".len() + json.len();
        let (name, body) = if plain <= 1024 {
            ("entry", s(&json))
        } else {
            entry_body(&json)
        };
        head.insert(name.into(), body);
        return Ok(EntryItems {
            pk,
            sk,
            parts: Vec::new(),
            head,
            json_bytes: json.len(),
        });
    }
    let hash = format!("{:016x}", fnv1a64(json.as_bytes()));
    let chunks = split_chunks(&json, INLINE_ENTRY_LIMIT);
    let count = chunks.len();
    let parts = chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut part = HashMap::from([
                ("pk".to_string(), s(&pk)),
                ("sk".to_string(), s(part_sort_key(&sk, &hash, i + 1))),
                ("chunk".to_string(), s(*chunk)),
                ("part".to_string(), n(i + 1)),
                ("parts".to_string(), n(count)),
            ]);
            if let Some(at) = expires {
                part.insert("expires_at".into(), at.clone());
            }
            part
        })
        .collect();
    head.insert("parts".into(), n(count));
    head.insert("parts_hash".into(), s(&hash));
    head.insert("entry_bytes".into(), n(json.len()));
    Ok(EntryItems {
        pk,
        sk,
        parts,
        head,
        json_bytes: json.len(),
    })
}

struct EntryItems {
    pk: String,
    sk: String,
    /// An oversize entry's parts (empty for an inline one).
    parts: Vec<HashMap<String, DAttr>>,
    head: HashMap<String, DAttr>,
    json_bytes: usize,
}

/// What writing one entry costs, by DynamoDB's published sizing rules:
/// an item's size is the sum of its attribute names and values (every
/// attribute: keys, body, chain links, TTL, index keys); a global secondary
/// index row is the table's key, the index's key, the projected attributes
/// and 100 bytes of overhead; each item and each index row costs one write
/// unit per KB or part of one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteCost {
    /// The entry's head item (the whole entry, when it is inline).
    pub item_bytes: usize,
    /// An oversize entry's parts, each its own item.
    pub part_bytes: Vec<usize>,
    pub index_rows: Vec<(Index, usize)>,
    pub write_units: usize,
}

/// The cost of writing `entry` with `link` (the daemon always chains: pass
/// the link it would write) and, with `[retention]`, a TTL attribute.
pub fn write_cost(
    entry: &AuditEntry,
    link: Option<&crate::proof::Link>,
    retention: bool,
) -> StoreResult<WriteCost> {
    // Epoch seconds of a date this century: the size of any real value.
    let expires = retention.then(|| DAttr::N("1795000123".into()));
    let items = entry_items(entry, link, expires.as_ref())?;
    let head = &items.head;
    let size_of = |name: &str| head.get(name).map_or(0, |v| name.len() + attr_size(v));
    let table_key = size_of("pk") + size_of("sk");
    let projected = INDEX_PROJECTION.iter().map(|a| size_of(a)).sum::<usize>();
    let index_rows: Vec<(Index, usize)> = Index::ALL
        .into_iter()
        .filter(|i| head.contains_key(i.attribute()))
        .map(|i| {
            let index_key = size_of(i.attribute()) + size_of(TIME_ATTRIBUTE);
            (i, table_key + index_key + projected + GSI_ROW_OVERHEAD)
        })
        .collect();
    let units = |bytes: usize| bytes.div_ceil(1024).max(1);
    let item_bytes = item_size(head);
    let part_bytes: Vec<usize> = items.parts.iter().map(item_size).collect();
    let write_units = units(item_bytes)
        + part_bytes.iter().map(|b| units(*b)).sum::<usize>()
        + index_rows.iter().map(|(_, b)| units(*b)).sum::<usize>();
    Ok(WriteCost {
        item_bytes,
        part_bytes,
        index_rows,
        write_units,
    })
}

/// DynamoDB's per-row overhead of a secondary index.
const GSI_ROW_OVERHEAD: usize = 100;

/// An item's size as DynamoDB bills it (names + values).
pub fn stored_item_bytes(item: &HashMap<String, DAttr>) -> usize {
    item_size(item)
}

fn item_size(item: &HashMap<String, DAttr>) -> usize {
    item.iter().map(|(k, v)| k.len() + attr_size(v)).sum()
}

/// DynamoDB's size of a value: strings and binary by length, numbers about
/// one byte per two significant digits plus one, documents 3 bytes plus
/// their elements (and one byte each).
fn attr_size(v: &DAttr) -> usize {
    match v {
        DAttr::S(x) => x.len(),
        DAttr::N(x) => number_size(x),
        DAttr::B(x) => x.as_ref().len(),
        DAttr::Bool(_) | DAttr::Null(_) => 1,
        DAttr::Ss(x) => x.iter().map(String::len).sum(),
        DAttr::Ns(x) => x.iter().map(|n| number_size(n)).sum(),
        DAttr::Bs(x) => x.iter().map(|b| b.as_ref().len()).sum(),
        DAttr::L(x) => 3 + x.iter().map(|e| attr_size(e) + 1).sum::<usize>(),
        DAttr::M(x) => {
            3 + x
                .iter()
                .map(|(k, e)| k.len() + attr_size(e) + 1)
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// A number's size: 1 byte per two significant digits (leading and trailing
/// zeros do not count) plus 1.
fn number_size(x: &str) -> usize {
    let mantissa = x.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    significant.len().div_ceil(2) + 1
}

fn build_error(table: &str, e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Other(format!("building a request for {table}: {e}"))
}

/// The key attributes of the audit table and of `indexes` (all strings).
/// DynamoDB rejects a definition no key uses, so an UpdateTable names only
/// the indexes that exist or are being added.
fn audit_attribute_definitions(indexes: &[Index]) -> StoreResult<Vec<AttributeDefinition>> {
    let names = ["pk", "sk", TIME_ATTRIBUTE]
        .into_iter()
        .chain(indexes.iter().map(|i| i.attribute()));
    names
        .map(|name| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| build_error("the audit table", e))
        })
        .collect()
}

fn index_key_schema(index: Index) -> StoreResult<Vec<KeySchemaElement>> {
    [
        (index.attribute(), KeyType::Hash),
        (TIME_ATTRIBUTE, KeyType::Range),
    ]
    .into_iter()
    .map(|(name, kind)| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(|e| build_error(index.name(), e))
    })
    .collect()
}

/// What the index rows carry besides the keys: the event (so `--event`
/// filters before fetching). An index row then costs one write unit whatever
/// the entry's size, and a query reads the entries it keeps (BatchGetItem).
const INDEX_PROJECTION: [&str; 1] = ["event"];

fn index_projection() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::Include)
        .set_non_key_attributes(Some(
            INDEX_PROJECTION.iter().map(|a| a.to_string()).collect(),
        ))
        .build()
}

fn to_position(key: &HashMap<String, DAttr>) -> Position {
    key.iter()
        .filter_map(|(k, v)| match v {
            DAttr::S(x) => Some((k.clone(), x.clone())),
            _ => None,
        })
        .collect()
}

fn from_position(p: &Position) -> HashMap<String, DAttr> {
    p.iter().map(|(k, v)| (k.clone(), s(v))).collect()
}

// ---------------------------------------------------------------- keys

/// The audit partition key of one item of one table: `<table>|<canonical key
/// JSON>`. The JSON is DynamoDB JSON with names sorted, numbers in DynamoDB's
/// canonical form and binary as base64, so the same key always gives the same
/// partition. A key whose JSON is longer than 1 KB is replaced by a hash
/// (`<table>|#<16 hex>`), and the full JSON is kept beside it.
pub fn item_partition_key(table: &str, key: &Item) -> String {
    partition_key_from(table, &canonical_key_json(key))
}

fn partition_key_from(table: &str, canonical: &str) -> String {
    if canonical.len() <= MAX_INLINE_KEY {
        format!("{table}|{canonical}")
    } else {
        format!("{table}|#{:016x}", fnv1a64(canonical.as_bytes()))
    }
}

fn pk_is_hashed(pk: &str) -> bool {
    // Canonical JSON always starts with `{`.
    pk.split_once('|')
        .is_some_and(|(_, rest)| rest.starts_with('#'))
}

/// The sort key of an entry: `<stream label>#<sequence number, 40 digits>`.
/// Labels are creation timestamps, so one table's streams sort in time, and
/// within a stream the zero-padded numbers sort numerically. A stand-in
/// "sequence number" (see `StreamRecord`) is kept as is; being non-numeric
/// it sorts after every real one of its stream.
pub fn entry_sort_key(stream_arn: &str, sequence_number: &str) -> String {
    let seq = sequence_key(sequence_number).unwrap_or_else(|| sequence_number.to_string());
    format!("{}#{seq}", stream_label(stream_arn))
}

fn part_sort_key(head_sk: &str, hash: &str, part: usize) -> String {
    format!("{head_sk}#part#{hash}#{part:04}")
}

/// The sort key of a gap: deterministic from where it is, not when it was
/// seen, so re-detecting it (after a crash) finds it already written.
pub fn gap_sort_key(gap: &Gap) -> String {
    let after = gap
        .after_sequence_number
        .as_deref()
        .map(|s| sequence_key(s).unwrap_or_else(|| s.to_string()))
        .unwrap_or_else(|| "-".to_string());
    format!("{}#{}#{}#{after}", gap.table, gap.stream_arn, gap.shard_id)
}

/// A decimal sequence number zero-padded to 40 digits; `None` if not decimal.
fn sequence_key(seq: &str) -> Option<String> {
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{:0>40}", seq.trim_start_matches('0')))
}

// ---------------------------------------------------------------- entries

/// Merges an attribution record item into its entry.
fn merge_attribution(entry: &mut AuditEntry, record: &HashMap<String, DAttr>) -> StoreResult<()> {
    let sk = get_s(record, "sk").unwrap_or_default();
    let json = get_s(record, "attribution").ok_or_else(|| {
        StoreError::Corrupt(format!("{sk}: attribution item without `attribution`"))
    })?;
    let record: crate::store::attribution::AttributionRecord = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("{sk}: attribution record: {e}")))?;
    crate::store::attribution::apply(entry, &record.principal);
    Ok(())
}

/// An entry as stored: its contract JSON.
pub fn encode_entry(entry: &AuditEntry) -> StoreResult<String> {
    serde_json::to_string(entry).map_err(|e| {
        StoreError::Other(format!(
            "encoding the entry for {} {}: {e}",
            entry.table, entry.sequence_number
        ))
    })
}

pub fn decode_entry(json: &str) -> StoreResult<AuditEntry> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("entry JSON: {e}")))
}

/// Split at char boundaries into pieces of at most `max` bytes.
fn split_chunks(s: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let mut end = rest.len().min(max.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        out.push(head);
        rest = tail;
    }
    out
}

fn reassemble(
    head: &HashMap<String, DAttr>,
    sk: &str,
    parts: usize,
    chunks: &HashMap<&str, &str>,
) -> Result<String, String> {
    let hash = get_s(head, "parts_hash").ok_or("head has `parts` but no `parts_hash`")?;
    let mut json = String::new();
    for i in 1..=parts {
        let key = part_sort_key(sk, hash, i);
        let chunk = chunks
            .get(key.as_str())
            .ok_or_else(|| format!("part {i} of {parts} is missing"))?;
        json.push_str(chunk);
    }
    if let Some(bytes) = get_n(head, "entry_bytes") {
        if bytes != json.len() {
            return Err(format!(
                "reassembled {} bytes, expected {bytes}",
                json.len()
            ));
        }
    }
    if format!("{:016x}", fnv1a64(json.as_bytes())) != hash {
        return Err("reassembled entry does not match its hash".into());
    }
    Ok(json)
}

// ---------------------------------------------------------------- rows

/// A row past its TTL: DynamoDB deletes such items only eventually (often
/// days later), and until then they are still read. They are gone for us.
fn row_expired(item: &HashMap<String, DAttr>, now_epoch_secs: i64) -> bool {
    matches!(item.get(SHARD_TTL_ATTRIBUTE), Some(DAttr::N(n))
        if n.parse::<i64>().is_ok_and(|at| at <= now_epoch_secs))
}

fn shard_from_item(item: &HashMap<String, DAttr>) -> StoreResult<ShardCheckpoint> {
    let req = |name: &str| {
        get_s(item, name)
            .map(str::to_string)
            .ok_or_else(|| StoreError::Corrupt(format!("shard row without `{name}`: {item:?}")))
    };
    let status_text = req("status")?;
    let status = ShardStatus::parse(&status_text).ok_or_else(|| {
        StoreError::Corrupt(format!("shard row with unknown status {status_text:?}"))
    })?;
    Ok(ShardCheckpoint {
        stream_arn: req("stream_arn")?,
        shard_id: req("shard_id")?,
        table: req("table_name")?,
        parent_shard_id: get_s(item, "parent_shard_id").map(str::to_string),
        sequence_no: get_s(item, "sequence_no").map(str::to_string),
        status,
        last_record_time: get_s(item, "last_record_time").and_then(parse_time),
        caught_up: matches!(item.get("caught_up"), Some(DAttr::Bool(true))),
        from_start: matches!(item.get("from_start"), Some(DAttr::Bool(true))),
        updated_at: get_s(item, "updated_at")
            .and_then(parse_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        chain: get_s(item, "chain").and_then(crate::proof::ChainState::decode),
        lineage_tail: match item.get("lineage_tail") {
            Some(DAttr::M(tail)) => match (get_s(tail, "shard_id"), get_s(tail, "sequence_no")) {
                (Some(shard), Some(seq)) => Some(crate::store::LineageTail {
                    shard_id: shard.to_string(),
                    sequence_no: seq.to_string(),
                    record_time: get_s(tail, "record_time").and_then(parse_time),
                }),
                _ => None,
            },
            _ => None,
        },
    })
}

fn stream_from_item(item: &HashMap<String, DAttr>) -> StoreResult<StreamRow> {
    let req = |name: &str| {
        get_s(item, name)
            .map(str::to_string)
            .ok_or_else(|| StoreError::Corrupt(format!("stream row without `{name}`: {item:?}")))
    };
    let flag = |name: &str| match item.get(name) {
        Some(DAttr::Bool(b)) => *b,
        _ => false,
    };
    Ok(StreamRow {
        table_name: req("table_name")?,
        stream_arn: req("stream_arn")?,
        is_enabled: flag("is_enabled"),
        drained: flag("drained"),
        updated_at: get_s(item, "updated_at")
            .and_then(parse_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
    })
}

// ---------------------------------------------------------------- helpers

fn s(v: impl Into<String>) -> DAttr {
    DAttr::S(v.into())
}

fn n(v: usize) -> DAttr {
    DAttr::N(v.to_string())
}

fn get_s<'a>(item: &'a HashMap<String, DAttr>, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(DAttr::S(v)) => Some(v.as_str()),
        _ => None,
    }
}

fn get_n(item: &HashMap<String, DAttr>, name: &str) -> Option<usize> {
    match item.get(name) {
        Some(DAttr::N(v)) => v.parse().ok(),
        _ => None,
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn sdk_store_error<E>(err: &SdkError<E>, table: &str) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    store_error(classify(err), table)
}

/// What is wrong with one of our tables as described, if anything: the
/// keys must be `hash` (HASH) + `range` (RANGE), both strings, and the table
/// ACTIVE (or UPDATING, which still serves reads and writes).
fn schema_problems(
    table: &str,
    config_key: &str,
    hash: &str,
    range: &str,
    keys: &[(String, String)],
    types: &[(String, String)],
    status: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let named = |kind: &str| {
        keys.iter()
            .find(|(_, k)| k == kind)
            .map(|(n, _)| n.as_str())
    };
    if keys.len() != 2 || named("HASH") != Some(hash) || named("RANGE") != Some(range) {
        let found: Vec<String> = keys.iter().map(|(n, k)| format!("{n} ({k})")).collect();
        problems.push(format!(
            "table {table} (`{config_key}`) has key schema [{}], but ddb-audit needs \
             {hash} (HASH) + {range} (RANGE): point `{config_key}` at a table made by \
             `ddb-audit init` or the CloudFormation stack",
            found.join(", ")
        ));
    }
    for attr in [hash, range] {
        match types.iter().find(|(n, _)| n == attr) {
            Some((_, t)) if t == "S" => {}
            Some((_, t)) => problems.push(format!(
                "table {table} (`{config_key}`): key attribute {attr} has type {t}, but ddb-audit needs S (string)"
            )),
            None if keys.iter().any(|(n, _)| n == attr) => problems.push(format!(
                "table {table} (`{config_key}`): key attribute {attr} has no type definition"
            )),
            None => {}
        }
    }
    match status {
        Some("ACTIVE") | Some("UPDATING") => {}
        other => problems.push(format!(
            "table {table} (`{config_key}`) is {}, not ACTIVE: wait for it, or check the stack",
            other.unwrap_or("of unknown status")
        )),
    }
    problems
}

fn store_error(c: Classified, table: &str) -> StoreError {
    match c.kind {
        ErrorKind::Throttled | ErrorKind::Transient => {
            StoreError::Transient(format!("{table}: {}", c.message))
        }
        ErrorKind::NotFound => StoreError::MissingTable {
            table: table.to_string(),
        },
        ErrorKind::Validation if c.message.to_ascii_lowercase().contains("size") => {
            StoreError::Rejected(format!(
                "{table}: item too large for DynamoDB (400 KB per item): {}",
                c.message
            ))
        }
        ErrorKind::Validation => StoreError::Rejected(format!("{table}: {}", c.message)),
        _ => StoreError::Other(format!("{table}: {}", c.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn schema_problems_name_the_table_the_key_and_the_fix() {
        let keys = |h: &str, r: &str| {
            vec![
                (h.to_string(), "HASH".to_string()),
                (r.to_string(), "RANGE".to_string()),
            ]
        };
        let s = |n: &str| (n.to_string(), "S".to_string());
        let ok = schema_problems(
            "t",
            "storage.audit_table",
            "pk",
            "sk",
            &keys("pk", "sk"),
            &[s("pk"), s("sk")],
            Some("ACTIVE"),
        );
        assert!(ok.is_empty(), "{ok:?}");
        let bad = schema_problems(
            "t",
            "storage.audit_table",
            "pk",
            "sk",
            &keys("id", "sk"),
            &[s("id"), s("sk")],
            Some("ACTIVE"),
        );
        assert_eq!(bad.len(), 1);
        assert!(
            bad[0].contains("table t")
                && bad[0].contains("id (HASH)")
                && bad[0].contains("pk (HASH)"),
            "{bad:?}"
        );
        let bad = schema_problems(
            "t",
            "storage.audit_table",
            "pk",
            "sk",
            &keys("pk", "sk"),
            &[s("pk"), ("sk".into(), "N".into())],
            Some("CREATING"),
        );
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("sk has type N"), "{bad:?}");
        assert!(bad[1].contains("CREATING"), "{bad:?}");
    }

    fn key(pairs: &[(&str, AttrValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn partition_key_is_canonical() {
        let a = key(&[
            ("sk", AttrValue::N("1.50".into())),
            ("pk", AttrValue::S("u\"1".into())),
        ]);
        let b = key(&[
            ("pk", AttrValue::S("u\"1".into())),
            ("sk", AttrValue::N("15e-1".into())),
        ]);
        assert_eq!(
            item_partition_key("orders", &a),
            item_partition_key("orders", &b)
        );
        assert_eq!(
            item_partition_key("orders", &a),
            r#"orders|{"pk":{"S":"u\"1"},"sk":{"N":"1.5"}}"#
        );
        let c = key(&[("id", AttrValue::N("1e2".into()))]);
        assert_eq!(item_partition_key("t", &c), r#"t|{"id":{"N":"100"}}"#);
        let d = key(&[("id", AttrValue::B(vec![0, 1, 2]))]);
        assert_eq!(item_partition_key("t", &d), r#"t|{"id":{"B":"AAEC"}}"#);
    }

    #[test]
    fn long_keys_are_hashed() {
        let k = key(&[("pk", AttrValue::S("x".repeat(2000)))]);
        let pk = item_partition_key("t", &k);
        assert!(pk_is_hashed(&pk), "{pk}");
        assert!(pk.len() < 64);
        assert!(!pk_is_hashed(&item_partition_key(
            "t",
            &key(&[("pk", AttrValue::S("#x".into()))])
        )));
    }

    #[test]
    fn sort_keys_order_streams_then_sequence_numbers() {
        let arn1 = "arn:aws:dynamodb:us-east-1:1:table/t/stream/2026-01-01T00:00:00.000";
        let arn2 = "arn:aws:dynamodb:us-east-1:1:table/t/stream/2026-02-01T00:00:00.000";
        let a = entry_sort_key(arn1, "99");
        let b = entry_sort_key(arn1, "100");
        let c = entry_sort_key(arn2, "1");
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(b, format!("2026-01-01T00:00:00.000#{:0>40}", "100"));
        // Parts sort right after their head and before the next head.
        let part = part_sort_key(&a, "0123456789abcdef", 1);
        assert!(a < part && part < b);
    }

    #[test]
    fn chunks_respect_char_boundaries() {
        let text = "aé€😀".repeat(1000);
        let chunks = split_chunks(&text, 7);
        assert!(chunks.iter().all(|c| c.len() <= 7 && !c.is_empty()));
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn gap_keys_ignore_detection_time() {
        let mut g = Gap {
            table: "t".into(),
            stream_arn: "arn/stream/L".into(),
            shard_id: "s1".into(),
            after_sequence_number: Some("42".into()),
            after_shard_id: None,
            unseen_shard_id: None,
            after_time: None,
            resumed_at_sequence_number: Some("50".into()),
            resumed_at_time: None,
            detected_at: "2026-01-01T00:00:00Z".into(),
        };
        let k1 = gap_sort_key(&g);
        g.detected_at = "2026-01-02T00:00:00Z".into();
        assert_eq!(k1, gap_sort_key(&g));
        g.after_sequence_number = None;
        assert!(gap_sort_key(&g).ends_with("#-"));
    }

    // ------------------------------------------------------------ write cost

    /// DynamoDB's size of an image (attribute names + values).
    fn image_bytes(item: &Item) -> usize {
        item_size(&from_item(item))
    }

    /// An order as an application stores it, grown (by its note) to
    /// `target` bytes of DynamoDB size. Every non-key value depends on
    /// `variant`, so two variants differ in every attribute. `note` is text
    /// (`words`) or, for the incompressible case, hex digits of a hash chain.
    fn order(target: usize, variant: u32, words: bool) -> Item {
        let v = variant;
        let line = |i: u32| {
            AttrValue::M(BTreeMap::from([
                (
                    "sku".into(),
                    AttrValue::S(format!("SKU-{:05}", 1000 + i + 17 * v)),
                ),
                ("qty".into(), AttrValue::N(format!("{}", 1 + i + v))),
                (
                    "price".into(),
                    AttrValue::N(format!("{}.{:02}", 10 + 3 * i + v, 25 + v)),
                ),
            ]))
        };
        let mut item = key(&[
            ("pk", AttrValue::S("order-0001234".into())),
            (
                "customer",
                AttrValue::S(format!("Customer {v} Example-Smith")),
            ),
            ("email", AttrValue::S(format!("customer{v}@example.com"))),
            ("street", AttrValue::S(format!("{} Long Street", 10 + v))),
            (
                "city",
                AttrValue::S(["Lisbon", "Porto", "Braga"][v as usize % 3].into()),
            ),
            (
                "zip",
                AttrValue::S(format!("{:04}-{:03}", 1000 + v, 100 + v)),
            ),
            (
                "status",
                AttrValue::S(["PENDING", "PAID", "SHIPPED"][v as usize % 3].into()),
            ),
            ("total", AttrValue::N(format!("{}.{:02}", 120 + v, 50 + v))),
            (
                "currency",
                AttrValue::S(["EUR", "USD"][v as usize % 2].into()),
            ),
            (
                "created_at",
                AttrValue::S(format!("2026-11-{:02}T10:00:00Z", 1 + v)),
            ),
            (
                "updated_at",
                AttrValue::S(format!("2026-11-23T19:{:02}:00Z", v)),
            ),
            ("updated_by", AttrValue::S(format!("user-{v}@example.com"))),
            ("request_id", AttrValue::S(format!("req-7f3a9c{v:02}-4b1d"))),
            ("lines", AttrValue::L((0..3).map(line).collect())),
            ("note", AttrValue::S(String::new())),
        ]);
        let mut note = String::new();
        let mut h = fnv1a64(&v.to_le_bytes());
        while image_bytes(&item) < target {
            if words {
                let w = [
                    "deliver", "to", "the", "back", "door", "please", "ring", "twice",
                ];
                note.push_str(w[(note.len() + v as usize) % w.len()]);
                note.push(' ');
            } else {
                h = fnv1a64(&h.to_le_bytes());
                note.push_str(&format!("{:x}", h & 0xf));
            }
            item.insert("note".into(), AttrValue::S(note.clone()));
        }
        item
    }

    fn record(event: &str, old: Option<Item>, new: Option<Item>) -> crate::stream::StreamRecord {
        crate::stream::StreamRecord {
            event_id: "e1".into(),
            event_name: event.into(),
            keys: key(&[("pk", AttrValue::S("order-0001234".into()))]),
            new_image: new,
            old_image: old,
            sequence_number: "110000000001745442301".into(),
            size_bytes: None,
            approximate_creation: DateTime::parse_from_rfc3339("2026-11-23T19:05:00Z")
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            user_identity: None,
            problem: None,
            raw: None,
        }
    }

    const ARN: &str =
        "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-23T00:00:00.000";
    const SHARD: &str = "shardId-00000001700000000000-0123abcd";

    /// The entry the daemon writes for `record` (`build_entry`, with the
    /// actor and correlation attributes configured or not).
    fn entry_of(r: &crate::stream::StreamRecord, actor: bool, correlation: bool) -> AuditEntry {
        let mut e =
            crate::entry::build_entry("orders", ARN, SHARD, r, actor.then_some("updated_by"));
        e.correlation = crate::entry::correlation_of(r, correlation.then_some("request_id"));
        e
    }

    /// The daemon always chains: a link with a previous hash is the largest.
    fn link() -> crate::proof::Link {
        crate::proof::Link {
            prev_hash: Some([7; 32]),
            hash: [9; 32],
        }
    }

    /// Changes whose stream record holds at most 1 KB of images.
    fn one_kb_changes(words: bool) -> Vec<(&'static str, crate::stream::StreamRecord)> {
        let new = order(1024, 1, words);
        let (old_half, new_half) = (order(512, 1, words), order(512, 2, words));
        let mut few = old_half.clone();
        few.insert("status".into(), AttrValue::S("PAID".into()));
        few.insert(
            "updated_at".into(),
            AttrValue::S("2026-11-23T19:05:00Z".into()),
        );
        few.insert(
            "updated_by".into(),
            AttrValue::S("user-2@example.com".into()),
        );
        let cases = vec![
            (
                "INSERT of a 1 KB item",
                record("INSERT", None, Some(new.clone())),
            ),
            ("REMOVE of a 1 KB item", record("REMOVE", Some(new), None)),
            (
                "MODIFY 512 B -> 512 B, every attribute changed",
                record("MODIFY", Some(old_half.clone()), Some(new_half)),
            ),
            (
                "MODIFY 512 B -> 512 B, three attributes changed",
                record("MODIFY", Some(old_half), Some(few)),
            ),
        ];
        for (name, r) in &cases {
            let images = r.old_image.as_ref().map_or(0, image_bytes)
                + r.new_image.as_ref().map_or(0, image_bytes);
            assert!(images <= 1024 + 40, "{name}: {images} B of images");
        }
        cases
    }

    /// DynamoDB's sizing rules, on the documented cases: strings and binary
    /// by length (UTF-8 bytes), numbers by significant digits, documents 3
    /// bytes plus their elements and 1 byte each, names counted too.
    #[test]
    fn item_sizes_follow_dynamodbs_rules() {
        assert_eq!(attr_size(&s("héllo")), 6);
        assert_eq!(
            attr_size(&DAttr::B(aws_sdk_dynamodb::primitives::Blob::new(vec![
                0;
                32
            ]))),
            32
        );
        assert_eq!(attr_size(&DAttr::N("12345".into())), 4);
        assert_eq!(attr_size(&DAttr::N("-0.00120".into())), 2);
        assert_eq!(attr_size(&DAttr::N("0".into())), 1);
        assert_eq!(attr_size(&DAttr::N("1795000123".into())), 6);
        assert_eq!(attr_size(&DAttr::Bool(true)), 1);
        assert_eq!(attr_size(&DAttr::L(vec![s("ab"), s("c")])), 3 + 3 + 2);
        let m = DAttr::M(HashMap::from([("k".to_string(), s("vv"))]));
        assert_eq!(attr_size(&m), 3 + 1 + 2 + 1);
        let item = HashMap::from([("pk".to_string(), s("x")), ("n".to_string(), n(7))]);
        assert_eq!(item_size(&item), 2 + 1 + 1 + 2);
    }

    /// What `write_cost` sizes is what `put_entry` writes: the same items,
    /// every attribute counted (body, chain link, TTL, index keys).
    #[test]
    fn write_cost_counts_every_attribute_put_entry_writes() {
        let (_, r) = one_kb_changes(true).remove(0);
        let e = entry_of(&r, true, true);
        let ttl = DAttr::N("1795000123".into());
        let items = entry_items(&e, Some(&link()), Some(&ttl)).unwrap();
        let cost = write_cost(&e, Some(&link()), true).unwrap();
        assert_eq!(cost.item_bytes, item_size(&items.head));
        for name in [
            "hash",
            "prev_hash",
            "expires_at",
            ENTRY_Z,
            "ts",
            "ix_table",
            "ix_actor",
            "ix_corr",
        ] {
            assert!(
                items.head.contains_key(name),
                "{name} missing: {:?}",
                items.head.keys()
            );
        }
        // The chain's two hex hashes are counted: 4 + 64 and 9 + 64 bytes.
        let unchained = write_cost(&e, None, true).unwrap();
        assert_eq!(cost.item_bytes - unchained.item_bytes, 4 + 64 + 9 + 64);
        // TTL: 10 + 6 bytes.
        let no_ttl = write_cost(&e, Some(&link()), false).unwrap();
        assert_eq!(cost.item_bytes - no_ttl.item_bytes, "expires_at".len() + 6);
        assert!(no_ttl.item_bytes > 0);
        // Index rows: the table key, the index key, `ts`, `event`, 100.
        let keys = 2 + attr_size(&items.head["pk"]) + 2 + attr_size(&items.head["sk"]);
        let common = keys + 2 + 24 + "event".len() + e.event.len() + GSI_ROW_OVERHEAD;
        // Every entry index; the principal index is on attribution records.
        let expect: Vec<(Index, usize)> = Index::ALL
            .into_iter()
            .filter(|i| *i != Index::Principal)
            .map(|i| {
                (
                    i,
                    common + i.attribute().len() + attr_size(&items.head[i.attribute()]),
                )
            })
            .collect();
        assert_eq!(cost.index_rows, expect);
        assert_eq!(
            cost.write_units,
            cost.item_bytes.div_ceil(1024) + 3,
            "{cost:?}"
        );
        // The body round-trips.
        let json = inline_entry_json(&items.head).unwrap().unwrap();
        assert_eq!(decode_entry(&json).unwrap().changes, e.changes);
    }

    /// The budget: a change whose stream record holds at most 1 KB of images
    /// costs at most 3 write units with its index rows, chained, with TTL.
    /// The table index costs one unit, the entry item two at most; the actor
    /// and correlation indexes cost one unit each more (see README, "Write
    /// cost"), and the item fits one unit for the smaller changes.
    #[test]
    fn a_change_of_one_kb_costs_at_most_three_write_units() {
        for words in [true, false] {
            for (name, r) in one_kb_changes(words) {
                let cost = |actor, corr| {
                    write_cost(&entry_of(&r, actor, corr), Some(&link()), true).unwrap()
                };
                let plain = cost(false, false);
                assert_eq!(plain.index_rows.len(), 1, "{name}");
                assert!(plain.index_rows.iter().all(|(_, b)| *b <= 1024), "{name}");
                assert!(
                    plain.item_bytes <= 2048,
                    "{name} (text: {words}): {plain:?}"
                );
                assert!(plain.write_units <= 3, "{name} (text: {words}): {plain:?}");
                // Each optional index adds exactly its row.
                // A REMOVE names no actor (the old image's is `last_writer`).
                let actor_row = usize::from(r.event_name != "REMOVE");
                let with_actor = cost(true, false);
                assert_eq!(with_actor.index_rows.len(), 1 + actor_row, "{name}");
                assert_eq!(
                    with_actor.write_units,
                    with_actor.item_bytes.div_ceil(1024) + 1 + actor_row,
                    "{name}"
                );
                let both = cost(true, true);
                assert_eq!(both.index_rows.len(), 2 + actor_row, "{name}");
                assert_eq!(
                    both.write_units,
                    both.item_bytes.div_ceil(1024) + 2 + actor_row,
                    "{name}"
                );
                let json = encode_entry(&entry_of(&r, false, false)).unwrap();
                let body = match entry_body(&json) {
                    (_, DAttr::B(b)) => b.as_ref().len(),
                    _ => json.len(),
                };
                eprintln!(
                    "{name} (text: {words}): JSON {} B, body {body} B; \
                     item {} B / {} B / {} B, units {} / {} / {}",
                    json.len(),
                    plain.item_bytes,
                    with_actor.item_bytes,
                    both.item_bytes,
                    plain.write_units,
                    with_actor.write_units,
                    both.write_units
                );
            }
        }
        // A small change with an actor: the entry fits one unit, so its two
        // index rows bring it to 3.
        let mut old = order(400, 1, true);
        let mut new = old.clone();
        new.insert("status".into(), AttrValue::S("PAID".into()));
        new.insert("updated_by".into(), AttrValue::S("alice".into()));
        old.insert("updated_by".into(), AttrValue::S("bob".into()));
        let small = write_cost(
            &entry_of(&record("MODIFY", Some(old), Some(new)), true, false),
            Some(&link()),
            true,
        )
        .unwrap();
        assert!(small.item_bytes <= 1024, "{small:?}");
        assert_eq!(small.write_units, 3, "{small:?}");
    }

    /// An entry too big to be inline: its parts are billed as items.
    #[test]
    fn an_oversize_entry_is_billed_for_its_parts() {
        let mut e = entry_of(
            &record("INSERT", None, Some(order(1024, 1, true))),
            false,
            false,
        );
        e.changes[0].new = Some(AttrValue::S("x".repeat(INLINE_ENTRY_LIMIT + 10)));
        let cost = write_cost(&e, Some(&link()), false).unwrap();
        assert_eq!(cost.part_bytes.len(), 2);
        let units: usize = cost.part_bytes.iter().map(|b| b.div_ceil(1024)).sum();
        assert_eq!(cost.write_units, cost.item_bytes.div_ceil(1024) + units + 1);
    }

    #[test]
    fn sequence_keys_pad_and_reject_non_numbers() {
        assert_eq!(sequence_key("007"), Some(format!("{:0>40}", "7")));
        assert_eq!(sequence_key("eventID:x"), None);
        assert_eq!(sequence_key(""), None);
    }
}
