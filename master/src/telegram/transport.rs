//! The engine's messages as Bot API calls: HTML parse mode with a plain-text
//! resend when Telegram cannot parse it, long texts in chunks, buttons whose
//! commands do not fit the 64-byte callback data kept in the database,
//! `retry_after` honoured, a budget of messages per chat, and chats that
//! blocked the bot or became supergroups followed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::api::{ApiError, BotApi};
use crate::chat::{Button, ButtonAction, Engine, Markup, Message, Transport};
use crate::db::Db;

/// Telegram's longest message, in UTF-16 units.
const MAX_TEXT: usize = 4096;

/// Telegram's longest callback data, in bytes.
const MAX_CALLBACK_DATA: usize = 64;

/// How long a stored button payload stays valid.
pub const BUTTON_TTL: i64 = 30 * 86_400;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `retry_after` waited for; longer ones drop the message.
const MAX_RETRY_AFTER: u64 = 120;

/// How many times a call is tried.
const ATTEMPTS: u32 = 3;

/// Messages a chat may get in a burst, and then one per interval: Telegram
/// allows about one a second in a chat and twenty a minute in a group.
const PRIVATE_BUDGET: (f64, Duration) = (5.0, Duration::from_secs(1));
const GROUP_BUDGET: (f64, Duration) = (20.0, Duration::from_secs(3));

/// A chat's message budget.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The Telegram side of a bot.
pub struct Telegram {
    api: BotApi,
    db: Db,
    bot_id: i64,
    retry_delay: Duration,
    engine: Mutex<Weak<Engine>>,
    buckets: Mutex<HashMap<i64, Bucket>>,
}

impl Telegram {
    pub fn new(api: BotApi, db: Db, bot_id: i64, retry_delay: Duration) -> Telegram {
        Telegram {
            api,
            db,
            bot_id,
            retry_delay,
            engine: Mutex::new(Weak::new()),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn api(&self) -> &BotApi {
        &self.api
    }

    /// The engine told of chats that blocked the bot or moved.
    pub fn attach(&self, engine: &Arc<Engine>) {
        *self.engine.lock().expect("engine") = Arc::downgrade(engine);
    }

    fn engine(&self) -> Option<Arc<Engine>> {
        self.engine.lock().expect("engine").upgrade()
    }

    /// Waits until `chat` may get one more message.
    async fn budget(&self, chat: i64) {
        let (burst, every) = if chat > 0 {
            PRIVATE_BUDGET
        } else {
            GROUP_BUDGET
        };
        let wait = {
            let mut buckets = self.buckets.lock().expect("buckets");
            let now = Instant::now();
            let bucket = buckets.entry(chat).or_insert(Bucket {
                tokens: burst,
                at: now,
            });
            let earned = now.duration_since(bucket.at).as_secs_f64() / every.as_secs_f64();
            bucket.tokens = (bucket.tokens + earned).min(burst);
            bucket.at = now;
            bucket.tokens -= 1.0;
            if bucket.tokens >= 0.0 {
                Duration::ZERO
            } else {
                every.mul_f64(-bucket.tokens)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Calls `method`, again after a 429's `retry_after` or after
    /// `retry_delay` when Telegram could not be reached; logs what fails.
    pub async fn call(&self, method: &str, body: &Value) -> Result<Value, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self.api.call(method, Some(body), CALL_TIMEOUT).await {
                Ok(result) => return Ok(result),
                Err(error) => error,
            };
            let wait = match &error {
                ApiError::Refused {
                    code: 429,
                    retry_after: Some(after),
                    ..
                } if *after <= MAX_RETRY_AFTER => Duration::from_secs(*after),
                ApiError::Transport(_) => self.retry_delay,
                _ => {
                    tracing::warn!("cannot send Telegram request {method}: {error}");
                    return Err(error);
                }
            };
            if attempt >= ATTEMPTS {
                tracing::warn!("cannot send Telegram request {method} ({attempt} tries): {error}");
                return Err(error);
            }
            tracing::info!(
                "Telegram request {method} failed ({error}); trying again in {} s",
                wait.as_secs()
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// A call about `chat`, after its budget allows it; a chat that blocked
    /// the bot is forgotten, and one that became a supergroup is followed.
    async fn chat_call(&self, chat: i64, method: &str, body: &Value) -> Result<Value, Failed> {
        self.budget(chat).await;
        match self.call(method, body).await {
            Ok(result) => Ok(result),
            Err(ApiError::Refused { code: 403, .. }) => {
                if let Some(engine) = self.engine() {
                    engine.forget_chat(chat).await;
                }
                Err(Failed::Gone)
            }
            Err(ApiError::Refused {
                migrate_to: Some(to),
                ..
            }) => {
                if let Some(engine) = self.engine() {
                    engine.move_chat(chat, to).await;
                }
                Err(Failed::Moved(to))
            }
            Err(ApiError::Refused { description, .. })
                if description.contains("can't parse entities") =>
            {
                Err(Failed::Unparsable)
            }
            Err(ApiError::Refused { description, .. }) if description.contains("BUTTON_") => {
                Err(Failed::BadButton)
            }
            Err(_) => Err(Failed::Other),
        }
    }

    /// The Bot API's `reply_markup` of a keyboard.
    async fn inline_keyboard(&self, rows: &[Vec<Button>]) -> Value {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut buttons = Vec::with_capacity(row.len());
            for button in row {
                match &button.action {
                    ButtonAction::Url(url) => {
                        buttons.push(json!({"text": button.text, "url": url}));
                    }
                    // A button without its command would make Telegram
                    // refuse the whole message: it is left out.
                    ButtonAction::Command(command) => {
                        if let Some(data) = self.callback_data(command).await {
                            buttons.push(json!({"text": button.text, "callback_data": data}));
                        }
                    }
                }
            }
            if !buttons.is_empty() {
                out.push(Value::Array(buttons));
            }
        }
        json!({ "inline_keyboard": out })
    }

    /// `command` itself when it fits, else the id of its stored copy;
    /// `None` when it cannot be stored.
    async fn callback_data(&self, command: &str) -> Option<String> {
        if command.len() <= MAX_CALLBACK_DATA && command.parse::<i64>().is_err() {
            return Some(command.to_string());
        }
        match self.db.button_id(self.bot_id, command.to_string()).await {
            Ok(id) => Some(id.to_string()),
            Err(e) => {
                tracing::error!("cannot store a button's command: {e}");
                None
            }
        }
    }

    /// The command behind a button's callback data; `None` when it is no
    /// longer known.
    pub async fn command_of(&self, data: &str) -> Option<String> {
        let Ok(id) = data.parse::<i64>() else {
            return Some(data.to_string());
        };
        let oldest = crate::clock::now() - BUTTON_TTL;
        self.db
            .button_payload(self.bot_id, id, oldest)
            .await
            .unwrap_or_else(|e| {
                tracing::error!("cannot read a button's command: {e}");
                None
            })
    }

    async fn send_once(&self, chat: i64, message: &Message) -> Result<Option<i64>, Failed> {
        let chunks = chunks(&message.html);
        let last = chunks.len().saturating_sub(1);
        let mut sent = None;
        for (index, chunk) in chunks.into_iter().enumerate() {
            let mut body = json!({"chat_id": chat, "text": chunk, "parse_mode": "HTML"});
            if let Some(topic) = message.topic {
                body["message_thread_id"] = json!(topic);
            }
            if index == 0 {
                if let Some(reply_to) = message.reply_to {
                    body["reply_to_message_id"] = json!(reply_to);
                    body["allow_sending_without_reply"] = json!(true);
                }
            }
            if index == last {
                match &message.markup {
                    Some(Markup::Keyboard(rows)) => {
                        body["reply_markup"] = self.inline_keyboard(rows).await;
                    }
                    Some(Markup::ForceReply) => {
                        body["reply_markup"] = json!({"force_reply": true, "selective": true});
                    }
                    None => {}
                }
            }
            let result = match self.chat_call(chat, "sendMessage", &body).await {
                Err(Failed::Unparsable) => {
                    tracing::info!(
                        "chat {chat}: a message Telegram cannot parse goes as plain text"
                    );
                    body["text"] = json!(plain(&chunk));
                    if let Some(body) = body.as_object_mut() {
                        body.remove("parse_mode");
                    }
                    self.chat_call(chat, "sendMessage", &body).await
                }
                Err(Failed::BadButton) => {
                    tracing::info!(
                        "chat {chat}: a message goes without the buttons Telegram refused"
                    );
                    if let Some(body) = body.as_object_mut() {
                        body.remove("reply_markup");
                    }
                    self.chat_call(chat, "sendMessage", &body).await
                }
                other => other,
            }?;
            sent = result["message_id"].as_i64();
        }
        Ok(sent)
    }
}

/// Why a call about a chat was not made.
enum Failed {
    /// The chat blocked or removed the bot.
    Gone,
    /// The chat became this supergroup.
    Moved(i64),
    /// Telegram cannot parse the text's markup.
    Unparsable,
    /// Telegram refuses a button (e.g. a URL it does not take).
    BadButton,
    Other,
}

impl Transport for Telegram {
    async fn send(&self, chat: i64, message: Message) -> Option<i64> {
        match self.send_once(chat, &message).await {
            Ok(sent) => sent,
            Err(Failed::Moved(to)) => self.send_once(to, &message).await.ok().flatten(),
            Err(_) => None,
        }
    }

    async fn edit(&self, chat: i64, message_id: i64, message: Message) -> bool {
        let mut body = json!({
            "chat_id": chat,
            "message_id": message_id,
            "text": message.html,
            "parse_mode": "HTML",
        });
        if let Some(Markup::Keyboard(rows)) = &message.markup {
            body["reply_markup"] = self.inline_keyboard(rows).await;
        }
        self.chat_call(chat, "editMessageText", &body).await.is_ok()
    }

    async fn edit_keyboard(&self, chat: i64, message_id: i64, keyboard: Option<Vec<Vec<Button>>>) {
        let mut body = json!({"chat_id": chat, "message_id": message_id});
        if let Some(rows) = keyboard {
            body["reply_markup"] = self.inline_keyboard(&rows).await;
        }
        let _ = self.chat_call(chat, "editMessageReplyMarkup", &body).await;
    }

    async fn delete(&self, chat: i64, message_id: i64) {
        let body = json!({"chat_id": chat, "message_id": message_id});
        let _ = self.chat_call(chat, "deleteMessage", &body).await;
    }

    async fn answer_click(&self, query_id: &str, toast: Option<&str>) {
        let mut body = json!({"callback_query_id": query_id});
        if let Some(toast) = toast {
            body["text"] = json!(toast);
        }
        let _ = self.call("answerCallbackQuery", &body).await;
    }

    async fn show_menu(&self, chat: i64) {
        let body = json!({"chat_id": chat, "menu_button": {"type": "commands"}});
        let _ = self.chat_call(chat, "setChatMenuButton", &body).await;
    }
}

/// `html` in pieces Telegram takes: each at most [`MAX_TEXT`] UTF-16 units,
/// cut after the last newline that fits (or hard, when none does); each
/// piece trimmed; nothing for an empty text.
fn chunks(html: &str) -> Vec<String> {
    let mut rest = html.trim();
    let mut pieces = Vec::new();
    while !rest.is_empty() {
        let mut units = 0;
        let mut end = rest.len();
        for (at, c) in rest.char_indices() {
            units += c.len_utf16();
            if units > MAX_TEXT {
                end = at;
                break;
            }
        }
        if end < rest.len() {
            match rest[..end].rfind('\n') {
                Some(newline) => end = newline + 1,
                None => end = outside_markup(&rest[..end]),
            }
        }
        pieces.push(rest[..end].trim_end().to_string());
        rest = rest[end..].trim_start();
    }
    pieces
}

/// Where a hard cut of `piece` may fall: before a tag or an entity it would
/// split.
fn outside_markup(piece: &str) -> usize {
    let open_tag = piece.rfind('<').filter(|at| !piece[*at..].contains('>'));
    let open_entity = piece.rfind('&').filter(|at| !piece[*at..].contains(';'));
    match open_tag.into_iter().chain(open_entity).min() {
        Some(0) | None => piece.len(),
        Some(at) => at,
    }
}

/// `html` as plain text: tags dropped, entities decoded.
fn plain(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_texts_are_cut_after_a_newline() {
        let line = "1".repeat(39);
        let text = vec![line.as_str(); 250].join("\n");
        let pieces = chunks(&text);
        let lines: Vec<usize> = pieces.iter().map(|p| p.lines().count()).collect();
        assert_eq!(lines, vec![102, 102, 46]);
        assert!(pieces.iter().all(|p| p.encode_utf16().count() <= MAX_TEXT));
        assert_eq!(chunks("  "), Vec::<String>::new());
        let hard = "x".repeat(MAX_TEXT + 10);
        assert_eq!(chunks(&hard)[1], "x".repeat(10));
        let link = format!("{}<a href=\"u\">#3</a>", "x".repeat(MAX_TEXT - 5));
        assert_eq!(
            chunks(&link)[1],
            "<a href=\"u\">#3</a>",
            "no cut inside a tag"
        );
    }

    #[test]
    fn plain_text_drops_the_markup() {
        assert_eq!(
            plain("Build <a href=\"u\">#3</a> of <code>a&lt;b&amp;c</code>"),
            "Build #3 of a<b&c"
        );
    }
}
