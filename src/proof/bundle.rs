//! Offline proof bundles: one item's entries, each with an inclusion proof
//! into a shard's Merkle tree as a signed digest states it, and those
//! digests. [`verify_bundle`] needs nothing but the file and a public key.

use serde::{Deserialize, Serialize};

use super::chain::{document_hash, entry_document, parse_hash};
use super::digest::SignedDigest;
use super::merkle::verify_inclusion;
use super::sign::PublicKey;
use super::verify::{Finding, Kind, Severity};

pub const BUNDLE_TYPE: &str = "ddb-audit.bundle.v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    #[serde(rename = "type")]
    pub kind: String,
    pub table: String,
    /// The item key, DynamoDB JSON.
    pub key: serde_json::Value,
    pub created_at: String,
    /// The fingerprint of the key that signed the digests (`null`: unsigned).
    pub public_key_fingerprint: Option<String>,
    pub entries: Vec<BundleEntry>,
    pub digests: Vec<BundleDigest>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    pub stream_arn: String,
    pub shard_id: String,
    /// The entry exactly as stored (the `history --json` object).
    pub entry: serde_json::Value,
    pub prev_hash: Option<String>,
    pub hash: String,
    /// Its position in the shard's tree, and the tree it is proven in.
    pub leaf_index: u64,
    pub tree_size: u64,
    pub digest_number: u64,
    /// Hex sibling hashes, leaf to root (RFC 9162 §2.1.3).
    pub inclusion_proof: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleDigest {
    pub stream_arn: String,
    pub number: u64,
    #[serde(flatten)]
    pub signed: SignedDigest,
}

/// Checks a bundle: every entry's hash from its content, its inclusion in
/// the tree its digest signs, every digest's hash and signature.
pub fn verify_bundle(bundle: &Bundle, key: Option<&PublicKey>) -> Vec<Finding> {
    let mut out = Vec::new();
    let finding =
        |severity, kind, e: Option<&BundleEntry>, digest: Option<u64>, message: String| Finding {
            severity,
            kind,
            table: bundle.table.clone(),
            stream_arn: e.map(|e| e.stream_arn.clone()).unwrap_or_default(),
            shard_id: e.map(|e| e.shard_id.clone()),
            key: Some(bundle.key.clone()),
            sequence_number: e
                .and_then(|e| e.entry["sequence_number"].as_str().map(str::to_string)),
            digest,
            message,
        };
    if bundle.kind != BUNDLE_TYPE {
        out.push(finding(
            Severity::Unverifiable,
            Kind::NotCheckable,
            None,
            None,
            format!("not a {BUNDLE_TYPE} file (type {:?})", bundle.kind),
        ));
        return out;
    }
    let mut unsigned = false;
    for d in &bundle.digests {
        // A finding about this digest.
        let of_digest =
            |severity, kind, message| finding(severity, kind, None, Some(d.number), message);
        if d.signed.computed_hash() != d.signed.hash || !d.signed.is_canonical() {
            out.push(of_digest(
                Severity::Tamper,
                Kind::DigestAltered,
                format!(
                    "digest {} of {}: its bytes do not match its hash",
                    d.number, d.stream_arn
                ),
            ));
        }
        match (&d.signed.signature_bytes(), key) {
            (Some(sig), Some(key)) => {
                if !key.verify(d.signed.digest.as_bytes(), sig) {
                    out.push(of_digest(
                        Severity::Tamper,
                        Kind::BadSignature,
                        format!(
                            "digest {} of {}: the signature does not verify with {}",
                            d.number,
                            d.stream_arn,
                            key.fingerprint()
                        ),
                    ));
                }
            }
            (Some(_), None) => {
                out.push(of_digest(
                    Severity::Unverifiable,
                    Kind::NotCheckable,
                    format!(
                    "digest {} is signed by {}, but no public key was given (--public-key FILE)",
                    d.number,
                    bundle.public_key_fingerprint.as_deref().unwrap_or("an unnamed key")
                ),
                ))
            }
            (None, Some(key)) => out.push(of_digest(
                Severity::Tamper,
                Kind::BadSignature,
                format!(
                    "digest {} carries no signature, but {} was expected",
                    d.number,
                    key.fingerprint()
                ),
            )),
            (None, None) => unsigned = true,
        }
        if let Ok(doc) = d.signed.parse() {
            if doc.number != d.number || doc.stream_arn != d.stream_arn {
                out.push(of_digest(
                    Severity::Tamper,
                    Kind::DigestAltered,
                    format!(
                        "digest {} says it is number {} of {}",
                        d.number, doc.number, doc.stream_arn
                    ),
                ));
            }
        }
    }
    if unsigned {
        out.push(finding(
            Severity::Info,
            Kind::Unsigned,
            None,
            None,
            "the digests are unsigned: the bundle shows consistency, not who wrote it".into(),
        ));
    }
    for e in &bundle.entries {
        let prev = e.prev_hash.as_deref().and_then(parse_hash);
        let computed = document_hash(&entry_document(&e.stream_arn, &e.entry, prev.as_ref())).ok();
        let stated = parse_hash(&e.hash);
        if computed.is_none() || computed != stated {
            out.push(finding(
                Severity::Tamper,
                Kind::Altered,
                Some(e),
                None,
                "the entry's content does not hash to its hash: altered".into(),
            ));
            continue;
        }
        let digest = bundle
            .digests
            .iter()
            .find(|d| d.stream_arn == e.stream_arn && d.number == e.digest_number)
            .and_then(|d| d.signed.parse().ok());
        let Some(digest) = digest else {
            out.push(finding(
                Severity::Tamper,
                Kind::DigestMissing,
                Some(e),
                Some(e.digest_number),
                format!(
                    "digest {} that proves this entry is not in the bundle",
                    e.digest_number
                ),
            ));
            continue;
        };
        let head = digest.shards.iter().find(|h| h.shard_id == e.shard_id);
        let root = head.and_then(|h| parse_hash(&h.root));
        let path: Option<Vec<_>> = e.inclusion_proof.iter().map(|h| parse_hash(h)).collect();
        let proven = match (head, root, path, stated) {
            (Some(h), Some(root), Some(path), Some(leaf)) => {
                h.size == e.tree_size
                    && verify_inclusion(&leaf, e.leaf_index, e.tree_size, &path, &root)
            }
            _ => false,
        };
        if !proven {
            out.push(finding(
                Severity::Tamper,
                Kind::Inserted,
                Some(e),
                Some(e.digest_number),
                format!(
                    "the inclusion proof does not lead to the Merkle root digest {} signed for shard {}: \
                     the entry is not the one the trail holds",
                    e.digest_number, e.shard_id
                ),
            ));
        }
    }
    out
}
