//! The commands that only talk: `/start`, `/hello`, `/getid`, `/help`,
//! `/commands`, `/source`, `/version`, `/nay`.

use std::time::Duration;

use super::words::{code, esc, pick, GREETINGS};
use super::{commands, Call, Message, Transport};

/// "Buildbot commands: /commands, /force, …"
pub fn command_list() -> Message {
    let names: Vec<String> = commands::COMMANDS.iter().map(|c| format!("/{c}")).collect();
    Message::new(format!("Buildbot commands: {}", names.join(", ")))
}

/// One "name - description" line per described command.
fn described_lines() -> String {
    commands::described()
        .map(|(name, description)| format!("{name} - {description}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn start(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    // Telegram sets the menu button of private chats only.
    if call.incoming.chat.private() {
        transport.show_menu(call.chat()).await;
    }
    transport.send(call.chat(), hello()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Some(help(&[]))
}

pub fn hello() -> Message {
    Message::new(pick(&GREETINGS))
}

pub async fn getid(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    let (user, chat) = (&call.incoming.from, &call.incoming.chat);
    if chat.private() {
        return Some(Message::new(format!(
            "Your ID is {}.",
            code(&user.id.to_string())
        )));
    }
    transport
        .send(
            chat.id,
            Message::new(format!(
                "{}, your ID is {}.",
                esc(&user.first_name),
                code(&user.id.to_string())
            )),
        )
        .await;
    Some(Message::new(format!(
        "This {} ID is {}.",
        esc(&chat.kind),
        code(&chat.id.to_string())
    )))
}

pub fn help(args: &[String]) -> Message {
    if args.is_empty() {
        return Message::new(esc(&described_lines()));
    }
    let words: Vec<&str> = args.iter().map(|a| a.trim_start_matches('/')).collect();
    if !commands::is_command(&words[0].to_lowercase()) {
        return Message::new(format!("There is no such command '{}'.", esc(words[0])));
    }
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    match commands::usage(&lower) {
        Some(usage) => Message::new(format!("Usage: /{usage}")),
        None => {
            let quoted: Vec<String> = words.iter().map(|w| format!("'{}'", esc(w))).collect();
            Message::new(format!("No usage info for {}", quoted.join(" ")))
        }
    }
}

pub fn commands(args: &[String]) -> Message {
    match args {
        [word] if word.eq_ignore_ascii_case("botfather") => Message::new(esc(&described_lines())),
        _ => command_list(),
    }
}

pub fn source() -> Message {
    Message::new(format!(
        "I am buildmaster {}, a build master that speaks Buildbot's protocols; my source comes with me.",
        env!("CARGO_PKG_VERSION")
    ))
}

pub fn version() -> Message {
    Message::new(format!(
        "This is buildmaster-{} at your service",
        env!("CARGO_PKG_VERSION")
    ))
}

pub async fn nay(call: &Call<'_>, transport: &impl Transport) -> Option<Message> {
    let clicked = call.incoming.click.as_ref().and_then(|c| c.message_id);
    let replied = call
        .incoming
        .reply_to
        .filter(|r| r.has_keyboard)
        .map(|r| r.message_id);
    // A "no" button takes its own keyboard away, so it cannot be said yes to later.
    if let Some(message_id) = clicked.or(replied) {
        transport.edit_keyboard(call.chat(), message_id, None).await;
    }
    Some(Message::new(if call.incoming.chat.private() {
        "Never mind...".to_string()
    } else {
        format!("Never mind, {}...", esc(&call.incoming.from.first_name))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn help_gives_usages_or_says_why_not() {
        assert_eq!(
            help(&words("list")).html,
            "Usage: /list [all|N] builders|workers|changes - list configured builders, workers, or N recent changes"
        );
        assert_eq!(help(&words("/list")).html, help(&words("list")).html);
        assert_eq!(
            help(&words("shutdown start")).html,
            "Usage: /shutdown start - start a clean shutdown"
        );
        assert_eq!(
            help(&words("nosuch")).html,
            "There is no such command 'nosuch'."
        );
        assert_eq!(
            help(&words("hello x")).html,
            "No usage info for 'hello' 'x'"
        );
        let all = help(&[]).html;
        assert_eq!(all.lines().count(), 15);
        assert!(all.starts_with("commands - list available commands\n"));
    }

    #[test]
    fn commands_lists_every_command_or_botfathers_lines() {
        assert_eq!(
            commands(&[]).html,
            "Buildbot commands: /commands, /force, /getid, /hello, /help, /last, /list, /nay, /notify, /shutdown, /source, /start, /status, /stop, /version, /watch"
        );
        assert_eq!(commands(&words("BotFather")).html.lines().count(), 15);
    }
}
