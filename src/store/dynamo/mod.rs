//! The store traits in the daemon's own DynamoDB tables: the adapter (SDK
//! types stop here). What the items look like, their keys and the write-cost
//! rules are in [`crate::store::layout`]; this module holds [`DynamoStore`]
//! and the primitives its parts share (write-once put, get, query, error
//! mapping). One file per role:
//! - `admin.rs`: creating and checking the tables (`init`, `check_tables`,
//!   retention, protection);
//! - `audit.rs`: [`crate::store::AuditStore`] (entries, oversize entries, gaps);
//! - `read.rs`: [`crate::store::ReadStore`] (indexes, pages, batch reads);
//! - `snapshot.rs`: [`crate::store::SnapshotStore`];
//! - `checkpoint.rs`: [`crate::store::CheckpointStore`];
//! - `lease.rs`: its replica heartbeats, leases and fenced writes;
//! - `item.rs`: the audit items in SDK terms (encoding, sizes, write cost);
//! - `proof.rs`: [`crate::store::ProofStore`] and the raw reads of
//!   [`crate::store::evidence::EvidenceReads`], which `verify` assembles.
//!
//! One more trait is implemented beside its own: `AttributionStore`
//! (`attribution::dynamo`).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue as DAttr;
use chrono::{DateTime, Utc};

use crate::aws::{classify, written, Classified, ErrorKind};
use crate::store::{PutOutcome, StoreError, StoreResult, TableNames};

mod admin;
mod audit;
mod checkpoint;
mod item;
mod lease;
pub mod proof;
mod read;
mod snapshot;

#[cfg(any(test, feature = "test-util"))]
pub use crate::store::layout::WriteCost;
pub use crate::store::layout::{
    decode_entry, encode_entry, entry_sort_key, gap_sort_key, item_partition_key, CHAIN_POSITION,
    CHAIN_SHARD, DRAINED_SHARD_ROW_TTL, ENTRY_Z, GAPS_PK, INLINE_ENTRY_LIMIT,
    RELEASED_SHARD_ROW_TTL, SHARD_TTL_ATTRIBUTE,
};
pub use admin::InitReport;
pub use item::{entry_body, entry_item_table, inline_entry_json, is_entry_item};
#[cfg(any(test, feature = "test-util"))]
pub use item::{stored_item_bytes, write_cost};

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

    /// `expires_at` for an entry written now (epoch seconds, as TTL wants).
    fn expires_at(&self) -> Option<DAttr> {
        self.retention_days
            .map(|days| DAttr::N((Utc::now().timestamp() + days as i64 * 86_400).to_string()))
    }

    /// A write-once PutItem: `AlreadyPresent` when the key is taken.
    async fn put_once(&self, item: HashMap<String, DAttr>) -> StoreResult<PutOutcome> {
        self.put_audit_item_once(item)
            .await
            .map_err(|c| store_error(c, &self.names.audit))
    }

    /// [`Self::put_once`] with the error as the SDK's, classified: for
    /// adapters of the audit table in other modules (`attribution`).
    pub(crate) async fn put_audit_item_once(
        &self,
        item: HashMap<String, DAttr>,
    ) -> Result<PutOutcome, Classified> {
        let result = self
            .client
            .put_item()
            .table_name(&self.names.audit)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        Ok(if written(result)? {
            PutOutcome::Written
        } else {
            PutOutcome::AlreadyPresent
        })
    }

    /// An UpdateItem of one row of the streams table, by its key: stream
    /// rows, their leases and the digest pointers share the one key shape.
    fn update_stream_row(
        &self,
        table_name: &str,
        stream_arn: impl Into<String>,
    ) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.names.streams)
            .key("table_name", s(table_name))
            .key("stream_arn", s(stream_arn))
    }

    /// A Query for the newest item of the audit partition `pk` (the caller
    /// adds its key condition on `:pk`, and may narrow the sort key):
    /// strongly consistent, and one item, so one read unit as long as that
    /// item is under 4 KB.
    fn newest_audit_item(&self, pk: impl Into<String>) -> QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.names.audit)
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
    }

    /// One item of `table` by its whole key (`[(partition attribute, value),
    /// (sort attribute, value)]`), strongly consistent. `projection` (with
    /// the `names` it aliases, for reserved words) limits the attributes
    /// returned; `None`: all of them.
    async fn get_item(
        &self,
        table: &str,
        key: [(&str, &str); 2],
        projection: Option<&str>,
        names: &[(&str, &str)],
    ) -> StoreResult<Option<HashMap<String, DAttr>>> {
        let mut call = self.client.get_item().table_name(table);
        for (name, value) in key {
            call = call.key(name, s(value));
        }
        if let Some(projection) = projection {
            call = call.projection_expression(projection);
        }
        for (alias, name) in names {
            call = call.expression_attribute_names(*alias, *name);
        }
        let out = call
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        Ok(out.item)
    }

    /// Whether the audit item (`pk`, `sk`) exists (reading only its key).
    async fn head_exists(&self, pk: &str, sk: &str) -> StoreResult<bool> {
        let table = &self.names.audit;
        let key = [("pk", pk), ("sk", sk)];
        Ok(self.get_item(table, key, Some("pk"), &[]).await?.is_some())
    }

    /// The chain link stored on the audit item (`pk`, `sk`) (an entry or a
    /// gap); `None` when the item is absent or carries no link.
    async fn get_link(&self, pk: &str, sk: &str) -> StoreResult<Option<crate::proof::Link>> {
        let table = &self.names.audit;
        let key = [("pk", pk), ("sk", sk)];
        let item = self
            .get_item(table, key, Some("#h, prev_hash"), &[("#h", "hash")])
            .await?;
        let Some(item) = item else {
            return Ok(None);
        };
        let parse = |name: &str| get_hash(&item, name);
        Ok(parse("hash").map(|hash| crate::proof::Link {
            prev_hash: parse("prev_hash"),
            hash,
        }))
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
            .all_pages(table)
            .await
    }

    /// Every item of one audit partition, ascending by `sk`.
    async fn query_partition(&self, pk: &str) -> StoreResult<Vec<HashMap<String, DAttr>>> {
        self.query_all(&self.names.audit, "pk", pk).await
    }

    /// Every item of `table`, all pages, strongly consistent.
    async fn scan_all(&self, table: &str) -> StoreResult<Vec<HashMap<String, DAttr>>> {
        self.client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .all_pages(table)
            .await
    }
}

/// A Query or a Scan read to its last page: every item, or the first error
/// (as `table`'s).
trait AllPages {
    async fn all_pages(self, table: &str) -> StoreResult<Vec<HashMap<String, DAttr>>>;
}

macro_rules! all_pages {
    ($($request:ty),*) => {$(
        impl AllPages for $request {
            async fn all_pages(self, table: &str) -> StoreResult<Vec<HashMap<String, DAttr>>> {
                self.into_paginator()
                    .items()
                    .send()
                    .try_collect()
                    .await
                    .map_err(|e| sdk_store_error(&e, table))
            }
        }
    )*};
}
all_pages!(
    aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder
);

// ---------------------------------------------------------------- helpers

fn s(v: impl Into<String>) -> DAttr {
    DAttr::S(v.into())
}

fn n(v: usize) -> DAttr {
    DAttr::N(v.to_string())
}

/// A chain hash stored on an audit item: 32 raw bytes (B), as written
/// since the item chain made room for its link by halving these, or hex
/// text (S), as written before.
pub(crate) fn get_hash(item: &HashMap<String, DAttr>, name: &str) -> Option<crate::proof::Hash> {
    match item.get(name)? {
        DAttr::B(bytes) => bytes.as_ref().try_into().ok(),
        DAttr::S(text) => crate::proof::chain::parse_hash(text),
        _ => None,
    }
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

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---------------------------------------------------------------- errors

fn build_error(table: &str, e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Other(format!("building a request for {table}: {e}"))
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
