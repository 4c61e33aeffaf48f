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
//!   (`<stream label>#<sequence number, 40 digits>`), `entry` (S, the entry's
//!   JSON), `table_name`, `event`, `actor`, `event_time`, `shard_id`,
//!   `stream_arn`, `sequence_number` (S, for future indexes), `written_at` (S),
//!   and `item_key` (S, the canonical key JSON) when the key was too long to
//!   sit in `pk` itself.
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
//! Entries and gaps are written once (`attribute_not_exists(pk)`) and never
//! updated or deleted.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as DAttr, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;

use crate::aws::fnv1a64;
use crate::aws::{classify, Classified, ErrorKind};
use crate::entry::{AuditEntry, Gap};
use crate::store::{
    AuditStore, CheckpointStore, PutOutcome, ShardCheckpoint, ShardStatus, StoreError, StoreResult,
    StreamRow, TableHealthRow, TableNames,
};
use crate::stream::stream_label;
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
/// The `actor` index attribute is cut to this; the entry keeps it whole.
const MAX_ACTOR_ATTR: usize = 1024;
/// The streams-table row (sort key) where a table's state is kept; a stream
/// ARN never starts with `#`.
const HEALTH_SORT_KEY: &str = "#health";

/// The shards table's TTL attribute (epoch seconds), set on drained rows.
pub const SHARD_TTL_ATTRIBUTE: &str = "expires_at";
/// How long a drained shard's row is kept: shards are listed for about 48 h
/// at most (open up to ~24 h, then retained 24 h), so a week is ample.
pub const DRAINED_SHARD_ROW_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long `init` waits for a new table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Both stores in DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    names: TableNames,
    /// `[retention] days`: entries carry `expires_at` (TTL) when set.
    retention_days: Option<u64>,
}

/// What [`DynamoStore::init`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitReport {
    pub created: Vec<String>,
    pub existed: Vec<String>,
}

impl DynamoStore {
    pub fn new(client: aws_sdk_dynamodb::Client, names: TableNames) -> Self {
        DynamoStore {
            client,
            names,
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
        let created = self
            .client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(def_hash)
            .attribute_definitions(def_range)
            .key_schema(key_hash)
            .key_schema(key_range)
            .send()
            .await;
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
        self.put_entry_with(entry, None).await
    }

    async fn put_linked_entry(
        &self,
        entry: &AuditEntry,
        link: &crate::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.put_entry_with(entry, Some(link)).await
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
    ) -> StoreResult<PutOutcome> {
        let json = encode_entry(entry)?;
        let canonical = canonical_key_json(&entry.key);
        let pk = partition_key_from(&entry.table, &canonical);
        let sk = entry_sort_key(&entry.stream_arn, &entry.sequence_number);

        let mut head = HashMap::from([
            ("pk".to_string(), s(&pk)),
            ("sk".to_string(), s(&sk)),
            ("table_name".to_string(), s(&entry.table)),
            ("event".to_string(), s(&entry.event)),
            ("shard_id".to_string(), s(&entry.shard_id)),
            ("stream_arn".to_string(), s(&entry.stream_arn)),
            ("sequence_number".to_string(), s(&entry.sequence_number)),
            ("written_at".to_string(), s(rfc3339(Utc::now()))),
        ]);
        if let Some(actor) = entry.actor.as_deref().filter(|a| !a.is_empty()) {
            head.insert("actor".into(), s(truncate(actor, MAX_ACTOR_ATTR)));
        }
        if let Some(t) = entry.event_time.as_deref().filter(|t| !t.is_empty()) {
            head.insert("event_time".into(), s(t));
        }
        if pk_is_hashed(&pk) {
            head.insert("item_key".into(), s(&canonical));
        }
        insert_link(&mut head, link);
        let expires = self.expires_at();
        if let Some(at) = &expires {
            head.insert("expires_at".into(), at.clone());
        }

        if json.len() <= INLINE_ENTRY_LIMIT {
            head.insert("entry".into(), s(&json));
            return self.put_once(head).await;
        }

        // Oversize: a re-delivery of a complete entry costs one read, not a
        // rewrite of every part.
        if self.head_exists(&pk, &sk).await? {
            return Ok(PutOutcome::AlreadyPresent);
        }
        let hash = format!("{:016x}", fnv1a64(json.as_bytes()));
        let chunks = split_chunks(&json, INLINE_ENTRY_LIMIT);
        let parts = chunks.len();
        tracing::info!(
            table = %entry.table, stream = %entry.stream_arn, shard = %entry.shard_id,
            sequence = %entry.sequence_number, bytes = json.len(), parts,
            "storing an oversize entry in parts"
        );
        for (i, chunk) in chunks.iter().enumerate() {
            let mut part = HashMap::from([
                ("pk".to_string(), s(&pk)),
                ("sk".to_string(), s(part_sort_key(&sk, &hash, i + 1))),
                ("chunk".to_string(), s(*chunk)),
                ("part".to_string(), n(i + 1)),
                ("parts".to_string(), n(parts)),
            ]);
            if let Some(at) = &expires {
                part.insert("expires_at".into(), at.clone());
            }
            // A part already there is from an interrupted earlier attempt with
            // the same content (the hash is in its key): fine.
            self.put_once(part).await?;
        }
        head.insert("parts".into(), n(parts));
        head.insert("parts_hash".into(), s(&hash));
        head.insert("entry_bytes".into(), n(json.len()));
        self.put_once(head).await
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
        let mut entries = Vec::new();
        for item in &items {
            let sk = get_s(item, "sk").unwrap_or_default();
            if item.contains_key("chunk") {
                continue;
            }
            // A hashed pk may (in theory) be shared by two keys.
            if hashed && get_s(item, "item_key") != Some(canonical.as_str()) {
                continue;
            }
            let json = match (get_s(item, "entry"), get_n(item, "parts")) {
                (Some(json), _) => json.to_string(),
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

impl CheckpointStore for DynamoStore {
    async fn load_shards(&self, stream_arn: &str) -> StoreResult<Vec<ShardCheckpoint>> {
        self.query_all(&self.names.shards, "stream_arn", stream_arn)
            .await?
            .iter()
            .map(shard_from_item)
            .collect()
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
        ];
        let mut values = HashMap::from([
            (":table_name".to_string(), s(&cp.table)),
            (":status".to_string(), s(cp.status.as_str())),
            (":updated_at".to_string(), s(rfc3339(cp.updated_at))),
            (":caught_up".to_string(), DAttr::Bool(cp.caught_up)),
        ]);
        let mut names = HashMap::from([
            ("#table_name".to_string(), "table_name".to_string()),
            ("#status".to_string(), "status".to_string()),
            ("#updated_at".to_string(), "updated_at".to_string()),
            ("#caught_up".to_string(), "caught_up".to_string()),
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

/// Canonical DynamoDB JSON of a key (or any item): names sorted (an [`Item`]
/// is a BTreeMap), numbers canonical, set elements sorted. Written by hand,
/// not through serde, because stored partition keys depend on it byte for
/// byte and must not change when the entry JSON format evolves.
fn canonical_key_json(key: &Item) -> String {
    let mut out = String::new();
    write_map(&mut out, key);
    out
}

fn write_map(out: &mut String, map: &std::collections::BTreeMap<String, AttrValue>) {
    out.push('{');
    for (i, (name, value)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, name);
        out.push(':');
        write_value(out, value);
    }
    out.push('}');
}

fn write_value(out: &mut String, v: &AttrValue) {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut tagged = |tag: &str, f: &mut dyn FnMut(&mut String)| {
        out.push_str("{\"");
        out.push_str(tag);
        out.push_str("\":");
        f(out);
        out.push('}');
    };
    match v {
        AttrValue::S(x) => tagged("S", &mut |o| write_str(o, x)),
        AttrValue::N(x) => tagged("N", &mut |o| write_str(o, &canonical_number(x))),
        AttrValue::B(x) => tagged("B", &mut |o| write_str(o, &b64(x))),
        AttrValue::Bool(x) => tagged("BOOL", &mut |o| {
            o.push_str(if *x { "true" } else { "false" })
        }),
        AttrValue::Null => tagged("NULL", &mut |o| o.push_str("true")),
        AttrValue::M(m) => tagged("M", &mut |o| write_map(o, m)),
        AttrValue::L(l) => tagged("L", &mut |o| {
            o.push('[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                write_value(o, x);
            }
            o.push(']');
        }),
        AttrValue::Ss(x) => tagged("SS", &mut |o| write_strs(o, x.to_vec())),
        AttrValue::Ns(x) => tagged("NS", &mut |o| {
            write_strs(o, x.iter().map(|n| canonical_number(n)).collect())
        }),
        AttrValue::Bs(x) => tagged("BS", &mut |o| {
            write_strs(o, x.iter().map(|b| b64(b)).collect())
        }),
    }
}

fn write_strs(out: &mut String, mut items: Vec<String>) {
    items.sort();
    out.push('[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, x);
    }
    out.push(']');
}

fn write_str(out: &mut String, s: &str) {
    // serde_json's escaping, without a fallible call.
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

/// A number as DynamoDB itself prints it (`1.50` → `1.5`, `1e2` → `100`), so a
/// key typed by a user finds the partition the stream's key was written to.
fn canonical_number(n: &str) -> String {
    match bigdecimal::BigDecimal::from_str(n.trim()) {
        Ok(d) => d.normalized().to_plain_string(),
        Err(_) => n.to_string(),
    }
}

// ---------------------------------------------------------------- entries

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

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// ---------------------------------------------------------------- rows

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
        updated_at: get_s(item, "updated_at")
            .and_then(parse_time)
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
        chain: get_s(item, "chain").and_then(crate::proof::ChainState::decode),
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

    #[test]
    fn sequence_keys_pad_and_reject_non_numbers() {
        assert_eq!(sequence_key("007"), Some(format!("{:0>40}", "7")));
        assert_eq!(sequence_key("eventID:x"), None);
        assert_eq!(sequence_key(""), None);
    }
}
