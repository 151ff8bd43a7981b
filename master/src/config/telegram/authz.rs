//! Who may run which command: Buildbot's chat `authz`, by numeric user id.
//!
//! A key is a command, several joined by commas, `''` (the default of the
//! harmless commands), `'!'` (the default of the dangerous ones) or `'*'`
//! (which replaces both defaults). A value is `true`, `false` or a list of
//! user ids. A command's own key wins; otherwise its default applies, and
//! `'*'` replaces that default when present. By default every harmless
//! command is open to everybody and the dangerous ones to nobody.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{is_command, is_dangerous};

/// Who a rule lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Everybody,
    Nobody,
    Users(Vec<i64>),
}

impl Allowed {
    fn parse(value: &Value) -> Option<Allowed> {
        match value {
            Value::Bool(true) => Some(Allowed::Everybody),
            Value::Bool(false) => Some(Allowed::Nobody),
            Value::Array(items) => items
                .iter()
                .map(Value::as_i64)
                .collect::<Option<Vec<i64>>>()
                .map(Allowed::Users),
            _ => None,
        }
    }

    fn lets(&self, user: i64) -> bool {
        match self {
            Allowed::Everybody => true,
            Allowed::Nobody => false,
            Allowed::Users(users) => users.contains(&user),
        }
    }
}

/// The `authz` table, expanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authz {
    commands: BTreeMap<String, Allowed>,
    harmless: Option<Allowed>,
    dangerous: Option<Allowed>,
    all: Option<Allowed>,
}

impl Authz {
    /// Reads the table; every bad key or value is one message.
    pub fn parse(table: &serde_json::Map<String, Value>) -> Result<Authz, Vec<String>> {
        let mut authz = Authz::default();
        let mut errors = Vec::new();
        for (key, value) in table {
            let Some(allowed) = Allowed::parse(value) else {
                errors.push(format!(
                    "'{key}' must be true, false or a list of numeric user ids"
                ));
                continue;
            };
            match key.trim() {
                "" => authz.harmless = Some(allowed),
                "!" => authz.dangerous = Some(allowed),
                "*" => authz.all = Some(allowed),
                names => {
                    for name in names.split(',').map(|n| n.trim().to_lowercase()) {
                        let name = name.trim_start_matches('/').to_string();
                        if is_command(&name) {
                            authz.commands.insert(name, allowed.clone());
                        } else {
                            errors.push(format!("unknown command '{name}' in key '{key}'"));
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(authz)
        } else {
            Err(errors)
        }
    }

    /// Whether `user` may run `command` (a known command, lower case).
    pub fn allows(&self, command: &str, user: i64) -> bool {
        if let Some(own) = self.commands.get(command) {
            return own.lets(user);
        }
        let default = if is_dangerous(command) {
            self.dangerous.clone().unwrap_or(Allowed::Nobody)
        } else {
            self.harmless.clone().unwrap_or(Allowed::Everybody)
        };
        self.all.as_ref().unwrap_or(&default).lets(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn authz(value: Value) -> Authz {
        Authz::parse(value.as_object().unwrap()).unwrap()
    }

    #[test]
    fn by_default_harmless_commands_are_open_and_dangerous_ones_closed() {
        let default = Authz::default();
        assert!(default.allows("getid", 1) && default.allows("notify", 1));
        for command in ["force", "stop", "shutdown"] {
            assert!(!default.allows(command, 1));
        }
    }

    #[test]
    fn a_commands_own_key_wins_over_the_defaults_and_star() {
        let table = authz(json!({"": [111], "force, stop": [111]}));
        assert!(table.allows("getid", 111) && !table.allows("getid", 222));
        assert!(table.allows("force", 111) && !table.allows("shutdown", 111));
        let star = authz(json!({"shutdown": false, "": false, "*": true}));
        assert!(star.allows("help", 5) && !star.allows("shutdown", 5));
        assert!(star.allows("force", 5), "'*' replaces the '!' default too");
        let dangerous = authz(json!({"!": true}));
        assert!(dangerous.allows("stop", 9));
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let errors = Authz::parse(
            json!({"force,dance": true, "getid": "me", "help": [1, "x"]})
                .as_object()
                .unwrap(),
        )
        .unwrap_err();
        assert_eq!(
            errors,
            vec![
                "unknown command 'dance' in key 'force,dance'".to_string(),
                "'getid' must be true, false or a list of numeric user ids".into(),
                "'help' must be true, false or a list of numeric user ids".into(),
            ]
        );
    }
}
