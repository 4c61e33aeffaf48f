//! TEMPORARY DynamoDB-JSON serde for AttrValue so the tree builds until the
//! full implementation in value.rs lands; deleted at that merge.

use base64::Engine;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

use crate::value::AttrValue;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn to_json(v: &AttrValue) -> Value {
    match v {
        AttrValue::S(s) => json!({ "S": s }),
        AttrValue::N(n) => json!({ "N": n }),
        AttrValue::B(b) => json!({ "B": b64(b) }),
        AttrValue::Bool(b) => json!({ "BOOL": b }),
        AttrValue::Null => json!({ "NULL": true }),
        AttrValue::M(m) => {
            json!({ "M": m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect::<serde_json::Map<_, _>>() })
        }
        AttrValue::L(l) => json!({ "L": l.iter().map(to_json).collect::<Vec<_>>() }),
        AttrValue::Ss(s) => json!({ "SS": s }),
        AttrValue::Ns(n) => json!({ "NS": n }),
        AttrValue::Bs(b) => json!({ "BS": b.iter().map(|x| b64(x)).collect::<Vec<_>>() }),
    }
}

fn from_json(v: &Value) -> Result<AttrValue, String> {
    let obj = v.as_object().ok_or("expected an object")?;
    let (tag, inner) = obj.iter().next().ok_or("empty object")?;
    let s = |x: &Value| {
        x.as_str()
            .map(str::to_string)
            .ok_or("expected a string".to_string())
    };
    let strs = |x: &Value| -> Result<Vec<String>, String> {
        x.as_array()
            .ok_or("expected an array")?
            .iter()
            .map(s)
            .collect()
    };
    let unb64 = |x: String| {
        base64::engine::general_purpose::STANDARD
            .decode(x)
            .map_err(|e| e.to_string())
    };
    Ok(match tag.as_str() {
        "S" => AttrValue::S(s(inner)?),
        "N" => AttrValue::N(s(inner)?),
        "B" => AttrValue::B(unb64(s(inner)?)?),
        "BOOL" => AttrValue::Bool(inner.as_bool().ok_or("expected a bool")?),
        "NULL" => AttrValue::Null,
        "M" => AttrValue::M(
            inner
                .as_object()
                .ok_or("expected an object")?
                .iter()
                .map(|(k, v)| Ok((k.clone(), from_json(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        "L" => AttrValue::L(
            inner
                .as_array()
                .ok_or("expected an array")?
                .iter()
                .map(from_json)
                .collect::<Result<_, _>>()?,
        ),
        "SS" => AttrValue::Ss(strs(inner)?),
        "NS" => AttrValue::Ns(strs(inner)?),
        "BS" => AttrValue::Bs(
            strs(inner)?
                .into_iter()
                .map(unb64)
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unknown type {other}")),
    })
}

impl Serialize for AttrValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        to_json(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AttrValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        from_json(&v).map_err(D::Error::custom)
    }
}
