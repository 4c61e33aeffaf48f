//! [`AttributionStore`] in the daemon's own DynamoDB tables (the adapter:
//! SDK types stop here).
//!
//! - An attribution record sits next to its entry in the audit table: the
//!   entry's `pk`, `sk` = `<entry sk>#attribution`, `attribution` (S, the
//!   [`AttributionRecord`] JSON), `attr_table` (the audited table),
//!   `attr_item_key` (the item's key as DynamoDB JSON), `principal_arn` (S,
//!   absent when ambiguous), `confidence`, `event_id`, `matched_at`; and,
//!   naming a principal, the keys of the sparse `by-principal-time` index:
//!   `ix_principal` (`<ARN>#<bucket>`) and `ts` (the entry's time); its
//!   entry's `entry_sequence_number` (S) and `entry_hash` (B), so that the
//!   item chain's read of an item's newest item, meeting the record first,
//!   needs no second read for the entry (`AuditStore::item_predecessor`).
//!   None of
//!   an entry's attributes (`entry`, `entry_z`, `event`, `ix_table`,
//!   `ix_actor`, `ix_corr`), so indexes over entries do not pick these up. Written once
//!   (`attribute_not_exists(pk)`), never updated: the entry stays as it was
//!   written, and `history` merges the two.
//! - The reader's position is a row of the shards table under a reserved
//!   key no stream has: `stream_arn` = `#cloudtrail`, `shard_id` =
//!   `s3://<bucket>/<prefix>`; `last_key` (S, the last log file read),
//!   `pending` (S, JSON of the writes waiting for their entries),
//!   `updated_at`. It only moves forward (`last_key` never decreases).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as DAttr;
use chrono::{DateTime, Utc};

use super::matcher::Candidate;
use super::reader::{
    AttributionError, AttributionResult, AttributionStore, ItemEntries, KeyType, Position,
};
use crate::aws::{classify, written, Classified, ErrorKind};
use crate::store::attribution::AttributionRecord;
use crate::store::dynamo::{get_hash, item_partition_key, DynamoStore};
use crate::store::layout::{ENTRY_HASH, ENTRY_SEQUENCE_NUMBER};
use crate::store::ItemPredecessor;
use crate::store::{format_ts, principal_index_key, Index, PutOutcome, TIME_ATTRIBUTE};
use crate::value::canonical_key_json;
use crate::value::Item;
use aws_sdk_dynamodb::primitives::Blob;

pub use crate::store::attribution::{
    attribution_sort_key, ATTRIBUTION_SUFFIX, POSITION_STREAM_ARN,
};

/// The audit-table sort key of an entry (as
/// [`entry_sort_key`](crate::store::dynamo::entry_sort_key)).
pub fn sort_key_of(stream_arn: &str, sequence_number: &str) -> String {
    crate::store::dynamo::entry_sort_key(stream_arn, sequence_number)
}

fn s(v: impl Into<String>) -> DAttr {
    DAttr::S(v.into())
}

fn get_s<'a>(item: &'a HashMap<String, DAttr>, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(DAttr::S(v)) => Some(v.as_str()),
        _ => None,
    }
}

fn error(c: Classified, what: &str) -> AttributionError {
    match c.kind {
        ErrorKind::Throttled | ErrorKind::Transient => {
            AttributionError::Transient(format!("{what}: {}", c.message))
        }
        _ => AttributionError::Other(format!("{what}: {}", c.message)),
    }
}

fn parse_time(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl AttributionStore for DynamoStore {
    async fn key_schema(&self, table: &str) -> AttributionResult<Vec<(String, KeyType)>> {
        let out = self
            .client()
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| error(classify(&e), &format!("DescribeTable {table}")))?;
        let t = out
            .table()
            .ok_or_else(|| AttributionError::Other(format!("DescribeTable {table}: no table")))?;
        let types: HashMap<&str, &str> = t
            .attribute_definitions()
            .iter()
            .map(|d| (d.attribute_name(), d.attribute_type().as_str()))
            .collect();
        t.key_schema()
            .iter()
            .map(|k| {
                let name = k.attribute_name();
                let kind = match types.get(name).copied() {
                    Some("S") => KeyType::S,
                    Some("N") => KeyType::N,
                    Some("B") => KeyType::B,
                    other => {
                        return Err(AttributionError::Other(format!(
                            "table {table}: key attribute {name} has type {other:?}"
                        )))
                    }
                };
                Ok((name.to_string(), kind))
            })
            .collect()
    }

    async fn item_entries(
        &self,
        table: &str,
        key: &Item,
        since: DateTime<Utc>,
    ) -> AttributionResult<ItemEntries> {
        let audit = &self.names().audit;
        let pk = item_partition_key(table, key);
        let mut out = ItemEntries::default();
        let mut start: Option<HashMap<String, DAttr>> = None;
        // Newest first, stopping once past `since`: reads ∝ the window, not
        // the item's whole history.
        loop {
            let page = self
                .client()
                .query()
                .table_name(audit)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_names("#ev", "event")
                .expression_attribute_names("#et", "event_time")
                .expression_attribute_names("#at", "attribution")
                .expression_attribute_names("#pa", "part")
                .expression_attribute_names("#ts", TIME_ATTRIBUTE)
                .expression_attribute_names("#h", "hash")
                .expression_attribute_names("#sn", "sequence_number")
                .expression_attribute_values(":pk", s(&pk))
                .projection_expression("#sk, #ev, #et, #ts, #at, #pa, #h, #sn")
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| error(classify(&e), &format!("Query {audit}")))?;
            let mut oldest: Option<DateTime<Utc>> = None;
            for item in page.items() {
                if item.contains_key("part") {
                    continue;
                }
                if let Some(json) = get_s(item, "attribution") {
                    let record: AttributionRecord = serde_json::from_str(json).map_err(|e| {
                        AttributionError::Other(format!("{pk}: corrupt attribution record: {e}"))
                    })?;
                    out.event_ids.extend(record.event_ids.iter().cloned());
                    if let Some(c) = out.candidates.iter_mut().find(|c| c.sk == record.entry_sk) {
                        c.attributed = true;
                    }
                    // Descending: the record comes before its entry.
                    out.candidates.push(Candidate {
                        sk: record.entry_sk,
                        event: String::new(),
                        time: None,
                        attributed: true,
                    });
                    continue;
                }
                let Some(sk) = get_s(item, "sk") else {
                    continue;
                };
                // Entries keep their time as `ts` (`event_time` on entries
                // written by earlier versions).
                let time = get_s(item, "event_time")
                    .or_else(|| get_s(item, TIME_ATTRIBUTE))
                    .and_then(parse_time);
                if let Some(t) = time {
                    oldest = Some(oldest.map_or(t, |o: DateTime<Utc>| o.min(t)));
                }
                if let (Some(hash), Some(seq)) =
                    (get_hash(item, "hash"), get_s(item, "sequence_number"))
                {
                    let link = ItemPredecessor {
                        sort_key: sk.to_string(),
                        sequence_number: seq.to_string(),
                        hash: Some(hash),
                    };
                    out.links.insert(sk.to_string(), link);
                }
                let attributed = out.candidates.iter().any(|c| c.sk == sk && c.attributed);
                out.candidates.retain(|c| c.sk != sk);
                out.candidates.push(Candidate {
                    sk: sk.to_string(),
                    event: get_s(item, "event").unwrap_or_default().to_string(),
                    time,
                    attributed,
                });
            }
            match page.last_evaluated_key() {
                Some(k) if oldest.is_none_or(|o| o >= since) => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn put_attribution(
        &self,
        table: &str,
        key: &Item,
        record: &AttributionRecord,
    ) -> AttributionResult<PutOutcome> {
        let audit = &self.names().audit;
        let json = serde_json::to_string(record)
            .map_err(|e| AttributionError::Other(format!("encoding an attribution: {e}")))?;
        let mut item = HashMap::from([
            ("pk".to_string(), s(item_partition_key(table, key))),
            ("sk".to_string(), s(attribution_sort_key(&record.entry_sk))),
            ("attribution".to_string(), s(json)),
            ("attr_table".to_string(), s(table)),
            (
                "confidence".to_string(),
                s(record.principal.confidence.as_str()),
            ),
            ("matched_at".to_string(), s(format_ts(Utc::now()))),
        ]);
        if let Some(arn) = &record.principal.arn {
            item.insert("principal_arn".into(), s(arn));
            // The sparse by-principal-time index: only records naming a
            // principal are in it, sorted by their entry's time.
            let canonical = canonical_key_json(key);
            item.insert(
                Index::Principal.attribute().into(),
                s(principal_index_key(arn, &canonical)),
            );
            item.insert(
                TIME_ATTRIBUTE.into(),
                s(format_ts(record.entry_time.unwrap_or_else(Utc::now))),
            );
        }
        if let Some(id) = &record.principal.event_id {
            item.insert("event_id".into(), s(id));
        }
        // For lookups by principal: the pk alone may be a hash of the key.
        if let Ok(json) = serde_json::to_string(key) {
            item.insert("attr_item_key".into(), s(json));
        }
        if let Some((seq, hash)) = record
            .entry_link
            .as_ref()
            .and_then(|l| Some((&l.sequence_number, l.hash?)))
        {
            item.insert(ENTRY_HASH.into(), DAttr::B(Blob::new(hash.to_vec())));
            item.insert(ENTRY_SEQUENCE_NUMBER.into(), s(seq));
        }
        self.put_audit_item_once(item)
            .await
            .map_err(|c| error(c, &format!("PutItem {audit}")))
    }

    async fn load_position(&self, source: &str) -> AttributionResult<Option<Position>> {
        let shards = &self.names().shards;
        let out = self
            .client()
            .get_item()
            .table_name(shards)
            .key("stream_arn", s(POSITION_STREAM_ARN))
            .key("shard_id", s(source))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| error(classify(&e), &format!("GetItem {shards}")))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        let pending = match get_s(item, "pending") {
            Some(json) => serde_json::from_str(json).map_err(|e| {
                AttributionError::Other(format!(
                    "{shards} {POSITION_STREAM_ARN} {source}: corrupt `pending`: {e}"
                ))
            })?,
            None => Vec::new(),
        };
        Ok(Some(Position {
            last_key: get_s(item, "last_key").map(str::to_string),
            pending,
        }))
    }

    async fn save_position(&self, source: &str, position: &Position) -> AttributionResult<()> {
        let shards = &self.names().shards;
        let pending = serde_json::to_string(&position.pending)
            .map_err(|e| AttributionError::Other(format!("encoding pending writes: {e}")))?;
        let mut call = self
            .client()
            .update_item()
            .table_name(shards)
            .key("stream_arn", s(POSITION_STREAM_ARN))
            .key("shard_id", s(source))
            .expression_attribute_names("#p", "pending")
            .expression_attribute_names("#u", "updated_at")
            .expression_attribute_values(":p", s(pending))
            .expression_attribute_values(":u", s(format_ts(Utc::now())));
        call = match &position.last_key {
            Some(k) => call
                .update_expression("SET #k = :k, #p = :p, #u = :u")
                .expression_attribute_names("#k", "last_key")
                .expression_attribute_values(":k", s(k))
                .condition_expression("attribute_not_exists(#k) OR #k <= :k"),
            None => call.update_expression("SET #p = :p, #u = :u"),
        };
        if !written(call.send().await).map_err(|c| error(c, &format!("UpdateItem {shards}")))? {
            tracing::warn!(source = %source, "stored CloudTrail position is already further; kept it");
        }
        Ok(())
    }
}
