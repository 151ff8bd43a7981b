//! Updates from Telegram, by long polling or by webhook, turned into the
//! engine's messages. One update that cannot be handled (malformed, or
//! one that makes the engine panic) is logged and skipped; the next ones go
//! on.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::api::{ApiError, BotApi};
use super::transport::Telegram;
use crate::chat::{Chat, Click, Engine, Incoming, Message, Replied, Transport, User};
use crate::db::Db;

/// The only updates the bot asks for.
const ALLOWED_UPDATES: [&str; 2] = ["message", "callback_query"];

/// What a stale button's click is told.
const STALE_BUTTON: &str = "Sorry, button is no longer valid!";

/// A bot's engine and its Telegram side.
#[derive(Clone)]
pub struct Bot {
    pub engine: Arc<Engine>,
    pub telegram: Arc<Telegram>,
}

impl Bot {
    /// Handles one update, in a task of its own so that a panic ends only
    /// it; the user is then told, and a click answered.
    pub async fn handle_update(&self, update: Value) {
        let bot = self.clone();
        let id = update["update_id"].as_i64();
        let query = update["callback_query"]["id"].as_str().map(str::to_string);
        let chat = update["message"]["chat"]["id"]
            .as_i64()
            .or_else(|| update["callback_query"]["message"]["chat"]["id"].as_i64());
        let handled = tokio::spawn(async move { bot.handle(update).await }).await;
        if let Err(e) = handled {
            tracing::error!(
                "Telegram update {}: the bot failed on it and skips it: {e}",
                id.map_or_else(|| "?".to_string(), |id| id.to_string())
            );
            if let Some(query) = query {
                self.telegram.answer_click(&query, None).await;
            }
            if let Some(chat) = chat {
                let message = Message::new("Something bad happened (see the master's log).");
                self.telegram.send(chat, message).await;
            }
        }
    }

    async fn handle(&self, update: Value) {
        let incoming = if let Some(message) = update.get("message") {
            message_of(message, None)
        } else if let Some(query) = update.get("callback_query") {
            self.click(query).await
        } else {
            None
        };
        if let Some(incoming) = incoming {
            self.engine.handle(incoming, self.telegram.as_ref()).await;
        }
    }

    /// The command a click stands for; a stale button's click is answered
    /// here, its keyboard removed.
    async fn click(&self, query: &Value) -> Option<Incoming> {
        let query_id = query["id"].as_str()?.to_string();
        let message = query.get("message");
        let message_id = message.and_then(|m| m["message_id"].as_i64());
        let chat = message.and_then(|m| m["chat"]["id"].as_i64());
        let Some(data) = query["data"].as_str() else {
            // A game or another kind of button: nothing to run.
            self.telegram.answer_click(&query_id, None).await;
            return None;
        };
        let Some(command) = self.telegram.command_of(data).await else {
            if let (Some(chat), Some(message_id)) = (chat, message_id) {
                self.telegram.edit_keyboard(chat, message_id, None).await;
            }
            self.telegram
                .answer_click(&query_id, Some(STALE_BUTTON))
                .await;
            return None;
        };
        let Some(message) = message else {
            // A button of an inline-mode message: no chat to answer in.
            self.telegram.answer_click(&query_id, None).await;
            return None;
        };
        let mut synthetic = message.clone();
        synthetic["from"] = query["from"].clone();
        synthetic["text"] = json!(command);
        let incoming = message_of(
            &synthetic,
            Some(Click {
                query_id: query_id.clone(),
                message_id,
            }),
        );
        if incoming.is_none() {
            self.telegram.answer_click(&query_id, None).await;
        }
        incoming
    }
}

/// The engine's view of a Telegram message; `None` for one without a sender
/// or text.
fn message_of(message: &Value, click: Option<Click>) -> Option<Incoming> {
    let from = &message["from"];
    let chat = &message["chat"];
    let text = message["text"].as_str().filter(|t| !t.trim().is_empty())?;
    let user = User {
        id: from["id"].as_i64()?,
        first_name: from["first_name"].as_str().unwrap_or_default().to_string(),
        last_name: from["last_name"].as_str().map(str::to_string),
        username: from["username"].as_str().map(str::to_string),
    };
    let chat = Chat {
        id: chat["id"].as_i64()?,
        kind: chat["type"].as_str().unwrap_or("group").to_string(),
        title: chat["title"].as_str().map(str::to_string),
        topic: message["is_topic_message"]
            .as_bool()
            .filter(|topic| *topic)
            .and_then(|_| message["message_thread_id"].as_i64()),
    };
    let reply_to = message.get("reply_to_message").and_then(|replied| {
        Some(Replied {
            message_id: replied["message_id"].as_i64()?,
            has_keyboard: replied.get("reply_markup").is_some(),
        })
    });
    Some(Incoming {
        chat,
        from: user,
        text: text.to_string(),
        message_id: if click.is_some() {
            None
        } else {
            message["message_id"].as_i64()
        },
        reply_to,
        click,
    })
}

/// The long-polling side of a bot.
#[derive(Clone)]
pub struct Poller {
    pub bot: Bot,
    pub db: Db,
    /// The next update to ask for, shared with the pollers after this one.
    pub offset: Arc<AtomicI64>,
    pub poll_timeout: u64,
    pub retry_delay: u64,
}

impl Poller {
    /// Long-polls `getUpdates` and handles each update in order, until the
    /// task is stopped (which drops the poll in flight). The next offset is
    /// stored before a batch is handled: an update is handled at most once,
    /// even across a crash or a `/shutdown now`.
    pub async fn run(self) {
        let api = self.bot.telegram.api().clone();
        self.delete_webhook(&api).await;
        let retry = Duration::from_secs(self.retry_delay);
        let mut failing = false;
        loop {
            let mut body =
                json!({"timeout": self.poll_timeout, "allowed_updates": ALLOWED_UPDATES});
            let next = self.offset.load(Ordering::SeqCst);
            if next != 0 {
                body["offset"] = json!(next);
            }
            let timeout = Duration::from_secs(self.poll_timeout + 10);
            match api.call("getUpdates", Some(&body), timeout).await {
                Ok(updates) => {
                    failing = false;
                    let updates = updates.as_array().cloned().unwrap_or_default();
                    let last = updates.iter().filter_map(|u| u["update_id"].as_i64()).max();
                    if let Some(last) = last {
                        self.offset.fetch_max(last + 1, Ordering::SeqCst);
                        let next = self.offset.load(Ordering::SeqCst);
                        let bot = self.bot.engine.bot_id();
                        if let Err(e) = self.db.save_chat_offset(bot, next).await {
                            tracing::error!("cannot store where the Telegram updates stop: {e}");
                        }
                    }
                    for update in updates {
                        self.bot.handle_update(update).await;
                    }
                }
                // Another webhook was set meanwhile: polling needs it gone.
                Err(ApiError::Refused { code: 409, .. }) => {
                    self.delete_webhook(&api).await;
                }
                Err(e) => {
                    if !failing {
                        tracing::error!(
                            "cannot send Telegram request getUpdates (will try again every {} s): {e}",
                            self.retry_delay
                        );
                    }
                    failing = true;
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }

    /// `deleteWebhook`, until it succeeds: polling gets nothing while a
    /// webhook is set.
    async fn delete_webhook(&self, api: &BotApi) {
        let mut failing = false;
        while let Err(e) = api
            .call("deleteWebhook", None, Duration::from_secs(30))
            .await
        {
            if !failing {
                tracing::warn!(
                    "cannot send Telegram request deleteWebhook (will try again every {} s): {e}",
                    self.retry_delay
                );
            }
            failing = true;
            tokio::time::sleep(Duration::from_secs(self.retry_delay)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_without_a_sender_or_text_are_not_for_the_engine() {
        let message = json!({"message_id": 77, "chat": {"id": -100, "type": "group", "title": "Hogwarts"},
            "from": {"id": 111, "first_name": "Harry", "username": "harrypotter"}, "text": "/getid",
            "reply_to_message": {"message_id": 55, "reply_markup": {}}});
        let incoming = message_of(&message, None).unwrap();
        assert_eq!(incoming.chat.id, -100);
        assert_eq!(incoming.from.username.as_deref(), Some("harrypotter"));
        assert_eq!(incoming.message_id, Some(77));
        assert!(incoming.reply_to.unwrap().has_keyboard);
        let mut photo = message.clone();
        photo.as_object_mut().unwrap().remove("text");
        assert!(message_of(&photo, None).is_none());
        let mut anonymous = message.clone();
        anonymous.as_object_mut().unwrap().remove("from");
        assert!(message_of(&anonymous, None).is_none());
    }
}
