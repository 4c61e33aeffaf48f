//! [`SnapshotStore`]: the source table's description and Scan pages, a
//! run's bookkeeping rows in the shards table, and SNAPSHOT entries with
//! their place in their segment's chain.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as DAttr;
use chrono::Utc;

use super::{get_n, get_s, n, s, sdk_store_error, store_error, DynamoStore};
use crate::aws::{classify, ErrorKind};
use crate::entry::format_ts;
use crate::entry::AuditEntry;
use crate::store::layout::{entry_keys, snapshot_partition, CHAIN_POSITION, CHAIN_SHARD};
use crate::store::{
    PutOutcome, ScanPage, ScanRequest, SegmentProgress, SnapshotRun, SnapshotStore, SourceInfo,
    StoreError, StoreResult,
};
use crate::value::{canonical_key_json, AttrValue, Item};

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

pub(super) fn from_item(item: &Item) -> HashMap<String, DAttr> {
    item.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                serde_dynamo::AttributeValue::from(v.clone()).into(),
            )
        })
        .collect()
}

impl SnapshotStore for DynamoStore {
    async fn describe_source(&self, table: &str) -> StoreResult<SourceInfo> {
        let out = self
            .describe_table(table)
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

    async fn scan_page(&self, request: ScanRequest<'_>) -> StoreResult<ScanPage> {
        let table = request.table;
        let out = self
            .client
            .scan()
            .table_name(table)
            .segment(request.segment as i32)
            .total_segments(request.segments as i32)
            .consistent_read(true)
            .limit(request.limit.clamp(1, 10_000) as i32)
            .set_exclusive_start_key(request.start.map(from_item))
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
            .item("updated_at", s(format_ts(Utc::now())))
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
            .item("updated_at", s(format_ts(Utc::now())));
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
        let canonical = canonical_key_json(&entry.key);
        let (pk, sk) = entry_keys(entry, &canonical);
        self.get_link(&pk, &sk).await
    }
}
