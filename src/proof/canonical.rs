//! Canonical JSON: the one byte string a JSON value hashes as.
//!
//! It is RFC 8785 (JSON Canonicalization Scheme) for the values ddb-audit
//! writes, so a third party can use any JCS library:
//! - no whitespace; object members sorted by their names' UTF-16 code units
//!   (RFC 8785 §3.2.3), duplicate names impossible (the input is a parsed value);
//! - strings: `"` and `\` escaped with a backslash, U+0008/0009/000A/000C/000D
//!   as `\b \t \n \f \r`, every other control character below U+0020 as
//!   `\u00xx` (lower-case hex), everything else as its UTF-8 bytes;
//! - `true`, `false`, `null` as themselves; integers in plain decimal.
//!
//! Entries hold no fractional numbers (DynamoDB numbers are JSON strings);
//! a fractional number is refused rather than given a second, ad-hoc form.

use std::cmp::Ordering;

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot canonicalize: {0}")]
pub struct CanonicalError(pub String);

/// The canonical bytes of `value`.
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(CanonicalError(format!(
                    "fractional number {n} (entries carry numbers as strings)"
                )));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // serde_json's map may keep insertion order (a feature another
            // crate can switch on), so sort here, by UTF-16 as JCS says.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| utf16_cmp(a.0, b.0));
            out.push(b'{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn utf16_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(canonical_json(&v).unwrap()).unwrap()
    }

    #[test]
    fn members_sort_by_utf16_and_whitespace_goes() {
        // U+E000 sorts after U+1F600 in UTF-8 but before it in UTF-16
        // (a surrogate pair starts with 0xD83D): JCS wants the UTF-16 order.
        let v =
            json!({"b": 1, "a": [true, null, {"z": "x", "y": -3}], "\u{e000}": 1, "\u{1f600}": 2});
        assert_eq!(
            canon(v),
            "{\"a\":[true,null,{\"y\":-3,\"z\":\"x\"}],\"b\":1,\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn strings_escape_as_jcs_says() {
        let v = json!("q\"b\\\u{08}\t\n\u{0c}\r\u{01}\u{1f}\u{7f}é€");
        assert_eq!(
            canon(v),
            "\"q\\\"b\\\\\\b\\t\\n\\f\\r\\u0001\\u001f\u{7f}é€\""
        );
    }

    #[test]
    fn fractional_numbers_are_refused_integers_kept() {
        assert!(canonical_json(&json!(1.5)).is_err());
        assert_eq!(canon(json!(u64::MAX)), u64::MAX.to_string());
        assert_eq!(canon(json!(i64::MIN)), i64::MIN.to_string());
    }

    #[test]
    fn same_value_same_bytes_whatever_the_input_spelling() {
        let a: Value = serde_json::from_str("{ \"x\" : [1, 2], \"a\":\"\\u00e9\" }").unwrap();
        let b: Value = serde_json::from_str("{\"a\":\"é\",\"x\":[1,2]}").unwrap();
        assert_eq!(canonical_json(&a).unwrap(), canonical_json(&b).unwrap());
    }
}
