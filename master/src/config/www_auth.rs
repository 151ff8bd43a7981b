//! `[www.auth]` and `[www.authz]`: who may log in to the web UI and the
//! REST API, and which control actions each may take (Buildbot's
//! `www.auth` and `www.authz`).
//!
//! Users come from an htpasswd file (bcrypt entries, as `htpasswd -B`
//! writes them) or bearer tokens; groups are listed in the table. Roles
//! are given to users and groups; each rule allows some actions, optionally
//! on some builders (shell patterns, as Buildbot's matchers take), to some
//! roles. The first rule that covers an action decides; an action no rule
//! covers needs only a logged-in user.

use std::collections::BTreeMap;

use buildmaster_plugin_api::options::Secret;
use serde::Deserialize;
use toml::Spanned;

use super::credentials::Credentials;

/// `[www.auth]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(rename = "type")]
    kind: String,
    file: Option<String>,
    #[serde(default)]
    tokens: Vec<RawToken>,
    /// Group → its users.
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    user: String,
    /// A string or a secret reference.
    token: toml::Value,
}

/// `[www.authz]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthz {
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    actions: Vec<String>,
    builders: Option<Vec<String>>,
    roles: Vec<String>,
}

/// The users who may log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WwwAuth {
    users: Credentials,
    /// Bearer token → its user.
    tokens: Vec<(Secret, String)>,
    /// User → their groups.
    groups: BTreeMap<String, Vec<String>>,
}

impl WwwAuth {
    /// Whether `password` is `user`'s. Runs bcrypt: call it off the async
    /// workers.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        self.users.check_pair(user, password)
    }

    /// The user a bearer token belongs to (every token is compared).
    pub fn user_of_token(&self, token: &str) -> Option<String> {
        let mut found = None;
        for (secret, user) in &self.tokens {
            if secret.matches(token.as_bytes()) {
                found = Some(user.clone());
            }
        }
        found
    }

    /// Whether `user` may still log in (a reload may have removed them).
    pub fn knows(&self, user: &str) -> bool {
        self.users.has_user(user) || self.tokens.iter().any(|(_, u)| u == user)
    }

    pub fn groups_of(&self, user: &str) -> &[String] {
        self.groups.get(user).map_or(&[], Vec::as_slice)
    }
}

/// A control action, as rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Force,
    Stop,
    Cancel,
    Rebuild,
    Shutdown,
    Reconfig,
    /// Pause, unpause, stop or kill a worker.
    Worker,
    /// Run the janitor now.
    Janitor,
    /// Retry a reporter's dead-lettered delivery.
    Retry,
    /// Replay a stored change hook delivery.
    Replay,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Force,
        Action::Stop,
        Action::Cancel,
        Action::Rebuild,
        Action::Shutdown,
        Action::Reconfig,
        Action::Worker,
        Action::Janitor,
        Action::Retry,
        Action::Replay,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Force => "force",
            Action::Stop => "stop",
            Action::Cancel => "cancel",
            Action::Rebuild => "rebuild",
            Action::Shutdown => "shutdown",
            Action::Reconfig => "reconfig",
            Action::Worker => "worker",
            Action::Janitor => "janitor",
            Action::Retry => "retry",
            Action::Replay => "replay",
        }
    }

    fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|action| action.name() == name)
    }
}

/// One rule: these actions, on these builders, for these roles.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    actions: Vec<Action>,
    /// `None`: any builder, and actions that concern none.
    builders: Option<Vec<glob::Pattern>>,
    roles: Vec<String>,
}

impl Rule {
    fn covers(&self, action: Action, builder: Option<&str>) -> bool {
        if !self.actions.contains(&action) {
            return false;
        }
        match (&self.builders, builder) {
            (None, _) => true,
            (Some(patterns), Some(builder)) => patterns.iter().any(|p| p.matches(builder)),
            // A rule for some builders says nothing of other actions.
            (Some(_), None) => false,
        }
    }
}

/// Who may do what.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authz {
    /// Role → its users and groups.
    roles: BTreeMap<String, (Vec<String>, Vec<String>)>,
    rules: Vec<Rule>,
}

/// Who is asking: a user, and the groups they are in.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
}

impl Authz {
    /// The roles of a caller.
    pub fn roles_of(&self, caller: Caller<'_>) -> Vec<&str> {
        self.roles
            .iter()
            .filter(|(_, (users, groups))| {
                users.iter().any(|u| u == caller.user)
                    || groups.iter().any(|g| caller.groups.contains(g))
            })
            .map(|(role, _)| role.as_str())
            .collect()
    }

    /// Whether `caller` may take `action` (on `builder`, when it concerns
    /// one). Anonymous callers (`None`) may take none.
    pub fn allows(
        &self,
        caller: Option<Caller<'_>>,
        action: Action,
        builder: Option<&str>,
    ) -> bool {
        let Some(caller) = caller else {
            return false;
        };
        match self.rules.iter().find(|rule| rule.covers(action, builder)) {
            Some(rule) => {
                let roles = self.roles_of(caller);
                rule.roles.iter().any(|role| roles.contains(&role.as_str()))
            }
            None => true,
        }
    }
}

/// Builds `[www.auth]`: `resolve` reads a secret reference, `read_users`
/// an htpasswd file (relative to the basedir).
pub fn auth(
    raw: RawAuth,
    resolve: &dyn Fn(toml::Value, &str) -> Result<serde_json::Value, String>,
    read_users: &mut dyn FnMut(&str) -> Result<Credentials, String>,
) -> Result<WwwAuth, String> {
    if raw.kind != "htpasswd" {
        return Err(format!(
            "www.auth: unknown type '{}' (expected htpasswd)",
            raw.kind
        ));
    }
    let users = match &raw.file {
        Some(file) => read_users(file)?,
        None if raw.tokens.is_empty() => {
            return Err("www.auth: htpasswd needs file (or at least one of tokens)".into())
        }
        None => Credentials::default(),
    };
    let mut tokens = Vec::new();
    for (index, token) in raw.tokens.into_iter().enumerate() {
        let key = format!("www.auth.tokens[{index}].token");
        match resolve(token.token, &key)? {
            serde_json::Value::String(value) if value.len() >= 16 => {
                tokens.push((Secret::new(value), token.user));
            }
            _ => {
                return Err(format!(
                    "{key}: a token must be a string of at least 16 characters"
                ))
            }
        }
    }
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, members) in raw.groups {
        for user in members {
            groups.entry(user).or_default().push(group.clone());
        }
    }
    Ok(WwwAuth {
        users,
        tokens,
        groups,
    })
}

/// Builds `[www.authz]`; errors name the rule.
pub fn authz(raw: RawAuthz) -> Result<Authz, String> {
    let roles: BTreeMap<String, (Vec<String>, Vec<String>)> = raw
        .roles
        .into_iter()
        .map(|(role, members)| (role, (members.users, members.groups)))
        .collect();
    let mut rules = Vec::new();
    for (index, rule) in raw.rules.into_iter().enumerate() {
        let rule = rule.into_inner();
        let at = format!("www.authz.rules[{index}]");
        let mut actions = Vec::new();
        for name in &rule.actions {
            if name == "*" {
                actions.extend(Action::ALL);
                continue;
            }
            let action = Action::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "{at}: unknown action '{name}' (expected {} or *)",
                    known.join(", ")
                )
            })?;
            actions.push(action);
        }
        if actions.is_empty() {
            return Err(format!("{at}: actions is empty"));
        }
        if let Some(unknown) = rule.roles.iter().find(|role| !roles.contains_key(*role)) {
            return Err(format!(
                "{at}: role '{unknown}' is not defined in www.authz.roles"
            ));
        }
        let builders = rule
            .builders
            .map(|patterns| {
                patterns
                    .iter()
                    .map(|p| {
                        glob::Pattern::new(p)
                            .map_err(|e| format!("{at}: builder pattern '{p}': {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        rules.push(Rule {
            actions,
            builders,
            roles: rule.roles,
        });
    }
    Ok(Authz { roles, rules })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Result<Authz, String> {
        authz(toml::from_str(text).map_err(|e| e.to_string())?)
    }

    const AUTHZ: &str = r#"
roles = { admins = { users = ["alice"], groups = ["ops"] }, developers = { groups = ["dev"] } }
[[rules]]
actions = ["force", "rebuild"]
builders = ["app-*"]
roles = ["developers", "admins"]
[[rules]]
actions = ["*"]
roles = ["admins"]
"#;

    #[test]
    fn the_first_rule_that_covers_an_action_decides() {
        let authz = rules(AUTHZ).unwrap();
        let dev = ["dev".to_owned()];
        let bob = Some(Caller {
            user: "bob",
            groups: &dev,
        });
        let alice = Some(Caller {
            user: "alice",
            groups: &[],
        });
        let ops = ["ops".to_owned()];
        let carol = Caller {
            user: "carol",
            groups: &ops,
        };
        assert!(authz.allows(bob, Action::Force, Some("app-linux")));
        assert!(
            !authz.allows(bob, Action::Force, Some("docs")),
            "only app-*"
        );
        assert!(
            !authz.allows(bob, Action::Stop, Some("app-linux")),
            "admins only"
        );
        assert!(authz.allows(alice, Action::Stop, Some("docs")));
        assert!(
            authz.allows(Some(carol), Action::Shutdown, None),
            "admins by group"
        );
        assert!(
            !authz.allows(None, Action::Force, Some("app-linux")),
            "anonymous"
        );
        assert_eq!(authz.roles_of(carol), ["admins"]);
        // No rule: a logged-in user is enough.
        let open = Authz::default();
        assert!(open.allows(bob, Action::Shutdown, None));
        assert!(!open.allows(None, Action::Shutdown, None));
    }

    #[test]
    fn mistakes_name_the_rule() {
        let error = rules("[[rules]]\nactions = [\"deploy\"]\nroles = []\n").unwrap_err();
        assert!(
            error.starts_with("www.authz.rules[0]: unknown action 'deploy' (expected force, stop,"),
            "{error}"
        );
        let error = rules("[[rules]]\nactions = [\"stop\"]\nroles = [\"gods\"]\n").unwrap_err();
        assert_eq!(
            error,
            "www.authz.rules[0]: role 'gods' is not defined in www.authz.roles"
        );
        let error =
            rules("[[rules]]\nactions = [\"stop\"]\nbuilders = [\"[\"]\nroles = []\n").unwrap_err();
        assert!(error.contains("builder pattern '['"), "{error}");
    }

    #[test]
    fn tokens_and_groups() {
        let raw: RawAuth = toml::from_str(
            "type = \"htpasswd\"\ntokens = [{ user = \"ci\", token = \"0123456789abcdef0\" }]\ngroups = { dev = [\"ci\"] }\n",
        )
        .unwrap();
        let resolve = |value: toml::Value, _: &str| Ok(serde_json::json!(value.as_str().unwrap()));
        let auth = auth(raw, &resolve, &mut |_| unreachable!("no file")).unwrap();
        assert_eq!(
            auth.user_of_token("0123456789abcdef0").as_deref(),
            Some("ci")
        );
        assert_eq!(auth.user_of_token("0123456789abcdef1"), None);
        assert_eq!(auth.groups_of("ci"), ["dev"]);
        assert!(auth.knows("ci") && !auth.knows("bob"));
        let short: RawAuth = toml::from_str(
            "type = \"htpasswd\"\ntokens = [{ user = \"ci\", token = \"short\" }]\n",
        )
        .unwrap();
        let error = super::auth(short, &resolve, &mut |_| unreachable!("no file")).unwrap_err();
        assert!(error.contains("at least 16 characters"), "{error}");
    }
}
