//! The proof side of the DynamoDB store: digests, the stream rows' pointer
//! to their newest digest, the raw reads `verify` assembles its evidence
//! from (`store::evidence`: the streams rows and one pass over the audit
//! table), and what `export --proof` reads.
//!
//! Layout (added to the tables [`crate::store::layout`] describes):
//! - an entry or gap item carries `hash` (S, hex) and `prev_hash` (S, hex;
//!   absent at a chain's start) beside its JSON: no extra item per entry;
//! - a shard row carries `chain` (S: `v1;<size>;<last hash>;<frontier>`, see
//!   `proof::ChainState::encode`), saved in the checkpoint's own write;
//! - a digest: `pk` = `#digests|<stream arn>`, `sk` = its number, 20 digits;
//!   `digest` (S, the canonical JSON that is hashed and signed), `hash` (S),
//!   `signature` (S, base64; absent when unsigned), `table_name`,
//!   `stream_arn`, `number` (N), `written_at`;
//! - a stream row carries `digest_number` (N) and `digest_hash` (S): the
//!   newest digest written, so deleting digests, or rolling the audit table
//!   back, shows;
//! - a snapshot run is a chain of its own (per Scan segment), named by its
//!   stand-in stream ARN: its digests sit under `#digests|snapshot:…`, its
//!   pointer on a streams row keyed `#snapshot:…` (skipped as a stream), and
//!   each segment row (shards table, `snapshot:<table>`) carries `chain`.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as DAttr;
use chrono::Utc;

use super::item::{entry_item_table, inline_entry_json, is_entry_item, reassemble};
use super::{get_hash, get_n, get_s, s, sdk_store_error, store_error, AllPages, DynamoStore};
use crate::aws::written;
use crate::entry::format_ts;
use crate::proof::digest::SignedDigest;
use crate::proof::verify::leaf_rank;
use crate::store::evidence::{ChainRow, EvidenceReads, TrailRecord};
use crate::store::layout::{item_partition_key, CHAIN_POSITION, CHAIN_SHARD, EXPIRES_AT, GAPS_PK};
use crate::store::ProofStore;
use crate::store::{PutOutcome, StoreError, StoreResult, SNAPSHOT_ARN_PREFIX};
use crate::value::Item;

pub const DIGESTS_PK_PREFIX: &str = "#digests|";

pub fn digests_pk(stream_arn: &str) -> String {
    format!("{DIGESTS_PK_PREFIX}{stream_arn}")
}

fn digest_sk(number: u64) -> String {
    format!("{number:020}")
}

fn signed_from_item(item: &HashMap<String, DAttr>) -> Option<(u64, SignedDigest)> {
    let number = get_s(item, "sk")?.parse().ok()?;
    Some((
        number,
        SignedDigest {
            digest: get_s(item, "digest").unwrap_or_default().to_string(),
            hash: get_s(item, "hash").unwrap_or_default().to_string(),
            signature: get_s(item, "signature").map(str::to_string),
        },
    ))
}

impl ProofStore for DynamoStore {
    async fn newest_digest(&self, stream_arn: &str) -> StoreResult<Option<(u64, SignedDigest)>> {
        let table = &self.names.audit;
        let out = self
            .newest_audit_item(digests_pk(stream_arn))
            .key_condition_expression("pk = :pk")
            .send()
            .await
            .map_err(|e| sdk_store_error(&e, table))?;
        Ok(out.items().first().and_then(signed_from_item))
    }

    async fn put_digest(
        &self,
        table_name: &str,
        stream_arn: &str,
        number: u64,
        digest: &SignedDigest,
    ) -> StoreResult<PutOutcome> {
        self.put_once(digest_item(table_name, stream_arn, number, digest))
            .await
    }

    async fn put_fenced_digest(
        &self,
        number: u64,
        digest: &SignedDigest,
        fence: &crate::store::Fence,
    ) -> StoreResult<PutOutcome> {
        let item = digest_item(&fence.table, &fence.stream_arn, number, digest);
        self.put_audit_item_fenced(item, fence).await
    }

    async fn record_newest_digest(
        &self,
        table_name: &str,
        stream_arn: &str,
        number: u64,
        hash: &str,
    ) -> StoreResult<()> {
        let table = &self.names.streams;
        let result = self
            .update_stream_row(table_name, digest_pointer_key(stream_arn))
            .update_expression("SET #n = :n, #h = :h")
            .condition_expression("attribute_not_exists(#n) OR #n < :n")
            .expression_attribute_names("#n", "digest_number")
            .expression_attribute_names("#h", "digest_hash")
            .expression_attribute_values(":n", DAttr::N(number.to_string()))
            .expression_attribute_values(":h", s(hash))
            .send()
            .await;
        // Not newer than the stored pointer: kept as it is.
        written(result).map_err(|c| store_error(c, table))?;
        Ok(())
    }
}

/// The streams-table sort key that holds a chain's newest-digest pointer: a
/// stream's own row; for a snapshot run (no stream) a row under the reserved
/// `#` prefix, which every reader of stream rows skips, so the daemon never
/// takes a run for a stream to read.
fn digest_pointer_key(stream_arn: &str) -> String {
    if stream_arn.starts_with(SNAPSHOT_ARN_PREFIX) {
        format!("#{stream_arn}")
    } else {
        stream_arn.to_string()
    }
}

/// An entry as `export --proof` needs it.
pub struct LinkedEntry {
    pub stream_arn: String,
    /// The stored JSON.
    pub json: String,
    pub hash: Option<String>,
    pub prev_hash: Option<String>,
    /// A SNAPSHOT entry's segment chain (other entries: their `shard_id`).
    pub chain_shard: Option<String>,
}

/// An entry head still to be reassembled from its parts.
struct Oversize {
    pk: String,
    sk: String,
    record: TrailRecord,
}

/// A chain's newest-digest pointer on a streams row: (number, hash).
fn pointer(row: &HashMap<String, DAttr>) -> Option<(u64, String)> {
    match (get_n(row, "digest_number"), get_s(row, "digest_hash")) {
        (Some(n), Some(h)) => Some((n as u64, h.to_string())),
        _ => None,
    }
}

/// What `verify` reads: the streams rows, then one Scan of the audit table
/// (each item read once); [`crate::store::evidence::gather`] assembles it.
impl EvidenceReads for DynamoStore {
    async fn chain_rows(&self) -> StoreResult<Vec<ChainRow>> {
        let mut out = Vec::new();
        for row in self.scan_all(&self.names.streams).await? {
            let Some(key) = get_s(&row, "stream_arn") else {
                continue;
            };
            let stream_arn = match key.strip_prefix('#') {
                // A snapshot run's digest pointer.
                Some(arn) if arn.starts_with(SNAPSHOT_ARN_PREFIX) => arn,
                // Other rows under a reserved `#` key (a table's health)
                // are no chain.
                Some(_) => continue,
                None => key,
            };
            out.push(ChainRow {
                table: get_s(&row, "table_name").unwrap_or_default().to_string(),
                stream_arn: stream_arn.to_string(),
                newest_digest: pointer(&row),
            });
        }
        Ok(out)
    }

    async fn scan_trail(
        &self,
        mut visit: impl FnMut(TrailRecord) + Send,
        mut progress: impl FnMut(u64) + Send,
    ) -> StoreResult<()> {
        let table = &self.names.audit;
        let mut oversize: Vec<Oversize> = Vec::new();
        let mut pages = self
            .client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut read = 0u64;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_store_error(&e, table))?;
            for item in page.items() {
                read += 1;
                let pk = get_s(item, "pk").unwrap_or_default();
                if item.contains_key("chunk") {
                    continue;
                }
                let item_table = if pk == GAPS_PK || pk.starts_with(DIGESTS_PK_PREFIX) {
                    get_s(item, "table_name").unwrap_or_default()
                } else {
                    entry_item_table(item).unwrap_or_default()
                };
                let Some(stream_arn) = get_s(item, "stream_arn") else {
                    continue;
                };
                let (table, stream_arn) = (item_table.to_string(), stream_arn.to_string());
                if pk.starts_with(DIGESTS_PK_PREFIX) {
                    if let Some((number, signed)) = signed_from_item(item) {
                        visit(TrailRecord::Digest {
                            table,
                            stream_arn,
                            number,
                            signed,
                        });
                    }
                    continue;
                }
                let hash = get_hash(item, "hash");
                let prev_hash = get_hash(item, "prev_hash");
                let chain_shard = get_s(item, CHAIN_SHARD)
                    .or_else(|| get_s(item, "shard_id"))
                    .unwrap_or_default()
                    .to_string();
                if pk == GAPS_PK {
                    visit(TrailRecord::Gap {
                        table,
                        stream_arn,
                        chain_shard,
                        json: get_s(item, "gap").map(str::to_string),
                        hash,
                        prev_hash,
                    });
                    continue;
                }
                if !is_entry_item(item) {
                    // Not an entry (a CloudTrail attribution record beside
                    // one, say): outside the chain by design.
                    continue;
                }
                let mut record = TrailRecord::Entry {
                    table,
                    stream_arn,
                    chain_shard,
                    chain_position: get_s(item, CHAIN_POSITION)
                        .or_else(|| get_s(item, "sequence_number"))
                        .unwrap_or_default()
                        .to_string(),
                    json: None,
                    hash,
                    prev_hash,
                    expires: item.contains_key(EXPIRES_AT),
                };
                match inline_entry_json(item) {
                    Ok(Some(text)) => {
                        if let TrailRecord::Entry { json, .. } = &mut record {
                            *json = Some(text.into_owned());
                        }
                        visit(record);
                    }
                    // A body that does not inflate cannot hash right: the
                    // record goes without its JSON, as for damaged parts.
                    Err(_) => visit(record),
                    Ok(None) => oversize.push(Oversize {
                        pk: pk.to_string(),
                        sk: get_s(item, "sk").unwrap_or_default().to_string(),
                        record,
                    }),
                }
            }
            progress(read);
        }
        for mut big in oversize {
            let items = self.query_partition(&big.pk).await?;
            let mut chunks: HashMap<&str, &str> = HashMap::new();
            let mut head = None;
            for item in &items {
                match (get_s(item, "sk"), get_s(item, "chunk")) {
                    (Some(sk), Some(chunk)) => {
                        chunks.insert(sk, chunk);
                    }
                    (Some(sk), None) if sk == big.sk => head = Some(item),
                    _ => {}
                }
            }
            // Parts gone or damaged: the record goes without its JSON.
            let whole = head.and_then(|h| {
                get_n(h, "parts").and_then(|parts| reassemble(h, &big.sk, parts, &chunks).ok())
            });
            if let TrailRecord::Entry { json, .. } = &mut big.record {
                *json = whole;
            }
            visit(big.record);
        }
        Ok(())
    }
}

impl DynamoStore {
    /// Every digest of a stream, oldest first.
    pub async fn digests(&self, stream_arn: &str) -> StoreResult<Vec<(u64, SignedDigest)>> {
        Ok(self
            .query_partition(&digests_pk(stream_arn))
            .await?
            .iter()
            .filter_map(signed_from_item)
            .collect())
    }

    /// Every chained leaf of one shard (entries and gaps): (sequence
    /// number, its rank there (`leaf_rank`), hash, prev hash), unordered. A Scan: the audit table
    /// has no index by shard (it would cost a write unit per entry), so an
    /// export pays a read of the table instead.
    pub async fn shard_leaves(
        &self,
        stream_arn: &str,
        shard_id: &str,
    ) -> StoreResult<Vec<(String, u8, crate::proof::Hash, Option<crate::proof::Hash>)>> {
        let table = &self.names.audit;
        let items: Vec<HashMap<String, DAttr>> = self
            .client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .filter_expression(
                "stream_arn = :a AND (shard_id = :s OR #cs = :s) AND attribute_exists(#h)",
            )
            .expression_attribute_names("#h", "hash")
            .expression_attribute_names("#cs", CHAIN_SHARD)
            .expression_attribute_names("#cp", CHAIN_POSITION)
            .expression_attribute_values(":a", s(stream_arn))
            .expression_attribute_values(":s", s(shard_id))
            .projection_expression("pk, sequence_number, #h, prev_hash, gap, #cp")
            .all_pages(table)
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let hash = get_hash(item, "hash")?;
                let prev = get_hash(item, "prev_hash");
                let is_gap = get_s(item, "pk") == Some(GAPS_PK);
                let (seq, rank) = if is_gap {
                    let gap = get_s(item, "gap")
                        .and_then(|g| serde_json::from_str::<serde_json::Value>(g).ok());
                    let closes = gap
                        .as_ref()
                        .and_then(|g| g["closes"].as_array())
                        .is_some_and(|c| !c.is_empty());
                    let seq = gap
                        .as_ref()
                        .and_then(|g| g["after_sequence_number"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    (seq, leaf_rank(true, closes))
                } else {
                    let seq = get_s(item, CHAIN_POSITION)
                        .or_else(|| get_s(item, "sequence_number"))
                        .unwrap_or_default()
                        .to_string();
                    (seq, leaf_rank(false, false))
                };
                Some((seq, rank, hash, prev))
            })
            .collect())
    }

    /// One item's entries with their stored JSON and links, in stream order.
    pub async fn history_linked(&self, table: &str, key: &Item) -> StoreResult<Vec<LinkedEntry>> {
        let pk = item_partition_key(table, key);
        let items = self.query_partition(&pk).await?;
        let mut chunks: HashMap<&str, &str> = HashMap::new();
        for item in &items {
            if let (Some(sk), Some(chunk)) = (get_s(item, "sk"), get_s(item, "chunk")) {
                chunks.insert(sk, chunk);
            }
        }
        let mut out = Vec::new();
        for item in &items {
            if item.contains_key("chunk") {
                continue;
            }
            let sk = get_s(item, "sk").unwrap_or_default();
            let json = match (inline_entry_json(item)?, get_n(item, "parts")) {
                (Some(json), _) => json.into_owned(),
                (None, Some(parts)) => reassemble(item, sk, parts, &chunks)
                    .map_err(|m| StoreError::Corrupt(format!("{pk} {sk}: {m}")))?,
                (None, None) => continue,
            };
            out.push(LinkedEntry {
                stream_arn: get_s(item, "stream_arn").unwrap_or_default().to_string(),
                json,
                hash: get_hash(item, "hash").map(hex::encode),
                prev_hash: get_hash(item, "prev_hash").map(hex::encode),
                chain_shard: get_s(item, CHAIN_SHARD).map(str::to_string),
            });
        }
        Ok(out)
    }
}

/// A digest's audit item (written once).
fn digest_item(
    table_name: &str,
    stream_arn: &str,
    number: u64,
    digest: &SignedDigest,
) -> HashMap<String, DAttr> {
    let mut item = HashMap::from([
        ("pk".to_string(), s(digests_pk(stream_arn))),
        ("sk".to_string(), s(digest_sk(number))),
        ("digest".to_string(), s(&digest.digest)),
        ("hash".to_string(), s(&digest.hash)),
        ("table_name".to_string(), s(table_name)),
        ("stream_arn".to_string(), s(stream_arn)),
        ("number".to_string(), DAttr::N(number.to_string())),
        ("written_at".to_string(), s(format_ts(Utc::now()))),
    ]);
    if let Some(sig) = &digest.signature {
        item.insert("signature".into(), s(sig));
    }
    item
}
