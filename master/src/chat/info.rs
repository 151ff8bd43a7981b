//! The commands that read: `/list`, `/status`, `/last`, `/watch`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::words::{self, ago, bold, code, esc, link};
use super::{Builders, Button, Call, Message, Transport};
use crate::config::BuilderConfig;
use crate::db::LastBuild;
use crate::events::BuildInfo;
use crate::results::Results;

/// How many changes `/list all changes` lists without asking first.
const CHANGES_WITHOUT_ASKING: u64 = 50;

/// The most changes one `/list` lists.
const MAX_CHANGES: u64 = 200;

/// The names of the connected workers.
fn connected(call: &Call<'_>) -> Vec<String> {
    call.engine
        .control
        .view()
        .workers
        .iter()
        .map(|(name, _)| name.clone())
        .collect()
}

fn online(builder: &BuilderConfig, connected: &[String]) -> bool {
    builder.workernames.iter().any(|w| connected.contains(w))
}

pub async fn list(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    let args = call.args();
    if args.is_empty() {
        let rows = vec![
            vec![
                Button::command("👷\u{fe0f} Builders", "/list builders"),
                Button::command("👷\u{fe0f} (including old ones)", "/list all builders"),
            ],
            vec![
                Button::command("⚙ Workers", "/list workers"),
                Button::command("⚙ (including old ones)", "/list all workers"),
            ],
            vec![Button::command("📄 Changes (last 10)", "/list changes")],
        ];
        return Some(Message::new("What do you want to list?").keyboard(rows));
    }
    let (count, target) = match args.as_slice() {
        [target] => (Count::Some(10), *target),
        ["all", target] => (Count::All, *target),
        [n, target] => match n.parse::<u64>() {
            Ok(n) if n > 0 => (Count::Some(n.min(MAX_CHANGES)), *target),
            _ => return Some(try_list()),
        },
        _ => return Some(try_list()),
    };
    let all = count == Count::All;
    match target.to_lowercase().as_str() {
        "builders" | "builder" => Some(list_builders(call, all)),
        "workers" | "worker" => Some(list_workers(call, all)),
        "changes" | "change" => list_changes(call, count, transport).await,
        _ => Some(try_list()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    All,
    Some(u64),
}

fn try_list() -> Message {
    Message::new("Try '/list [all|N] builders|workers|changes'.")
}

fn list_builders(call: &Call<'_>, all: bool) -> Message {
    let connected = connected(call);
    let mut text = format!("I found the following {}:", bold("builders"));
    for (_, builder) in call.engine.builders(&call.settings) {
        if online(&builder, &connected) {
            text.push_str(&format!("\n{}", code(&builder.name)));
        } else if all {
            text.push_str(&format!("\n{} ❌", code(&builder.name)));
        }
    }
    Message::new(text)
}

fn list_workers(call: &Call<'_>, all: bool) -> Message {
    let connected = connected(call);
    let builders = call.engine.builders(&call.settings);
    let mut text = format!("I found the following {}:", bold("workers"));
    for worker in &call.settings.config.workers {
        let serves = builders
            .iter()
            .any(|(_, b)| b.workernames.contains(&worker.name));
        if serves {
            text.push_str(&format!("\n{}", code(&worker.name)));
            if !connected.contains(&worker.name) {
                text.push_str(" ⚠\u{fe0f}");
            }
        } else if all {
            text.push_str(&format!("\n{} ❌", code(&worker.name)));
        }
    }
    Message::new(text)
}

async fn list_changes(
    call: &Call<'_>,
    count: Count,
    transport: &impl Transport,
) -> Option<Message> {
    let chat = call.chat();
    let notice = transport
        .send(chat, Message::new("⏳ Getting your changes..."))
        .await;
    let limit = match count {
        Count::All => CHANGES_WITHOUT_ASKING + 1,
        Count::Some(n) => n,
    };
    let found = call.engine.db.recent_changes(limit).await;
    if let Some(notice) = notice {
        transport.delete(chat, notice).await;
    }
    let (total, changes) = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::error!("cannot read the changes: {e}");
            return Some(Message::new(
                "I cannot read the changes now (see the master's log).",
            ));
        }
    };
    if count == Count::All && total > CHANGES_WITHOUT_ASKING {
        let most = total.min(MAX_CHANGES);
        return Some(
            Message::new(format!(
                "I found {total} changes. Do you really want me to list {}?",
                if most == total {
                    "them all".to_string()
                } else {
                    format!("the last {most}")
                }
            ))
            .keyboard(vec![vec![
                Button::command(
                    "‼ Yes, flood me with all of them!",
                    format!("/list {most} changes"),
                ),
                Button::command(
                    "✅ No, just show last 50",
                    format!("/list {CHANGES_WITHOUT_ASKING} changes"),
                ),
            ]]),
        );
    }
    if changes.is_empty() {
        return Some(Message::new("There are no changes yet."));
    }
    let blocks: Vec<String> = changes
        .iter()
        .map(|change| {
            let title = change.comments.lines().next().unwrap_or_default();
            let title = match &change.revlink {
                Some(url) if !url.is_empty() => link(title, url),
                _ => esc(title),
            };
            let field = |label: &str, value: &str| format!("\n<i>{label}</i>: {}", esc(value));
            let mut block = title;
            block.push_str(&field("Author", &change.author));
            block.push_str(&field(
                "Date",
                &crate::clock::utc_minute(change.when_timestamp),
            ));
            block.push_str(&field("Repository", &change.repository));
            block.push_str(&field(
                "Branch",
                change.branch.as_deref().unwrap_or_default(),
            ));
            block.push_str(&field(
                "Revision",
                change.revision.as_deref().unwrap_or_default(),
            ));
            block
        })
        .collect();
    Some(Message::new(format!(
        "I found the following recent {}:\n\n{}",
        bold("changes"),
        blocks.join("\n\n")
    )))
}

/// The builders a `/status` or `/last` names, and whether one was named;
/// or the message to send instead.
fn chosen_builders(call: &Call<'_>, usage: &str) -> Result<(Builders, bool), Message> {
    let builders = call.engine.builders(&call.settings);
    let connected = connected(call);
    match call.args().as_slice() {
        [] => Ok((
            builders
                .into_iter()
                .filter(|(_, b)| online(b, &connected))
                .collect(),
            false,
        )),
        ["all"] => Ok((builders, false)),
        [name] => match builders.into_iter().find(|(_, b)| b.name == *name) {
            Some(builder) => Ok((vec![builder], true)),
            None => Err(Message::new(format!("no such builder '{}'", esc(name)))),
        },
        _ => Err(Message::new(format!("Try '/{usage} <i>builder</i>'."))),
    }
}

/// The running builds by builder id, oldest first.
async fn running_by_builder(call: &Call<'_>) -> BTreeMap<i64, Vec<Arc<BuildInfo>>> {
    let mut running: BTreeMap<i64, Vec<Arc<BuildInfo>>> = BTreeMap::new();
    for build in call.engine.control.running_builds(None).await {
        running
            .entry(build.builder.builderid)
            .or_default()
            .push(build);
    }
    for builds in running.values_mut() {
        builds.sort_by_key(|b| b.number);
    }
    running
}

async fn last_builds(
    call: &Call<'_>,
    builders: &[(i64, Arc<BuilderConfig>)],
) -> BTreeMap<i64, LastBuild> {
    let ids = builders.iter().map(|(id, _)| *id).collect();
    call.engine.db.last_builds(ids).await.unwrap_or_else(|e| {
        tracing::error!("cannot read the last builds: {e}");
        BTreeMap::new()
    })
}

pub async fn status(call: &Call<'_>) -> Option<Message> {
    let (builders, long) = match chosen_builders(call, "status") {
        Ok(chosen) => chosen,
        Err(message) => return Some(message),
    };
    if builders.is_empty() {
        return Some(Message::new("No builders online."));
    }
    let connected = connected(call);
    let running = running_by_builder(call).await;
    let running_ids: Vec<i64> = running.values().flatten().map(|b| b.buildid).collect();
    let steps = call
        .engine
        .db
        .current_steps(running_ids)
        .await
        .unwrap_or_default();
    let last = last_builds(call, &builders).await;
    let now = crate::clock::now();
    let lines: Vec<String> = builders
        .iter()
        .map(|(id, builder)| {
            let head = format!("{}: ", code(&builder.name));
            if let Some(builds) = running.get(id) {
                let described: Vec<String> = builds
                    .iter()
                    .map(|b| {
                        let url = call.engine.build_url(&call.settings, *id, b.number);
                        let step = match steps.get(&b.buildid) {
                            Some(step) => format!("({})", esc(step)),
                            None => "(no current step)".into(),
                        };
                        format!("build {} {step}", link(&format!("#{}", b.number), &url))
                    })
                    .collect();
                return format!("{head}running 🌀: {}", described.join(", "));
            }
            if !online(builder, &connected) {
                return format!("{head}offline ❌");
            }
            let mut line = format!("{head}idle 💤");
            if let Some(build) = last.get(id) {
                let results = build.results.unwrap_or(Results::Exception);
                let (description, mark) = words::result(results);
                let since = build
                    .complete_at
                    .map_or_else(|| "??".to_string(), |at| ago(now - at));
                line.push_str(&format!("  last build {since} ago"));
                if long {
                    line.push_str(&format!(", {description}{mark}"));
                    if results != Results::Success && !build.state_string.is_empty() {
                        line.push_str(&format!(": {}", esc(&build.state_string)));
                    }
                } else {
                    line.push_str(mark);
                }
            }
            line
        })
        .collect();
    Some(Message::new(lines.join("\n")))
}

pub async fn last(call: &Call<'_>) -> Option<Message> {
    let (builders, _) = match chosen_builders(call, "last") {
        Ok(chosen) => chosen,
        Err(message) => return Some(message),
    };
    if builders.is_empty() {
        return Some(Message::new("No builders online."));
    }
    let last = last_builds(call, &builders).await;
    let now = crate::clock::now();
    let lines: Vec<String> = builders
        .iter()
        .map(|(id, builder)| {
            let head = code(&builder.name);
            let Some(build) = last.get(id) else {
                return format!("{head}: no builds yet");
            };
            let results = build.results.unwrap_or(Results::Exception);
            let (description, mark) = words::result(results);
            let since = build
                .complete_at
                .map_or_else(|| "??".to_string(), |at| ago(now - at));
            let url = call.engine.build_url(&call.settings, *id, build.number);
            let mut line = format!(
                "{head}: last build {} {description}{mark} ({since} ago)",
                link(&format!("#{}", build.number), &url)
            );
            if results != Results::Success && !build.state_string.is_empty() {
                line.push_str(&format!(": {}", esc(&build.state_string)));
            }
            line
        })
        .collect();
    Some(Message::new(lines.join("\n")))
}

pub async fn watch(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    let running = running_by_builder(call).await;
    let builders = call.engine.builders(&call.settings);
    match call.args().as_slice() {
        [] => {
            let rows: Vec<Vec<Button>> = builders
                .iter()
                .filter(|(id, _)| running.contains_key(id))
                .map(|(_, b)| {
                    vec![Button::command(
                        format!("🔎 {}", b.name),
                        format!("/watch {}", super::shell::quote(&b.name)),
                    )]
                })
                .collect();
            if rows.is_empty() {
                return Some(Message::new("There are no currently running builds."));
            }
            Some(Message::new("Which builder do you want to watch?").keyboard(rows))
        }
        [name] => {
            let Some((id, builder)) = builders.iter().find(|(_, b)| b.name == *name) else {
                return Some(Message::new(format!("no such builder '{}'", esc(name))));
            };
            let Some(builds) = running.get(id) else {
                return Some(Message::new("There are no currently running builds."));
            };
            for build in builds {
                call.engine
                    .state()
                    .watches
                    .entry(build.buildid)
                    .or_default()
                    .insert((call.chat(), call.incoming.chat.topic));
                let url = call.engine.build_url(&call.settings, *id, build.number);
                transport
                    .send(
                        call.chat(),
                        Message::new(format!(
                            "Watching build {} of {} until it finishes...",
                            link(&format!("#{}", build.number), &url),
                            code(&builder.name)
                        )),
                    )
                    .await;
            }
            None
        }
        _ => Some(Message::new("Try '/watch <i>builder</i>'.")),
    }
}
