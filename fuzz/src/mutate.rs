//! Mutations of a request: its body as bytes, as JSON or as a form, its
//! headers and its query.

use buildmaster_plugin_api::Request;
use serde_json::Value;

/// A small deterministic generator (xorshift64*); fuzzing needs speed and
/// replayability, not cryptographic quality.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Strings that tend to break parsers.
const NASTY: &[&str] = &[
    "",
    " ",
    "null",
    "refs/heads/",
    "refs/tags/",
    "refs/heads/main",
    "0000000000000000000000000000000000000000",
    "\u{0}",
    "é\u{fe0f}🦀",
    "%ff%fe",
    "9999999999999999999999",
    "-1",
    "1e400",
    "2008-02-15T14:57:17-08:00",
    "not a date",
    "a/b/c",
    "sha256=",
    "sha1=0",
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
];

fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 3 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => Value::from(rng.next_u64() as i64),
        3 => Value::from((rng.next_u64() % 1000) as f64 / 7.0),
        4 => Value::from(NASTY[rng.below(NASTY.len())]),
        5 => Value::from("x".repeat(rng.below(3000))),
        6 => Value::Array(
            (0..rng.below(3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.below(3))
                .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                .collect(),
        ),
    }
}

/// Replaces, deletes or adds something at a random place in `value`.
fn mutate_json(rng: &mut Rng, value: &mut Value) {
    let go_deeper = rng.below(3) != 0;
    match value {
        Value::Object(map) if !map.is_empty() && go_deeper => {
            let key = map
                .keys()
                .nth(rng.below(map.len()))
                .cloned()
                .unwrap_or_default();
            match rng.below(6) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(key, random_value(rng, 0));
                }
                _ => mutate_json(rng, map.get_mut(&key).expect("key exists")),
            }
        }
        Value::Array(items) if !items.is_empty() && go_deeper => match rng.below(5) {
            0 => {
                items.remove(rng.below(items.len()));
            }
            1 => {
                let copy = items[rng.below(items.len())].clone();
                items.push(copy);
            }
            _ => {
                let i = rng.below(items.len());
                mutate_json(rng, &mut items[i]);
            }
        },
        _ => *value = random_value(rng, 0),
    }
}

fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.extend_from_slice(b"{}");
    }
    let at = rng.below(bytes.len());
    match rng.below(5) {
        0 => bytes[at] ^= 1 << rng.below(8),
        1 => bytes.truncate(at),
        2 => {
            let end = (at + rng.below(16)).min(bytes.len());
            bytes.drain(at..end);
        }
        3 => {
            let end = (at + rng.below(16)).min(bytes.len());
            let copy = bytes[at..end].to_vec();
            bytes.splice(at..at, copy);
        }
        _ => bytes.insert(at, rng.next_u64() as u8),
    }
}

fn mutate_form(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut pairs: Vec<(String, String)> = form_pairs(body);
    if pairs.is_empty() {
        pairs.push(("payload".into(), "{}".into()));
    }
    let i = rng.below(pairs.len());
    match rng.below(4) {
        0 => {
            pairs.remove(i);
        }
        1 => {
            let copy = pairs[i].clone();
            pairs.push(copy);
        }
        _ => {
            let value = &mut pairs[i].1;
            match serde_json::from_str::<Value>(value) {
                Ok(mut json) if json.is_object() || json.is_array() => {
                    mutate_json(rng, &mut json);
                    *value = json.to_string();
                }
                _ => *value = NASTY[rng.below(NASTY.len())].to_string(),
            }
        }
    }
    encode_form(&pairs).into_bytes()
}

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(n), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.replace('+', " ").into_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Form-encodes name/value pairs.
pub fn encode_form(pairs: &[(String, String)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    pairs
        .iter()
        .map(|(n, v)| format!("{}={}", encode(n), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn set_header(request: &mut Request, name: &str, value: &str) {
    request
        .headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    request.headers.push((name.to_string(), value.to_string()));
}

/// Applies one random mutation; `events` are the event-header values the
/// dialect knows, as (header, value) pairs.
pub fn request(rng: &mut Rng, request: &mut Request, events: &[(&str, &str)]) {
    let is_form = request.media_type().as_deref() == Some("application/x-www-form-urlencoded");
    match rng.below(10) {
        0..=3 => match serde_json::from_slice::<Value>(&request.body) {
            Ok(mut json) => {
                mutate_json(rng, &mut json);
                request.body = json.to_string().into_bytes();
            }
            Err(_) if is_form => request.body = mutate_form(rng, &request.body),
            Err(_) => mutate_bytes(rng, &mut request.body),
        },
        4 if is_form => request.body = mutate_form(rng, &request.body),
        4 | 5 => mutate_bytes(rng, &mut request.body),
        6 => {
            let content_type = CONTENT_TYPES[rng.below(CONTENT_TYPES.len())];
            set_header(request, "Content-Type", content_type);
        }
        7 if !events.is_empty() => {
            let (header, value) = events[rng.below(events.len())];
            set_header(request, header, value);
        }
        7 | 8 => {
            if !request.headers.is_empty() {
                request.headers.remove(rng.below(request.headers.len()));
            }
        }
        _ => {
            let name = ["codebase", "project", "poller", "branch", "payload"][rng.below(5)];
            request
                .query
                .push((name.to_string(), NASTY[rng.below(NASTY.len())].to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_deterministic_and_forms_round_trip() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let pairs = vec![("payload".to_string(), "{\"a\": \"b c&d\"}".to_string())];
        assert_eq!(form_pairs(encode_form(&pairs).as_bytes()), pairs);
    }
}
