//! The messages of Buildbot's `msgpack_experimental_v7` worker protocol:
//! one MessagePack map per WebSocket binary message. A request carries
//! `op` and `seq_number`; its response `op: "response"`, the same
//! `seq_number`, `result`, and `is_exception` when it failed.

use rmpv::Value;

/// The protocol this master speaks.
pub const PROTOCOL: &str = "msgpack_experimental_v7";

pub fn encode(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).expect("writing to a Vec cannot fail");
    bytes
}

pub fn decode(mut bytes: &[u8]) -> Result<Value, String> {
    rmpv::decode::read_value(&mut bytes).map_err(|e| format!("not MessagePack: {e}"))
}

/// A map of string keys.
pub fn map(pairs: Vec<(&str, Value)>) -> Value {
    Value::Map(
        pairs
            .into_iter()
            .map(|(key, value)| (Value::from(key), value))
            .collect(),
    )
}

/// The value of `key` in map `value`.
pub fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value
        .as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// A string or raw bytes (the worker sends either), as text.
pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Value::Binary(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// A request from this side.
pub fn request(seq_number: i64, op: &str, mut fields: Vec<(&str, Value)>) -> Value {
    fields.push(("op", Value::from(op)));
    fields.push(("seq_number", Value::from(seq_number)));
    map(fields)
}

/// The answer to the other side's request `seq_number`: its result, or why
/// it failed.
pub fn response(seq_number: i64, result: Result<Value, String>) -> Value {
    let mut fields = vec![
        ("op", Value::from("response")),
        ("seq_number", Value::from(seq_number)),
    ];
    match result {
        Ok(value) => fields.push(("result", value)),
        Err(message) => {
            fields.push(("result", Value::from(message)));
            fields.push(("is_exception", Value::from(true)));
        }
    }
    map(fields)
}

/// A JSON view of a MessagePack value (bytes as text), for the API.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Nil => serde_json::Value::Null,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Integer(i) => i
            .as_i64()
            .map(serde_json::Value::from)
            .or_else(|| i.as_u64().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::F32(f) => serde_json::json!(f),
        Value::F64(f) => serde_json::json!(f),
        Value::String(_) | Value::Binary(_) => {
            serde_json::Value::String(text(value).unwrap_or_default())
        }
        Value::Array(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => serde_json::Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (text(k).unwrap_or_else(|| k.to_string()), to_json(v)))
                .collect(),
        ),
        Value::Ext(_, _) => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let sent = request(7, "keepalive", vec![]);
        let read = decode(&encode(&sent)).unwrap();
        assert_eq!(get(&read, "op").and_then(Value::as_str), Some("keepalive"));
        assert_eq!(get(&read, "seq_number").and_then(Value::as_i64), Some(7));
        let failed = decode(&encode(&response(3, Err("boom".into())))).unwrap();
        assert_eq!(get(&failed, "is_exception"), Some(&Value::from(true)));
        assert_eq!(
            text(get(&failed, "result").unwrap()).as_deref(),
            Some("boom")
        );
        assert!(decode(&[0x92, 0x01]).is_err(), "an array cut short");
        assert_eq!(
            to_json(&map(vec![("a", Value::Binary(b"x".to_vec()))])),
            serde_json::json!({"a": "x"})
        );
    }
}
