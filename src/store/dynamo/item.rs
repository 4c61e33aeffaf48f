//! The audit items in SDK terms: what [`crate::store::layout`] describes,
//! built as and read from DynamoDB attribute values (an entry's head and
//! parts, its body, the chain link), and the sizes DynamoDB bills for them
//! (the write-cost model's measurements).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue as DAttr;
use chrono::Utc;

use super::{get_n, get_s, n, s};
use crate::entry::AuditEntry;
use crate::store::layout::{
    decode_entry, deflated_body, encode_entry, entry_keys, inflate_body, number_size,
    part_sort_key, parts_hash, pk_is_hashed, reassemble_parts, split_chunks, ENTRY_Z, EXPIRES_AT,
    INLINE_ENTRY_LIMIT,
};
#[cfg(any(test, feature = "test-util"))]
use crate::store::layout::{WriteCost, GSI_ROW_OVERHEAD, INDEX_PROJECTION};
#[cfg(any(test, feature = "test-util"))]
use crate::store::Index;
use crate::store::{index_attrs, StoreError, StoreResult, TIME_ATTRIBUTE};
use crate::value::canonical_key_json;

/// An entry's key and head item, without the entry JSON (or its parts).
/// Only what a reader needs without opening the body: the keys, what the
/// index rows project (`event`), the chain's `stream_arn`, `shard_id` and
/// `sequence_number` (verify and export select by them), and the index keys.
/// The table, the actor and the event time are in the body and in `pk` /
/// `ix_*` / `ts` already: repeating them would cost write units on every
/// change (entries written before kept them; readers accept both).
fn entry_head(entry: &AuditEntry, canonical: &str) -> (String, String, HashMap<String, DAttr>) {
    let (pk, sk) = entry_keys(entry, canonical);
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

/// The body attribute of an inline entry: `entry_z` when deflating saves
/// bytes, else `entry`.
pub fn entry_body(json: &str) -> (&'static str, DAttr) {
    match deflated_body(json) {
        Some(bytes) => (
            ENTRY_Z,
            DAttr::B(aws_sdk_dynamodb::primitives::Blob::new(bytes)),
        ),
        None => ("entry", s(json)),
    }
}

/// The JSON of an audit item stored inline (`entry`, or `entry_z`
/// inflated); `None` when the item has neither (an oversize head, a part, a
/// gap, an attribution record).
pub fn inline_entry_json(
    item: &HashMap<String, DAttr>,
) -> StoreResult<Option<std::borrow::Cow<'_, str>>> {
    if let Some(json) = get_s(item, "entry") {
        return Ok(Some(std::borrow::Cow::Borrowed(json)));
    }
    let Some(DAttr::B(bytes)) = item.get(ENTRY_Z) else {
        return Ok(None);
    };
    let json = inflate_body(bytes.as_ref()).map_err(|m| {
        StoreError::Corrupt(format!(
            "{} {}: {m}",
            get_s(item, "pk").unwrap_or_default(),
            get_s(item, "sk").unwrap_or_default()
        ))
    })?;
    Ok(Some(std::borrow::Cow::Owned(json)))
}

/// Whether an audit head item holds its entry itself (not in parts).
pub fn has_inline_entry(item: &HashMap<String, DAttr>) -> bool {
    get_s(item, "entry").is_some() || matches!(item.get(ENTRY_Z), Some(DAttr::B(_)))
}

/// An audit head item as its entry: its inline JSON or, for an oversize
/// one, the JSON reassembled from `chunks` (its parts' chunks by sort key);
/// with the stream ARN stored beside it.
pub(super) fn decode_head_item(
    item: &HashMap<String, DAttr>,
    chunks: &HashMap<&str, &str>,
) -> StoreResult<AuditEntry> {
    let pk = get_s(item, "pk").unwrap_or_default();
    let sk = get_s(item, "sk").unwrap_or_default();
    let json = match (inline_entry_json(item)?, get_n(item, "parts")) {
        (Some(json), _) => json.into_owned(),
        (None, Some(parts)) => reassemble(item, sk, parts, chunks)
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
    Ok(entry)
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
/// them (so `write_cost` sizes exactly what is billed).
pub(super) fn entry_items(
    entry: &AuditEntry,
    link: Option<&crate::proof::Link>,
    expires: Option<&DAttr>,
) -> StoreResult<EntryItems> {
    let json = encode_entry(entry)?;
    let canonical = canonical_key_json(&entry.key);
    let (pk, sk, mut head) = entry_head(entry, &canonical);
    insert_link(&mut head, link);
    if let Some(at) = expires {
        head.insert(EXPIRES_AT.into(), at.clone());
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
    let hash = parts_hash(&json);
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
                part.insert(EXPIRES_AT.into(), at.clone());
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

pub(super) struct EntryItems {
    pub(super) pk: String,
    pub(super) sk: String,
    /// An oversize entry's parts (empty for an inline one).
    pub(super) parts: Vec<HashMap<String, DAttr>>,
    pub(super) head: HashMap<String, DAttr>,
    pub(super) json_bytes: usize,
}

/// The chain link's attributes on an entry's (or gap's) item, as raw
/// bytes: 64 bytes fewer than hex, which pays for the item chain's link in
/// the entry (so that no change costs an extra write unit for it).
pub(super) fn insert_link(item: &mut HashMap<String, DAttr>, link: Option<&crate::proof::Link>) {
    use aws_sdk_dynamodb::primitives::Blob;
    if let Some(link) = link {
        item.insert("hash".into(), DAttr::B(Blob::new(link.hash.to_vec())));
        if let Some(prev) = &link.prev_hash {
            item.insert("prev_hash".into(), DAttr::B(Blob::new(prev.to_vec())));
        }
    }
}

/// An oversize entry's JSON from its head (sort key `sk`, `parts` parts)
/// and its parts' chunks by sort key.
pub(super) fn reassemble(
    head: &HashMap<String, DAttr>,
    sk: &str,
    parts: usize,
    chunks: &HashMap<&str, &str>,
) -> Result<String, String> {
    let hash = get_s(head, "parts_hash").ok_or("head has `parts` but no `parts_hash`")?;
    reassemble_parts(sk, hash, parts, get_n(head, "entry_bytes"), chunks)
}

/// The cost of writing `entry` with `link` (the daemon always chains: pass
/// the link it would write) and, with `[retention]`, a TTL attribute. Test
/// and benchmark support: [`WriteCost`] says how it is counted.
#[cfg(any(test, feature = "test-util"))]
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
    let part_bytes: Vec<usize> = items.parts.iter().map(item_size).collect();
    Ok(WriteCost::of(item_size(head), part_bytes, index_rows))
}

/// An item's size as DynamoDB bills it (names + values).
#[cfg(any(test, feature = "test-util"))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dynamo::snapshot::from_item;
    use crate::store::layout::decode_entry;
    use crate::store::layout::tests::key;
    use crate::value::{fnv1a64, AttrValue, Item};
    use chrono::DateTime;
    use std::collections::BTreeMap;

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
        // The item chain's link to a previous entry: the largest it can be.
        e.item_prev = Some(Some(crate::entry::ItemPrev {
            hash: hex::encode([5u8; 32]),
            sequence_number: "110000000001745442301".into(),
        }));
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
        // The chain's two hashes are counted, as raw bytes: 4 + 32 and 9 + 32.
        let unchained = write_cost(&e, None, true).unwrap();
        assert_eq!(cost.item_bytes - unchained.item_bytes, 4 + 32 + 9 + 32);
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
    /// and correlation indexes cost one unit each more (see docs/design.md, "Write
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
                let mut sizes = vec![(plain.item_bytes, plain.write_units)];
                for (correlation, rows) in [(false, 1 + actor_row), (true, 2 + actor_row)] {
                    let c = cost(true, correlation);
                    assert_eq!(c.index_rows.len(), rows, "{name}");
                    let units = c.item_bytes.div_ceil(1024) + rows;
                    assert_eq!(c.write_units, units, "{name} with {rows} index rows");
                    sizes.push((c.item_bytes, c.write_units));
                }
                let json = encode_entry(&entry_of(&r, false, false)).unwrap();
                let body = match entry_body(&json) {
                    (_, DAttr::B(b)) => b.as_ref().len(),
                    _ => json.len(),
                };
                // Plain, with an actor, with an actor and a correlation id.
                eprintln!(
                    "{name} (text: {words}): JSON {} B, body {body} B; (item B, units): {sizes:?}",
                    json.len(),
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
}
