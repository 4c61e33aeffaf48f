//! The daemon (`ddb-audit run`): the tasks that turn streams into the trail.
//!
//! - `engine`     — what the tasks share: seams, settings, pacer, shutdown tokens.
//! - `supervisor` — per table and stream: discovery, lineage, children, listings.
//! - `shard`      — one shard's loop: pace → GetRecords → entries → write → checkpoint.
//! - `digests`    — the digest task: a signed digest per stream per interval, a final one on stop.

pub mod digests;
pub mod engine;
pub mod shard;
pub mod supervisor;
