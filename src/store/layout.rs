//! The stored layout of the daemon's own DynamoDB tables: keys, sort keys,
//! the index schema's names, the parts of the item encoding that need no
//! SDK type, and the write-cost rules. Pure (no SDK types, no I/O): the
//! adapter, [`crate::store::dynamo`], writes and reads what this describes,
//! and builds the items themselves (`dynamo/item.rs`: their attribute values
//! are SDK types).
//!
//! # Tables (created by `DynamoStore::init`, on-demand billing)
//!
//! **streams** (`TableNames::streams`) — one row per (audited table, stream):
//! `table_name` (S, partition key), `stream_arn` (S, sort key),
//! `is_enabled` (BOOL), `drained` (BOOL), `updated_at` (S, RFC 3339),
//! [`FRESH_ITEMS`] (BOOL: every stream entry of the table so far is of this
//! stream, read with no loss and no item removed; set once when the table's
//! first stream is recorded, cleared for good before the first REMOVE entry
//! or gap; absent: false).
//! Rows under a reserved sort key starting with `#` (no stream ARN does) are
//! no stream, and readers of stream rows skip them: a table's state at
//! `#health` (`state`, `reason`, `updated_at`), and a snapshot
//! run's newest-digest pointer (`#snapshot:…`, see `dynamo/proof.rs`).
//! A stream row is also its stream's lease between replicas (see
//! `daemon::leases`): [`LEASE_OWNER`] (S, the replica reading it; absent:
//! nobody) and [`LEASE_EPOCH`] (N, incremented by every take and release:
//! the fencing token). Each replica's heartbeat is a row of the reserved
//! partition [`REPLICAS_PARTITION`] (no table name contains `#`), sort key
//! [`replica_sort_key`]: `replica` (S), `counter` (N, incremented every
//! beat), `owned` (N, streams owned at that beat), `updated_at` (S, for
//! people only: liveness is judged by the counter changing, on each peer's
//! own clock). A task that runs on one replica at a time (the CloudTrail
//! reader) has its lease there too, at [`task_lease_key`] (`lease_owner`,
//! `lease_epoch`).
//!
//! **shards** (`TableNames::shards`) — one row per (stream, shard):
//! `stream_arn` (S, partition key), `shard_id` (S, sort key), `table_name` (S),
//! `parent_shard_id` (S, absent for a root shard), `sequence_no` (S, the last
//! sequence number durably written), `sequence_key` (S, `sequence_no`
//! zero-padded to 40 digits, so a condition can compare positions as text),
//! `status` (S: `open` | `closed` | `drained`), `last_record_time` (S),
//! `caught_up` (BOOL), `from_start` (BOOL), `lineage_tail` (M: `shard_id`,
//! `sequence_no`, `record_time`; while the shard has read nothing),
//! `open_gaps` (L of S, gap JSON: gaps of its lineage whose right bracket is
//! still open, removed once closed), `updated_at` (S), and on a drained row [`SHARD_TTL_ATTRIBUTE`] (N, epoch
//! seconds), and [`ROW_EPOCH`] (N): the lease epoch of the row's last
//! fenced writer; a checkpoint under a lower epoch is refused (an
//! ex-owner's, after a takeover). Rows are written with UpdateItem touching
//! only the attributes above.
//! A snapshot run's bookkeeping sits under `snapshot:<table>` (no stream
//! ARN looks like it): the row `run` (`run_id`, `segments`, `done`)
//! and one row per Scan segment (`segment-00003`: `run_id`, `segment`,
//! `done`, `items`, `chain`, `last_key`). The CloudTrail reader keeps its
//! position under `#cloudtrail` (see `attribution::dynamo`).
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
//!   `history` merges it into its entry. It also carries its entry's
//!   sequence number and leaf hash ([`ENTRY_SEQUENCE_NUMBER`],
//!   [`ENTRY_HASH`]; absent on records written before them, or beside an
//!   entry stored without a hash).
//!
//! Entries, gaps and attributions are written once (`attribute_not_exists(pk)`)
//! and never updated or deleted. Digests and the chain state on rows:
//! `dynamo/proof.rs`.

use std::time::Duration;

use crate::entry::{AuditEntry, Gap};
use crate::store::{Index, StoreError, StoreResult, TIME_ATTRIBUTE};
use crate::stream::stream_label;
use crate::value::{canonical_key_json, fnv1a64, Item};

// ---------------------------------------------------------------- tables

/// The (partition, sort) key attributes of the streams table.
pub(crate) const STREAMS_KEY: (&str, &str) = ("table_name", "stream_arn");
/// The (partition, sort) key attributes of the shards table.
pub(crate) const SHARDS_KEY: (&str, &str) = ("stream_arn", "shard_id");
/// The (partition, sort) key attributes of the audit table.
pub(crate) const AUDIT_KEY: (&str, &str) = ("pk", "sk");

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
pub(crate) const HEALTH_SORT_KEY: &str = "#health";

/// An attribution record's copy of its entry's leaf hash (B) and sequence
/// number (S): what the item chain's read needs when it meets the record
/// before its entry (see `AuditStore::item_predecessor`).
pub const ENTRY_HASH: &str = "entry_hash";
pub const ENTRY_SEQUENCE_NUMBER: &str = "entry_sequence_number";
/// The stream row's attribute behind `CheckpointStore::fresh_items`.
pub const FRESH_ITEMS: &str = "fresh_items";
/// A stream row's lease owner (S).
pub const LEASE_OWNER: &str = "lease_owner";
/// A stream row's lease epoch (N), the fencing token.
pub const LEASE_EPOCH: &str = "lease_epoch";
/// A shard row's epoch of its last fenced writer (N).
pub const ROW_EPOCH: &str = "lease_epoch";
/// The streams-table partition of the replicas' heartbeat rows.
pub const REPLICAS_PARTITION: &str = "#replicas";

/// A replica's heartbeat row's sort key: under `#`, so readers of stream
/// rows skip it whatever its partition.
pub fn replica_sort_key(replica: &str) -> String {
    format!("#replica:{replica}")
}

/// The sort key of the lease of a task that runs on one replica at a time
/// (the CloudTrail reader), under [`REPLICAS_PARTITION`].
pub fn task_lease_key(name: &str) -> String {
    format!("#lease:{name}")
}

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

/// The TTL attribute of entries under `[retention] days`.
pub const EXPIRES_AT: &str = "expires_at";

/// The attribute holding an inline entry's JSON raw-deflated (B), written
/// instead of `entry` (S) when the item would pass 1 KB as it is and
/// deflating makes it smaller: DynamoDB bills the stored bytes per KB, and
/// the JSON's repeated names and type tags (`{"path":…,"old":{"S":`) are much
/// of an entry. Readers accept both (older entries have `entry`).
pub const ENTRY_Z: &str = "entry_z";

/// A SNAPSHOT entry's segment chain and place in it (entries of a stream
/// have theirs in `shard_id` and `sequence_number`).
pub const CHAIN_SHARD: &str = "chain_shard";
pub const CHAIN_POSITION: &str = "chain_position";

/// The snapshot bookkeeping rows live in the shards table, under a
/// partition no stream ARN can have.
pub(crate) fn snapshot_partition(table: &str) -> String {
    format!("snapshot:{table}")
}

// ---------------------------------------------------------------- indexes

/// The key attributes of the audit table and of `indexes` (all strings).
/// DynamoDB rejects a definition no key uses, so an UpdateTable names only
/// the indexes that exist or are being added.
pub(crate) fn audit_key_attributes(indexes: &[Index]) -> impl Iterator<Item = &'static str> + '_ {
    [AUDIT_KEY.0, AUDIT_KEY.1, TIME_ATTRIBUTE]
        .into_iter()
        .chain(indexes.iter().map(|i| i.attribute()))
}

/// An index's key: its attribute (partition) and the time (sort).
pub(crate) fn index_key(index: Index) -> (&'static str, &'static str) {
    (index.attribute(), TIME_ATTRIBUTE)
}

/// What the index rows carry besides the keys: the event (so `--event`
/// filters before fetching). An index row then costs one write unit whatever
/// the entry's size, and a query reads the entries it keeps (BatchGetItem).
pub(crate) const INDEX_PROJECTION: [&str; 1] = ["event"];

// ---------------------------------------------------------------- keys

/// The audit partition key of one item of one table: `<table>|<canonical key
/// JSON>`. The JSON is DynamoDB JSON with names sorted, numbers in DynamoDB's
/// canonical form and binary as base64, so the same key always gives the same
/// partition. A key whose JSON is longer than 1 KB is replaced by a hash
/// (`<table>|#<16 hex>`), and the full JSON is kept beside it.
pub fn item_partition_key(table: &str, key: &Item) -> String {
    partition_key_from(table, &canonical_key_json(key))
}

/// [`item_partition_key`] from the key's canonical JSON.
pub(crate) fn partition_key_from(table: &str, canonical: &str) -> String {
    if canonical.len() <= MAX_INLINE_KEY {
        format!("{table}|{canonical}")
    } else {
        format!("{table}|#{:016x}", fnv1a64(canonical.as_bytes()))
    }
}

/// Whether a partition key holds its key's hash rather than its JSON.
pub(crate) fn pk_is_hashed(pk: &str) -> bool {
    // Canonical JSON always starts with `{`.
    pk.split_once('|')
        .is_some_and(|(_, rest)| rest.starts_with('#'))
}

/// An entry's audit-table key (`pk`, `sk`), from its key's canonical JSON.
pub(crate) fn entry_keys(entry: &AuditEntry, canonical: &str) -> (String, String) {
    (
        partition_key_from(&entry.table, canonical),
        entry_sort_key(&entry.stream_arn, &entry.sequence_number),
    )
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

/// The sort key of part `part` (from 1) of an oversize entry whose JSON
/// hashes to `hash`.
pub(crate) fn part_sort_key(head_sk: &str, hash: &str, part: usize) -> String {
    format!("{head_sk}#part#{hash}#{part:04}")
}

/// The sort key of a gap: deterministic from where it is, not when it was
/// seen, so re-detecting it (after a crash) finds it already written. A gap
/// that closes open ones (`closes`) may begin where one of them begins, in
/// the same shard: `#closes` keeps the two apart.
pub fn gap_sort_key(gap: &Gap) -> String {
    let after = gap
        .after_sequence_number
        .as_deref()
        .map(|s| sequence_key(s).unwrap_or_else(|| s.to_string()))
        .unwrap_or_else(|| "-".to_string());
    let closing = if gap.is_closing() { "#closes" } else { "" };
    format!(
        "{}#{}#{}#{after}{closing}",
        gap.table, gap.stream_arn, gap.shard_id
    )
}

/// A decimal sequence number zero-padded to 40 digits; `None` if not decimal.
pub(crate) fn sequence_key(seq: &str) -> Option<String> {
    if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{:0>40}", seq.trim_start_matches('0')))
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

/// The hash that names an oversize entry's parts: 16 hex digits of the
/// JSON's FNV-1a.
pub(crate) fn parts_hash(json: &str) -> String {
    format!("{:016x}", fnv1a64(json.as_bytes()))
}

/// Split at char boundaries into pieces of at most `max` bytes.
pub(crate) fn split_chunks(s: &str, max: usize) -> Vec<&str> {
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

/// An oversize entry's JSON from its parts (`chunks`, by sort key): the
/// head's sort key, its `parts_hash`, `parts` and (when stored)
/// `entry_bytes`. An error says what does not add up.
pub(crate) fn reassemble_parts(
    sk: &str,
    hash: &str,
    parts: usize,
    entry_bytes: Option<usize>,
    chunks: &std::collections::HashMap<&str, &str>,
) -> Result<String, String> {
    let mut json = String::new();
    for i in 1..=parts {
        let key = part_sort_key(sk, hash, i);
        let chunk = chunks
            .get(key.as_str())
            .ok_or_else(|| format!("part {i} of {parts} is missing"))?;
        json.push_str(chunk);
    }
    if let Some(bytes) = entry_bytes {
        if bytes != json.len() {
            return Err(format!(
                "reassembled {} bytes, expected {bytes}",
                json.len()
            ));
        }
    }
    if parts_hash(&json) != hash {
        return Err("reassembled entry does not match its hash".into());
    }
    Ok(json)
}

/// An inline entry's JSON deflated, when that makes the body smaller than
/// the JSON as `entry` (names counted): what goes into [`ENTRY_Z`].
pub(crate) fn deflated_body(json: &str) -> Option<Vec<u8>> {
    deflate(json.as_bytes())
        .filter(|bytes| ENTRY_Z.len() + bytes.len() < "entry".len() + json.len())
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

/// The JSON of an [`ENTRY_Z`] body. Bounded: an inline entry is at most
/// [`INLINE_ENTRY_LIMIT`] bytes of JSON, so a damaged or forged body cannot
/// inflate without limit. An error says what is wrong with the body.
pub(crate) fn inflate_body(bytes: &[u8]) -> Result<String, String> {
    use std::io::Read as _;
    let mut json = String::new();
    flate2::read::DeflateDecoder::new(bytes)
        .take(INLINE_ENTRY_LIMIT as u64 + 1)
        .read_to_string(&mut json)
        .map_err(|e| format!("`{ENTRY_Z}` does not inflate: {e}"))?;
    if json.len() > INLINE_ENTRY_LIMIT {
        return Err(format!(
            "`{ENTRY_Z}` inflates past {INLINE_ENTRY_LIMIT} bytes"
        ));
    }
    Ok(json)
}

// ---------------------------------------------------------------- write cost

/// A number's size as DynamoDB bills it: 1 byte per two significant digits
/// (leading and trailing zeros do not count) plus 1.
pub(crate) fn number_size(x: &str) -> usize {
    let mantissa = x.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    significant.len().div_ceil(2) + 1
}

/// What writing one entry costs, by DynamoDB's published sizing rules:
/// an item's size is the sum of its attribute names and values (every
/// attribute: keys, body, chain links, TTL, index keys); a global secondary
/// index row is the table's key, the index's key, the projected attributes
/// and 100 bytes of overhead; each item and each index row costs one write
/// unit per KB or part of one. Measured on the items the store writes by
/// `store::dynamo::write_cost`.
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteCost {
    /// The entry's head item (the whole entry, when it is inline).
    pub item_bytes: usize,
    /// An oversize entry's parts, each its own item.
    pub part_bytes: Vec<usize>,
    pub index_rows: Vec<(Index, usize)>,
    pub write_units: usize,
}

#[cfg(any(test, feature = "test-util"))]
impl WriteCost {
    /// The cost of a head item, its parts and its index rows (sizes in
    /// bytes): one write unit per KB or part of one, each.
    pub(crate) fn of(
        item_bytes: usize,
        part_bytes: Vec<usize>,
        index_rows: Vec<(Index, usize)>,
    ) -> WriteCost {
        let units = |bytes: usize| bytes.div_ceil(1024).max(1);
        let write_units = units(item_bytes)
            + part_bytes.iter().map(|b| units(*b)).sum::<usize>()
            + index_rows.iter().map(|(_, b)| units(*b)).sum::<usize>();
        WriteCost {
            item_bytes,
            part_bytes,
            index_rows,
            write_units,
        }
    }
}

/// DynamoDB's per-row overhead of a secondary index.
#[cfg(any(test, feature = "test-util"))]
pub(crate) const GSI_ROW_OVERHEAD: usize = 100;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::value::AttrValue;

    /// An item of these attributes (a key, mostly); the dynamo adapter's
    /// tests build theirs with it too.
    pub(crate) fn key(pairs: &[(&str, AttrValue)]) -> Item {
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
            after_sequence_number: Some("42".into()),
            resumed_at_sequence_number: Some("50".into()),
            detected_at: "2026-01-01T00:00:00Z".into(),
            ..Gap::detected("t", "arn/stream/L", "s1")
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
