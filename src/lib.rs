//! ddb-audit: DynamoDB Streams → a permanent, write-once, field-level audit trail.
//!
//! Layout (one line per module):
//! - `value`   — DynamoDB attribute values, SDK-neutral, and their DynamoDB JSON.
//! - `entry`   — the audit entry (the `history --json` contract) and gaps.
//! - `stream`  — the stream seam: trait + domain types; `aws` adapter, `sim` simulator.
//!   - `stream::sim`    — in-memory DynamoDB + Streams simulator (state, limits, call counts).
//!   - `stream::faults` — decorator injecting errors and latency into any `StreamApi`.
//! - `store`   — checkpoint and audit stores: traits; `dynamo` and `memory` versions.

pub mod entry;
pub mod store;
pub mod stream;
pub mod value;
