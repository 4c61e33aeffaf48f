//! The digests of one stream on their own: each hashes to its stored hash,
//! is signed by the given key, and names the one before it; none is missing
//! or rolled back against the stream row or a remembered digest.

use std::collections::HashSet;

use super::{CheckedDigest, FoundDigest, Kind, Reporter, Severity, StreamEvidence, VerifyOptions};

pub(super) fn check_digests(
    ev: &StreamEvidence,
    opts: &VerifyOptions,
    r: &mut Reporter,
) -> Vec<CheckedDigest> {
    let mut found: Vec<&FoundDigest> = ev.digests.iter().collect();
    found.sort_by_key(|d| d.number);
    let mut checked: Vec<CheckedDigest> = Vec::new();
    let mut unsigned = 0u64;
    let mut unchecked_signatures = 0u64;
    for d in found {
        let n = d.number;
        if d.signed.computed_hash() != d.signed.hash || !d.signed.is_canonical() {
            r.digest(
                Severity::Tamper,
                Kind::DigestAltered,
                Some(n),
                format!("digest {n}: its bytes do not hash to the hash stored with it (or are not canonical): altered"),
            );
        }
        let doc = match d.signed.parse() {
            Ok(doc) => doc,
            Err(e) => {
                r.digest(
                    Severity::Tamper,
                    Kind::DigestAltered,
                    Some(n),
                    format!("digest {n}: {e}"),
                );
                continue;
            }
        };
        if doc.number != n || doc.stream_arn != ev.stream_arn {
            r.digest(
                Severity::Tamper,
                Kind::DigestAltered,
                Some(n),
                format!(
                    "digest stored as number {n} of {} says it is number {} of {}: moved or forged",
                    ev.stream_arn, doc.number, doc.stream_arn
                ),
            );
        }
        match (opts.public_key, d.signed.signature_bytes(), &doc.key) {
            (Some(key), Some(sig), Some(key_ref)) => {
                if key_ref.fingerprint != key.fingerprint() {
                    r.digest(
                        Severity::Tamper,
                        Kind::BadSignature,
                        Some(n),
                        format!(
                            "digest {n} names signing key {}, not the given key {}",
                            key_ref.fingerprint,
                            key.fingerprint()
                        ),
                    );
                } else if !key.verify(d.signed.digest.as_bytes(), &sig) {
                    r.digest(
                        Severity::Tamper,
                        Kind::BadSignature,
                        Some(n),
                        format!("digest {n}: the signature does not verify with {}", key.fingerprint()),
                    );
                }
            }
            (Some(key), _, _) => r.digest(
                Severity::Tamper,
                Kind::BadSignature,
                Some(n),
                format!(
                    "digest {n} carries no (readable) signature, but the trail is checked against key {}",
                    key.fingerprint()
                ),
            ),
            (None, None, None) => unsigned += 1,
            (None, _, _) => unchecked_signatures += 1,
        }
        checked.push(CheckedDigest {
            number: n,
            time: chrono::DateTime::parse_from_rfc3339(&doc.time)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
            doc,
            signed: d.signed.clone(),
        });
    }
    if unsigned > 0 {
        r.digest(
            Severity::Info,
            Kind::Unsigned,
            None,
            format!(
                "{unsigned} digests are unsigned (no [proof] signing key): the chain shows \
                 alteration by anyone who cannot rewrite every later hash too, not who wrote it"
            ),
        );
    }
    if unchecked_signatures > 0 {
        r.digest(
            Severity::Unverifiable,
            Kind::NotCheckable,
            None,
            format!(
                "{unchecked_signatures} digests are signed, but no public key was given \
                 (--public-key FILE, [proof] public_key_file or signing_key_file)"
            ),
        );
    }

    // The chain of digests: 1, 2, 3, … each naming the one before.
    let max = checked.last().map(|d| d.number).unwrap_or(0);
    let present: HashSet<u64> = checked.iter().map(|d| d.number).collect();
    let mut missing: Vec<u64> = (1..max).filter(|n| !present.contains(n)).collect();
    if let Some((number, hash)) = &ev.newest_digest {
        if *number > max {
            missing.extend(max + 1..=*number);
        } else if let Some(d) = checked.iter().find(|d| d.number == *number) {
            if &d.signed.hash != hash {
                r.digest(
                    Severity::Tamper,
                    Kind::RolledBack,
                    Some(*number),
                    format!(
                        "digest {number} is not the one the daemon wrote (the streams table \
                         recorded hash {hash}): replaced or rolled back"
                    ),
                );
            }
        }
    }
    if let Some(m) = opts.remembered {
        match checked.iter().find(|d| d.number == m.number) {
            Some(d) if d.signed.hash != m.hash => r.digest(
                Severity::Tamper,
                Kind::RolledBack,
                Some(m.number),
                format!(
                    "digest {} differs from the one verified on {} (hash {}): the trail was \
                     rewritten since",
                    m.number, m.verified_at, m.hash
                ),
            ),
            Some(_) => {}
            None => {
                r.digest(
                    Severity::Tamper,
                    Kind::RolledBack,
                    Some(m.number),
                    format!(
                        "digest {} ({}), verified on {}, is gone: the trail was truncated or \
                         rolled back (the store now ends at digest {max})",
                        m.number, m.time, m.verified_at
                    ),
                );
                missing.retain(|n| *n != m.number);
            }
        }
    }
    missing.sort_unstable();
    missing.dedup();
    for n in missing {
        r.digest(
            Severity::Tamper,
            Kind::DigestMissing,
            Some(n),
            format!("digest {n} is missing: deleted"),
        );
    }
    for pair in checked.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.number != a.number + 1 {
            continue;
        }
        let linked = b.doc.previous.as_ref().is_some_and(|p| {
            p.number == a.number && p.hash == a.signed.hash && p.signature == a.signed.signature
        });
        if !linked {
            r.digest(
                Severity::Tamper,
                Kind::DigestOutOfChain,
                Some(b.number),
                format!(
                    "digest {} does not name digest {} (hash {}) as its previous: out of chain",
                    b.number, a.number, a.signed.hash
                ),
            );
        }
    }
    if let Some(first) = checked.first() {
        if first.number == 1 && first.doc.previous.is_some() {
            r.digest(
                Severity::Tamper,
                Kind::DigestOutOfChain,
                Some(1),
                "digest 1 names a previous digest".into(),
            );
        }
    }
    checked
}
