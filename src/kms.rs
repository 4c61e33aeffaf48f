//! AWS KMS as the digest signer (`[proof] kms_key_id`): an asymmetric key of
//! spec ECC_NIST_P256 and usage SIGN_VERIFY signs each digest with
//! ECDSA_SHA_256; the private half never leaves KMS. The logic (key checks,
//! retries, checking what KMS returns) is generic over the small [`KmsApi`]
//! seam; [`AwsKms`] is the adapter, the only place KMS's SDK types appear.
//!
//! The message sent is the digest's 32-byte SHA-256 as a RAW message
//! (`sign::ecdsa_message`), so the request stays within KMS's 4096-byte
//! limit for raw messages whatever the digest's size, and the signature is
//! one that `openssl dgst -sha256 -verify` checks over those 32 bytes.

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::aws::{classify, ErrorKind};
use crate::proof::sign::{ecdsa_message, DigestSigner, PublicKey, ECDSA_P256_SHA256};
use crate::proof::ProofError;
use crate::retry::{retry, Retried, RetryPolicy, Transient};

/// The KMS key spec and usage a digest key must have.
pub const KEY_SPEC: &str = "ECC_NIST_P256";
pub const KEY_USAGE: &str = "SIGN_VERIFY";

/// What KMS says about a key's public half.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsPublicKey {
    /// DER SubjectPublicKeyInfo.
    pub der: Vec<u8>,
    pub key_spec: String,
    pub key_usage: String,
}

/// A failed KMS call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct KmsError {
    /// Throttling, 5xx, a dropped connection: the same call may succeed.
    pub transient: bool,
    pub message: String,
}

impl Transient for KmsError {
    fn is_transient(&self) -> bool {
        self.transient
    }
}

/// The two KMS calls a digest signer makes.
pub trait KmsApi: Send + Sync {
    /// GetPublicKey.
    fn public_key<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<KmsPublicKey, KmsError>>;
    /// Sign with ECDSA_SHA_256 over `message` as a RAW message; the DER signature.
    fn sign<'a>(
        &'a self,
        key_id: &'a str,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KmsError>>;
}

/// The public key of `key_id`, checked to be a P-256 signing key. Transient
/// failures are retried until `cancel`.
pub async fn public_key<K: KmsApi>(
    api: &K,
    key_id: &str,
    policy: RetryPolicy,
    cancel: &CancellationToken,
) -> Result<PublicKey, ProofError> {
    let found = retry(policy, cancel, "GetPublicKey(kms)", || {
        api.public_key(key_id)
    })
    .await
    .map_err(|e| key_error(key_id, e))?;
    let wrong = |spec: &str| {
        ProofError::Key(format!(
            "`proof.kms_key_id` {key_id}: the key is {spec} for {}; digests need an asymmetric \
             key of spec {KEY_SPEC} and usage {KEY_USAGE} (aws kms create-key --key-spec \
             {KEY_SPEC} --key-usage {KEY_USAGE})",
            found.key_usage
        ))
    };
    if (!found.key_spec.is_empty() && found.key_spec != KEY_SPEC) || found.key_usage != KEY_USAGE {
        return Err(wrong(&found.key_spec));
    }
    // The key itself says what it is, whatever the spec field said.
    match PublicKey::from_spki_der(&found.der, &format!("`proof.kms_key_id` {key_id}"))? {
        key @ PublicKey::EcdsaP256(_) => Ok(key),
        other => Err(wrong(other.algorithm())),
    }
}

/// Signs digests through KMS.
pub struct KmsSigner<K> {
    api: K,
    key_id: String,
    public: PublicKey,
    fingerprint: String,
    policy: RetryPolicy,
    /// Ends the retries of a sign call (the daemon's shutdown abort).
    cancel: CancellationToken,
}

impl<K> std::fmt::Debug for KmsSigner<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSigner")
            .field("key_id", &self.key_id)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl<K: KmsApi> KmsSigner<K> {
    /// Reads and checks the key's public half once (it names the key in
    /// every digest and checks every signature KMS returns).
    pub async fn connect(
        api: K,
        key_id: &str,
        policy: RetryPolicy,
        cancel: CancellationToken,
    ) -> Result<Self, ProofError> {
        let public = public_key(&api, key_id, policy, &cancel).await?;
        Ok(KmsSigner {
            api,
            key_id: key_id.to_string(),
            fingerprint: public.fingerprint(),
            public,
            policy,
            cancel,
        })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

impl<K: KmsApi> DigestSigner for KmsSigner<K> {
    fn algorithm(&self) -> &str {
        ECDSA_P256_SHA256
    }
    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, ProofError>> {
        Box::pin(async move {
            let hashed = ecdsa_message(message);
            let signature = retry(self.policy, &self.cancel, "Sign(kms)", || {
                self.api.sign(&self.key_id, &hashed)
            })
            .await
            .map_err(|e| match e {
                Retried::Failed(e) => ProofError::Sign(format!("KMS key {}: {e}", self.key_id)),
                Retried::Cancelled => ProofError::Sign("cancelled by shutdown".into()),
            })?;
            // A key replaced behind its alias would sign with another key:
            // refuse to write digests the named key cannot check.
            if !self.public.verify(message, &signature) {
                return Err(ProofError::Sign(format!(
                    "KMS key {} returned a signature that does not verify with its public key \
                     {} (was the alias moved to another key? restart to read the new key)",
                    self.key_id, self.fingerprint
                )));
            }
            Ok(signature)
        })
    }
}

fn key_error(key_id: &str, e: Retried<KmsError>) -> ProofError {
    match e {
        Retried::Failed(e) => ProofError::Key(format!(
            "`proof.kms_key_id` {key_id}: {e} (check the key id or alias, its region and that \
             the role may call kms:GetPublicKey and kms:Sign on it)"
        )),
        Retried::Cancelled => ProofError::Key("cancelled before the KMS key was read".into()),
    }
}

/// The KMS adapter.
#[derive(Clone, Debug)]
pub struct AwsKms {
    client: aws_sdk_kms::Client,
}

impl AwsKms {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        AwsKms {
            client: aws_sdk_kms::Client::new(config),
        }
    }
}

fn kms_error<E>(
    err: &aws_sdk_kms::error::SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
) -> KmsError
where
    E: aws_sdk_kms::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let c = classify(err);
    KmsError {
        transient: matches!(c.kind, ErrorKind::Throttled | ErrorKind::Transient),
        message: c.message,
    }
}

fn missing(what: &str) -> KmsError {
    KmsError {
        transient: false,
        message: format!("KMS answered without {what}"),
    }
}

impl KmsApi for AwsKms {
    fn public_key<'a>(&'a self, key_id: &'a str) -> BoxFuture<'a, Result<KmsPublicKey, KmsError>> {
        Box::pin(async move {
            let out = self
                .client
                .get_public_key()
                .key_id(key_id)
                .send()
                .await
                .map_err(|e| kms_error(&e))?;
            Ok(KmsPublicKey {
                der: out
                    .public_key()
                    .ok_or_else(|| missing("a public key"))?
                    .as_ref()
                    .to_vec(),
                // Older services (and emulators) only fill the deprecated name.
                key_spec: out
                    .key_spec()
                    .map(|s| s.as_str().to_string())
                    .or_else(|| {
                        #[allow(deprecated)]
                        out.customer_master_key_spec()
                            .map(|s| s.as_str().to_string())
                    })
                    .unwrap_or_default(),
                key_usage: out
                    .key_usage()
                    .map(|u| u.as_str().to_string())
                    .unwrap_or_default(),
            })
        })
    }

    fn sign<'a>(
        &'a self,
        key_id: &'a str,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, KmsError>> {
        use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
        Box::pin(async move {
            let out = self
                .client
                .sign()
                .key_id(key_id)
                .message(aws_sdk_kms::primitives::Blob::new(message))
                .message_type(MessageType::Raw)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await
                .map_err(|e| kms_error(&e))?;
            Ok(out
                .signature()
                .ok_or_else(|| missing("a signature"))?
                .as_ref()
                .to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    /// KMS in miniature: a local P-256 key that signs as KMS does (ECDSA
    /// SHA-256 over the raw message, DER), failing transiently at first.
    struct FakeKms {
        key: EcdsaKeyPair,
        spec: &'static str,
        throttles_left: AtomicU32,
        calls: AtomicU32,
    }

    impl FakeKms {
        fn new(throttles: u32) -> Self {
            FakeKms {
                key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap(),
                spec: KEY_SPEC,
                throttles_left: AtomicU32::new(throttles),
                calls: AtomicU32::new(0),
            }
        }
    }

    impl KmsApi for FakeKms {
        fn public_key<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<KmsPublicKey, KmsError>> {
            let der = self.key.public_key().as_der().unwrap().as_ref().to_vec();
            let spec = self.spec.to_string();
            Box::pin(async move {
                Ok(KmsPublicKey {
                    der,
                    key_spec: spec,
                    key_usage: KEY_USAGE.into(),
                })
            })
        }
        fn sign<'a>(&'a self, _: &'a str, m: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, KmsError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let throttled = self
                .throttles_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            let result = if throttled {
                Err(KmsError {
                    transient: true,
                    message: "ThrottlingException: slow down".into(),
                })
            } else {
                Ok(self
                    .key
                    .sign(&SystemRandom::new(), m)
                    .unwrap()
                    .as_ref()
                    .to_vec())
            };
            Box::pin(async move { result })
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            jitter_seed: Some(7),
        }
    }

    /// A signer of the key `alias/d` of `kms`, with quick retries.
    async fn connect(kms: FakeKms) -> Result<KmsSigner<FakeKms>, ProofError> {
        KmsSigner::connect(kms, "alias/d", policy(), CancellationToken::new()).await
    }

    #[tokio::test]
    async fn kms_signatures_round_trip_through_the_public_key() {
        let signer = connect(FakeKms::new(2)).await.unwrap();
        assert_eq!(signer.algorithm(), ECDSA_P256_SHA256);
        assert_eq!(signer.fingerprint(), signer.public_key().fingerprint());
        let digest = br#"{"type":"ddb-audit.digest.v1"}"#;
        let sig = signer.sign(digest).await.unwrap();
        assert_eq!(
            signer.api.calls.load(Ordering::SeqCst),
            3,
            "two throttles retried"
        );
        // The public key alone checks it, offline (what verify-bundle does).
        let public = PublicKey::from_pem(&signer.public_key().to_pem(), "pem").unwrap();
        assert!(public.verify(digest, &sig));
        assert!(!public.verify(br#"{"type":"ddb-audit.digest.v2"}"#, &sig));
        let mut flipped = sig.clone();
        flipped[8] ^= 0x01;
        assert!(!public.verify(digest, &flipped));
    }

    #[tokio::test]
    async fn a_key_of_the_wrong_spec_is_refused_with_the_fix() {
        let mut kms = FakeKms::new(0);
        kms.spec = "RSA_2048";
        let err = connect(kms).await.unwrap_err().to_string();
        assert!(
            err.contains("proof.kms_key_id") && err.contains("RSA_2048") && err.contains(KEY_SPEC),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_signature_from_another_key_is_not_passed_on() {
        let mut signer = connect(FakeKms::new(0)).await.unwrap();
        // The alias now points at another key.
        signer.api = FakeKms::new(0);
        let err = signer.sign(b"digest").await.unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
    }
}
