//! The chat command engine: commands, their arguments, authorization,
//! conversations and notification subscriptions, as Buildbot's chat bots
//! have them, and nothing about any chat network.
//!
//! A transport (see [`crate::telegram`]) turns what users send into
//! [`Incoming`] messages and gives the engine a [`Transport`] to answer
//! through; it turns the engine's [`Message`]s (HTML text, keyboards of
//! command buttons) into its network's calls. The engine lives as long as
//! the master: a reload gives it new [`Settings`] and keeps its
//! conversations, watches and subscriptions.

mod basic;
pub mod commands;
mod control;
pub mod events;
mod info;
mod notify;
mod shell;
mod words;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::{Config, TelegramConfig};
use crate::control::Control;
use crate::db::Db;

pub use notify::{BuildEvent, WorkerNotice};

/// How long a question waits for its answer.
const QUESTION_TIMEOUT: Duration = Duration::from_secs(600);

/// Someone who wrote to the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub first_name: String,
    pub last_name: Option<String>,
    pub username: Option<String>,
}

impl User {
    /// "First Last (@username)", as build owners and stop reasons name them.
    fn describe(&self, chat: &Chat) -> String {
        let mut name = format!(
            "{} {}",
            self.first_name,
            self.last_name.as_deref().unwrap_or_default()
        )
        .trim()
        .to_string();
        if let Some(username) = &self.username {
            name.push_str(&format!(" (@{username})"));
        }
        if let (false, Some(title)) = (chat.private(), &chat.title) {
            name.push_str(&format!(" on '{title}'"));
        }
        name
    }
}

/// Where a message was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chat {
    pub id: i64,
    /// `private`, `group`, `supergroup` or `channel`.
    pub kind: String,
    pub title: Option<String>,
    /// The forum topic the message was written in.
    pub topic: Option<i64>,
}

impl Chat {
    fn private(&self) -> bool {
        self.kind == "private"
    }
}

/// A message to the bot, or a click on one of its buttons.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub chat: Chat,
    pub from: User,
    pub text: String,
    /// `None` for a click.
    pub message_id: Option<i64>,
    /// The bot message this one replies to.
    pub reply_to: Option<Replied>,
    pub click: Option<Click>,
}

/// A message replied to.
#[derive(Debug, Clone, Copy)]
pub struct Replied {
    pub message_id: i64,
    pub has_keyboard: bool,
}

/// A button click.
#[derive(Debug, Clone)]
pub struct Click {
    /// Answered once, by the engine.
    pub query_id: String,
    /// The message whose button was clicked.
    pub message_id: Option<i64>,
}

/// What the bot says: HTML, every dynamic part escaped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub html: String,
    pub reply_to: Option<i64>,
    pub markup: Option<Markup>,
    /// The forum topic to write in.
    pub topic: Option<i64>,
}

impl Message {
    pub fn new(html: impl Into<String>) -> Message {
        Message {
            html: html.into(),
            ..Message::default()
        }
    }

    fn keyboard(mut self, rows: Vec<Vec<Button>>) -> Message {
        self.markup = Some(Markup::Keyboard(rows));
        self
    }
}

/// What comes with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Markup {
    Keyboard(Vec<Vec<Button>>),
    /// Asks the user's client to reply (only the addressed user in a group).
    ForceReply,
}

/// A button: runs a command when clicked, or opens a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Button {
    pub text: String,
    pub action: ButtonAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ButtonAction {
    Command(String),
    Url(String),
}

impl Button {
    fn command(text: impl Into<String>, command: impl Into<String>) -> Button {
        Button {
            text: text.into(),
            action: ButtonAction::Command(command.into()),
        }
    }

    fn url(text: impl Into<String>, url: impl Into<String>) -> Button {
        Button {
            text: text.into(),
            action: ButtonAction::Url(url.into()),
        }
    }
}

/// How the engine talks back. Every call is best effort: a transport logs
/// what fails.
pub trait Transport: Sync {
    /// Sends `message` to `chat`; the id of the (last) message sent.
    fn send(&self, chat: i64, message: Message) -> impl Future<Output = Option<i64>> + Send;
    /// Replaces the text (and keyboard) of a message the bot sent.
    fn edit(
        &self,
        chat: i64,
        message_id: i64,
        message: Message,
    ) -> impl Future<Output = bool> + Send;
    /// Replaces a message's keyboard; `None` removes it.
    fn edit_keyboard(
        &self,
        chat: i64,
        message_id: i64,
        keyboard: Option<Vec<Vec<Button>>>,
    ) -> impl Future<Output = ()> + Send;
    fn delete(&self, chat: i64, message_id: i64) -> impl Future<Output = ()> + Send;
    /// Answers a click, with a toast when `toast` is given.
    fn answer_click(&self, query_id: &str, toast: Option<&str>) -> impl Future<Output = ()> + Send;
    /// Shows the command menu in `chat`.
    fn show_menu(&self, chat: i64) -> impl Future<Output = ()> + Send;
}

/// A transport whose messages to one chat go to one forum topic: answers
/// are written where the command was.
struct InTopic<'a, T> {
    inner: &'a T,
    chat: i64,
    topic: i64,
}

impl<T: Transport> Transport for InTopic<'_, T> {
    async fn send(&self, chat: i64, mut message: Message) -> Option<i64> {
        if chat == self.chat && message.topic.is_none() {
            message.topic = Some(self.topic);
        }
        self.inner.send(chat, message).await
    }

    async fn edit(&self, chat: i64, message_id: i64, message: Message) -> bool {
        self.inner.edit(chat, message_id, message).await
    }

    async fn edit_keyboard(&self, chat: i64, message_id: i64, keyboard: Option<Vec<Vec<Button>>>) {
        self.inner.edit_keyboard(chat, message_id, keyboard).await;
    }

    async fn delete(&self, chat: i64, message_id: i64) {
        self.inner.delete(chat, message_id).await;
    }

    async fn answer_click(&self, query_id: &str, toast: Option<&str>) {
        self.inner.answer_click(query_id, toast).await;
    }

    async fn show_menu(&self, chat: i64) {
        self.inner.show_menu(chat).await;
    }
}

/// What a configuration says about the engine.
#[derive(Clone)]
pub struct Settings {
    pub bot: TelegramConfig,
    /// The whole configuration: builders, workers, force schedulers.
    pub config: Arc<Config>,
}

/// A question waiting for its answer: the command to run with the answer
/// put in place of `{}`.
#[derive(Debug, Clone)]
struct Question {
    template: String,
    asked: Instant,
    /// In a group, only a reply to this message answers.
    prompt: Option<i64>,
}

/// What the engine remembers between messages.
#[derive(Default)]
struct State {
    questions: HashMap<(i64, i64), Question>,
    /// Chat → the events it is notified of.
    subscriptions: BTreeMap<i64, BTreeSet<String>>,
    /// Build id → the chats (and forum topics) that watch it.
    watches: HashMap<i64, BTreeSet<(i64, Option<i64>)>>,
    /// (chat, build id) → the "started" message, edited when the build ends.
    started: HashMap<(i64, i64), i64>,
    /// (chat, build id) → when its end was announced, against repeats.
    announced: HashMap<(i64, i64), Instant>,
    /// Chat → the workers it was told are missing.
    missing: BTreeMap<i64, BTreeSet<i64>>,
}

/// The command engine of one bot.
pub struct Engine {
    db: Db,
    control: Control,
    bot_id: i64,
    settings: ArcSwap<Settings>,
    /// Learnt from the network when the configuration does not say it.
    username: Mutex<Option<String>>,
    state: Mutex<State>,
}

impl Engine {
    /// The engine of bot `bot_id`, with its saved subscriptions and the
    /// configured chats' events.
    pub async fn new(db: Db, control: Control, settings: Settings) -> Engine {
        let bot_id = settings.bot.bot_id();
        let subscriptions = match db.chat_subscriptions(bot_id).await {
            Ok(saved) => saved,
            Err(e) => {
                tracing::error!("cannot read the chat subscriptions: {e}");
                BTreeMap::new()
            }
        };
        let missing = db.chat_missing_workers(bot_id).await.unwrap_or_else(|e| {
            tracing::error!("cannot read the chats' missing workers: {e}");
            BTreeMap::new()
        });
        let engine = Engine {
            db,
            control,
            bot_id,
            username: Mutex::new(settings.bot.bot_username.clone()),
            settings: ArcSwap::from_pointee(settings),
            state: Mutex::new(State {
                subscriptions,
                missing,
                ..State::default()
            }),
        };
        engine.subscribe_configured_chats().await;
        engine
    }

    /// Takes a new configuration in place. The configured chats get their
    /// events again only when `chat_ids` or `notify_events` changed, so that
    /// an unrelated reload does not undo a chat's `/notify off`.
    pub async fn configure(&self, settings: Settings) {
        if let Some(username) = &settings.bot.bot_username {
            *self.username.lock().expect("username") = Some(username.clone());
        }
        let old = self.settings();
        let resubscribe = old.bot.chat_ids != settings.bot.chat_ids
            || old.bot.notify_events != settings.bot.notify_events;
        self.settings.store(Arc::new(settings));
        if resubscribe {
            self.subscribe_configured_chats().await;
        }
    }

    pub fn bot_id(&self) -> i64 {
        self.bot_id
    }

    /// Records the bot's username, learnt from the network.
    pub fn learn_username(&self, username: &str) {
        let mut known = self.username.lock().expect("username");
        if known.is_none() {
            *known = Some(username.to_string());
        }
    }

    fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("chat state")
    }

    /// Switches `notify_events` on for the numeric `chat_ids` (a union with
    /// what they have) and saves them; channels named `@name` get theirs
    /// once the transport knows their ids ([`Engine::subscribe_configured`]).
    async fn subscribe_configured_chats(&self) {
        let settings = self.settings();
        for chat in &settings.bot.chat_ids {
            if let crate::config::ChatRef::Id(id) = chat {
                self.subscribe_configured(*id).await;
            }
        }
    }

    /// Switches `notify_events` on for configured chat `chat`.
    pub async fn subscribe_configured(&self, chat: i64) {
        let settings = self.settings();
        if settings.bot.notify_events.is_empty() {
            return;
        }
        let events = {
            let mut state = self.state();
            let events = state.subscriptions.entry(chat).or_default();
            events.extend(settings.bot.notify_events.iter().cloned());
            events.clone()
        };
        self.save_events(chat, events).await;
    }

    async fn save_events(&self, chat: i64, events: BTreeSet<String>) {
        if let Err(e) = self
            .db
            .save_chat_subscription(self.bot_id, chat, events)
            .await
        {
            tracing::error!("cannot save the notifications of chat {chat}: {e}");
        }
    }

    /// A chat that is gone for the bot (it was blocked or removed):
    /// forgets its subscriptions and watches.
    pub async fn forget_chat(&self, chat: i64) {
        let had = {
            let mut state = self.state();
            for watchers in state.watches.values_mut() {
                watchers.retain(|(watcher, _)| *watcher != chat);
            }
            state.missing.remove(&chat);
            state.subscriptions.remove(&chat).is_some()
        };
        if had {
            tracing::info!("chat {chat} is gone: its notifications are dropped");
            if let Err(e) = self.db.forget_chat(self.bot_id, chat).await {
                tracing::error!("cannot forget chat {chat}: {e}");
            }
        }
    }

    /// A group that became supergroup `to`: its state moves along.
    pub async fn move_chat(&self, from: i64, to: i64) {
        {
            let mut state = self.state();
            if let Some(events) = state.subscriptions.remove(&from) {
                state.subscriptions.entry(to).or_default().extend(events);
            }
            if let Some(workers) = state.missing.remove(&from) {
                state.missing.entry(to).or_default().extend(workers);
            }
            for watchers in state.watches.values_mut() {
                let moved: Vec<_> = watchers
                    .iter()
                    .filter(|(c, _)| *c == from)
                    .copied()
                    .collect();
                for (chat, topic) in moved {
                    watchers.remove(&(chat, topic));
                    watchers.insert((to, topic));
                }
            }
            let questions: Vec<_> = state
                .questions
                .keys()
                .filter(|(chat, _)| *chat == from)
                .copied()
                .collect();
            for key in questions {
                if let Some(question) = state.questions.remove(&key) {
                    state.questions.insert((to, key.1), question);
                }
            }
        }
        tracing::info!("chat {from} is now chat {to}: its state moved");
        if let Err(e) = self.db.move_chat(self.bot_id, from, to).await {
            tracing::error!("cannot move the notifications of chat {from}: {e}");
        }
    }

    /// Answers one message or click; in a forum, in its topic.
    pub async fn handle(&self, incoming: Incoming, transport: &impl Transport) {
        match incoming.chat.topic {
            Some(topic) => {
                let in_topic = InTopic {
                    inner: transport,
                    chat: incoming.chat.id,
                    topic,
                };
                self.answer(&incoming, &in_topic).await;
            }
            None => self.answer(&incoming, transport).await,
        }
    }

    async fn answer(&self, incoming: &Incoming, transport: &impl Transport) {
        let key = (incoming.chat.id, incoming.from.id);
        let text = incoming.text.trim().to_string();
        let question = self.state().questions.remove(&key);
        if let Some(expired) = question
            .as_ref()
            .filter(|q| q.asked.elapsed() >= QUESTION_TIMEOUT)
        {
            let answers = expired.prompt.is_none()
                || incoming.reply_to.map(|r| r.message_id) == expired.prompt;
            if answers && !text.starts_with('/') {
                let message = Message::new("That question has expired; please start again.");
                transport.send(incoming.chat.id, message).await;
                return;
            }
        }
        let question = question.filter(|q| q.asked.elapsed() < QUESTION_TIMEOUT);
        let text = match question {
            Some(question) if !text.starts_with('/') => {
                let answers = question.prompt.is_none()
                    || incoming.reply_to.map(|r| r.message_id) == question.prompt;
                if answers {
                    fill(&question.template, &shell::quote(&text))
                } else {
                    // Not a reply to the question in a group: it still waits.
                    self.state().questions.insert(key, question);
                    text
                }
            }
            _ => text,
        };
        self.dispatch(incoming, &text, transport).await;
    }

    async fn dispatch(&self, incoming: &Incoming, text: &str, transport: &impl Transport) {
        // A click is answered once, on every path: with a refusal's toast,
        // or at once otherwise.
        let settings = self.settings();
        let command = self.command_of(text);
        let denied = command
            .as_ref()
            .filter(|(name, _)| commands::is_command(name))
            .is_some_and(|(name, _)| !settings.bot.authz.allows(name, incoming.from.id));
        let denial = words::pick(&words::DENIALS);
        if let Some(click) = &incoming.click {
            let toast = denied.then_some(denial);
            transport.answer_click(&click.query_id, toast).await;
        }
        let chat = incoming.chat.id;
        let (command, args) = match command {
            Some(command) => command,
            None if text.starts_with('/') => return,
            None => {
                self.not_a_command(incoming, text, transport).await;
                return;
            }
        };
        if !commands::is_command(&command) {
            let word = text.split_whitespace().next().unwrap_or_default();
            transport
                .send(
                    chat,
                    Message::new(format!("I don't get this '{}'...", words::esc(word))),
                )
                .await;
            transport.send(chat, basic::command_list()).await;
            return;
        }
        if denied {
            if incoming.click.is_none() {
                let mut message = Message::new(words::esc(denial));
                message.reply_to = incoming.message_id;
                transport.send(chat, message).await;
            }
            return;
        }
        let args = match shell::split(args) {
            Ok(args) => args,
            Err(message) => {
                transport.send(chat, Message::new(message)).await;
                return;
            }
        };
        let call = Call {
            engine: self,
            incoming,
            args,
            settings,
        };
        let reply = match command.as_str() {
            "start" => basic::start(&call, transport).await,
            "hello" => Some(basic::hello()),
            "getid" => basic::getid(&call, transport).await,
            "help" => Some(basic::help(&call.args)),
            "commands" => Some(basic::commands(&call.args)),
            "source" => Some(basic::source()),
            "version" => Some(basic::version()),
            "nay" => basic::nay(&call, transport).await,
            "list" => info::list(&call, transport).await,
            "status" => info::status(&call).await,
            "last" => info::last(&call).await,
            "watch" => info::watch(&call, transport).await,
            "notify" => notify::command(&call, transport).await,
            "stop" => control::stop(&call, transport).await,
            "shutdown" => control::shutdown(&call, transport).await,
            "force" => control::force(&call, transport).await,
            _ => unreachable!("every command is dispatched"),
        };
        if let Some(reply) = reply {
            transport.send(chat, reply).await;
        }
    }

    /// The command of `text` (lower case, without its `@bot`) and its
    /// arguments; `None` for text that is no command, or a command for
    /// another bot. While the bot's own name is not known yet, any `@name`
    /// is taken as its own.
    fn command_of<'t>(&self, text: &'t str) -> Option<(String, &'t str)> {
        let (word, args) = match text.split_once(char::is_whitespace) {
            Some((word, args)) => (word, args.trim()),
            None => (text, ""),
        };
        let command = word.strip_prefix('/')?;
        let command = match command.split_once('@') {
            Some((command, addressee)) => {
                let username = self.username.lock().expect("username").clone();
                match username {
                    Some(me) if !me.eq_ignore_ascii_case(addressee) => return None,
                    _ => command,
                }
            }
            None => command,
        };
        Some((command.to_lowercase(), args))
    }

    /// Text that is no command: answered only in a private chat.
    async fn not_a_command(&self, incoming: &Incoming, text: &str, transport: &impl Transport) {
        if !incoming.chat.private() || text.is_empty() {
            return;
        }
        let answer = if text.ends_with('!') {
            "What you say!"
        } else {
            "Say what?"
        };
        transport.send(incoming.chat.id, Message::new(answer)).await;
    }

    /// Asks `incoming`'s user a question; their answer runs `template` with
    /// the answer in place of `{}`.
    async fn ask(
        &self,
        incoming: &Incoming,
        prompt: &str,
        greeting: Option<&str>,
        template: String,
        transport: &impl Transport,
    ) {
        let user = &incoming.from;
        let (text, markup) = if incoming.chat.private() {
            let text = match greeting {
                Some(greeting) => format!("{greeting}, now {prompt}..."),
                None => format!("{}...", capitalized(prompt)),
            };
            (text, None)
        } else {
            match &user.username {
                Some(username) => {
                    let at = words::esc(&format!("@{username}"));
                    let text = match greeting {
                        Some(greeting) => format!("{greeting} {at}, now {prompt}..."),
                        None => format!("{at}, now {prompt}..."),
                    };
                    (text, Some(Markup::ForceReply))
                }
                None => {
                    let text = match greeting {
                        Some(greeting) => {
                            format!("{greeting}, now reply to this message and {prompt}...")
                        }
                        None => format!("Reply to this message and {prompt}..."),
                    };
                    (text, None)
                }
            }
        };
        let message = Message {
            html: text,
            markup,
            ..Message::default()
        };
        let sent = transport.send(incoming.chat.id, message).await;
        let prompt = if incoming.chat.private() { None } else { sent };
        self.state().questions.insert(
            (incoming.chat.id, user.id),
            Question {
                template,
                asked: Instant::now(),
                prompt,
            },
        );
    }

    /// The configured builders this bot speaks of (its `tags`), with ids.
    fn builders(&self, settings: &Settings) -> Builders {
        let view = self.control.view();
        view.builders
            .iter()
            .filter(|(_, builder)| tagged(settings, &builder.tags))
            .cloned()
            .collect()
    }

    fn build_url(&self, settings: &Settings, builderid: i64, number: i64) -> String {
        format!(
            "{}/#/builders/{builderid}/builds/{number}",
            settings.config.buildbot_url.trim_end_matches('/')
        )
    }
}

/// Builders with their ids.
type Builders = Vec<(i64, Arc<crate::config::BuilderConfig>)>;

/// Whether a builder with `tags` is among those the bot speaks of.
fn tagged(settings: &Settings, tags: &[String]) -> bool {
    settings
        .bot
        .tags
        .as_ref()
        .is_none_or(|wanted| wanted.iter().any(|t| tags.contains(t)))
}

/// `template` with its last `{}` replaced by `answer` (earlier ones may be
/// part of a name or a value).
fn fill(template: &str, answer: &str) -> String {
    match template.rfind("{}") {
        Some(at) => format!("{}{answer}{}", &template[..at], &template[at + 2..]),
        None => template.to_string(),
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One command being run.
struct Call<'a> {
    engine: &'a Engine,
    incoming: &'a Incoming,
    args: Vec<String>,
    settings: Arc<Settings>,
}

impl Call<'_> {
    fn chat(&self) -> i64 {
        self.incoming.chat.id
    }

    /// The words of the arguments.
    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}
