//! The stored form of a CloudTrail attribution: the write-once record
//! beside an entry (its layout: `attribution::dynamo`), and how `history`
//! merges it into the entry. The reader that writes them is `attribution`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::entry::{ActorSource, AuditEntry, Confidence, Principal};

/// `shards` table partition of the reader's position rows.
pub const POSITION_STREAM_ARN: &str = "#cloudtrail";
/// Suffix of an attribution record's sort key.
pub const ATTRIBUTION_SUFFIX: &str = "#attribution";

/// The sort key of the attribution record of the entry with sort key `entry_sk`.
pub fn attribution_sort_key(entry_sk: &str) -> String {
    format!("{entry_sk}{ATTRIBUTION_SUFFIX}")
}

/// A write-once record beside an entry: who made it, per CloudTrail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttributionRecord {
    /// The entry's sort key in the audit table.
    pub entry_sk: String,
    pub principal: Principal,
    /// Every event id this decision used (several for an ambiguous one).
    pub event_ids: Vec<String>,
    /// The entry's `event_time` (what indexes the record by principal, in
    /// time order with the entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_time: Option<DateTime<Utc>>,
    /// The log file the event came from.
    pub log_file: String,
    /// RFC 3339: when the match was made.
    pub matched_at: String,
    /// The entry's own place in its item's chain (sequence number and leaf
    /// hash), stored beside the record and not in its JSON: the record
    /// sorts just after its entry, so the item chain's one read of an
    /// item's newest item may meet it first, and then needs no second.
    #[serde(skip)]
    pub entry_link: Option<crate::store::ItemPredecessor>,
}

/// Merges an attribution into its entry as `history` shows it: the
/// principal, and (unless ambiguous) the principal's ARN as the actor.
pub fn apply(entry: &mut AuditEntry, principal: &Principal) {
    if principal.confidence != Confidence::Ambiguous {
        if let Some(arn) = &principal.arn {
            entry.item_actor = entry.actor.take();
            entry.actor = Some(arn.clone());
            entry.actor_source = Some(ActorSource::Cloudtrail);
        }
    }
    entry.principal = Some(principal.clone());
}
