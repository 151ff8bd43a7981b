//! The Telegram bot: the Bot API transport of the [`crate::chat`] engine, as
//! a service that lives across reloads.
//!
//! A reload that keeps the bot gives the engine its new settings in place:
//! conversations, watches, subscriptions and the update offset stay. Only a
//! change of how Telegram is reached (token, `api_url`, `proxy`, polling or
//! webhook, timeouts) replaces the poller or the webhook, and the new one
//! goes on from the same offset. Build starts and ends come from the build
//! journal through a durable consumer, so none is missed while the master
//! is busy or restarting.

mod api;
mod transport;
mod updates;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use crate::chat::{commands, BuildEvent, Engine, Settings, WorkerNotice};
use crate::config::{ChatRef, Config, TelegramConfig};
use crate::control::Control;
use crate::db::{Db, JournalKind};
use crate::durable::{self, Consumer, Delivery};
use crate::events::{Bus, Event};
use crate::results::Results;
use crate::tasks::{Policy, Supervisor, TaskHandle};

use api::BotApi;
use transport::{Telegram, BUTTON_TTL};
use updates::Bot;

/// The journal cursor's name.
const CONSUMER: &str = "telegram";

/// What the HTTP server needs to take webhook updates.
pub struct Webhook {
    /// The last segment of `/telegram/<key>`: derived from the token,
    /// which it does not show.
    key: String,
    /// Telegram sends it in `X-Telegram-Bot-Api-Secret-Token`.
    secret: String,
    updates: mpsc::UnboundedSender<Value>,
}

/// The webhook in use, if any; shared with the HTTP server.
pub type WebhookSlot = Arc<ArcSwapOption<Webhook>>;

/// What the webhook route answers.
pub enum WebhookAnswer {
    /// Taken (handled after the answer).
    Accepted,
    NotFound,
    Forbidden,
    BadRequest(&'static str),
}

/// Takes one webhook delivery for bot path `key`.
pub fn take_update(
    slot: &WebhookSlot,
    key: &str,
    secret: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> WebhookAnswer {
    let current = slot.load();
    let known = current
        .as_ref()
        .filter(|w| bool::from(w.key.as_bytes().ct_eq(key.as_bytes())));
    let Some(webhook) = known else {
        return WebhookAnswer::NotFound;
    };
    let matches: bool = secret
        .unwrap_or_default()
        .as_bytes()
        .ct_eq(webhook.secret.as_bytes())
        .into();
    if !matches {
        return WebhookAnswer::Forbidden;
    }
    if !content_type.is_some_and(|c| c.starts_with("application/json")) {
        return WebhookAnswer::BadRequest("an update must be sent as application/json");
    }
    let Ok(update) = serde_json::from_slice::<Value>(body) else {
        return WebhookAnswer::BadRequest("the update is not JSON");
    };
    let _ = webhook.updates.send(update);
    WebhookAnswer::Accepted
}

/// A derivation of the token, in hex: `what` keeps the uses apart.
fn derived(token: &str, what: &str) -> String {
    let digest = Sha256::digest(format!("{what}:{token}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The bot service.
pub struct TelegramBot {
    db: Db,
    bus: Bus,
    control: Control,
    supervisor: Supervisor,
    webhook: WebhookSlot,
    /// The next update to ask for: kept across pollers, and in the database.
    offset: Arc<AtomicI64>,
    /// The live bot, read by the journal consumer and the webhook's handler.
    current: Arc<ArcSwapOption<Bot>>,
    running: Option<Running>,
}

struct Running {
    config: TelegramConfig,
    /// Where Telegram delivers updates, in webhook mode.
    webhook_url: Option<String>,
    engine: Arc<Engine>,
    /// Webhook deliveries, waiting for the handler: kept across reconnects.
    updates: mpsc::UnboundedSender<Value>,
    /// The poller, or the webhook's start-up calls.
    tasks: Vec<TaskHandle>,
    /// The notifications, the webhook's handler and the button janitor.
    services: Vec<TaskHandle>,
}

impl TelegramBot {
    pub fn new(db: Db, bus: Bus, control: Control, supervisor: Supervisor) -> TelegramBot {
        TelegramBot {
            db,
            bus,
            control,
            supervisor,
            webhook: Arc::new(ArcSwapOption::empty()),
            offset: Arc::new(AtomicI64::new(0)),
            current: Arc::new(ArcSwapOption::empty()),
            running: None,
        }
    }

    pub fn webhook(&self) -> WebhookSlot {
        Arc::clone(&self.webhook)
    }

    /// Makes the bot of `config` (with the whole configuration `whole`)
    /// run, keeping what can be kept of the running one.
    pub async fn apply(
        &mut self,
        config: Option<TelegramConfig>,
        whole: Arc<Config>,
    ) -> Result<(), String> {
        let Some(config) = config else {
            if self.running.is_some() {
                self.stop().await;
                // Taken out of the configuration: if it comes back, it
                // speaks of builds from then on, not of those in between.
                if let Err(e) = self.db.forget_consumer_cursor(CONSUMER).await {
                    tracing::warn!("cannot forget the Telegram notifications' place: {e}");
                }
            }
            return Ok(());
        };
        let settings = Settings {
            bot: config.clone(),
            config: Arc::clone(&whole),
        };
        let same_bot = self
            .running
            .as_ref()
            .is_some_and(|r| r.engine.bot_id() == config.bot_id());
        let webhook_url = webhook_url(&config, &whole);
        if !same_bot {
            // Made first: a client that cannot be made leaves the old bot running.
            let api = BotApi::new(&config)?;
            self.stop().await;
            let offset = self
                .db
                .chat_offset(config.bot_id())
                .await
                .unwrap_or_else(|e| {
                    tracing::error!("cannot read where the Telegram updates stopped: {e}");
                    0
                });
            self.offset.store(offset, Ordering::SeqCst);
            let engine =
                Arc::new(Engine::new(self.db.clone(), self.control.clone(), settings).await);
            let (updates, received) = mpsc::unbounded_channel();
            self.running = Some(Running {
                config: config.clone(),
                webhook_url,
                engine,
                updates,
                tasks: Vec::new(),
                services: Vec::new(),
            });
            self.connect(api, &config);
            let services = self.start_services(received);
            if let Some(running) = self.running.as_mut() {
                running.services = services;
            }
            return Ok(());
        }
        let running = self.running.as_mut().expect("a running bot");
        running.engine.configure(settings).await;
        // Channels are subscribed once resolved, when connecting.
        let channels_changed = (running.config.chat_ids != config.chat_ids
            || running.config.notify_events != config.notify_events)
            && config
                .chat_ids
                .iter()
                .any(|c| matches!(c, ChatRef::Channel(_)));
        let reconnect = reaches_differently(&running.config, &config)
            || running.webhook_url != webhook_url
            || channels_changed;
        running.config = config.clone();
        running.webhook_url = webhook_url;
        if reconnect {
            // A client is made only for a new way to Telegram.
            let api = BotApi::new(&config)?;
            for task in running.tasks.drain(..) {
                task.stop().await;
            }
            self.webhook.store(None);
            self.connect(api, &config);
        }
        Ok(())
    }

    /// Starts talking to Telegram with `api`: the start-up calls, then the
    /// poller, or the webhook's registration.
    fn connect(&mut self, api: BotApi, config: &TelegramConfig) {
        let running = self.running.as_mut().expect("a running bot");
        let telegram = Arc::new(Telegram::new(
            api.clone(),
            self.db.clone(),
            config.bot_id(),
            Duration::from_secs(config.retry_delay),
        ));
        telegram.attach(&running.engine);
        let bot = Bot {
            engine: Arc::clone(&running.engine),
            telegram,
        };
        self.current.store(Some(Arc::new(bot.clone())));
        let start = StartUp {
            api,
            engine: Arc::clone(&running.engine),
            ask_username: config.bot_username.is_none(),
            channels: config
                .chat_ids
                .iter()
                .filter_map(|chat| match chat {
                    ChatRef::Channel(name) => Some(name.clone()),
                    ChatRef::Id(_) => None,
                })
                .collect(),
            retry: Duration::from_secs(config.retry_delay),
        };
        let task = match running.webhook_url.clone() {
            None => {
                let poller = updates::Poller {
                    bot,
                    db: self.db.clone(),
                    offset: Arc::clone(&self.offset),
                    poll_timeout: config.poll_timeout,
                    retry_delay: config.retry_delay,
                };
                self.supervisor
                    .spawn("telegram poller", Policy::Forever, move || {
                        let (start, poller) = (start.clone(), poller.clone());
                        async move {
                            start.introduce().await;
                            poller.run().await;
                        }
                    })
            }
            Some(url) => {
                let secret = derived(&config.bot_token, "secret");
                self.webhook.store(Some(Arc::new(Webhook {
                    key: derived(&config.bot_token, "path"),
                    secret: secret.clone(),
                    updates: running.updates.clone(),
                })));
                let certificate = config.certificate.clone();
                self.supervisor
                    .spawn("telegram start-up", Policy::UntilDone, move || {
                        let start = start.clone();
                        let (url, secret, certificate) =
                            (url.clone(), secret.clone(), certificate.clone());
                        async move {
                            start.introduce().await;
                            start
                                .set_webhook(&url, &secret, certificate.as_deref())
                                .await;
                        }
                    })
            }
        };
        running.tasks = vec![task];
    }

    /// The notifications, the handler of webhook deliveries, and the janitor
    /// of stored button commands: they live as long as the bot, whatever
    /// way it reaches Telegram.
    fn start_services(&self, received: mpsc::UnboundedReceiver<Value>) -> Vec<TaskHandle> {
        let consumer = Announcer {
            db: self.db.clone(),
            current: Arc::clone(&self.current),
        };
        let (db, bus) = (self.db.clone(), self.bus.clone());
        let notifications =
            self.supervisor
                .spawn("telegram notifications", Policy::Forever, move || {
                    durable::follow(db.clone(), bus.clone(), consumer.clone())
                });
        let (bus, current) = (self.bus.clone(), Arc::clone(&self.current));
        let workers =
            self.supervisor
                .spawn("telegram worker notices", Policy::Forever, move || {
                    worker_notices(bus.subscribe(), Arc::clone(&current))
                });
        let received = Arc::new(tokio::sync::Mutex::new(received));
        let current = Arc::clone(&self.current);
        let webhook = self
            .supervisor
            .spawn("telegram webhook", Policy::Forever, move || {
                let (received, current) = (Arc::clone(&received), Arc::clone(&current));
                async move {
                    let mut received = received.lock().await;
                    while let Some(update) = received.recv().await {
                        if let Some(bot) = current.load_full() {
                            bot.handle_update(update).await;
                        }
                    }
                }
            });
        let db = self.db.clone();
        let janitor = self
            .supervisor
            .spawn("telegram buttons", Policy::Forever, move || {
                let db = db.clone();
                async move {
                    loop {
                        purge_buttons(&db).await;
                        tokio::time::sleep(Duration::from_secs(86_400)).await;
                    }
                }
            });
        vec![notifications, workers, webhook, janitor]
    }

    /// Stops the bot; its saved state stays.
    pub async fn stop(&mut self) {
        self.webhook.store(None);
        self.current.store(None);
        if let Some(running) = self.running.take() {
            for task in running.tasks.into_iter().chain(running.services) {
                task.stop().await;
            }
        }
        self.offset.store(0, Ordering::SeqCst);
    }
}

/// Whether the way to Telegram changed.
fn reaches_differently(old: &TelegramConfig, new: &TelegramConfig) -> bool {
    old.bot_token != new.bot_token
        || old.api_url != new.api_url
        || old.proxy != new.proxy
        || old.use_webhook != new.use_webhook
        || old.certificate != new.certificate
        || old.poll_timeout != new.poll_timeout
        || old.retry_delay != new.retry_delay
}

/// Where Telegram is to deliver updates: `None` when polling.
fn webhook_url(config: &TelegramConfig, whole: &Config) -> Option<String> {
    config.use_webhook.then(|| {
        format!(
            "{}/telegram/{}",
            whole.buildbot_url.trim_end_matches('/'),
            derived(&config.bot_token, "path")
        )
    })
}

/// The calls that introduce the bot to Telegram, each tried until it
/// succeeds: `getMe` (unless the username is configured), `setMyCommands`,
/// and in webhook mode `setWebhook`; and `getChat` once for each channel
/// named in `chat_ids`.
#[derive(Clone)]
struct StartUp {
    api: BotApi,
    engine: Arc<Engine>,
    ask_username: bool,
    /// `@name`s of `chat_ids`.
    channels: Vec<String>,
    retry: Duration,
}

const START_UP_TIMEOUT: Duration = Duration::from_secs(30);

impl StartUp {
    async fn introduce(&self) {
        if self.ask_username {
            let me = self.until_done("getMe", None).await;
            if let Some(username) = me["username"].as_str() {
                self.engine.learn_username(username);
            }
        }
        let listed: Vec<Value> = commands::described()
            .map(|(command, description)| json!({"command": command, "description": description}))
            .collect();
        self.until_done("setMyCommands", Some(&json!({ "commands": listed })))
            .await;
        for channel in &self.channels {
            let body = json!({ "chat_id": channel });
            match self.api.call("getChat", Some(&body), START_UP_TIMEOUT).await {
                Ok(chat) => match chat["id"].as_i64() {
                    Some(id) => self.engine.subscribe_configured(id).await,
                    None => tracing::warn!("Telegram did not give the id of {channel}"),
                },
                Err(e) => tracing::warn!(
                    "cannot find the Telegram channel {channel} (its notifications wait for the next start): {e}"
                ),
            }
        }
    }

    /// Calls `method` until it succeeds; says so once per streak of failures.
    async fn until_done(&self, method: &str, body: Option<&Value>) -> Value {
        let mut failing = false;
        loop {
            match self.api.call(method, body, START_UP_TIMEOUT).await {
                Ok(result) => return result,
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            "cannot send Telegram request {method} (will try again every {} s): {e}",
                            self.retry.as_secs()
                        );
                    }
                    failing = true;
                    tokio::time::sleep(self.retry).await;
                }
            }
        }
    }

    async fn set_webhook(&self, url: &str, secret: &str, certificate: Option<&std::path::Path>) {
        let allowed = r#"["message","callback_query"]"#;
        let Some(file) = certificate else {
            let body = json!({"url": url, "secret_token": secret, "allowed_updates": ["message", "callback_query"]});
            self.until_done("setWebhook", Some(&body)).await;
            tracing::info!("Telegram delivers this bot's updates to its webhook");
            return;
        };
        let pem = match std::fs::read(file) {
            Ok(pem) => pem,
            Err(e) => {
                tracing::error!(
                    "cannot read the Telegram certificate {}: {e}",
                    file.display()
                );
                return;
            }
        };
        let fields = [
            ("url", url.to_string()),
            ("secret_token", secret.to_string()),
            ("allowed_updates", allowed.to_string()),
        ];
        loop {
            let file = ("certificate", "certificate.pem", pem.clone());
            match self
                .api
                .call_multipart("setWebhook", &fields, file, START_UP_TIMEOUT)
                .await
            {
                Ok(_) => {
                    tracing::info!("Telegram delivers this bot's updates to its webhook");
                    return;
                }
                Err(e) => {
                    tracing::warn!("cannot send Telegram request setWebhook (will try again): {e}");
                    tokio::time::sleep(self.retry).await;
                }
            }
        }
    }
}

/// Tells the bot's chats of workers that go missing and come back.
async fn worker_notices(
    mut events: tokio::sync::broadcast::Receiver<Event>,
    current: Arc<ArcSwapOption<Bot>>,
) {
    loop {
        let notice = match events.recv().await {
            Ok(Event::WorkerMissing(worker)) => WorkerNotice {
                workerid: worker.workerid,
                name: worker.name,
                missing: true,
                at: worker.at,
            },
            Ok(Event::WorkerConnected(worker)) => WorkerNotice {
                workerid: worker.workerid,
                name: worker.name,
                missing: false,
                at: worker.at,
            },
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    "the Telegram bot missed {missed} event(s); worker notices may be lost"
                );
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if let Some(bot) = current.load_full() {
            bot.engine
                .announce_worker(&notice, bot.telegram.as_ref())
                .await;
        }
    }
}

/// Announces build starts and ends from the journal.
#[derive(Clone)]
struct Announcer {
    db: Db,
    current: Arc<ArcSwapOption<Bot>>,
}

impl Consumer for Announcer {
    fn name(&self) -> &str {
        CONSUMER
    }

    /// Announcements are slow (chats have budgets) and seen: each is
    /// recorded as done at once, so that a crash repeats at most one.
    fn batch(&self) -> u64 {
        1
    }

    async fn handle(&mut self, delivery: Delivery) -> Result<(), String> {
        let Some(bot) = self.current.load_full() else {
            return Err("the bot is not connected yet".into());
        };
        let build = delivery.build;
        let finished = delivery.entry.kind == JournalKind::Finished;
        let (previous, blamelist) = if finished {
            let previous = self
                .db
                .previous_build(build.builder.builderid, build.number)
                .await
                .map_err(|e| format!("cannot read the previous build: {e}"))?
                .and_then(|p| p["results"].as_i64())
                .and_then(Results::from_code);
            let parts = self
                .db
                .report_parts(build.buildid, build.buildset.bsid, false)
                .await
                .map_err(|e| format!("cannot read the build's changes: {e}"))?;
            (previous, parts.blamelist)
        } else {
            (None, Vec::new())
        };
        let event = BuildEvent {
            build,
            finished,
            previous,
            blamelist,
        };
        bot.engine.announce(&event, bot.telegram.as_ref()).await;
        Ok(())
    }
}

/// Forgets button commands older than their lifetime.
async fn purge_buttons(db: &Db) {
    match db.purge_buttons(crate::clock::now() - BUTTON_TTL).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!("forgot {n} expired Telegram button(s)"),
        Err(e) => tracing::warn!("cannot forget expired Telegram buttons: {e}"),
    }
}
