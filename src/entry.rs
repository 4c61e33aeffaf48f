//! The audit entry, its JSON form (the `history --json` contract), and gaps.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

pub use crate::diff::Change;
use crate::stream::{StreamRecord, UserIdentity, TTL_PRINCIPAL};
use crate::value::{AttrValue, Item};

/// How sure a match is (`principal.confidence` in the entry JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    /// The only write of this kind to this key near this time, both ways.
    High,
    /// One of several writes of one key by one principal close together,
    /// paired in order: the principal is certain, the request may be its
    /// neighbour's.
    Ordered,
    /// Writes by different principals to one key within the same second:
    /// which one made this change cannot be told, so no principal is named.
    Ambiguous,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::High => "high",
            Confidence::Ordered => "ordered",
            Confidence::Ambiguous => "ambiguous",
        }
    }
}

/// The caller of a write, from its CloudTrail data event (`principal` in the
/// entry JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// `userIdentity.arn` (for an AWS service without one: `invokedBy`);
    /// `null` when ambiguous.
    pub arn: Option<String>,
    /// `userIdentity.type`: `AssumedRole`, `IAMUser`, `Root`, `AWSService`, …
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub event_id: Option<String>,
    pub confidence: Confidence,
    /// For an ambiguous match only: the principals that wrote the key in
    /// that second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

impl Principal {
    /// An ambiguous match: several principals wrote the key in that second,
    /// and none of them is named.
    pub fn ambiguous(candidates: Vec<String>) -> Principal {
        Principal {
            arn: None,
            kind: None,
            source_ip: None,
            user_agent: None,
            request_id: None,
            event_id: None,
            confidence: Confidence::Ambiguous,
            candidates,
        }
    }
}

/// One audit entry: one stream record, exactly once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub table: String,
    pub key: Item,
    /// INSERT, MODIFY or REMOVE, as the stream says; SNAPSHOT for a baseline.
    pub event: String,
    /// Empty for a SNAPSHOT entry, which JSON shows as `null`.
    #[serde(with = "empty_as_null")]
    pub sequence_number: String,
    #[serde(with = "empty_as_null")]
    pub shard_id: String,
    /// RFC 3339, UTC, from the record's ApproximateCreationDateTime.
    pub event_time: Option<String>,
    pub actor: Option<String>,
    /// Where `actor` came from; always present, `null` when unknown.
    #[serde(default)]
    pub actor_source: Option<ActorSource>,
    /// The actor attribute of the old image when this write did not name its
    /// writer (a REMOVE, or a MODIFY whose new image lacks the attribute):
    /// who wrote the item last, not who made this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_writer: Option<String>,
    /// The IAM principal of the matched CloudTrail data event. Never stored
    /// in the entry itself (entries are write-once and CloudTrail arrives
    /// minutes later): merged in from the attribution record on read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    /// The actor the entry was written with, when a CloudTrail principal
    /// replaced it on read: what the `actor` index holds, so `query --actor`
    /// still finds the entry. Not part of the JSON.
    #[serde(skip)]
    pub item_actor: Option<String>,
    pub changes: Vec<Change>,
    /// Present (and true) only when DynamoDB's TTL deleted the item.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ttl_expiry: bool,
    /// Present only when the record could not be interpreted; `raw` then holds
    /// the record as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// The `[attribution] correlation_attribute` value (new image, else old):
    /// the request or transaction the change was made under; `null` if none.
    #[serde(default)]
    pub correlation: Option<String>,
    /// A SNAPSHOT entry only: when the item was read (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<String>,
    /// The item chain (proof format §2a): `None` (absent from the JSON) on
    /// entries written before it existed and on SNAPSHOT entries;
    /// `Some(None)` (`null`) on the item's first stream entry; else the
    /// item's previous stream entry. Part of the stored JSON, so the leaf
    /// hash commits to it and verifiers that predate it still hash right.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub item_prev: Option<Option<ItemPrev>>,
    /// Where the record came from; kept in the store beside the JSON, not in it.
    #[serde(skip)]
    pub stream_arn: String,
}

/// The item's previous stream entry, as an entry names it (`item_prev`):
/// its leaf hash, which the chain checks, and its sequence number, which
/// says to a reader which entry is missing when the hash is not found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemPrev {
    pub hash: String,
    pub sequence_number: String,
}

/// A member that is present deserializes to `Some`, even when `null`, so
/// `"item_prev": null` (the item's first entry) stays apart from a missing
/// member (an entry that predates the item chain).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[cfg(any(test, feature = "test-util"))]
impl AuditEntry {
    /// A test entry: a MODIFY of `key` in `table` at `sequence_number`, on
    /// shard `shardId-1` of the stream `arn:aws:dynamodb:us-east-1:1:table/{table}/stream/L`,
    /// at 2026-11-23T19:05:00Z by `alice`, with no changes and nothing else.
    /// Tests change what they need with `AuditEntry { .., ..fixture(..) }`.
    pub fn fixture(table: &str, key: Item, sequence_number: &str) -> AuditEntry {
        AuditEntry {
            table: table.to_string(),
            key,
            event: "MODIFY".into(),
            sequence_number: sequence_number.to_string(),
            shard_id: "shardId-1".into(),
            event_time: Some("2026-11-23T19:05:00Z".into()),
            actor: Some("alice".into()),
            actor_source: None,
            last_writer: None,
            principal: None,
            item_actor: None,
            changes: Vec::new(),
            ttl_expiry: false,
            error: None,
            raw: None,
            correlation: None,
            snapshot_time: None,
            item_prev: None,
            stream_arn: format!("arn:aws:dynamodb:us-east-1:1:table/{table}/stream/L"),
        }
    }
}

/// Where an entry's `actor` came from (`actor_source` in the JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActorSource {
    /// The configured attribute, set or changed by this write (new image).
    Item,
    /// The configured attribute of the new image, but with the same value as
    /// in the old one: the writer may not have set it at all.
    ItemUnchanged,
    /// DynamoDB's TTL deleted the item.
    Ttl,
    /// The matched CloudTrail data event's principal.
    Cloudtrail,
}

impl ActorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorSource::Item => "item",
            ActorSource::ItemUnchanged => "item-unchanged",
            ActorSource::Ttl => "ttl",
            ActorSource::Cloudtrail => "cloudtrail",
        }
    }
}

/// A SNAPSHOT entry has no stream position: its empty strings are `null`.
mod empty_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
    }
}

/// Records that could not be read because the stream had already trimmed
/// them: an explicit, permanent statement that history is missing here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub table: String,
    pub stream_arn: String,
    pub shard_id: String,
    /// The last sequence number handled before the gap (`null`: none handled
    /// in this shard's lineage).
    pub after_sequence_number: Option<String>,
    /// The shard of `after_sequence_number` when it is an ancestor's (the
    /// loss began before this shard's first record); absent when it is this
    /// shard's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_shard_id: Option<String>,
    /// A shard that came and went while the daemon was not reading (the
    /// nearest ancestor of `shard_id` it never saw): none of its records
    /// were read, and nothing before it in the lineage is known, so the gap
    /// starts at the beginning of that shard (`after_sequence_number` null).
    /// The gap belongs to `shard_id`, the first shard read after the loss,
    /// and is a link of that shard's chain, written before anything of it is
    /// read: open, and closed by the gap written at its first record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_shard_id: Option<String>,
    /// Creation time of the record at `after_sequence_number`, RFC 3339 UTC.
    #[serde(default)]
    pub after_time: Option<String>,
    /// The first sequence number read after it (`null`: nothing was readable
    /// after it when the gap was written: an *open* bracket, closed later by
    /// a gap whose `closes` names this one).
    pub resumed_at_sequence_number: Option<String>,
    /// Creation time of the record at `resumed_at_sequence_number`.
    #[serde(default)]
    pub resumed_at_time: Option<String>,
    /// The open gaps of this shard's lineage (its own, or its ancestors')
    /// that this gap closes: reading resumed, in `shard_id`, at
    /// `resumed_at_sequence_number`. A written gap is never updated (it is a
    /// leaf of the hash chain), so its right bracket, unknown when it was
    /// written, is this later leaf. Absent when it closes none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub closes: Vec<GapRef>,
    /// Where reading resumed after this open gap, as the gap that closed it
    /// says: filled in when the trail is read (`gaps`, `/api/gaps`), never
    /// stored nor hashed. Absent while the bracket is open, and on a gap
    /// that was closed when written.
    #[serde(default, skip_serializing_if = "Option::is_none", skip_deserializing)]
    pub closed_by: Option<GapClosure>,
    /// RFC 3339, UTC.
    pub detected_at: String,
}

/// One gap of a stream, named as its stored item is: its shard and where
/// its loss began (with the table and the stream, its key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GapRef {
    pub shard_id: String,
    pub after_sequence_number: Option<String>,
}

/// Where reading resumed after an open gap: the closing gap's shard and its
/// right bracket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapClosure {
    pub shard_id: String,
    pub resumed_at_sequence_number: Option<String>,
    pub resumed_at_time: Option<String>,
}

/// A time the daemon sets (a gap's detection, a digest, a match), RFC 3339
/// UTC with milliseconds: the one format of the trail's own times.
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Gap {
    /// A gap in `shard_id`'s chain, detected now, with neither side known
    /// yet: the caller says where it begins.
    pub fn detected(table: &str, stream_arn: &str, shard_id: &str) -> Gap {
        Gap {
            table: table.to_string(),
            stream_arn: stream_arn.to_string(),
            shard_id: shard_id.to_string(),
            after_sequence_number: None,
            after_shard_id: None,
            unseen_shard_id: None,
            after_time: None,
            resumed_at_sequence_number: None,
            resumed_at_time: None,
            closes: Vec::new(),
            closed_by: None,
            detected_at: format_ts(Utc::now()),
        }
    }

    /// This gap as a later one names it in `closes`.
    pub fn reference(&self) -> GapRef {
        GapRef {
            shard_id: self.shard_id.clone(),
            after_sequence_number: self.after_sequence_number.clone(),
        }
    }

    /// Its right bracket is not written yet: nothing was readable after it
    /// when it was written, and no later gap closes it (as far as the gap
    /// itself can tell: `closed_by` is filled in only when the trail is read).
    pub fn is_open(&self) -> bool {
        self.resumed_at_sequence_number.is_none() && self.closed_by.is_none()
    }

    /// It closes earlier open gaps: in its shard's chain it follows the one
    /// that begins where it begins (see `layout::gap_sort_key`).
    pub fn is_closing(&self) -> bool {
        !self.closes.is_empty()
    }

    /// The gap that closes `open` (the open gaps of a lineage, oldest
    /// first): read resumed in `shard_id` at `resumed_at`, created at
    /// `resumed_time`. The loss began where the oldest began.
    pub fn closing(
        open: &[Gap],
        shard_id: &str,
        resumed_at: &str,
        resumed_time: Option<String>,
    ) -> Option<Gap> {
        let first = open.first()?;
        let after_shard = match (&first.after_sequence_number, &first.after_shard_id) {
            (None, _) => None,
            (Some(_), Some(s)) => Some(s.clone()),
            (Some(_), None) => Some(first.shard_id.clone()),
        }
        .filter(|s| s != shard_id);
        Some(Gap {
            after_sequence_number: first.after_sequence_number.clone(),
            after_shard_id: after_shard,
            unseen_shard_id: first.unseen_shard_id.clone(),
            after_time: first.after_time.clone(),
            resumed_at_sequence_number: Some(resumed_at.to_string()),
            resumed_at_time: resumed_time,
            closes: open.iter().map(Gap::reference).collect(),
            ..Gap::detected(&first.table, &first.stream_arn, shard_id)
        })
    }

    /// A parent shard that came and went while nobody read the stream:
    /// everything from its start is lost. The gap is `shard_id`'s (the child
    /// read first after the loss), the first link of that shard's chain;
    /// open until its task reads a record and closes it.
    pub fn unseen_parent(table: &str, stream_arn: &str, shard_id: &str, unseen: &str) -> Gap {
        Gap {
            unseen_shard_id: Some(unseen.to_string()),
            ..Gap::detected(table, stream_arn, shard_id)
        }
    }
}

/// A stream record's creation time as entries and gaps print it, RFC 3339
/// UTC. The service gives whole seconds (or milliseconds): never print more
/// precision than it has, and print the same instant the same way wherever
/// it appears, so a gap's `after_time` equals its entry's `event_time`.
pub fn record_time_text(t: DateTime<Utc>) -> String {
    let format = if t.timestamp_subsec_millis() == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Millis
    };
    t.to_rfc3339_opts(format, true)
}

/// Turns one stream record into its audit entry. Never fails: a record that
/// cannot be interpreted still becomes an entry, with `error` saying why and
/// `raw` holding it, so nothing is lost and the checkpoint can move on.
pub fn build_entry(
    table: &str,
    stream_arn: &str,
    shard_id: &str,
    record: &StreamRecord,
    actor_attribute: Option<&str>,
) -> AuditEntry {
    let ttl_expiry = record
        .user_identity
        .as_ref()
        .is_some_and(UserIdentity::is_ttl_expiry);
    let mut entry = AuditEntry {
        table: table.to_string(),
        key: record.keys.clone(),
        event: record.event_name.clone(),
        sequence_number: record.sequence_number.clone(),
        shard_id: shard_id.to_string(),
        event_time: record.approximate_creation.map(record_time_text),
        actor: None,
        actor_source: None,
        last_writer: None,
        principal: None,
        item_actor: None,
        changes: Vec::new(),
        ttl_expiry,
        error: None,
        raw: None,
        correlation: None,
        snapshot_time: None,
        item_prev: None,
        stream_arn: stream_arn.to_string(),
    };
    let images = match record.event_name.as_str() {
        "INSERT" => record.new_image.as_ref().map(|new| (None, Some(new))),
        "MODIFY" => match (&record.old_image, &record.new_image) {
            (Some(old), Some(new)) => Some((Some(old), Some(new))),
            _ => None,
        },
        "REMOVE" => record.old_image.as_ref().map(|old| (Some(old), None)),
        _ => None,
    };
    let problem = match (&record.problem, images) {
        (Some(problem), _) => Some(problem.clone()),
        (None, _) if !crate::stream::is_sequence_number(&record.sequence_number) => Some(format!(
            "sequence number {:?} is not a decimal number",
            record.sequence_number
        )),
        (None, None) if !matches!(record.event_name.as_str(), "INSERT" | "MODIFY" | "REMOVE") => {
            Some(format!("unknown event name {:?}", record.event_name))
        }
        (None, None) => Some(format!(
            "{} record without the images it needs (OldImage: {}, NewImage: {}); \
             is the stream's view type NEW_AND_OLD_IMAGES?",
            record.event_name,
            record.old_image.is_some(),
            record.new_image.is_some()
        )),
        (None, Some((old, new))) => {
            entry.changes = crate::diff::diff_images(old, new);
            None
        }
    };
    if let Some(problem) = problem {
        entry.error = Some(problem);
        entry.raw = Some(record.raw.clone().unwrap_or_else(|| format!("{record:?}")));
    }
    let (new_attr, old_attr) = (
        attr_of(&record.new_image, actor_attribute),
        attr_of(&record.old_image, actor_attribute),
    );
    if ttl_expiry {
        entry.actor = Some(TTL_PRINCIPAL.to_string());
        entry.actor_source = Some(ActorSource::Ttl);
        entry.last_writer = old_attr.map(actor_text);
    } else if let Some(new) = new_attr {
        // A writer that never sets the attribute leaves the previous
        // writer's value in place: say so instead of naming them.
        let unchanged = record.event_name == "MODIFY"
            && old_attr.is_some_and(|old| crate::value::same_value(old, new));
        entry.actor = Some(actor_text(new));
        entry.actor_source = Some(if unchanged {
            ActorSource::ItemUnchanged
        } else {
            ActorSource::Item
        });
    } else {
        // A REMOVE has no new image: the old image names who wrote the item
        // last, not who deleted it.
        entry.last_writer = old_attr.map(actor_text);
    }
    entry
}

fn attr_of<'a>(image: &'a Option<Item>, attr: Option<&str>) -> Option<&'a AttrValue> {
    attr.and_then(|attr| image.as_ref().and_then(|i| i.get(attr)))
}

/// The correlation id of a record: `attribute` in the new image, else the
/// old one (a REMOVE), as text.
pub fn correlation_of(record: &StreamRecord, attribute: Option<&str>) -> Option<String> {
    let attr = attribute?;
    record
        .new_image
        .as_ref()
        .and_then(|i| i.get(attr))
        .or_else(|| record.old_image.as_ref().and_then(|i| i.get(attr)))
        .map(actor_text)
}

/// An actor attribute is normally a string; anything else is shown as its
/// DynamoDB JSON rather than dropped.
fn actor_text(value: &AttrValue) -> String {
    match value {
        AttrValue::S(s) | AttrValue::N(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_else(|_| format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::string_item as item;
    use chrono::{TimeZone, Utc};

    fn record(event: &str, old: Option<Item>, new: Option<Item>) -> StreamRecord {
        StreamRecord {
            event_id: "e1".into(),
            event_name: event.into(),
            keys: item(&[("pk", "u1")]),
            new_image: new,
            old_image: old,
            sequence_number: "110000000001745442301".into(),
            size_bytes: Some(10),
            approximate_creation: Some(Utc.with_ymd_and_hms(2026, 11, 23, 19, 5, 0).unwrap()),
            user_identity: None,
            problem: None,
            raw: None,
        }
    }

    #[test]
    fn modify_names_the_actor_from_the_new_image_and_lists_changes() {
        let old = item(&[("pk", "u1"), ("name", "Ann"), ("updated_by", "bob")]);
        let new = item(&[("pk", "u1"), ("name", "Bea"), ("updated_by", "alice")]);
        let e = build_entry(
            "orders",
            "arn/stream/L",
            "shard-1",
            &record("MODIFY", Some(old), Some(new)),
            Some("updated_by"),
        );
        assert_eq!(e.actor.as_deref(), Some("alice"));
        assert_eq!(e.actor_source, Some(ActorSource::Item));
        assert_eq!(e.event, "MODIFY");
        assert_eq!(e.event_time.as_deref(), Some("2026-11-23T19:05:00Z"));
        assert_eq!(
            (e.shard_id.as_str(), e.stream_arn.as_str()),
            ("shard-1", "arn/stream/L")
        );
        assert!(e.error.is_none() && e.raw.is_none());
        assert!(
            e.changes.iter().any(|c| c.path == "name"),
            "{:?}",
            e.changes
        );
        let json = serde_json::to_value(&e).unwrap();
        assert!(
            json.get("ttl_expiry").is_none() && json.get("stream_arn").is_none(),
            "{json}"
        );
        assert_eq!(json["key"], serde_json::json!({"pk": {"S": "u1"}}));
    }

    #[test]
    fn insert_names_the_writer_from_the_item() {
        let new = item(&[("pk", "u1"), ("updated_by", "alice")]);
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("INSERT", None, Some(new)),
            Some("updated_by"),
        );
        assert_eq!(e.actor.as_deref(), Some("alice"));
        assert_eq!(e.actor_source, Some(ActorSource::Item));
        assert_eq!(e.last_writer, None);
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["actor_source"], serde_json::json!("item"));
        assert!(json.get("last_writer").is_none() && json.get("principal").is_none());
    }

    #[test]
    fn modify_with_the_same_attribute_value_is_marked_unchanged() {
        let old = item(&[("pk", "u1"), ("name", "Ann"), ("updated_by", "bob")]);
        let new = item(&[("pk", "u1"), ("name", "Bea"), ("updated_by", "bob")]);
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("MODIFY", Some(old.clone()), Some(new)),
            Some("updated_by"),
        );
        assert_eq!(e.actor.as_deref(), Some("bob"));
        assert_eq!(e.actor_source, Some(ActorSource::ItemUnchanged));
        assert_eq!(
            serde_json::to_value(&e).unwrap()["actor_source"],
            serde_json::json!("item-unchanged")
        );
        // Changed: "item". Numbers compare as decimals, so 7 → 7.0 is unchanged.
        let changed = item(&[("pk", "u1"), ("updated_by", "carol")]);
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("MODIFY", Some(old.clone()), Some(changed)),
            Some("updated_by"),
        );
        assert_eq!(
            (e.actor.as_deref(), e.actor_source),
            (Some("carol"), Some(ActorSource::Item))
        );
        let mut o = item(&[("pk", "u1")]);
        o.insert("updated_by".into(), AttrValue::N("7".into()));
        let mut n = o.clone();
        n.insert("updated_by".into(), AttrValue::N("7.0".into()));
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("MODIFY", Some(o), Some(n)),
            Some("updated_by"),
        );
        assert_eq!(e.actor_source, Some(ActorSource::ItemUnchanged));
    }

    #[test]
    fn modify_that_drops_the_attribute_names_no_actor() {
        let old = item(&[("pk", "u1"), ("updated_by", "bob")]);
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("MODIFY", Some(old), Some(item(&[("pk", "u1")]))),
            Some("updated_by"),
        );
        assert_eq!((e.actor, e.actor_source), (None, None));
        assert_eq!(e.last_writer.as_deref(), Some("bob"));
    }

    #[test]
    fn remove_puts_the_old_writer_in_last_writer_not_actor() {
        let old = item(&[("pk", "u1"), ("updated_by", "carol")]);
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("REMOVE", Some(old), None),
            Some("updated_by"),
        );
        assert_eq!(e.actor, None);
        assert_eq!(e.actor_source, None);
        assert_eq!(e.last_writer.as_deref(), Some("carol"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["actor"], serde_json::Value::Null);
        assert_eq!(json["actor_source"], serde_json::Value::Null);
        assert_eq!(json["last_writer"], serde_json::json!("carol"));
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("REMOVE", Some(item(&[("pk", "u1")])), None),
            Some("updated_by"),
        );
        assert_eq!((e.actor, e.last_writer), (None, None));
        let e = build_entry(
            "t",
            "a",
            "s",
            &record(
                "REMOVE",
                Some(item(&[("pk", "u1"), ("updated_by", "x")])),
                None,
            ),
            None,
        );
        assert_eq!((e.actor, e.last_writer, e.actor_source), (None, None, None));
    }

    #[test]
    fn ttl_deletion_is_attributed_to_dynamodb_and_marked() {
        let mut r = record(
            "REMOVE",
            Some(item(&[("pk", "u1"), ("updated_by", "bob")])),
            None,
        );
        r.user_identity = Some(UserIdentity {
            kind: "Service".into(),
            principal_id: TTL_PRINCIPAL.into(),
        });
        let e = build_entry("t", "a", "s", &r, Some("updated_by"));
        assert_eq!(e.actor.as_deref(), Some("dynamodb.amazonaws.com"));
        assert_eq!(e.actor_source, Some(ActorSource::Ttl));
        assert_eq!(e.last_writer.as_deref(), Some("bob"));
        assert!(e.ttl_expiry);
        assert_eq!(
            serde_json::to_value(&e).unwrap()["ttl_expiry"],
            serde_json::json!(true)
        );
    }

    #[test]
    fn uninterpretable_records_are_kept_raw_with_an_error() {
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("MODIFY", None, Some(item(&[("pk", "u1")]))),
            None,
        );
        assert!(
            e.error
                .as_deref()
                .is_some_and(|m| m.contains("NEW_AND_OLD_IMAGES")),
            "{:?}",
            e.error
        );
        assert!(e
            .raw
            .as_deref()
            .is_some_and(|r| r.contains("110000000001745442301")));
        let e = build_entry("t", "a", "s", &record("UPSERT", None, None), None);
        assert!(e.error.as_deref().is_some_and(|m| m.contains("UPSERT")));
        let mut r = record("INSERT", None, Some(item(&[("pk", "u1")])));
        r.problem = Some("image had an unknown type".into());
        r.raw = Some("{raw}".into());
        let e = build_entry("t", "a", "s", &r, None);
        assert_eq!(e.error.as_deref(), Some("image had an unknown type"));
        assert_eq!(e.raw.as_deref(), Some("{raw}"));
        assert_eq!(e.sequence_number, "110000000001745442301");
    }

    #[test]
    fn correlation_comes_from_the_new_image_else_the_old_and_is_always_printed() {
        let old = item(&[("pk", "u1"), ("req", "r-old")]);
        let new = item(&[("pk", "u1"), ("req", "r-new")]);
        let r = record("MODIFY", Some(old.clone()), Some(new));
        assert_eq!(correlation_of(&r, Some("req")).as_deref(), Some("r-new"));
        let r = record("REMOVE", Some(old), None);
        assert_eq!(correlation_of(&r, Some("req")).as_deref(), Some("r-old"));
        assert_eq!(correlation_of(&r, None), None);
        assert_eq!(correlation_of(&r, Some("other")), None);
        let e = build_entry("t", "a", "s", &r, None);
        assert_eq!(
            serde_json::to_value(&e).unwrap()["correlation"],
            serde_json::Value::Null
        );
        // Entries stored before the field existed still read back.
        let mut json = serde_json::to_value(&e).unwrap();
        json.as_object_mut().unwrap().remove("correlation");
        let back: AuditEntry = serde_json::from_value(json).unwrap();
        assert_eq!(back.correlation, None);
    }

    #[test]
    fn a_non_string_actor_is_shown_not_dropped() {
        let mut new = item(&[("pk", "u1")]);
        new.insert("updated_by".into(), AttrValue::N("42".into()));
        let e = build_entry(
            "t",
            "a",
            "s",
            &record("INSERT", None, Some(new)),
            Some("updated_by"),
        );
        assert_eq!(e.actor.as_deref(), Some("42"));
    }
}
