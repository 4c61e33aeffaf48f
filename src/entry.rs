//! The audit entry, its JSON form (the `history --json` contract), and gaps.

use serde::{Deserialize, Serialize};

use crate::value::{AttrValue, Item};

/// One field-level change. Applied in order to the old image with JSON Patch
/// semantics: no `old` adds, no `new` removes, both replaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// DynamoDB document path, e.g. `profile.name` or `rules[1].conditions[0].value`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<AttrValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<AttrValue>,
    /// For a set (SS/NS/BS) replaced as a whole: the elements it gained
    /// (binary elements base64-encoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Vec<String>>,
    /// For a set: the elements it lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
}

/// One audit entry: one stream record, exactly once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub table: String,
    pub key: Item,
    /// INSERT, MODIFY or REMOVE, as the stream says.
    pub event: String,
    pub sequence_number: String,
    pub shard_id: String,
    /// RFC 3339, UTC, from the record's ApproximateCreationDateTime.
    pub event_time: Option<String>,
    pub actor: Option<String>,
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
    /// Where the record came from; kept in the store beside the JSON, not in it.
    #[serde(skip)]
    pub stream_arn: String,
}

/// Records that could not be read because the stream had already trimmed
/// them: an explicit, permanent statement that history is missing here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    pub table: String,
    pub stream_arn: String,
    pub shard_id: String,
    /// The last sequence number handled before the gap (`null`: none handled).
    pub after_sequence_number: Option<String>,
    /// The first sequence number read after it (`null`: nothing left to read).
    pub resumed_at_sequence_number: Option<String>,
    /// RFC 3339, UTC.
    pub detected_at: String,
}
