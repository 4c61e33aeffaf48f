//! Who made a change, beyond what the item says: the IAM principal of the
//! CloudTrail data event behind each audit entry.
//!
//! Streams records carry values but no caller; CloudTrail data events carry
//! the caller but no values. This module joins them: [`cloudtrail`] parses
//! the log files a trail delivers to S3, [`matcher`] pairs each write with its
//! entry (table, key, kind of write, time), and [`reader`] is the daemon task
//! that reads new log files, checkpoints its position and writes one
//! write-once attribution record per matched entry.

use serde::{Deserialize, Serialize};

pub mod cloudtrail;
pub mod matcher;

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
