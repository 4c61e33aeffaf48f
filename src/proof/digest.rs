//! Digests: per stream, a signed statement of how far every shard's chain
//! reached — its entry count (Merkle tree size), tree root, last hash and
//! last sequence number — chained to the previous digest by hash and
//! signature.
//!
//! A digest's bytes are `canonical_json(document)`; its hash is
//! `SHA-256(bytes)`; its signature is over the same bytes (Ed25519: the
//! bytes themselves are the message). The document names the signing key by
//! fingerprint, so the signature covers which key was meant.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::canonical::canonical_json;
use super::merkle::Hash;
use super::sign::DigestSigner;
use super::ProofError;

pub const DIGEST_TYPE: &str = "ddb-audit.digest.v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    #[serde(rename = "type")]
    pub kind: String,
    pub table: String,
    pub stream_arn: String,
    /// 1, 2, 3, … per stream, without holes: a missing number is a missing digest.
    pub number: u64,
    /// When it was made, RFC 3339 UTC (milliseconds).
    pub time: String,
    /// The digest before this one (`null` only for number 1).
    pub previous: Option<PreviousDigest>,
    /// Written on a graceful stop: the trail of this stream ends here until
    /// the daemon starts again.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub interval_secs: u64,
    /// `[retention] days` when the digest was made: entries older than that
    /// may have expired by policy (`null`: kept for ever).
    pub retention_days: Option<u64>,
    /// The key that signs it (`null`: unsigned).
    pub key: Option<KeyRef>,
    /// Every shard of the stream with a checkpoint, by shard id.
    pub shards: Vec<ShardHead>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousDigest {
    pub number: u64,
    /// Hex SHA-256 of the previous digest's bytes.
    pub hash: String,
    /// Its signature, base64 (`null` if it was unsigned).
    pub signature: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub algorithm: String,
    pub fingerprint: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardHead {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    /// `open`, `closed` or `drained`.
    pub status: String,
    /// Entries (and gaps) in the shard's chain: its Merkle tree size.
    pub size: u64,
    /// Hex Merkle root of those `size` leaves.
    pub root: String,
    /// Hex hash of the last one (for an empty child: its parent's last hash).
    pub last_hash: Option<String>,
    pub last_sequence_number: Option<String>,
}

/// A digest as stored: its exact bytes, their hash and the signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDigest {
    /// The canonical JSON text (UTF-8) that was hashed and signed.
    pub digest: String,
    pub hash: String,
    /// Base64 signature over `digest`'s bytes (`None`: unsigned).
    pub signature: Option<String>,
}

impl SignedDigest {
    pub fn parse(&self) -> Result<Digest, ProofError> {
        serde_json::from_str(&self.digest)
            .map_err(|e| ProofError::Format(format!("digest is not a digest document: {e}")))
    }

    /// Hex SHA-256 of the stored bytes, recomputed.
    pub fn computed_hash(&self) -> String {
        hex::encode(Sha256::digest(self.digest.as_bytes()))
    }

    /// The stored bytes are the canonical form of what they say (nothing
    /// re-spelt, nothing added).
    pub fn is_canonical(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.digest)
            .ok()
            .and_then(|v| canonical_json(&v).ok())
            .is_some_and(|bytes| bytes == self.digest.as_bytes())
    }

    pub fn signature_bytes(&self) -> Option<Vec<u8>> {
        self.signature
            .as_deref()
            .and_then(|s| BASE64.decode(s).ok())
    }
}

/// What the next digest needs to know about the one before it.
pub fn previous_of(prev: &SignedDigest, number: u64) -> PreviousDigest {
    PreviousDigest {
        number,
        hash: prev.hash.clone(),
        signature: prev.signature.clone(),
    }
}

/// Canonical bytes, hash and (with a signer) signature of `digest`.
pub async fn seal(
    digest: &Digest,
    signer: Option<&dyn DigestSigner>,
) -> Result<SignedDigest, ProofError> {
    let value = serde_json::to_value(digest).map_err(|e| ProofError::Format(e.to_string()))?;
    let bytes = canonical_json(&value).map_err(|e| ProofError::Format(e.to_string()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| ProofError::Format(format!("canonical JSON not UTF-8: {e}")))?;
    let hash = hex::encode(Sha256::digest(text.as_bytes()));
    let signature = match signer {
        Some(signer) => Some(BASE64.encode(signer.sign(text.as_bytes()).await?)),
        None => None,
    };
    Ok(SignedDigest {
        digest: text,
        hash,
        signature,
    })
}

pub fn hash_hex(h: &Hash) -> String {
    hex::encode(h)
}

/// What the digest after `prev` (or the first one) says.
pub struct DigestInput<'a> {
    pub table: &'a str,
    pub stream_arn: &'a str,
    pub previous: Option<(u64, &'a SignedDigest)>,
    pub shards: Vec<ShardHead>,
    pub time: chrono::DateTime<chrono::Utc>,
    pub is_final: bool,
    pub interval_secs: u64,
    pub retention_days: Option<u64>,
    pub signer: Option<&'a dyn DigestSigner>,
}

/// Builds the next digest of a stream and seals it.
pub async fn next_digest(input: DigestInput<'_>) -> Result<(Digest, SignedDigest), ProofError> {
    let mut shards = input.shards;
    shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    let digest = Digest {
        kind: DIGEST_TYPE.into(),
        table: input.table.to_string(),
        stream_arn: input.stream_arn.to_string(),
        number: input.previous.map(|(n, _)| n + 1).unwrap_or(1),
        time: crate::entry::format_ts(input.time),
        previous: input.previous.map(|(n, d)| previous_of(d, n)),
        is_final: input.is_final,
        interval_secs: input.interval_secs,
        retention_days: input.retention_days,
        key: input.signer.map(|s| KeyRef {
            algorithm: s.algorithm().to_string(),
            fingerprint: s.fingerprint().to_string(),
        }),
        shards,
    };
    let sealed = seal(&digest, input.signer).await?;
    Ok((digest, sealed))
}

#[cfg(test)]
impl SignedDigest {
    /// Flips the `mask` bits of the signature's byte `at`: a test's forgery.
    pub(crate) fn flip_signature_bits(&mut self, at: usize, mask: u8) {
        let mut bytes = BASE64.decode(self.signature.as_ref().unwrap()).unwrap();
        bytes[at] ^= mask;
        self.signature = Some(BASE64.encode(bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proof::sign::{Ed25519Signer, PublicKey};
    use futures_util::FutureExt;

    fn digest(number: u64) -> Digest {
        Digest {
            kind: DIGEST_TYPE.into(),
            table: "orders".into(),
            stream_arn: "arn/s".into(),
            number,
            time: "2026-11-23T19:05:00.000Z".into(),
            previous: None,
            is_final: false,
            interval_secs: 60,
            retention_days: None,
            key: None,
            shards: vec![ShardHead {
                shard_id: "shardId-1".into(),
                parent_shard_id: None,
                status: "open".into(),
                size: 0,
                root: hex::encode(crate::proof::merkle::empty_root()),
                last_hash: None,
                last_sequence_number: None,
            }],
        }
    }

    #[test]
    fn sealed_digests_are_canonical_hashed_and_signed() {
        let signer =
            Ed25519Signer::from_pem(include_str!("testdata/ed25519-private.pem"), "test").unwrap();
        let public: PublicKey = signer.public_key();
        let sealed = seal(&digest(1), Some(&signer))
            .now_or_never()
            .unwrap()
            .unwrap();
        assert!(sealed.is_canonical());
        assert_eq!(sealed.computed_hash(), sealed.hash);
        assert_eq!(sealed.parse().unwrap(), digest(1));
        let sig = sealed.signature_bytes().unwrap();
        assert!(public.verify(sealed.digest.as_bytes(), &sig));
        let altered = sealed.digest.replace("\"number\":1", "\"number\":2");
        assert!(!public.verify(altered.as_bytes(), &sig));
        let unsigned = seal(&digest(1), None).now_or_never().unwrap().unwrap();
        assert_eq!(unsigned.signature, None);
        assert_eq!(unsigned.hash, sealed.hash);
    }
}
