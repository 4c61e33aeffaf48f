//! Proof that the trail is intact: canonical bytes, the per-shard hash
//! chain, RFC 6962 Merkle trees, signed digests, the verifier and offline
//! bundles. Pure: the store reader (`read::verify`), the daemon's digest task
//! (`daemon::digests`) and the KMS signer (`kms`) live with their kind.
//! `docs/proof-format.md` specifies every byte for third-party verifiers.
//!
//! - `bundle`    — offline proof bundles (`export --proof`) and their verifier.
//! - `canonical` — RFC 8785 canonical JSON: what is hashed.
//! - `merkle`    — leaf/node hashes, roots, inclusion and consistency proofs, frontiers.
//! - `chain`     — an entry's (or gap's) leaf document and hash; a shard's chain state.
//! - `digest`    — the per-stream digest document, its hash and signature.
//! - `sign`      — the signer seam, Ed25519 PEM keys, public keys (Ed25519, P-256).
//! - `verify`    — the verifier's logic over one stream's evidence: findings, exit status.

pub mod bundle;
pub mod canonical;
pub mod chain;
pub mod digest;
pub mod merkle;
pub mod sign;
pub mod verify;

pub use chain::{ChainState, Link};
pub use merkle::Hash;

#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// A key that cannot be read or used; the message says how to fix it.
    #[error("{0}")]
    Key(String),
    /// A document that is not what the format says.
    #[error("{0}")]
    Format(String),
    /// Signing failed (a KMS call, say).
    #[error("signing failed: {0}")]
    Sign(String),
}

#[cfg(test)]
mod golden_tests;
