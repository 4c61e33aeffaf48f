//! [`ReadStore`]: index pages, batch reads of entries and history pages,
//! each entry merged with its CloudTrail attribution record, and what the
//! reads cost.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue as DAttr, KeysAndAttributes};
use tokio_util::sync::CancellationToken;

use super::item::{decode_head_item, has_inline_entry};
use super::{build_error, get_n, get_s, s, sdk_store_error, AllPages, DynamoStore};
use crate::entry::AuditEntry;
use crate::retry::{retry, Retried, RetryPolicy};
use crate::store::layout::{partition_key_from, pk_is_hashed};
use crate::store::{
    HistoryPage, HistoryRequest, Index, IndexHit, IndexPage, IndexRequest, Position, ReadCost,
    ReadStore, StoreError, StoreResult, TIME_ATTRIBUTE,
};
use crate::value::canonical_key_json;

/// Backoff between BatchGetItem rounds for the keys the service left
/// unprocessed: 50 ms doubling to 2 s, as DynamoDB's guidance asks.
const UNPROCESSED_KEYS: RetryPolicy = RetryPolicy {
    min_delay: Duration::from_millis(50),
    max_delay: Duration::from_secs(2),
    jitter_seed: None,
};

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
            .all_pages(table)
            .await?;
        self.count(1, 0, items.len());
        Ok(items
            .iter()
            .filter_map(|i| Some((get_s(i, "sk")?.to_string(), get_s(i, "chunk")?.to_string())))
            .collect())
    }

    /// An audit head item as its entry (reassembling an oversize one).
    async fn decode_head(&self, item: &HashMap<String, DAttr>) -> StoreResult<AuditEntry> {
        // An oversize entry's parts are read only for one.
        let owned = if !has_inline_entry(item) && get_n(item, "parts").is_some() {
            let pk = get_s(item, "pk").unwrap_or_default();
            let sk = get_s(item, "sk").unwrap_or_default();
            self.parts_of(pk, sk).await?
        } else {
            HashMap::new()
        };
        let chunks: HashMap<&str, &str> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        decode_head_item(item, &chunks)
    }

    /// The CloudTrail attribution record of one entry, if any.
    async fn attribution_of(
        &self,
        pk: &str,
        head_sk: &str,
    ) -> StoreResult<Option<HashMap<String, DAttr>>> {
        let table = &self.names.audit;
        let sk = crate::store::attribution::attribution_sort_key(head_sk);
        let item = self
            .get_item(table, [("pk", pk), ("sk", &sk)], None, &[])
            .await?;
        self.count(0, 0, usize::from(item.is_some()));
        Ok(item)
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
    async fn index_page(&self, request: &IndexRequest<'_>) -> StoreResult<IndexPage> {
        let IndexRequest {
            index,
            partition,
            range,
            descending,
            after,
            limit,
        } = *request;
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
            // Unprocessed keys are the service shedding load, not an error:
            // the one retry layer asks again for just those, after its
            // backoff (as it does after a throttle of the whole call).
            let pending = Mutex::new(keys);
            let found_here = Mutex::new(Vec::new());
            let round = || async {
                // Cloned, not taken: a call that fails asks for them again.
                let keys = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if keys.is_empty() {
                    return Ok(());
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
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
                found_here
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(items.into_iter().flatten().cloned());
                let rest = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(table.as_str()))
                    .map(|r| r.keys().to_vec())
                    .unwrap_or_default();
                let left = rest.len();
                *pending.lock().unwrap_or_else(PoisonError::into_inner) = rest;
                if left == 0 {
                    return Ok(());
                }
                Err(StoreError::Transient(format!(
                    "{table}: {left} keys left unprocessed (the service sheds load)"
                )))
            };
            // Reads are not cancelled (their callers have no token): they
            // end when the keys are read or an error retrying cannot fix.
            let never = CancellationToken::new();
            match retry(
                UNPROCESSED_KEYS,
                &never,
                "BatchGetItem(unprocessed keys)",
                round,
            )
            .await
            {
                Ok(()) => {}
                Err(Retried::Failed(e)) => return Err(e),
                Err(Retried::Cancelled) => {
                    return Err(StoreError::Other(format!("{table}: BatchGetItem stopped")))
                }
            }
            for item in found_here
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
            {
                if let (Some(pk), Some(sk)) = (get_s(&item, "pk"), get_s(&item, "sk")) {
                    found.insert((pk.to_string(), sk.to_string()), item.clone());
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

    async fn history_page(&self, request: &HistoryRequest<'_>) -> StoreResult<HistoryPage> {
        let HistoryRequest {
            table: table_name,
            key,
            descending,
            after,
            limit,
        } = *request;
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
