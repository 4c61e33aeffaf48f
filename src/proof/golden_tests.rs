//! The format's test vectors (`testdata/golden.json`), computed by an
//! independent implementation (`scripts/proof_golden.py`: Python's hashlib
//! and openssl). Version 1 of the format is frozen: if one of these fails,
//! the change broke every stored chain, whatever else it fixed.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures_util::FutureExt;
use serde_json::Value;

use super::canonical::canonical_json;
use super::chain::{document_hash, entry_document, gap_document, hash_gap, parse_hash};
use super::digest::{seal, Digest};
use super::merkle::{root, Frontier};
use super::sign::{DigestSigner, Ed25519Signer, PublicKey};
use crate::entry::Gap;

fn golden() -> Value {
    serde_json::from_str(include_str!("testdata/golden.json")).unwrap()
}

fn hash_of(v: &Value) -> super::Hash {
    parse_hash(v.as_str().unwrap()).unwrap()
}

#[test]
fn entry_vectors() {
    let g = golden();
    let arn = g["stream_arn"].as_str().unwrap();
    let mut prev = None;
    for case in g["entries"].as_array().unwrap() {
        assert_eq!(
            case["prev_hash"].as_str().map(|h| parse_hash(h).unwrap()),
            prev
        );
        let doc = entry_document(arn, &case["entry"], prev.as_ref());
        assert_eq!(
            String::from_utf8(canonical_json(&doc).unwrap()).unwrap(),
            case["canonical"].as_str().unwrap()
        );
        let h = document_hash(&doc).unwrap();
        assert_eq!(h, hash_of(&case["hash"]));
        prev = Some(h);
    }
}

#[test]
fn gap_vector() {
    let g = golden();
    let case = &g["gap"];
    let prev = parse_hash(case["prev_hash"].as_str().unwrap()).unwrap();
    let doc = gap_document(&case["gap"], Some(&prev));
    assert_eq!(
        String::from_utf8(canonical_json(&doc).unwrap()).unwrap(),
        case["canonical"].as_str().unwrap()
    );
    let gap: Gap = serde_json::from_value(case["gap"].clone()).unwrap();
    assert_eq!(hash_gap(&gap, Some(&prev)).unwrap(), hash_of(&case["hash"]));
}

#[test]
fn merkle_vectors() {
    let g = golden();
    let leaves: Vec<_> = g["merkle"]["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .map(hash_of)
        .collect();
    let mut frontier = Frontier::default();
    for (n, expected) in g["merkle"]["roots"].as_array().unwrap().iter().enumerate() {
        assert_eq!(root(&leaves[..n]), hash_of(expected), "size {n}");
        assert_eq!(frontier.root(), hash_of(expected), "frontier size {n}");
        if n < leaves.len() {
            frontier.push(leaves[n]);
        }
    }
}

#[test]
fn digest_vector() {
    let g = golden();
    let case = &g["digest"];
    let digest: Digest = serde_json::from_value(case["document"].clone()).unwrap();
    let signer =
        Ed25519Signer::from_pem(include_str!("testdata/ed25519-private.pem"), "test").unwrap();
    assert_eq!(
        Some(signer.fingerprint()),
        case["document"]["key"]["fingerprint"].as_str()
    );
    let sealed = seal(&digest, Some(&signer))
        .now_or_never()
        .unwrap()
        .unwrap();
    assert_eq!(sealed.digest, case["canonical"].as_str().unwrap());
    assert_eq!(sealed.hash, case["hash"].as_str().unwrap());
    // Ed25519 is deterministic: openssl's signature is ours.
    assert_eq!(sealed.signature.as_deref(), case["signature"].as_str());
    let public = PublicKey::from_pem(include_str!("testdata/ed25519-public.pem"), "test").unwrap();
    let sig = BASE64.decode(case["signature"].as_str().unwrap()).unwrap();
    assert!(public.verify(sealed.digest.as_bytes(), &sig));
}
