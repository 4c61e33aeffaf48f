//! [`AuditStore`]: entries (inline or, too big for one item, in parts
//! written before their head), gaps, and `history` over one item's
//! partition.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as DAttr;

use super::item::{decode_head_item, entry_items, insert_link};
use super::{get_s, s, DynamoStore};
use crate::entry::{AuditEntry, Gap};
use crate::store::layout::{
    gap_sort_key, partition_key_from, pk_is_hashed, ENTRY_HASH, ENTRY_SEQUENCE_NUMBER, GAPS_PK,
};
use crate::store::{AuditStore, ItemPredecessor, PutOutcome, StoreError, StoreResult};
use crate::value::{canonical_key_json, Item};

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
        self.get_link(GAPS_PK, &gap_sort_key(gap)).await
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

    async fn item_predecessor(
        &self,
        table: &str,
        key: &Item,
        before_sort_key: &str,
    ) -> StoreResult<Option<ItemPredecessor>> {
        let pk = partition_key_from(table, &canonical_key_json(key));
        let audit = &self.names.audit;
        // The newest item below the entry's sort key: one read unit whatever
        // the partition holds (an entry head is under 4 KB: an oversize
        // entry's head holds no JSON).
        let out = self
            .newest_audit_item(&pk)
            .key_condition_expression("pk = :pk AND sk < :before")
            .expression_attribute_values(":before", s(before_sort_key))
            .projection_expression("sk, #h, sequence_number, #eh, #es")
            .expression_attribute_names("#h", "hash")
            .expression_attribute_names("#eh", ENTRY_HASH)
            .expression_attribute_names("#es", ENTRY_SEQUENCE_NUMBER)
            .send()
            .await
            .map_err(|e| super::sdk_store_error(&e, audit))?;
        let Some(item) = out.items.unwrap_or_default().into_iter().next() else {
            return Ok(None);
        };
        let sk = get_s(&item, "sk").unwrap_or_default().to_string();
        if sk.starts_with(crate::store::SNAPSHOT_LABEL_PREFIX) {
            // Only SNAPSHOT entries below: the item has no stream entry yet.
            return Ok(None);
        }
        let head_sk = head_sort_key(&sk);
        if head_sk.len() == sk.len() {
            return Ok(Some(predecessor_of(&item, sk)));
        }
        // An attribution record sorts just after its entry's head and
        // carries the head's place: no second read.
        if let (Some(seq), Some(hash)) = (
            get_s(&item, ENTRY_SEQUENCE_NUMBER),
            super::get_hash(&item, ENTRY_HASH),
        ) {
            return Ok(Some(ItemPredecessor {
                sort_key: head_sk.to_string(),
                sequence_number: seq.to_string(),
                hash: Some(hash),
            }));
        }
        // A part of an oversize entry (or an attribution record written
        // before they carried it): the head is named by their sort key.
        let head = self
            .get_item(
                audit,
                [("pk", pk.as_str()), ("sk", head_sk)],
                Some("sk, #h, sequence_number"),
                &[("#h", "hash")],
            )
            .await?;
        Ok(head.map(|h| predecessor_of(&h, head_sk.to_string())))
    }
}

/// The entry head's sort key (`<label>#<sequence>`) of an audit item's:
/// an attribution record's or a part's extends it.
fn head_sort_key(sk: &str) -> &str {
    match sk.match_indices('#').nth(1) {
        Some((at, _)) => &sk[..at],
        None => sk,
    }
}

fn predecessor_of(item: &HashMap<String, DAttr>, sort_key: String) -> ItemPredecessor {
    ItemPredecessor {
        sequence_number: get_s(item, "sequence_number")
            .unwrap_or_default()
            .to_string(),
        hash: super::get_hash(item, "hash"),
        sort_key,
    }
}

impl DynamoStore {
    pub(super) async fn put_entry_with(
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
    /// entries only (an oversize one is refused). Built only with
    /// `test-util`: not in what ships.
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub async fn bulk_load_unchecked(
        &self,
        entries: &[(AuditEntry, Option<crate::proof::Link>)],
    ) -> StoreResult<()> {
        use super::{build_error, sdk_store_error};
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        use std::time::Duration;
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
            let mut entry = decode_head_item(item, &chunks)?;
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
        self.put_once(gap_item(gap, link)?).await
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

/// A gap's audit item (written once, under `#gaps`).
pub(super) fn gap_item(
    gap: &Gap,
    link: Option<&crate::proof::Link>,
) -> StoreResult<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    let json =
        serde_json::to_string(gap).map_err(|e| StoreError::Other(format!("encoding gap: {e}")))?;
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
    Ok(item)
}
