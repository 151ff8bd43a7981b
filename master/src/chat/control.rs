//! The dangerous commands: `/stop`, `/shutdown` and `/force`. Each goes
//! through the same control paths as the REST API's actions, and each asks
//! before it acts: a typed command with every argument is its own answer.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::shell::quote;
use super::words::{code, esc, link};
use super::{tagged, Button, Call, Message, Transport};
use crate::config::force::{ForceForm, Parameter};
use crate::config::{SchedulerConfig, SchedulerKind};
use crate::control::{ControlError, ShutdownAction, ShutdownState};
use crate::events::BuildInfo;

const NOTHING_RUNNING: &str = "There are no currently running builds.";

/// The running builds of the builders the bot speaks of, oldest first.
async fn running(call: &Call<'_>) -> Vec<Arc<BuildInfo>> {
    let mut builds: Vec<Arc<BuildInfo>> = call
        .engine
        .control
        .running_builds(None)
        .await
        .into_iter()
        .filter(|b| tagged(&call.settings, &b.builder.tags))
        .collect();
    builds.sort_by_key(|b| b.buildid);
    builds
}

/// `/stop`, `/stop build B`, `/stop build B REASON…`, and `/stop now
/// BUILDID REASON…` (the confirmed action).
pub async fn stop(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    let args = call.args();
    let builds = running(call).await;
    match args.as_slice() {
        [] | ["build"] => {
            let builders: std::collections::BTreeSet<&str> =
                builds.iter().map(|b| b.builder.name.as_str()).collect();
            if builders.is_empty() {
                return Some(Message::new(NOTHING_RUNNING));
            }
            let rows = builders
                .iter()
                .map(|name| {
                    vec![Button::command(
                        format!("🚫 {name}"),
                        format!("/stop build {}", quote(name)),
                    )]
                })
                .collect();
            Some(Message::new("Select builder to stop...").keyboard(rows))
        }
        ["build", builder] => {
            if !call
                .engine
                .builders(&call.settings)
                .iter()
                .any(|(_, b)| b.name == *builder)
            {
                return Some(no_such_builder(builder));
            }
            let prompt = format!("give me the reason to stop build on {}", code(builder));
            let template = format!("/stop build {} {{}}", quote(builder));
            call.engine
                .ask(call.incoming, &prompt, Some("Ok"), template, transport)
                .await;
            None
        }
        ["build", builder, reason @ ..] => {
            let builds: Vec<&Arc<BuildInfo>> = builds
                .iter()
                .filter(|b| b.builder.name == *builder)
                .collect();
            if builds.is_empty() {
                return Some(Message::new("Sorry, no build is currently running."));
            }
            let reason = reason.join(" ");
            let settings = &call.settings;
            let mut rows: Vec<Vec<Button>> = builds
                .iter()
                .map(|b| {
                    vec![Button::command(
                        format!("🚫 Stop build #{}", b.number),
                        format!("/stop now {} {}", b.buildid, quote(&reason)),
                    )]
                })
                .collect();
            rows.push(vec![Button::command("🔙 Never mind", "/nay")]);
            let listed: Vec<String> = builds
                .iter()
                .map(|b| {
                    let url = call
                        .engine
                        .build_url(settings, b.builder.builderid, b.number);
                    link(&format!("#{}", b.number), &url)
                })
                .collect();
            Some(
                Message::new(format!(
                    "Which build of {} do you want to stop ({})? The reason will be: {}",
                    code(builder),
                    listed.join(", "),
                    esc(&reason)
                ))
                .keyboard(rows),
            )
        }
        ["now", buildid, reason @ ..] => {
            take_buttons(call, transport).await;
            let build = buildid
                .parse::<i64>()
                .ok()
                .and_then(|id| builds.iter().find(|b| b.buildid == id));
            let Some(build) = build else {
                return Some(Message::new("That build is not running any more."));
            };
            let reason = format!(
                "stopped: by {}: {}",
                call.incoming.from.describe(&call.incoming.chat),
                reason.join(" ")
            );
            let url = call
                .engine
                .build_url(&call.settings, build.builder.builderid, build.number);
            let header = format!(
                "Build {} of {}",
                link(&format!("#{}", build.number), &url),
                code(&build.builder.name)
            );
            Some(Message::new(
                match call.engine.control.stop_build(build.buildid, &reason).await {
                    Ok(()) => format!("{header} interrupted."),
                    Err(e) => format!("{header} cannot be stopped: {}", esc(&e.to_string())),
                },
            ))
        }
        _ => Some(Message::new(
            "Try '/stop build <i>builder</i> <i>reason</i>'.",
        )),
    }
}

/// Takes the keyboard off the message whose button was clicked: a
/// confirmation is given once.
async fn take_buttons(call: &Call<'_>, transport: &impl Transport) {
    if let Some(message_id) = call.incoming.click.as_ref().and_then(|c| c.message_id) {
        transport.edit_keyboard(call.chat(), message_id, None).await;
    }
}

fn no_such_builder(name: &str) -> Message {
    Message::new(format!("no such builder '{}'", esc(name)))
}

/// `/shutdown [check|start|stop|now]`; "now" asks first.
pub async fn shutdown(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    let control = &call.engine.control;
    let args = call.args();
    let Some(word) = args.first() else {
        let state = control.shutdown(ShutdownAction::Status).await.state;
        let now = Button::command("‼\u{fe0f} Shutdown Now", "/shutdown now");
        return Some(if state == ShutdownState::Draining {
            Message::new("Buildbot is currently shutting down.\n\nWhat do you want to do?")
                .keyboard(vec![vec![
                    Button::command("🔙 Stop Shutdown", "/shutdown stop"),
                    now,
                ]])
        } else {
            Message::new("What do you want to do?").keyboard(vec![vec![
                Button::command("↘\u{fe0f} Begin Shutdown", "/shutdown start"),
                now,
            ]])
        });
    };
    let text = match (*word, args.len()) {
        ("check", 1) => match control.shutdown(ShutdownAction::Status).await.state {
            ShutdownState::Running => "Status: buildbot is running.",
            _ => "Status: buildbot is shutting down.",
        },
        ("start", 1) => {
            let before = control.shutdown(ShutdownAction::Status).await.state;
            if before == ShutdownState::Running {
                control.shutdown(ShutdownAction::Start).await;
                "Starting clean shutdown."
            } else {
                "Shutdown already started."
            }
        }
        ("stop", 1) => {
            let before = control.shutdown(ShutdownAction::Status).await.state;
            if before == ShutdownState::Draining {
                control.shutdown(ShutdownAction::Cancel).await;
                "Stopping clean shutdown."
            } else {
                "There is no ongoing shutdown to stop."
            }
        }
        ("now", 1) => {
            return Some(
                Message::new("Stop the master now? Running builds will be interrupted.").keyboard(
                    vec![vec![
                        Button::command("‼\u{fe0f} Yes, stop it now", "/shutdown now confirmed"),
                        Button::command("🔙 No", "/nay"),
                    ]],
                ),
            );
        }
        ("now", 2) if args[1] == "confirmed" => {
            take_buttons(call, transport).await;
            // Said before the master goes: the answer must leave first.
            let chat = call.chat();
            let control = control.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                control.shutdown(ShutdownAction::Now).await;
            });
            tracing::info!(
                "chat {chat}: {} asked the master to stop now",
                call.incoming.from.describe(&call.incoming.chat)
            );
            "Stopping buildbot."
        }
        _ => "Try '/shutdown check|start|stop|now'.",
    };
    Some(Message::new(text))
}

/// The force schedulers the bot offers, with the builders it speaks of.
fn force_schedulers(call: &Call<'_>) -> Vec<(SchedulerConfig, Vec<String>)> {
    let builders: Vec<String> = call
        .engine
        .builders(&call.settings)
        .iter()
        .map(|(_, b)| b.name.clone())
        .collect();
    call.settings
        .config
        .schedulers
        .iter()
        .filter(|s| matches!(s.kind, SchedulerKind::Force(_)))
        .map(|s| {
            let names = s
                .builder_names
                .iter()
                .filter(|b| builders.contains(b))
                .cloned()
                .collect::<Vec<_>>();
            (s.clone(), names)
        })
        .filter(|(_, names)| !names.is_empty())
        .collect()
}

fn try_force(detail: Option<&str>) -> Message {
    Message::new(match detail {
        None => "Try '/force' and follow the instructions".to_string(),
        Some(detail) => format!("Try '/force' and follow the instructions ({detail})"),
    })
}

/// What a parameter shows: its value in `params`, else its default.
fn shown_value(parameter: &Parameter, params: &[(String, String)]) -> String {
    if let Some((_, value)) = params.iter().find(|(n, _)| *n == parameter.name) {
        return value.trim().to_string();
    }
    match &parameter.default {
        Value::String(s) => s.trim().to_string(),
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// `name=value` pairs, quoted, as the buttons carry them.
fn params_text(params: &[(String, String)], except: Option<&str>) -> String {
    params
        .iter()
        .filter(|(n, _)| Some(n.as_str()) != except)
        .map(|(n, v)| quote(&format!("{n}={v}")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/force [scheduler] [config|ask|build] [parameter] [builder] [name=value…]`:
/// a guided flow over the force schedulers' parameters.
pub async fn force(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    let schedulers = force_schedulers(call);
    if schedulers.is_empty() {
        return Some(Message::new(
            "no force schedulers configured for use by /force",
        ));
    }
    let mut args: std::collections::VecDeque<&str> = call.args().into_iter().collect();
    let named = args
        .front()
        .and_then(|first| schedulers.iter().find(|(s, _)| s.name == *first));
    let (scheduler, builders) = match (named, schedulers.as_slice()) {
        (Some(found), _) => {
            args.pop_front();
            found
        }
        (None, [only]) => only,
        (None, _) if args.is_empty() => {
            let rows = schedulers
                .iter()
                .map(|(s, _)| {
                    vec![Button::command(
                        &s.name,
                        format!("/force {}", quote(&s.name)),
                    )]
                })
                .collect();
            return Some(
                Message::new("Which force scheduler do you want to activate?").keyboard(rows),
            );
        }
        (None, _) => {
            return Some(try_force(Some(&format!(
                "no force scheduler {}",
                esc(args[0])
            ))))
        }
    };
    let SchedulerKind::Force(form) = &scheduler.kind else {
        unreachable!("only force schedulers are offered")
    };
    let task = match args.front() {
        Some(&word) if ["config", "ask", "build"].contains(&word) => {
            args.pop_front();
            word
        }
        _ => "config",
    };
    if let (Some(click), true) = (&call.incoming.click, task != "config") {
        if let Some(message_id) = click.message_id {
            transport.edit_keyboard(call.chat(), message_id, None).await;
        }
    }
    let asked = if task == "ask" {
        match args.pop_front() {
            Some(name) => Some(name),
            None => return Some(try_force(None)),
        }
    } else {
        None
    };
    let Some(builder) = args.pop_front() else {
        // `ask` keeps the parameter it asks for.
        let task = match asked {
            Some(name) => format!("ask {}", quote(name)),
            None => task.to_string(),
        };
        let rows = builders
            .iter()
            .map(|b| {
                vec![Button::command(
                    b,
                    format!("/force {} {task} {}", quote(&scheduler.name), quote(b)),
                )]
            })
            .collect();
        return Some(Message::new("Which builder do you want to start?").keyboard(rows));
    };
    if !builders.iter().any(|b| b == builder) {
        return Some(try_force(Some(&format!(
            "{} not configured for <i>{}</i> scheduler",
            code(builder),
            esc(&scheduler.name)
        ))));
    }
    let fields: Vec<&Parameter> = form
        .parameters()
        .filter(|p| p.name != "username" && !p.fixed)
        .collect();
    let mut params: Vec<(String, String)> = Vec::new();
    for token in args {
        let Some((name, value)) = token.split_once('=') else {
            return Some(try_force(Some(&format!(
                "'{}' is not name=value",
                esc(token)
            ))));
        };
        if !fields.iter().any(|f| f.name == name) {
            return Some(try_force(Some(&format!("no parameter '{}'", esc(name)))));
        }
        params.retain(|(n, _)| n != name);
        params.push((name.to_string(), value.to_string()));
    }
    let missing: Vec<&str> = fields
        .iter()
        .filter(|f| f.required && shown_value(f, &params).is_empty())
        .map(|f| f.name.as_str())
        .collect();
    if let Some(name) = asked {
        let Some(field) = fields.iter().find(|f| f.name == name) else {
            return Some(try_force(Some(&format!("no parameter '{}'", esc(name)))));
        };
        let others = params_text(&params, Some(name));
        let template = format!(
            "/force {} config {} {others} {name}={{}}",
            quote(&scheduler.name),
            quote(builder)
        );
        let prompt = format!(
            "enter the new value for the {}",
            esc(&field.name.replace('_', " ").to_lowercase())
        );
        call.engine
            .ask(call.incoming, &prompt, None, template, transport)
            .await;
        return None;
    }
    if task == "build" && missing.is_empty() {
        return Some(submit(call, scheduler, form, builder, &params).await);
    }
    Some(config_screen(
        call, scheduler, builder, &fields, &params, &missing,
    ))
}

/// The parameters and what can be done with them.
fn config_screen(
    call: &Call<'_>,
    scheduler: &SchedulerConfig,
    builder: &str,
    fields: &[&Parameter],
    params: &[(String, String)],
    missing: &[&str],
) -> Message {
    let user = &call.incoming.from;
    let name = format!(
        "{} {}",
        user.first_name,
        user.last_name.as_deref().unwrap_or_default()
    );
    let mut text = format!(
        "{}, you are about to start a new build on {}!",
        esc(name.trim()),
        code(builder)
    );
    if !fields.is_empty() {
        text.push_str("\n\nThe current build parameters are:");
        for field in fields {
            text.push_str(&format!(
                "\n    {} {}",
                esc(&field.label),
                code(&shown_value(field, params))
            ));
            if missing.contains(&field.name.as_str()) {
                text.push_str(" ⚠\u{fe0f}");
            }
        }
    }
    text.push_str("\n\nWhat do you want to do?");
    if !missing.is_empty() {
        text.push_str(" You must set values for all parameters marked with ⚠\u{fe0f}");
    }
    let all = params_text(params, None);
    let mut rows: Vec<Vec<Button>> = fields
        .iter()
        .map(|field| {
            let value = shown_value(field, params);
            let verb = if value.is_empty() || value == "0" || value == "false" {
                "Set"
            } else {
                "Change"
            };
            let mark = if missing.contains(&field.name.as_str()) {
                "⚠\u{fe0f} "
            } else {
                ""
            };
            vec![Button::command(
                format!("{mark}{verb} {}", field.label),
                format!(
                    "/force {} ask {} {} {all}",
                    quote(&scheduler.name),
                    quote(&field.name),
                    quote(builder)
                ),
            )]
        })
        .collect();
    if missing.is_empty() {
        rows.push(vec![Button::command(
            "🚀 Start Build",
            format!(
                "/force {} build {} {all}",
                quote(&scheduler.name),
                quote(builder)
            ),
        )]);
    }
    Message::new(text).keyboard(rows)
}

/// Forces the build, owned by the user who asked.
async fn submit(
    call: &Call<'_>,
    scheduler: &SchedulerConfig,
    form: &ForceForm,
    builder: &str,
    params: &[(String, String)],
) -> Message {
    let mut submitted: Map<String, Value> = params
        .iter()
        .map(|(n, v)| (n.clone(), Value::String(v.clone())))
        .collect();
    if !form.username.fixed {
        submitted.insert(
            "username".into(),
            Value::String(call.incoming.from.describe(&call.incoming.chat)),
        );
    }
    match call
        .engine
        .control
        .force(&scheduler.name, Some(vec![builder.to_string()]), submitted)
        .await
    {
        Ok(_) => Message::new("Force build successfully requested."),
        Err(ControlError::Force(e)) => try_force(Some(&esc(&e.to_string()))),
        Err(e) => Message::new(format!(
            "The build could not be forced: {}",
            esc(&e.to_string())
        )),
    }
}
