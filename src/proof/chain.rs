//! The hash chain: what an entry (or gap) hashes as, and the chain state a
//! shard's checkpoint carries.
//!
//! An entry's *leaf document* is the JSON object
//! `{"type":"ddb-audit.entry.v1","stream_arn":…,"prev_hash":<hex>|null,"entry":<the stored entry JSON>}`;
//! its hash is `SHA-256(0x00 ‖ canonical_json(document))`, which is also
//! its RFC 6962 leaf hash in the shard's Merkle tree. `prev_hash` is the
//! hash of the entry before it in its shard (for a shard's first entry: the
//! parent shard's last hash; `null` for a root shard's first entry), so the
//! hash commits to the whole chain behind it. A gap's document is the same
//! with `"type":"ddb-audit.gap.v1"` and `"gap"` holding the gap without its
//! `detected_at` (the time it was seen is not what was lost, and a gap seen
//! again after a crash must hash the same).

use serde_json::{json, Value};

use super::canonical::{canonical_json, CanonicalError};
use super::merkle::{leaf_hash, Frontier, Hash};
use crate::entry::{AuditEntry, Gap};

pub const ENTRY_TYPE: &str = "ddb-audit.entry.v1";
pub const GAP_TYPE: &str = "ddb-audit.gap.v1";

/// The prev/this hashes an entry is stored with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub prev_hash: Option<Hash>,
    pub hash: Hash,
}

/// The leaf document of an entry whose stored JSON is `entry`.
pub fn entry_document(stream_arn: &str, entry: &Value, prev: Option<&Hash>) -> Value {
    json!({
        "type": ENTRY_TYPE,
        "stream_arn": stream_arn,
        "prev_hash": prev.map(hex::encode),
        "entry": entry,
    })
}

/// The leaf document of a gap whose stored JSON is `gap`.
pub fn gap_document(gap: &Value, prev: Option<&Hash>) -> Value {
    let mut gap = gap.clone();
    if let Some(map) = gap.as_object_mut() {
        map.remove("detected_at");
    }
    let stream_arn = gap.get("stream_arn").cloned().unwrap_or(Value::Null);
    json!({
        "type": GAP_TYPE,
        "stream_arn": stream_arn,
        "prev_hash": prev.map(hex::encode),
        "gap": gap,
    })
}

pub fn document_hash(document: &Value) -> Result<Hash, CanonicalError> {
    Ok(leaf_hash(&canonical_json(document)?))
}

/// The hash of an entry as the store will hold it.
pub fn hash_entry(entry: &AuditEntry, prev: Option<&Hash>) -> Result<Hash, CanonicalError> {
    let value = serde_json::to_value(entry).map_err(|e| CanonicalError(e.to_string()))?;
    document_hash(&entry_document(&entry.stream_arn, &value, prev))
}

pub fn hash_gap(gap: &Gap, prev: Option<&Hash>) -> Result<Hash, CanonicalError> {
    let value = serde_json::to_value(gap).map_err(|e| CanonicalError(e.to_string()))?;
    document_hash(&gap_document(&value, prev))
}

/// Where a shard's chain stands: its last hash and its Merkle tree so far.
/// Saved with the checkpoint, in the same write, so it always describes
/// exactly the entries the checkpoint covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    pub last_hash: Option<Hash>,
    pub tree: Frontier,
}

impl ChainState {
    /// A child shard's chain starts from its parent's last hash, with a tree
    /// of its own.
    pub fn continuing(parent_last: Option<Hash>) -> Self {
        ChainState {
            last_hash: parent_last,
            tree: Frontier::default(),
        }
    }

    pub fn append(&mut self, hash: Hash) {
        self.last_hash = Some(hash);
        self.tree.push(hash);
    }

    /// Links an entry onto the chain and returns its link.
    pub fn link_entry(&mut self, entry: &AuditEntry) -> Result<Link, CanonicalError> {
        let prev_hash = self.last_hash;
        let hash = hash_entry(entry, prev_hash.as_ref())?;
        self.append(hash);
        Ok(Link { prev_hash, hash })
    }

    pub fn link_gap(&mut self, gap: &Gap) -> Result<Link, CanonicalError> {
        let prev_hash = self.last_hash;
        let hash = hash_gap(gap, prev_hash.as_ref())?;
        self.append(hash);
        Ok(Link { prev_hash, hash })
    }

    /// The text form kept in the checkpoint row:
    /// `v1;<size>;<last hash hex or ->;<frontier node hex,…>`.
    pub fn encode(&self) -> String {
        let nodes: Vec<String> = self.tree.nodes.iter().map(hex::encode).collect();
        format!(
            "v1;{};{};{}",
            self.tree.size,
            self.last_hash
                .map(hex::encode)
                .unwrap_or_else(|| "-".into()),
            nodes.join(",")
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(';');
        if parts.next()? != "v1" {
            return None;
        }
        let size: u64 = parts.next()?.parse().ok()?;
        let last = match parts.next()? {
            "-" => None,
            h => Some(parse_hash(h)?),
        };
        let nodes_text = parts.next()?;
        let nodes = if nodes_text.is_empty() {
            Vec::new()
        } else {
            nodes_text
                .split(',')
                .map(parse_hash)
                .collect::<Option<Vec<_>>>()?
        };
        let tree = Frontier { size, nodes };
        (parts.next().is_none() && tree.is_well_formed()).then_some(ChainState {
            last_hash: last,
            tree,
        })
    }
}

pub fn parse_hash(text: &str) -> Option<Hash> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::AttrValue;

    fn entry(seq: &str) -> AuditEntry {
        AuditEntry {
            changes: vec![crate::entry::Change {
                path: "balance".into(),
                old: Some(AttrValue::N("1000".into())),
                new: Some(AttrValue::N("900".into())),
                added: None,
                removed: None,
            }],
            ..AuditEntry::fixture(
                "orders",
                [("pk".to_string(), AttrValue::S("u1".into()))].into(),
                seq,
            )
        }
    }

    #[test]
    fn each_hash_commits_to_the_one_before() {
        let mut chain = ChainState::default();
        let a = chain.link_entry(&entry("100")).unwrap();
        let b = chain.link_entry(&entry("200")).unwrap();
        assert_eq!(a.prev_hash, None);
        assert_eq!(b.prev_hash, Some(a.hash));
        // Same entry, another predecessor: another hash.
        let other = hash_entry(&entry("200"), Some(&[7; 32])).unwrap();
        assert_ne!(other, b.hash);
        // Deterministic: a re-delivery hashes the same.
        assert_eq!(hash_entry(&entry("200"), Some(&a.hash)).unwrap(), b.hash);
        assert_eq!(chain.tree.size, 2);
    }

    #[test]
    fn the_stored_json_hashes_as_the_entry() {
        // What the verifier sees is the stored text, parsed again.
        let e = entry("100");
        let stored: Value = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(
            document_hash(&entry_document(&e.stream_arn, &stored, None)).unwrap(),
            hash_entry(&e, None).unwrap()
        );
    }

    #[test]
    fn a_gap_hashes_without_its_detection_time() {
        let gap = |at: &str| Gap {
            after_sequence_number: Some("100".into()),
            resumed_at_sequence_number: Some("300".into()),
            detected_at: at.into(),
            ..Gap::detected("orders", "arn/s", "shardId-1")
        };
        assert_eq!(
            hash_gap(&gap("2026-01-01T00:00:00Z"), None).unwrap(),
            hash_gap(&gap("2026-02-01T00:00:00Z"), None).unwrap()
        );
    }

    #[test]
    fn chain_state_round_trips_and_rejects_damage() {
        let mut chain = ChainState::continuing(Some([9; 32]));
        assert_eq!(ChainState::decode(&chain.encode()), Some(chain.clone()));
        for i in 0..5u8 {
            chain.append([i; 32]);
        }
        let text = chain.encode();
        assert_eq!(ChainState::decode(&text), Some(chain.clone()));
        assert_eq!(ChainState::decode(&text.replace(";5;", ";7;")), None);
        assert_eq!(ChainState::decode("v2;0;-;"), None);
    }
}
