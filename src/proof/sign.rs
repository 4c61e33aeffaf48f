//! Digest signatures: a [`DigestSigner`] seam (Ed25519 from a PKCS#8 PEM
//! file here; an AWS KMS key can be a second implementation) and the
//! [`PublicKey`] that checks them.
//!
//! A key is named by its fingerprint: `sha256:` and the hex SHA-256 of its
//! DER SubjectPublicKeyInfo (the bytes inside the PEM `openssl pkey -pubout`
//! writes), so `openssl pkey -pubin -outform DER | sha256sum` recomputes it.

use std::path::Path;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use futures_util::future::BoxFuture;
use sha2::{Digest as _, Sha256};

use super::ProofError;

pub const ED25519: &str = "ed25519";

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

    /// The key the config names for checking: `[proof] public_key_file`,
    /// else the public half of `[proof] signing_key_file`, else none.
    pub fn from_config(proof: &crate::config::Proof) -> Result<Option<Self>, ProofError> {
        let (key, path) = match (&proof.public_key_file, &proof.signing_key_file) {
            (Some(p), _) => ("public_key_file", p),
            (None, Some(p)) => ("signing_key_file", p),
            (None, None) => return Ok(None),
        };
        Self::from_file(path)
            .map(Some)
            .map_err(|e| ProofError::Key(format!("[proof] {key}: {e}")))
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
}

impl PublicKey {
    /// A public key PEM (`openssl pkey -pubout`), or a private key PEM whose
    /// public half is taken (the configured signing key).
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, ProofError> {
        if let Ok(key) = VerifyingKey::from_public_key_pem(pem) {
            return Ok(PublicKey::Ed25519(key));
        }
        if let Ok(key) = SigningKey::from_pkcs8_pem(pem) {
            return Ok(PublicKey::Ed25519(key.verifying_key()));
        }
        Err(ProofError::Key(format!(
            "{origin}: not an Ed25519 public key PEM (as `openssl pkey -pubout` writes it) \
             nor a PKCS#8 private key PEM"
        )))
    }

    /// The key the config names for checking: `[proof] public_key_file`,
    /// else the public half of `[proof] signing_key_file`, else none.
    pub fn from_config(proof: &crate::config::Proof) -> Result<Option<Self>, ProofError> {
        let (key, path) = match (&proof.public_key_file, &proof.signing_key_file) {
            (Some(p), _) => ("public_key_file", p),
            (None, Some(p)) => ("signing_key_file", p),
            (None, None) => return Ok(None),
        };
        Self::from_file(path)
            .map(Some)
            .map_err(|e| ProofError::Key(format!("[proof] {key}: {e}")))
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
        }
    }

    pub fn fingerprint(&self) -> String {
        match self {
            PublicKey::Ed25519(key) => match key.to_public_key_der() {
                Ok(der) => format!("sha256:{}", hex::encode(Sha256::digest(der.as_bytes()))),
                // Encoding 32 bytes into a fixed structure does not fail; if
                // it ever did, no stored fingerprint would match.
                Err(_) => "sha256:unavailable".into(),
            },
        }
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Ed25519(key) => Signature::from_slice(signature)
                .map(|sig| key.verify(message, &sig).is_ok())
                .unwrap_or(false),
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

    #[test]
    fn a_bad_key_file_says_how_to_make_one() {
        let err = Ed25519Signer::from_pem("not a key", "k.pem").unwrap_err();
        assert!(err.to_string().contains("openssl genpkey"), "{err}");
        assert!(PublicKey::from_pem("junk", "p.pem").is_err());
    }
}
