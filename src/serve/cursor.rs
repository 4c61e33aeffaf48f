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
    /// What is left of the request's `limit` (absent: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    left: Option<usize>,
}

/// A cursor this server issued, opened.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// The read side's cursor.
    pub inner: String,
    /// Entries still to return under the request's `limit`.
    pub left: Option<usize>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("`cursor` is not a cursor this server issued; pass back the `next` value unchanged")]
    Malformed,
    #[error("`cursor` belongs to a different request; keep the other parameters as they were")]
    OtherRequest,
}

/// A fingerprint of the parameters that define a paged request (all but
/// `cursor` and `page_size`, which may change between pages; `limit` is a
/// total, so it is part of the request).
pub fn fingerprint(params: &[(String, String)]) -> String {
    let mut sorted: Vec<_> = params
        .iter()
        .filter(|(k, _)| k != "cursor" && k != "page_size")
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

pub fn encode(fingerprint: &str, inner: &str, left: Option<usize>) -> String {
    let wire = Wire {
        v: 1,
        q: fingerprint.to_string(),
        c: inner.to_string(),
        left,
    };
    // Serialising strings and a number cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wire).unwrap_or_default())
}

pub fn decode(cursor: &str, fingerprint: &str) -> Result<Page, CursorError> {
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
    Ok(Page {
        inner: wire.c,
        left: wire.left,
    })
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
        let q = fingerprint(&p(&[("table", "t"), ("key", "pk=S:1"), ("page_size", "5")]));
        // Order of parameters, page size and cursor do not matter.
        assert_eq!(
            q,
            fingerprint(&p(&[("key", "pk=S:1"), ("table", "t"), ("cursor", "x")]))
        );
        // A limit is a total: another limit is another request.
        assert_ne!(
            q,
            fingerprint(&p(&[("key", "pk=S:1"), ("table", "t"), ("limit", "5")]))
        );
        let c = encode(&q, "inner-cursor", Some(7));
        assert_eq!(
            decode(&c, &q),
            Ok(Page {
                inner: "inner-cursor".to_string(),
                left: Some(7)
            })
        );
        assert_eq!(decode(&encode(&q, "i", None), &q).map(|p| p.left), Ok(None));
        let other = fingerprint(&p(&[("table", "t"), ("key", "pk=S:2")]));
        assert_eq!(decode(&c, &other), Err(CursorError::OtherRequest));
        assert_eq!(decode("not a cursor", &q), Err(CursorError::Malformed));
        assert_eq!(decode("e30", &q), Err(CursorError::Malformed));
    }
}
