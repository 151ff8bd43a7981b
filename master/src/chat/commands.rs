//! The commands the bot knows: names, descriptions (for `/help`,
//! `/commands botfather` and `setMyCommands`) and usages (for `/help CMD`).

pub use crate::config::telegram::{is_command, is_dangerous, COMMANDS};

/// The one-line description of a command; `start` has none and is listed
/// nowhere.
pub fn description(name: &str) -> Option<&'static str> {
    Some(match name {
        "commands" => "list available commands",
        "force" => "force a build",
        "getid" => "get user and chat ID",
        "hello" => "say hello",
        "help" => "give help for a command or one of it's arguments",
        "last" => "list last build status for a builder",
        "list" => "list configured builders or workers",
        "nay" => "forget the current command",
        "notify" => "notify me about build events",
        "shutdown" => "shutdown the buildbot master",
        "source" => "the source code for buildbot",
        "status" => "list status of a builder (or all builders)",
        "stop" => "stop a running build",
        "version" => "show buildbot version",
        "watch" => "announce the completion of an active build",
        _ => return None,
    })
}

/// The commands with a description, as `setMyCommands` and `/commands
/// botfather` give them.
pub fn described() -> impl Iterator<Item = (&'static str, &'static str)> {
    COMMANDS
        .iter()
        .filter_map(|name| description(name).map(|d| (*name, d)))
}

/// The usage of `words` (a command and perhaps its arguments), as `/help`
/// shows it after "Usage: ".
pub fn usage(words: &[&str]) -> Option<&'static str> {
    Some(match words {
        ["commands"] => "commands - List available commands",
        ["force"] => "force - Force a build",
        ["getid"] => "getid - get user and chat ID that can be put in the master configuration file",
        ["help"] => "help [<i>command</i> <i>arg</i> [<i>subarg</i> ...]] - Give help for <i>command</i> or one of it's arguments",
        ["last"] => "last [<i>which</i>] - list last build status for builder <i>which</i>",
        ["list"] => "list [all|N] builders|workers|changes - list configured builders, workers, or N recent changes",
        ["nay"] => "nay - never mind the command we are currently discussing",
        ["notify"] => "notify on|off|on-quiet|off-quiet|list [<i>EVENT</i>] ... - notify me about build events;  event should be one or more of: 'started', 'finished', 'success', 'failure', 'warnings', 'exception', 'cancelled', 'problem', 'recovery', 'better', 'worse', or 'worker'",
        ["shutdown"] => "shutdown check|start|stop|now - shutdown the buildbot master",
        ["shutdown", "check"] => "shutdown check - check if the buildbot master is running or shutting down",
        ["shutdown", "start"] => "shutdown start - start a clean shutdown",
        ["shutdown", "stop"] => "shutdown cancel - stop the clean shutdown",
        ["shutdown", "now"] => "shutdown now - shutdown immediately without waiting for the builders to finish",
        ["source"] => "source - the source code for Buildbot",
        ["status"] => "status [<i>which</i>] - list status of a builder (or all builders)",
        ["stop"] => "stop build <i>which</i> <i>reason</i> - Stop a running build",
        ["watch"] => "watch <i>which</i> - announce the completion of an active build",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifteen_commands_are_described_alphabetically_without_start() {
        let described: Vec<&str> = described().map(|(name, _)| name).collect();
        assert_eq!(described.len(), 15);
        assert!(!described.contains(&"start"));
        let mut sorted = described.clone();
        sorted.sort();
        assert_eq!(described, sorted);
    }
}
