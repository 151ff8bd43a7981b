//! A loopback stand-in for Telegram's Bot API: `POST /bot<token>/<method>`
//! with a JSON body (or a multipart form), answered as Telegram answers.
//! `getUpdates` long-polls the updates a test queued, honouring `offset`
//! and `timeout`; `sendMessage` gives each message an id; a test can make
//! the next call of a method fail with any Bot API error. Every call is
//! recorded.

use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The id `getChat` gives every `@channel`.
pub const CHANNEL_ID: i64 = -1_001_234;

/// One Bot API call the fake received.
#[derive(Debug, Clone)]
pub struct TelegramCall {
    pub method: String,
    /// The JSON body; for a multipart form, its text fields, and `_files`
    /// with each file's name and content.
    pub body: Value,
    /// The token in the path.
    pub token: String,
}

#[derive(Default)]
struct State {
    calls: Vec<TelegramCall>,
    updates: Vec<Value>,
    next_update: i64,
    next_message: i64,
    /// Method → answers (status, body) to give before succeeding again.
    failures: HashMap<String, VecDeque<(u16, Value)>>,
}

/// The fake Bot API server.
pub struct FakeTelegram {
    pub addr: SocketAddr,
    username: String,
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl FakeTelegram {
    /// A fake whose bot is `@username`.
    pub fn start(username: &str) -> FakeTelegram {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake Telegram");
        let addr = listener.local_addr().expect("fake Telegram address");
        let shared = Arc::new((
            Mutex::new(State {
                next_update: 10_000,
                next_message: 1_000,
                ..State::default()
            }),
            Condvar::new(),
        ));
        let (state, name) = (Arc::clone(&shared), username.to_string());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (state, name) = (Arc::clone(&state), name.clone());
                std::thread::spawn(move || serve(stream, &state, &name));
            }
        });
        FakeTelegram {
            addr,
            username: username.to_string(),
            shared,
        }
    }

    /// The `api_url` to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.0.lock().expect("fake Telegram state")
    }

    /// Queues `update` (its `update_id` given when it has none); its id.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let mut state = self.state();
        let id = match update["update_id"].as_i64() {
            Some(id) => id,
            None => {
                let id = state.next_update;
                update["update_id"] = json!(id);
                id
            }
        };
        state.next_update = state.next_update.max(id + 1);
        state.updates.push(update);
        self.shared.1.notify_all();
        id
    }

    /// Queues a text message from `from` in `chat`.
    pub fn message(&self, text: &str, chat: &Value, from: &Value) -> i64 {
        self.push_update(json!({"message": {
            "message_id": 77, "from": from, "chat": chat, "date": 1, "text": text
        }}))
    }

    /// Queues a click on a button with `data` of message 88 in `chat`.
    pub fn click(&self, data: &str, chat: &Value, from: &Value) -> i64 {
        self.push_update(json!({"callback_query": {
            "id": "q1", "from": from, "data": data,
            "message": {"message_id": 88, "chat": chat, "date": 1}
        }}))
    }

    /// Makes the next call of `method` answer `status` with `body`.
    pub fn fail_next(&self, method: &str, status: u16, body: Value) {
        self.state()
            .failures
            .entry(method.to_string())
            .or_default()
            .push_back((status, body));
    }

    pub fn calls(&self) -> Vec<TelegramCall> {
        self.state().calls.clone()
    }

    /// The calls of `method`.
    pub fn calls_of(&self, method: &str) -> Vec<TelegramCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// The texts sent to `chat`, in order.
    pub fn texts_to(&self, chat: i64) -> Vec<String> {
        self.calls_of("sendMessage")
            .into_iter()
            .filter(|c| c.body["chat_id"] == chat)
            .map(|c| c.body["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits (up to 20 s) until the calls satisfy `done`; the calls.
    pub fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[TelegramCall]) -> bool,
    ) -> Vec<TelegramCall> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let calls = self.calls();
            if done(&calls) {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "waited in vain for {what}; the calls were:\n{}",
                calls
                    .iter()
                    .map(|c| format!("{} {}", c.method, c.body))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `chat` got `count` messages; their texts.
    pub fn wait_texts(&self, chat: i64, count: usize) -> Vec<String> {
        self.wait_for(&format!("{count} message(s) to chat {chat}"), |calls| {
            calls
                .iter()
                .filter(|c| c.method == "sendMessage" && c.body["chat_id"] == chat)
                .count()
                >= count
        });
        self.texts_to(chat)
    }
}

fn serve(stream: TcpStream, shared: &(Mutex<State>, Condvar), username: &str) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    while let Some(request) = crate::read_request(&mut reader) {
        let content_type = request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        let (token, method) = request
            .path
            .trim_start_matches("/bot")
            .split_once('/')
            .map(|(t, m)| (t.to_string(), m.to_string()))
            .unwrap_or_default();
        let body = if content_type.starts_with("multipart/form-data") {
            multipart(&content_type, &request.body)
        } else if request.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&request.body).unwrap_or(Value::Null)
        };
        let (status, answer) = answer(shared, username, token, method, body);
        let text = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn answer(
    shared: &(Mutex<State>, Condvar),
    username: &str,
    token: String,
    method: String,
    body: Value,
) -> (u16, Value) {
    let (lock, updated) = shared;
    let mut state = lock.lock().expect("fake Telegram state");
    state.calls.push(TelegramCall {
        method: method.clone(),
        body: body.clone(),
        token,
    });
    if let Some((status, failure)) = state
        .failures
        .get_mut(&method)
        .and_then(VecDeque::pop_front)
    {
        return (status, failure);
    }
    let ok = |result: Value| (200, json!({"ok": true, "result": result}));
    match method.as_str() {
        "getMe" => {
            ok(json!({"id": 12345, "is_bot": true, "first_name": "Test", "username": username}))
        }
        "getUpdates" => {
            let offset = body["offset"].as_i64().unwrap_or(0);
            let timeout = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0));
            let deadline = Instant::now() + timeout;
            loop {
                // Confirmed updates are forgotten, as Telegram does.
                state
                    .updates
                    .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                if !state.updates.is_empty() {
                    return ok(Value::Array(state.updates.clone()));
                }
                let now = Instant::now();
                if now >= deadline {
                    return ok(json!([]));
                }
                state = updated
                    .wait_timeout(state, deadline - now)
                    .expect("fake Telegram state")
                    .0;
            }
        }
        "sendMessage" => {
            state.next_message += 1;
            ok(json!({
                "message_id": state.next_message,
                "chat": {"id": body["chat_id"]},
                "date": 1,
                "text": body["text"],
            }))
        }
        "editMessageText" => ok(json!({"message_id": body["message_id"]})),
        // Every channel is channel -1001234.
        "getChat" => match body["chat_id"].as_str() {
            Some(name) if name.starts_with('@') => {
                ok(json!({"id": CHANNEL_ID, "type": "channel", "username": &name[1..]}))
            }
            _ => (
                400,
                json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
            ),
        },
        _ => ok(json!(true)),
    }
}

/// A multipart form's text fields, and its files under `_files`.
fn multipart(content_type: &str, body: &[u8]) -> Value {
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap_or_default()
        .trim_matches('"');
    let text = String::from_utf8_lossy(body);
    let mut fields = serde_json::Map::new();
    let mut files = serde_json::Map::new();
    for part in text.split(&format!("--{boundary}")) {
        let Some((head, content)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let content = content.strip_suffix("\r\n").unwrap_or(content);
        let name = head
            .split("name=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        if head.contains("filename=") {
            files.insert(name.to_string(), json!(content));
        } else {
            fields.insert(name.to_string(), json!(content));
        }
    }
    fields.insert("_files".into(), Value::Object(files));
    Value::Object(fields)
}
