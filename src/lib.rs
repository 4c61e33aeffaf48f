//! ddb-audit: DynamoDB Streams → a permanent, write-once, field-level audit trail.
//!
//! Layout (one line per module):
//! - `value`   — DynamoDB attribute values, SDK-neutral, and their DynamoDB JSON.
//! - `diff`    — field-level diffs of item images (the `changes` patch) and their inverse.
//! - `entry`   — the audit entry (the `history --json` contract) and gaps.
//! - `stream`  — the stream seam: trait + domain types; `aws` adapter, `sim` simulator.
//! - `store`   — checkpoint and audit stores: traits; `dynamo` and `memory` versions.

pub mod diff;
pub mod entry;
pub mod store;
pub mod stream;
pub mod value;
