//! `[telegram]`: the Telegram bot (Buildbot's `TelegramBot` reporter).
//!
//! The table is read after its secrets are resolved; every key is checked
//! here, `authz` keys and `notify_events` names included, so that a mistake
//! fails `checkconfig` with the table's location rather than the running bot.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::results::Results;

mod authz;

pub use authz::Authz;

/// Every command, alphabetically.
pub const COMMANDS: [&str; 16] = [
    "commands", "force", "getid", "hello", "help", "last", "list", "nay", "notify", "shutdown",
    "source", "start", "status", "stop", "version", "watch",
];

/// The commands that change what the master does: denied unless `authz`
/// allows them, and confirmed before they act.
const DANGEROUS: [&str; 3] = ["force", "shutdown", "stop"];

pub fn is_command(name: &str) -> bool {
    COMMANDS.contains(&name)
}

pub fn is_dangerous(name: &str) -> bool {
    DANGEROUS.contains(&name)
}

/// Every event, in the order `/notify` shows them.
pub const EVENTS: [&str; 12] = [
    "started",
    "finished",
    "success",
    "failure",
    "warnings",
    "exception",
    "problem",
    "recovery",
    "worse",
    "better",
    "cancelled",
    "worker",
];

/// The results whose `<a>To<B>` transitions (deprecated upstream) name an event.
const TRANSITION_RESULTS: [(&str, Results); 4] = [
    ("success", Results::Success),
    ("warnings", Results::Warnings),
    ("failure", Results::Failure),
    ("exception", Results::Exception),
];

/// Whether `name` is an event: one of [`EVENTS`] or a transition such as
/// `failureToSuccess`.
pub fn is_event(name: &str) -> bool {
    EVENTS.contains(&name) || transition(name).is_some()
}

/// The results of a `<a>To<B>` event.
pub fn transition(name: &str) -> Option<(Results, Results)> {
    let (from, to) = name.split_once("To")?;
    let result = |word: &str| {
        TRANSITION_RESULTS
            .iter()
            .find(|(name, _)| *name == word)
            .map(|(_, r)| *r)
    };
    let mut to = to.to_string();
    if let Some(first) = to.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    Some((result(from)?, result(&to)?))
}

/// The Bot API's address unless `api_url` says otherwise.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";

/// `[telegram]` as written, once its secrets are resolved.
#[derive(Deserialize)]
struct RawTelegram {
    bot_token: String,
    #[serde(default)]
    bot_username: Option<String>,
    #[serde(default)]
    chat_ids: Vec<ChatRef>,
    #[serde(default)]
    authz: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    notify_events: Vec<String>,
    #[serde(default = "yes")]
    show_blame_list: bool,
    #[serde(default)]
    use_revisions: bool,
    #[serde(default)]
    use_webhook: bool,
    #[serde(default)]
    certificate: Option<PathBuf>,
    #[serde(default)]
    poll_timeout: Option<u64>,
    #[serde(default)]
    retry_delay: Option<u64>,
    #[serde(default)]
    api_url: Option<String>,
    #[serde(default)]
    proxy: Option<String>,
}

fn yes() -> bool {
    true
}

/// A chat named in `chat_ids`: a numeric id, or a channel's `@username`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(untagged)]
pub enum ChatRef {
    Id(i64),
    Channel(String),
}

impl fmt::Display for ChatRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatRef::Id(id) => write!(f, "{id}"),
            ChatRef::Channel(name) => f.write_str(name),
        }
    }
}

/// `[telegram]`, checked.
#[derive(Clone, PartialEq)]
pub struct TelegramConfig {
    /// `<bot id>:<secret>`; never shown.
    pub bot_token: String,
    pub bot_username: Option<String>,
    pub chat_ids: Vec<ChatRef>,
    pub authz: Authz,
    /// Only builders with one of these tags, everywhere; all when `None`.
    pub tags: Option<Vec<String>>,
    /// The events switched on for `chat_ids` at every start.
    pub notify_events: BTreeSet<String>,
    pub show_blame_list: bool,
    pub use_revisions: bool,
    pub use_webhook: bool,
    /// A PEM file uploaded with `setWebhook`.
    pub certificate: Option<PathBuf>,
    /// Seconds a `getUpdates` long poll waits.
    pub poll_timeout: u64,
    /// Seconds before a failed Bot API call is tried again.
    pub retry_delay: u64,
    /// The Bot API's base address, without the trailing `/`.
    pub api_url: String,
    pub proxy: Option<String>,
    /// Where the table starts, for messages.
    pub location: String,
}

impl TelegramConfig {
    /// The bot's numeric id: the token's part before `:`. Saved state is
    /// keyed by it, so it survives a new token for the same bot, a renamed
    /// bot and a change of transport.
    pub fn bot_id(&self) -> i64 {
        bot_id(&self.bot_token).unwrap_or_default()
    }
}

/// Leaves the token out.
impl fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("bot_id", &self.bot_id())
            .field("bot_username", &self.bot_username)
            .field("chat_ids", &self.chat_ids)
            .field("use_webhook", &self.use_webhook)
            .field("api_url", &self.api_url)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Whether Telegram's own servers would deliver a webhook to `url`.
fn webhook_reachable(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|url| {
        url.scheme() == "https" && matches!(url.port_or_known_default(), Some(443 | 80 | 88 | 8443))
    })
}

fn bot_id(token: &str) -> Option<i64> {
    let (id, secret) = token.split_once(':')?;
    (!secret.is_empty()).then_some(())?;
    id.parse().ok().filter(|id| *id > 0)
}

/// Reads `[telegram]` (its secrets resolved into `value`); each problem is
/// one message naming the key.
pub fn telegram(
    value: &serde_json::Value,
    basedir: &Path,
    buildbot_url: &str,
    location: &str,
) -> Result<TelegramConfig, Vec<String>> {
    let raw: RawTelegram = buildmaster_plugin_api::options::parse(value)
        .map_err(|e| vec![e.replacen("options", "telegram", 1)])?;
    let mut errors = Vec::new();
    if bot_id(&raw.bot_token).is_none() {
        // Never the value: it is a secret.
        errors.push(
            "telegram.bot_token: not a bot token (BotFather gives '<bot id>:<secret>')".into(),
        );
    }
    for chat in &raw.chat_ids {
        if let ChatRef::Channel(name) = chat {
            let valid = name.len() > 1
                && name.starts_with('@')
                && name[1..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                errors.push(format!(
                    "telegram.chat_ids: '{name}' is neither a chat id nor a '@channelname'"
                ));
            }
        }
    }
    let authz = Authz::parse(&raw.authz).unwrap_or_else(|problems| {
        errors.extend(problems.into_iter().map(|p| format!("telegram.authz: {p}")));
        Authz::default()
    });
    for name in &raw.notify_events {
        if !is_event(name) {
            errors.push(format!(
                "telegram.notify_events: unknown event '{name}' (events: {})",
                EVENTS.join(", ")
            ));
        }
    }
    let poll_timeout = raw.poll_timeout.unwrap_or(120);
    if !(1..=600).contains(&poll_timeout) {
        errors.push("telegram.poll_timeout: must be from 1 to 600 seconds".into());
    }
    let retry_delay = raw.retry_delay.unwrap_or(30);
    if !(1..=3600).contains(&retry_delay) {
        errors.push("telegram.retry_delay: must be from 1 to 3600 seconds".into());
    }
    let api_url = raw
        .api_url
        .unwrap_or_else(|| DEFAULT_API_URL.into())
        .trim_end_matches('/')
        .to_string();
    if !api_url.starts_with("http://") && !api_url.starts_with("https://") {
        errors.push("telegram.api_url: must be an http:// or https:// URL".into());
    }
    if let Some(proxy) = &raw.proxy {
        if reqwest::Proxy::all(proxy).is_err() {
            errors.push("telegram.proxy: not a proxy URL".into());
        }
    }
    if raw.use_webhook && api_url == DEFAULT_API_URL && !webhook_reachable(buildbot_url) {
        errors.push(format!(
            "telegram.use_webhook: Telegram delivers to https:// addresses on port 443, 80, 88 or 8443 only, and buildbot_url is {buildbot_url}"
        ));
    }
    let certificate = raw.certificate.map(|file| basedir.join(file));
    if let Some(file) = &certificate {
        match std::fs::read_to_string(file) {
            Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => errors.push(format!(
                "telegram.certificate: {} is not a PEM certificate",
                file.display()
            )),
            Err(e) => errors.push(format!(
                "telegram.certificate: cannot read {}: {e}",
                file.display()
            )),
        }
        if !raw.use_webhook {
            errors.push("telegram.certificate: only used with use_webhook = true".into());
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(TelegramConfig {
        bot_token: raw.bot_token,
        bot_username: raw
            .bot_username
            .map(|u| u.trim_start_matches('@').to_string()),
        chat_ids: raw.chat_ids,
        authz,
        tags: raw.tags,
        notify_events: raw.notify_events.into_iter().collect(),
        show_blame_list: raw.show_blame_list,
        use_revisions: raw.use_revisions,
        use_webhook: raw.use_webhook,
        certificate,
        poll_timeout,
        retry_delay,
        api_url,
        proxy: raw.proxy,
        location: location.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: serde_json::Value) -> Result<TelegramConfig, Vec<String>> {
        telegram(
            &value,
            Path::new("/nonexistent"),
            "https://ci.example.org/",
            "master.toml:3",
        )
    }

    #[test]
    fn a_minimal_table_takes_upstreams_defaults() {
        let config = read(json!({"bot_token": "12345:secret"})).unwrap();
        assert_eq!(config.bot_id(), 12345);
        assert_eq!((config.poll_timeout, config.retry_delay), (120, 30));
        assert!(config.show_blame_list && !config.use_revisions && !config.use_webhook);
        assert_eq!(config.api_url, DEFAULT_API_URL);
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn telegrams_webhooks_need_an_https_address_on_its_ports() {
        let webhook = json!({"bot_token": "1:s", "use_webhook": true});
        let at = |url: &str| telegram(&webhook, Path::new("/"), url, "m:1");
        assert!(at("https://ci.example.org/").is_ok());
        assert!(at("https://ci.example.org:8443/").is_ok());
        assert!(at("http://ci.example.org/").unwrap_err()[0].contains("https://"));
        assert!(at("https://ci.example.org:8010/").is_err());
        let local =
            json!({"bot_token": "1:s", "use_webhook": true, "api_url": "http://127.0.0.1:8081"});
        assert!(telegram(&local, Path::new("/"), "http://ci.lan:8010/", "m:1").is_ok());
    }

    #[test]
    fn every_key_is_checked_and_no_token_is_shown() {
        let errors = read(json!({
            "bot_token": "not-a-token-s3cret",
            "chat_ids": [-100, "@good_channel", "bad channel"],
            "authz": {"getid": true, "force,dance": [1], "!": "x"},
            "notify_events": ["started", "failureToSuccess", "bogus"],
            "poll_timeout": 0,
            "api_url": "ftp://x",
        }))
        .unwrap_err();
        let all = errors.join("\n");
        assert!(!all.contains("s3cret"), "{all}");
        for expected in [
            "telegram.bot_token: not a bot token",
            "telegram.chat_ids: 'bad channel' is neither",
            "telegram.authz: unknown command 'dance' in key 'force,dance'",
            "telegram.authz: '!' must be true, false or a list of numeric user ids",
            "telegram.notify_events: unknown event 'bogus'",
            "telegram.poll_timeout: must be from 1 to 600 seconds",
            "telegram.api_url: must be an http:// or https:// URL",
        ] {
            assert!(all.contains(expected), "{expected} missing from:\n{all}");
        }
        assert_eq!(
            read(json!({"bot_token": "1:s", "usePolling": true})).unwrap_err(),
            vec!["telegram.usePolling: unknown option (known: bot_token, bot_username, chat_ids, authz, tags, notify_events, show_blame_list, use_revisions, use_webhook, certificate, poll_timeout, retry_delay, api_url, proxy)".to_string()]
        );
    }
}
