//! Opaque paging cursors: what the client passes back as `cursor` to get the
//! next page. The read side's own cursor, wrapped (base64url JSON, versioned)
//! with a fingerprint of the request that made it, so a cursor from one
//! query is refused by another instead of paging through it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Serialize, Deserialize)]
struct Wire {
    v: u8,
    /// Fingerprint of the request's other parameters.
    q: String,
    /// The read side's cursor.
    c: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("`cursor` is not a cursor this server issued; pass back the `next` value unchanged")]
    Malformed,
    #[error("`cursor` belongs to a different request; keep the other parameters as they were")]
    OtherRequest,
}

/// A fingerprint of the parameters that define a paged request (all but
/// `cursor` and `limit`, which may change between pages).
pub fn fingerprint(params: &[(String, String)]) -> String {
    let mut sorted: Vec<_> = params
        .iter()
        .filter(|(k, _)| k != "cursor" && k != "limit")
        .collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

pub fn encode(fingerprint: &str, inner: &str) -> String {
    let wire = Wire {
        v: 1,
        q: fingerprint.to_string(),
        c: inner.to_string(),
    };
    // Serialising three strings cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
}

pub fn decode(cursor: &str, fingerprint: &str) -> Result<String, CursorError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| CursorError::Malformed)?;
    let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| CursorError::Malformed)?;
    if wire.v != 1 {
        return Err(CursorError::Malformed);
    }
    if wire.q != fingerprint {
        return Err(CursorError::OtherRequest);
    }
    Ok(wire.c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_cursor_round_trips_and_is_bound_to_its_request() {
        let q = fingerprint(&p(&[("table", "t"), ("key", "pk=S:1"), ("limit", "5")]));
        // Order of parameters, limit and cursor do not matter.
        assert_eq!(
            q,
            fingerprint(&p(&[("key", "pk=S:1"), ("table", "t"), ("cursor", "x")]))
        );
        let c = encode(&q, "inner-cursor");
        assert_eq!(decode(&c, &q), Ok("inner-cursor".to_string()));
        let other = fingerprint(&p(&[("table", "t"), ("key", "pk=S:2")]));
        assert_eq!(decode(&c, &other), Err(CursorError::OtherRequest));
        assert_eq!(decode("not a cursor", &q), Err(CursorError::Malformed));
        assert_eq!(decode("e30", &q), Err(CursorError::Malformed));
    }
}
