//! `/notify`, and the notifications themselves: build starts and ends to
//! the chats that asked for them and to those that watch the build.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events::{self, announces_finished, EVENTS};
use super::words::{self, bold, code, esc, link};
use super::{tagged, Button, Call, Engine, Message, State, Transport};
use crate::events::BuildInfo;
use crate::results::Results;

/// A build end announced to a chat is not announced to it again for this
/// long (a watch and a subscription would say it twice).
const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Events switched on by a bare `/notify on`.
const DEFAULT_ON: [&str; 2] = ["started", "finished"];

fn try_notify() -> Message {
    Message::new("Try '/notify on|off|on-quiet|off-quiet|list <i>EVENT</i>...'.")
}

/// The events of a chat as `/notify list` says them.
fn listed(events: &BTreeSet<String>) -> Message {
    if events.is_empty() {
        return Message::new("🔕 No events are being notified.");
    }
    let lines: Vec<String> = events.iter().map(|e| format!("🔔 {}", bold(e))).collect();
    Message::new(format!(
        "The following events are being notified:\n{}",
        lines.join("\n")
    ))
}

/// A switch per event, two per row, and "Hide...".
fn keyboard(events: &BTreeSet<String>) -> Vec<Vec<Button>> {
    let mut rows: Vec<Vec<Button>> = EVENTS
        .chunks(2)
        .map(|pair| {
            pair.iter()
                .map(|event| {
                    let mut label = event.to_string();
                    label[..1].make_ascii_uppercase();
                    if events.contains(*event) {
                        Button::command(format!("{label} 🔔"), format!("/notify off-quiet {event}"))
                    } else {
                        Button::command(format!("{label} 🔕"), format!("/notify on-quiet {event}"))
                    }
                })
                .collect()
        })
        .collect();
    rows.push(vec![Button::command("Hide...", "/notify list")]);
    rows
}

pub async fn command(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    let chat = call.chat();
    let engine = call.engine;
    let args = call.args();
    let current = || {
        engine
            .state()
            .subscriptions
            .get(&chat)
            .cloned()
            .unwrap_or_default()
    };
    let Some((action, named)) = args.split_first() else {
        return Some(
            Message::new(
                "Here are available notifications and their current state. Click to turn them on/off.",
            )
            .keyboard(keyboard(&current())),
        );
    };
    if let Some(bad) = named.iter().find(|e| !events::is_event(e)) {
        return Some(Message::new(format!(
            "There is no event '{}'. Events: {}.",
            esc(bad),
            EVENTS.join(", ")
        )));
    }
    let clicked = call.incoming.click.as_ref().and_then(|c| c.message_id);
    let (quiet, events) = match *action {
        "list" => {
            if let Some(message_id) = clicked {
                transport.delete(chat, message_id).await;
            }
            return Some(listed(&current()));
        }
        "on" | "on-quiet" => {
            let added: Vec<&str> = if named.is_empty() {
                DEFAULT_ON.to_vec()
            } else {
                named.to_vec()
            };
            let events = engine.change_events(chat, |events| {
                events.extend(added.iter().map(|e| e.to_string()));
            });
            (*action == "on-quiet", events)
        }
        "off" | "off-quiet" => {
            let before = current();
            let not_on: Vec<&str> = named
                .iter()
                .copied()
                .filter(|e| !before.contains(*e))
                .collect();
            let events = engine.change_events(chat, |events| {
                if named.is_empty() {
                    events.clear();
                } else {
                    for event in named {
                        events.remove(*event);
                    }
                }
            });
            if !not_on.is_empty() && *action == "off" {
                let quoted: Vec<String> = not_on.iter().map(|e| bold(e)).collect();
                transport
                    .send(
                        chat,
                        Message::new(format!("{} was not enabled.", quoted.join(", "))),
                    )
                    .await;
            }
            (*action == "off-quiet", events)
        }
        _ => return Some(try_notify()),
    };
    engine.save_events(chat, events.clone()).await;
    if !quiet {
        return Some(listed(&events));
    }
    if let Some(message_id) = clicked {
        transport
            .edit_keyboard(chat, message_id, Some(keyboard(&events)))
            .await;
    }
    None
}

/// A build start or end, with what its announcement needs.
#[derive(Debug, Clone)]
pub struct BuildEvent {
    pub build: Arc<BuildInfo>,
    /// `false` for a start.
    pub finished: bool,
    /// The result of the builder's previous build, for a finish.
    pub previous: Option<Results>,
    /// The authors of the build's changes.
    pub blamelist: Vec<String>,
}

/// A worker that went missing, or came back.
#[derive(Debug, Clone)]
pub struct WorkerNotice {
    pub workerid: i64,
    pub name: String,
    /// `false` when it connected.
    pub missing: bool,
    /// When it was last seen (missing) or came (back), epoch seconds.
    pub at: i64,
}

impl Engine {
    /// Tells the chats about a worker: every chat with notifications on
    /// remembers a missing worker (and hears of its return later); those
    /// with `worker` on are told.
    pub async fn announce_worker(&self, notice: &WorkerNotice, transport: &impl Transport) {
        let settings = self.settings();
        let relevant = self
            .builders(&settings)
            .iter()
            .any(|(_, b)| b.workernames.contains(&notice.name));
        if !relevant {
            return;
        }
        let chats: Vec<(i64, bool)> = {
            let mut state = self.state();
            let State {
                subscriptions,
                missing,
                ..
            } = &mut *state;
            subscriptions
                .iter()
                .filter_map(|(chat, events)| {
                    let told = missing.entry(*chat).or_default();
                    let changed = if notice.missing {
                        told.insert(notice.workerid)
                    } else {
                        told.remove(&notice.workerid)
                    };
                    changed.then_some((*chat, events.contains("worker")))
                })
                .collect()
        };
        let worker = code(&notice.name);
        let text = if notice.missing {
            format!(
                "Worker {worker} is missing. It was seen last on {} UTC.",
                crate::clock::utc_minute(notice.at)
            )
        } else {
            format!("Worker {worker} is back online.")
        };
        for (chat, wanted) in chats {
            if let Err(e) = self
                .db
                .set_chat_missing_worker(self.bot_id, chat, notice.workerid, notice.missing)
                .await
            {
                tracing::error!("cannot record a missing worker for chat {chat}: {e}");
            }
            if wanted {
                transport.send(chat, Message::new(text.clone())).await;
            }
        }
    }

    /// Changes the events of `chat` with `change`; the new set.
    fn change_events(
        &self,
        chat: i64,
        change: impl FnOnce(&mut BTreeSet<String>),
    ) -> BTreeSet<String> {
        let mut state = self.state();
        let events = state.subscriptions.entry(chat).or_default();
        change(events);
        let events = events.clone();
        if events.is_empty() {
            state.subscriptions.remove(&chat);
        }
        events
    }

    /// Tells the chats that want to know about `event`.
    pub async fn announce(&self, event: &BuildEvent, transport: &impl Transport) {
        let settings = self.settings();
        let build = &event.build;
        if !tagged(&settings, &build.builder.tags) {
            self.state().watches.remove(&build.buildid);
            return;
        }
        let message = self.build_message(event);
        if !event.finished {
            let chats: Vec<i64> = self
                .state()
                .subscriptions
                .iter()
                .filter(|(_, events)| events.contains("started"))
                .map(|(chat, _)| *chat)
                .collect();
            for chat in chats {
                if let Some(id) = transport.send(chat, message.clone()).await {
                    self.state().started.insert((chat, build.buildid), id);
                }
            }
            return;
        }
        let results = build.results.unwrap_or(Results::Exception);
        let chats: BTreeMap<i64, Option<i64>> = {
            let mut state = self.state();
            let now = Instant::now();
            state
                .announced
                .retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
            let mut chats: BTreeMap<i64, Option<i64>> = state
                .subscriptions
                .iter()
                .filter(|(_, events)| announces_finished(events, results, event.previous))
                .map(|(chat, _)| (*chat, None))
                .collect();
            // A watch answers in the topic it was asked in.
            for (chat, topic) in state.watches.remove(&build.buildid).unwrap_or_default() {
                chats.insert(chat, topic);
            }
            chats.retain(|chat, _| !state.announced.contains_key(&(*chat, build.buildid)));
            for chat in chats.keys() {
                state.announced.insert((*chat, build.buildid), now);
            }
            chats
        };
        for (chat, topic) in chats {
            let started = self.state().started.remove(&(chat, build.buildid));
            let edited = match started {
                Some(message_id) => transport.edit(chat, message_id, message.clone()).await,
                None => false,
            };
            if !edited {
                let mut message = message.clone();
                message.topic = topic;
                transport.send(chat, message).await;
            }
        }
        // Starts announced to chats that did not want the end.
        self.state()
            .started
            .retain(|(_, buildid), _| *buildid != build.buildid);
    }

    /// "Build #3 of `b` started." or "Build #3 of `b` failed❗: …", with a
    /// button to the build's page.
    fn build_message(&self, event: &BuildEvent) -> Message {
        let settings = self.settings();
        let build = &event.build;
        let url = self.build_url(&settings, build.builder.builderid, build.number);
        let mut text = format!(
            "Build {} of {}",
            link(&format!("#{}", build.number), &url),
            code(&build.builder.name)
        );
        if settings.bot.use_revisions {
            let revisions: Vec<String> = build
                .sourcestamps
                .iter()
                .filter_map(|ss| ss.revision.as_deref())
                .map(|r| code(short_revision(r)))
                .collect();
            if !revisions.is_empty() {
                let noun = if revisions.len() == 1 {
                    "revision"
                } else {
                    "revisions"
                };
                text.push_str(&format!(" containing {noun} {}", revisions.join(", ")));
            }
        }
        if !event.finished {
            text.push_str(" started.");
        } else {
            let results = build.results.unwrap_or(Results::Exception);
            let (description, mark) = words::result(results);
            text.push_str(&format!(" {description}{mark}"));
            if results != Results::Success && !build.state_string.is_empty() {
                text.push_str(&format!(": {}", esc(&build.state_string)));
            } else {
                text.push('.');
            }
            let failed = matches!(results, Results::Failure | Results::Exception);
            if failed && settings.bot.show_blame_list && !event.blamelist.is_empty() {
                text.push_str(&format!(
                    "\nBlamelist: {}",
                    esc(&event.blamelist.join(", "))
                ));
            }
        }
        let message = Message::new(text);
        if linkable(&url) {
            message.keyboard(vec![vec![Button::url("Open build", url)]])
        } else {
            message
        }
    }
}

/// Whether Telegram takes `url` for a button: http(s) and a host with a dot
/// (it refuses `localhost` and other single names).
fn linkable(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return false;
    };
    let host = rest.split(['/', ':', '?', '#']).next().unwrap_or_default();
    host.contains('.') && !host.ends_with('.')
}

/// A hash revision cut to 7 characters; other revisions as they are.
fn short_revision(revision: &str) -> &str {
    let hash = revision.len() >= 12 && revision.chars().all(|c| c.is_ascii_hexdigit());
    if hash {
        &revision[..7]
    } else {
        revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notify_keyboard_switches_each_event() {
        let on: BTreeSet<String> = ["success".to_string(), "failure".to_string()].into();
        let rows = keyboard(&on);
        assert_eq!(rows.len(), 7);
        assert_eq!(
            rows[0][1],
            Button::command("Finished 🔕", "/notify on-quiet finished")
        );
        assert_eq!(
            rows[1][0],
            Button::command("Success 🔔", "/notify off-quiet success")
        );
        assert_eq!(rows[6], vec![Button::command("Hide...", "/notify list")]);
    }

    #[test]
    fn lists_say_what_is_on() {
        let on: BTreeSet<String> = ["started".to_string(), "finished".to_string()].into();
        assert_eq!(
            listed(&on).html,
            "The following events are being notified:\n🔔 <b>finished</b>\n🔔 <b>started</b>"
        );
        assert_eq!(
            listed(&BTreeSet::new()).html,
            "🔕 No events are being notified."
        );
        assert_eq!(short_revision("0b1c2d3e4f5061728394"), "0b1c2d3");
        assert_eq!(short_revision("v1.2"), "v1.2");
        assert!(linkable("https://ci.example.org/#/builders/1/builds/2"));
        assert!(!linkable("http://localhost:8080/#/builders/1/builds/2"));
        assert!(!linkable("ftp://ci.example.org/"));
    }
}
