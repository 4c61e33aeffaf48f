//! ddb-audit: DynamoDB Streams → a permanent, write-once, field-level audit trail.
//!
//! Layout, by layer: a module uses only the layers below it (no import
//! cycle; `tests/layering.rs` checks it). `docs/architecture.md` traces a
//! record and a query through them.
//!
//! Core: pure domain logic, no I/O.
//! - `value`   — DynamoDB attribute values, SDK-neutral; their DynamoDB JSON and canonical form.
//! - `diff`    — field-level diffs of item images (the `changes` patch) and their inverse.
//! - `entry`   — the audit entry (the `history --json` contract), gaps, the principal behind a change.
//! - `redact`  — `[redaction]`: covered values replaced by keyed commitments before anything is stored.
//! - `proof`   — hash chain, Merkle trees, digest documents, signatures, the verifier, offline bundles.
//! - `lineage` — the shard graph: which shards may be read now.
//! - `config`  — the TOML config: documented defaults, unknown keys rejected; what it builds.
//!
//! Seams and adapters: small traits in domain types, SDK types stop in the adapters.
//! - `aws`     — AWS SDK configuration (standard environment, no SDK retries) and error reading.
//! - `stream`  — the stream seam: trait + domain types; `aws` adapter; `sim` simulator and `faults` (test-util).
//! - `store`   — the stores of the trail: traits; `layout` (keys, encoding, write cost: pure); `dynamo/` adapter by role; `memory`, `faults` (test-util).
//! - `kms`     — AWS KMS (ECC_NIST_P256) as a digest signer.
//! - `pace`    — request pacing (governor) on tokio's clock.
//! - `observe` — events that log and count themselves; table health; /metrics, /healthz, /readyz, EMF.
//! - `retry`   — the one retry layer: backoff with jitter on transient errors.
//!
//! Tasks: what `run` starts.
//! - `daemon`  — the daemon: engine (what tasks share), supervisor, shard loops, digest task.
//! - `attribution` — the CloudTrail reader: the IAM principal behind each entry.
//! - `snapshot` — `ddb-audit snapshot`: a SNAPSHOT entry for every item a table holds, paced, resumable.
//!
//! Faces: what users ask, in the terminal and over HTTP (the binary's
//! `src/cli/` is the third face, over the same functions).
//! - `read`    — questions to the trail: queries, the item as of a time, diffs, reverts, verify.
//! - `report`  — what history, gaps and status print (tables and JSON lines).
//! - `serve`   — `ddb-audit serve`: token-checked read-only HTTP API and the embedded web page.
//!
//! (test-util): only with the `test-util` feature, which the tests and
//! benchmarks turn on and the shipped binary does not.

pub mod attribution;
pub mod aws;
pub mod config;
pub mod daemon;
pub mod diff;
pub mod entry;
pub mod kms;
pub mod lineage;
pub mod observe;
pub mod pace;
pub mod proof;
pub mod read;
pub mod redact;
pub mod report;
pub mod retry;
pub mod selection;
pub mod serve;
pub mod snapshot;
pub mod store;
pub mod stream;
pub mod value;
