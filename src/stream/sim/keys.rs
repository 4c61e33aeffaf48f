//! Keys, hashing and sizes: an item's canonical key, the hash that routes
//! it to a shard, and approximately what it weighs.

use super::errors::invalid;
use crate::stream::StreamResult;
use crate::value::{AttrValue, Item};

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: FNV's high bits are poorly mixed for short keys,
/// and shard ranges split on the high bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(super) fn key_hash(canon: &str) -> u64 {
    mix(fnv1a(canon.as_bytes()))
}

pub(super) fn order_key(salt: u64, shard_id: &str) -> u64 {
    mix(salt ^ fnv1a(shard_id.as_bytes()))
}

fn canon_value(v: &AttrValue, out: &mut String) {
    use std::fmt::Write;
    // Length-prefixed so that no two different values share a form.
    let _ = match v {
        AttrValue::S(s) => write!(out, "S{}:{s}", s.len()),
        AttrValue::N(n) => write!(out, "N{}:{n}", n.len()),
        AttrValue::B(b) => {
            let _ = write!(out, "B{}:", b.len());
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
            Ok(())
        }
        AttrValue::Bool(b) => write!(out, "T{b}"),
        AttrValue::Null => write!(out, "0"),
        AttrValue::M(m) => {
            let _ = write!(out, "M{}{{", m.len());
            for (k, v) in m {
                let _ = write!(out, "{}:{k}=", k.len());
                canon_value(v, out);
            }
            write!(out, "}}")
        }
        AttrValue::L(l) => {
            let _ = write!(out, "L{}[", l.len());
            for v in l {
                canon_value(v, out);
            }
            write!(out, "]")
        }
        AttrValue::Ss(s) => write!(out, "SS{s:?}"),
        AttrValue::Ns(n) => write!(out, "NS{n:?}"),
        AttrValue::Bs(b) => write!(out, "BS{b:?}"),
        // A source table never holds one; kept distinct if it did.
        AttrValue::Redacted(c) => write!(out, "R{c:?}"),
    };
}

pub(super) fn canon_key(key: &Item) -> String {
    let mut out = String::new();
    for (name, value) in key {
        out.push_str(&name.len().to_string());
        out.push(':');
        out.push_str(name);
        out.push('=');
        canon_value(value, &mut out);
        out.push(';');
    }
    out
}

/// Approximately DynamoDB's item size: names plus values.
fn value_size(v: &AttrValue) -> i64 {
    let len = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    match v {
        AttrValue::S(s) => len(s.len()),
        AttrValue::N(n) => len(n.len()).div_euclid(2) + 1,
        AttrValue::B(b) => len(b.len()),
        AttrValue::Bool(_) | AttrValue::Null => 1,
        AttrValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| len(k.len()) + value_size(v) + 1)
                .sum::<i64>()
        }
        AttrValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<i64>(),
        AttrValue::Ss(s) => s.iter().map(|x| len(x.len())).sum(),
        AttrValue::Ns(n) => n.iter().map(|x| len(x.len()).div_euclid(2) + 1).sum(),
        AttrValue::Bs(b) => b.iter().map(|x| len(x.len())).sum(),
        AttrValue::Redacted(c) => len(c.len()),
    }
}

pub(super) fn item_size(item: &Item) -> i64 {
    item.iter()
        .map(|(k, v)| i64::try_from(k.len()).unwrap_or(i64::MAX) + value_size(v))
        .sum()
}

pub(super) fn key_of(key_attrs: &[String], item: &Item) -> StreamResult<Item> {
    key_attrs
        .iter()
        .map(|name| match item.get(name) {
            Some(v) => Ok((name.clone(), v.clone())),
            None => Err(invalid(format!("missing key attribute {name}"))),
        })
        .collect()
}
