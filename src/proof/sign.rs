//! Digest signatures: a [`DigestSigner`] seam (Ed25519 from a PKCS#8 PEM
//! file here; an AWS KMS ECC_NIST_P256 key in `kms`) and the
//! [`PublicKey`] that checks them.
//!
//! A key is named by its fingerprint: `sha256:` and the hex SHA-256 of its
//! DER SubjectPublicKeyInfo (the bytes inside the PEM `openssl pkey -pubout`
//! writes, and what KMS GetPublicKey returns), so `openssl pkey -pubin
//! -outform DER | sha256sum` recomputes it.
//!
//! What is signed, per algorithm (`docs/proof-format.md`, "Signatures"):
//! - `ed25519`: the digest's canonical bytes themselves (64-byte signature);
//! - `ecdsa-p256-sha256`: the 32-byte SHA-256 of those bytes (the digest's
//!   hash), as the message of ECDSA P-256 with SHA-256; the signature is
//!   ASN.1 DER, as KMS returns it. Hashing first keeps the KMS request at 32
//!   bytes whatever the digest's size (KMS takes at most 4096 raw bytes).

use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use futures_util::future::BoxFuture;
use sha2::{Digest as _, Sha256};

use super::ProofError;

pub const ED25519: &str = "ed25519";
pub const ECDSA_P256_SHA256: &str = "ecdsa-p256-sha256";

/// The message an `ecdsa-p256-sha256` signature is made over: SHA-256 of
/// the digest's bytes.
pub fn ecdsa_message(digest_bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(digest_bytes).into()
}

const OID_ED25519: &str = "1.3.101.112";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";

/// Signs digests. Boxed futures keep it object-safe, so the daemon holds
/// one `Arc<dyn DigestSigner>` whatever the key kind.
pub trait DigestSigner: Send + Sync {
    /// `ed25519` (or, for KMS, `ecdsa-p256-sha256`).
    fn algorithm(&self) -> &str;
    /// `sha256:<hex of the DER SubjectPublicKeyInfo>`.
    fn fingerprint(&self) -> &str;
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, ProofError>>;
}

/// An Ed25519 private key, as `openssl genpkey -algorithm ed25519` writes it.
pub struct Ed25519Signer {
    key: SigningKey,
    fingerprint: String,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("Ed25519Signer")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Ed25519Signer {
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, ProofError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| {
            ProofError::Key(format!(
                "{origin}: not an Ed25519 private key in PKCS#8 PEM ({e}); create one with \
                 `openssl genpkey -algorithm ed25519 -out {origin}`"
            ))
        })?;
        Ok(Self::from_key(key))
    }

    pub fn from_file(path: &Path) -> Result<Self, ProofError> {
        let origin = path.display().to_string();
        let pem = std::fs::read_to_string(path)
            .map_err(|e| ProofError::Key(format!("cannot read signing key {origin}: {e}")))?;
        Self::from_pem(&pem, &origin)
    }

    pub fn from_key(key: SigningKey) -> Self {
        let fingerprint = PublicKey::Ed25519(key.verifying_key()).fingerprint();
        Ed25519Signer { key, fingerprint }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey::Ed25519(self.key.verifying_key())
    }
}

impl DigestSigner for Ed25519Signer {
    fn algorithm(&self) -> &str {
        ED25519
    }
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, ProofError>> {
        let signature = self.key.sign(message).to_bytes().to_vec();
        Box::pin(async move { Ok(signature) })
    }
}

/// A key that checks digest signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(VerifyingKey),
    /// A P-256 key (KMS ECC_NIST_P256), kept as its DER SubjectPublicKeyInfo.
    EcdsaP256(Vec<u8>),
}

impl PublicKey {
    /// A public key PEM (`openssl pkey -pubout`: Ed25519 or P-256), or an
    /// Ed25519 private key PEM whose public half is taken (the configured
    /// signing key).
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, ProofError> {
        if let Ok(key) = SigningKey::from_pkcs8_pem(pem) {
            return Ok(PublicKey::Ed25519(key.verifying_key()));
        }
        let not_a_key = || {
            ProofError::Key(format!(
                "{origin}: not a public key PEM (Ed25519 or P-256, as `openssl pkey -pubout` \
                 writes it) nor an Ed25519 PKCS#8 private key PEM"
            ))
        };
        let (label, der) =
            ed25519_dalek::pkcs8::Document::from_pem(pem.trim()).map_err(|_| not_a_key())?;
        if label != "PUBLIC KEY" {
            return Err(not_a_key());
        }
        Self::from_spki_der(der.as_bytes(), origin)
    }

    /// A DER SubjectPublicKeyInfo: what KMS GetPublicKey returns and what a
    /// PEM public key holds.
    pub fn from_spki_der(der: &[u8], origin: &str) -> Result<Self, ProofError> {
        use ed25519_dalek::pkcs8::spki::SubjectPublicKeyInfoRef;
        use ed25519_dalek::pkcs8::ObjectIdentifier;
        let spki = SubjectPublicKeyInfoRef::try_from(der).map_err(|e| {
            ProofError::Key(format!("{origin}: not a DER SubjectPublicKeyInfo ({e})"))
        })?;
        let oid = spki.algorithm.oid.to_string();
        if oid == OID_ED25519 {
            return VerifyingKey::from_public_key_der(der)
                .map(PublicKey::Ed25519)
                .map_err(|e| ProofError::Key(format!("{origin}: bad Ed25519 public key ({e})")));
        }
        let curve = spki
            .algorithm
            .parameters
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
            .map(|c| c.to_string());
        if oid == OID_EC_PUBLIC_KEY && curve.as_deref() == Some(OID_P256) {
            aws_lc_rs::signature::ParsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                der,
            )
            .map_err(|e| ProofError::Key(format!("{origin}: bad P-256 public key ({e})")))?;
            return Ok(PublicKey::EcdsaP256(der.to_vec()));
        }
        Err(ProofError::Key(format!(
            "{origin}: a public key of algorithm {oid}{}; digests are signed with Ed25519 or \
             ECDSA P-256 (a KMS key of spec ECC_NIST_P256)",
            curve.map(|c| format!(" on curve {c}")).unwrap_or_default()
        )))
    }

    pub fn from_file(path: &Path) -> Result<Self, ProofError> {
        let origin = path.display().to_string();
        let pem = std::fs::read_to_string(path)
            .map_err(|e| ProofError::Key(format!("cannot read public key {origin}: {e}")))?;
        Self::from_pem(&pem, &origin)
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => ED25519,
            PublicKey::EcdsaP256(_) => ECDSA_P256_SHA256,
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            // Encoding 32 bytes into a fixed structure does not fail; if it
            // ever did, the empty key's fingerprint would match nothing.
            PublicKey::Ed25519(key) => key
                .to_public_key_der()
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_default(),
            PublicKey::EcdsaP256(der) => der.clone(),
        }
    }

    /// As `openssl pkey -pubout` writes it: what `--public-key` reads.
    pub fn to_pem(&self) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(self.spki_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(self.spki_der())))
    }

    /// Whether `signature` signs the digest bytes `message` (the signing
    /// input per algorithm is in the module comment).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(key) => Signature::from_slice(signature)
                .map(|sig| key.verify(message, &sig).is_ok())
                .unwrap_or(false),
            PublicKey::EcdsaP256(der) => aws_lc_rs::signature::UnparsedPublicKey::new(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
                der,
            )
            .verify(&ecdsa_message(message), signature)
            .is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genpkey -algorithm ed25519` output, checked in so the test
    /// proves we read what openssl writes.
    pub(crate) const PRIVATE_PEM: &str = include_str!("testdata/ed25519-private.pem");
    pub(crate) const PUBLIC_PEM: &str = include_str!("testdata/ed25519-public.pem");

    #[test]
    fn the_configured_key_is_the_public_file_else_the_signing_keys_half() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proof/testdata");
        let mut proof = crate::config::Proof::default();
        assert_eq!(PublicKey::from_config(&proof).unwrap(), None);
        proof.signing_key_file = Some(dir.join("ed25519-private.pem"));
        let derived = PublicKey::from_config(&proof).unwrap().unwrap();
        proof.public_key_file = Some(dir.join("ed25519-public.pem"));
        assert_eq!(PublicKey::from_config(&proof).unwrap(), Some(derived));
        proof.public_key_file = Some(dir.join("no-such.pem"));
        let e = PublicKey::from_config(&proof).unwrap_err().to_string();
        assert!(
            e.contains("[proof] public_key_file") && e.contains("no-such.pem"),
            "{e}"
        );
    }

    #[test]
    fn signs_and_verifies_with_openssl_keys() {
        let signer = Ed25519Signer::from_pem(PRIVATE_PEM, "test").unwrap();
        let public = PublicKey::from_pem(PUBLIC_PEM, "test").unwrap();
        assert_eq!(signer.public_key(), public);
        assert_eq!(signer.fingerprint(), public.fingerprint());
        assert_eq!(
            PublicKey::from_pem(PRIVATE_PEM, "test").unwrap(),
            public,
            "the signing key's public half"
        );
        let sig = futures_util::FutureExt::now_or_never(signer.sign(b"digest"))
            .unwrap()
            .unwrap();
        assert!(public.verify(b"digest", &sig));
        assert!(!public.verify(b"digesT", &sig));
        let mut bad = sig.clone();
        bad[10] ^= 0x01;
        assert!(!public.verify(b"digest", &bad));
        assert!(!public.verify(b"digest", &sig[..63]));
    }

    #[test]
    fn the_fingerprint_is_the_sha256_of_the_der_public_key() {
        // `openssl pkey -pubin -in ed25519-public.pem -outform DER | sha256sum`
        let expected = include_str!("testdata/ed25519-public.fingerprint").trim();
        let public = PublicKey::from_pem(PUBLIC_PEM, "test").unwrap();
        assert_eq!(public.fingerprint(), expected);
    }

    /// A P-256 key and signature made with openssl (`docs/proof-format.md`
    /// shows the commands): the verifier checks what a third party computes.
    #[test]
    fn ecdsa_p256_verifies_what_openssl_signs() {
        let public = PublicKey::from_pem(include_str!("testdata/p256-public.pem"), "t").unwrap();
        assert_eq!(public.algorithm(), ECDSA_P256_SHA256);
        assert_eq!(
            public.fingerprint(),
            include_str!("testdata/p256-public.fingerprint").trim()
        );
        let message = include_bytes!("testdata/p256-message.txt");
        let sig = base64::engine::general_purpose::STANDARD
            .decode(include_str!("testdata/p256-signature.b64").trim())
            .unwrap();
        assert!(public.verify(message, &sig));
        assert!(!public.verify(b"{}", &sig));
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert!(!public.verify(message, &bad));
        assert_eq!(
            PublicKey::from_pem(&public.to_pem(), "t").unwrap(),
            public,
            "to_pem is what from_pem reads"
        );
    }

    #[test]
    fn the_ed25519_pem_round_trips() {
        let public = PublicKey::from_pem(PUBLIC_PEM, "test").unwrap();
        assert_eq!(public.to_pem().trim(), PUBLIC_PEM.trim());
    }

    #[test]
    fn keys_of_other_algorithms_are_named() {
        // An RSA key (`openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:1024`).
        let rsa = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCcS2wczSHzQw3K4+2vzxmUbHoT
3RVD/XcPuHGL4UKkyt0YmPI5jDQPPwyf1IpNVtXRhnnx2RDBYyolo45F6KmG23wF
gTvRc8nS/GzLtm+6bS9Lt/IgyyCYc4YrtPnA6wc8xlYdfryO9CYmyLaLkXkCZB+5
2n7r1XRAwAjYOMF3uQIDAQAB
-----END PUBLIC KEY-----";
        let err = PublicKey::from_pem(rsa, "rsa.pem").unwrap_err().to_string();
        assert!(
            err.contains("rsa.pem") && err.contains("1.2.840.113549.1.1.1"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_key_file_says_how_to_make_one() {
        let err = Ed25519Signer::from_pem("not a key", "k.pem").unwrap_err();
        assert!(err.to_string().contains("openssl genpkey"), "{err}");
        assert!(PublicKey::from_pem("junk", "p.pem").is_err());
    }
}
