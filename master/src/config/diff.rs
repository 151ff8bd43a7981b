//! What differs between two configurations, component by component.
//!
//! A reload applies a new configuration only when [`ConfigDiff::between`]
//! finds a difference, and the summary it reports ("dialects +0 ~1 -0
//! (github)") is rendered from the same value, so what is applied and what
//! is said about it cannot disagree. Components are compared by value, as
//! they would run: dialect options once their secrets are resolved (by
//! digest, so no comparison ever needs them in the clear), password files
//! by their digests, schedulers by their normalized entry. Where a table
//! starts in the file only serves messages: an edit that moves lines is no
//! change.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Config;

/// The named entries of one kind of component that a new configuration adds,
/// changes or removes, each list in configuration order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Difference {
    /// Compares two lists of named entries; `same` tells whether two entries
    /// of one name would run the same way.
    pub fn of<T>(
        old: &[T],
        new: &[T],
        name: impl Fn(&T) -> &str,
        same: impl Fn(&T, &T) -> bool,
    ) -> Difference {
        fn find<'a, T>(list: &'a [T], wanted: &str, name: impl Fn(&T) -> &str) -> Option<&'a T> {
            list.iter().find(|e| name(e) == wanted)
        }
        let mut difference = Difference::default();
        for entry in new {
            match find(old, name(entry), &name) {
                None => difference.added.push(name(entry).to_string()),
                Some(before) if !same(before, entry) => {
                    difference.changed.push(name(entry).to_string())
                }
                Some(_) => {}
            }
        }
        difference.removed = old
            .iter()
            .filter(|entry| find(new, name(entry), &name).is_none())
            .map(|entry| name(entry).to_string())
            .collect();
        difference
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Counts an entry as changed unless it is already added or changed.
    pub fn mark_changed(&mut self, name: &str) {
        if !self.added.iter().chain(&self.changed).any(|n| n == name) {
            self.changed.push(name.to_string());
        }
    }
}

/// A setting of which a configuration has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    Title,
    TitleUrl,
    BuildbotUrl,
    PluginDirs,
    ReloadOnChange,
    /// `[www] port`.
    ListenAddress,
    ChangeHookAuth,
    MaxBodySize,
    DeliveryIdWindow,
    /// `[www]` rest_timeout, header_read_timeout, idle_timeout, max_connections.
    HttpLimits,
    /// `[logs]`.
    Logs,
    /// `[janitor]`.
    Janitor,
    /// `[telegram]`.
    Telegram,
    /// `[protocols.msgpack_experimental_v7] port`.
    WorkerPort,
    /// `[www.auth]`.
    WwwAuth,
    /// `[www.authz]`.
    WwwAuthz,
    /// `[www] metrics_token`.
    MetricsToken,
    /// `[www] hook_deliveries_kept`.
    HookDeliveriesKept,
}

impl Setting {
    /// Every setting.
    pub const ALL: [Setting; 18] = [
        Setting::Title,
        Setting::TitleUrl,
        Setting::BuildbotUrl,
        Setting::PluginDirs,
        Setting::ReloadOnChange,
        Setting::ListenAddress,
        Setting::ChangeHookAuth,
        Setting::MaxBodySize,
        Setting::DeliveryIdWindow,
        Setting::HttpLimits,
        Setting::Logs,
        Setting::Janitor,
        Setting::Telegram,
        Setting::WorkerPort,
        Setting::WwwAuth,
        Setting::WwwAuthz,
        Setting::MetricsToken,
        Setting::HookDeliveriesKept,
    ];

    /// The key as `master.toml` writes it.
    pub fn key(self) -> &'static str {
        match self {
            Setting::Title => "title",
            Setting::TitleUrl => "title_url",
            Setting::BuildbotUrl => "buildbot_url",
            Setting::PluginDirs => "plugin_dirs",
            Setting::ReloadOnChange => "reload_on_change",
            Setting::ListenAddress => "port",
            Setting::ChangeHookAuth => "change_hook_auth",
            Setting::MaxBodySize => "max_body_size",
            Setting::DeliveryIdWindow => "delivery_id_window",
            Setting::HttpLimits => "HTTP limits",
            Setting::Logs => "[logs]",
            Setting::Janitor => "[janitor]",
            Setting::Telegram => "[telegram]",
            Setting::WorkerPort => "protocols.msgpack_experimental_v7.port",
            Setting::WwwAuth => "[www.auth]",
            Setting::WwwAuthz => "[www.authz]",
            Setting::MetricsToken => "metrics_token",
            Setting::HookDeliveriesKept => "hook_deliveries_kept",
        }
    }
}

/// Everything a new configuration changes, by component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigDiff {
    /// The single settings that changed.
    pub settings: Vec<Setting>,
    pub dialects: Difference,
    /// Plugin libraries, by file: a changed one has new content.
    pub plugins: Difference,
    pub workers: Difference,
    pub builders: Difference,
    pub schedulers: Difference,
    pub change_sources: Difference,
    pub reporters: Difference,
}

impl ConfigDiff {
    /// What `new` changes from `old`. Plugin libraries are not part of a
    /// configuration: the caller adds what it finds of them in
    /// [`ConfigDiff::plugins`] and marks the dialects they serve.
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let settings = [
            (Setting::Title, old.title == new.title),
            (Setting::TitleUrl, old.title_url == new.title_url),
            (Setting::BuildbotUrl, old.buildbot_url == new.buildbot_url),
            (Setting::PluginDirs, old.plugin_dirs == new.plugin_dirs),
            (
                Setting::ReloadOnChange,
                old.reload_on_change == new.reload_on_change,
            ),
            (Setting::ListenAddress, old.www.listen == new.www.listen),
            (Setting::ChangeHookAuth, old.www.auth == new.www.auth),
            (
                Setting::MaxBodySize,
                old.www.max_body_size == new.www.max_body_size,
            ),
            (
                Setting::DeliveryIdWindow,
                old.www.delivery_id_window == new.www.delivery_id_window,
            ),
            (Setting::HttpLimits, old.www.limits == new.www.limits),
            (Setting::Logs, old.logs == new.logs),
            (Setting::Janitor, old.janitor == new.janitor),
            (Setting::Telegram, old.telegram == new.telegram),
            (Setting::WorkerPort, old.worker_listen == new.worker_listen),
            (Setting::WwwAuth, old.www.users == new.www.users),
            (Setting::WwwAuthz, old.www.authz == new.www.authz),
            (
                Setting::MetricsToken,
                old.www.metrics_token == new.www.metrics_token,
            ),
            (
                Setting::HookDeliveriesKept,
                old.www.hook_deliveries_kept == new.www.hook_deliveries_kept,
            ),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(setting, _)| setting)
        .collect();
        ConfigDiff {
            settings,
            dialects: Difference::of(
                &old.www.dialects,
                &new.www.dialects,
                |d| &d.name,
                |a, b| a.same_settings(b),
            ),
            plugins: Difference::default(),
            workers: Difference::of(&old.workers, &new.workers, |w| &w.name, PartialEq::eq),
            builders: Difference::of(&old.builders, &new.builders, |b| &b.name, PartialEq::eq),
            schedulers: Difference::of(
                &old.schedulers,
                &new.schedulers,
                |s| &s.name,
                |a, b| a.source == b.source,
            ),
            change_sources: Difference::of(
                &old.change_sources,
                &new.change_sources,
                |c| &c.name,
                PartialEq::eq,
            ),
            reporters: Difference::of(
                &old.reporters,
                &new.reporters,
                |r| &r.name,
                |a, b| a.same_settings(b),
            ),
        }
    }

    /// What `new` brings to a master that runs nothing yet: every entry is
    /// added and every setting set.
    pub fn from_nothing(new: &Config) -> ConfigDiff {
        let added = |names: Vec<&String>| Difference {
            added: names.into_iter().cloned().collect(),
            ..Difference::default()
        };
        ConfigDiff {
            settings: Setting::ALL.to_vec(),
            dialects: added(new.www.dialects.iter().map(|d| &d.name).collect()),
            plugins: Difference::default(),
            workers: added(new.workers.iter().map(|w| &w.name).collect()),
            builders: added(new.builders.iter().map(|b| &b.name).collect()),
            schedulers: added(new.schedulers.iter().map(|s| &s.name).collect()),
            change_sources: added(new.change_sources.iter().map(|c| &c.name).collect()),
            reporters: added(new.reporters.iter().map(|r| &r.name).collect()),
        }
    }

    /// Whether the new configuration would run exactly as the old one.
    pub fn is_empty(&self) -> bool {
        self.settings.is_empty() && self.components().all(|(_, d)| d.is_empty())
    }

    /// Whether `setting` changed.
    pub fn changed(&self, setting: Setting) -> bool {
        self.settings.contains(&setting)
    }

    fn components(&self) -> impl Iterator<Item = (&'static str, &Difference)> {
        [
            ("dialects", &self.dialects),
            ("plugins", &self.plugins),
            ("workers", &self.workers),
            ("builders", &self.builders),
            ("schedulers", &self.schedulers),
            ("change sources", &self.change_sources),
            ("reporters", &self.reporters),
        ]
        .into_iter()
    }

    /// One line per component or setting that changed, e.g.
    /// `dialects +1 ~1 -0 (+gitlab, ~github)` and `change_hook_auth changed`.
    pub fn summary(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .components()
            .filter(|(_, difference)| !difference.is_empty())
            .map(|(what, difference)| format!("{what} {difference}"))
            .collect();
        lines.extend(
            self.settings
                .iter()
                .map(|setting| format!("{} changed", setting.key())),
        );
        lines
    }
}

/// `+A ~C -R (+a, ~c, -r)`.
impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "+{} ~{} -{}",
            self.added.len(),
            self.changed.len(),
            self.removed.len()
        )?;
        let names: Vec<String> = [
            ("+", &self.added),
            ("~", &self.changed),
            ("-", &self.removed),
        ]
        .into_iter()
        .flat_map(|(sign, names)| names.iter().map(move |name| format!("{sign}{name}")))
        .collect();
        write!(f, " ({})", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("base/master.toml"), text).expect("valid configuration")
    }

    fn diff(old: &str, new: &str) -> ConfigDiff {
        ConfigDiff::between(&config(old), &config(new))
    }

    #[test]
    fn a_reporter_added_changed_or_removed_is_a_difference() {
        let one = "[[reporters]]\nname = 'r'\ntype = 'http_status_push'\nserver_url = 'http://a'\n";
        let other_url = one.replace("http://a", "http://b");
        assert_eq!(diff("", one).summary(), ["reporters +1 ~0 -0 (+r)"]);
        assert_eq!(diff(one, &other_url).summary(), ["reporters +0 ~1 -0 (~r)"]);
        let other_mode = format!("{one}mode = 'all'\n");
        assert_eq!(
            diff(one, &other_mode).summary(),
            ["reporters +0 ~1 -0 (~r)"]
        );
        assert_eq!(diff(one, "").summary(), ["reporters +0 ~0 -1 (-r)"]);
        assert!(diff(one, one).is_empty());
    }

    #[test]
    fn the_same_settings_in_another_layout_are_no_change() {
        let old = "[www.change_hook_dialects.github]\nsecret = 's'\n\
                   [[workers]]\ntype = 'local'\nname = 'w'\n";
        let new = format!("# moved down\n\n{old}");
        assert!(diff(old, &new).is_empty());
        assert!(diff(old, &new).summary().is_empty());
    }

    #[test]
    fn an_option_only_edit_changes_the_dialect() {
        let old = "[www.change_hook_dialects.github]\nsecret = 'old-secret'\n\
                   [www.change_hook_dialects.gitlab]\nsecret = 't'\n";
        let new = "[www.change_hook_dialects.github]\nsecret = 'new-secret'\n\
                   [www.change_hook_dialects.gitlab]\nsecret = 't'\n";
        let difference = diff(old, new);
        assert_eq!(difference.dialects.changed, ["github"]);
        assert_eq!(difference.summary(), ["dialects +0 ~1 -0 (~github)"]);
        let strict = "[www.change_hook_dialects.github]\nsecret = 'old-secret'\nstrict = true\n\
                      [www.change_hook_dialects.gitlab]\nsecret = 't'\n";
        assert_eq!(diff(old, strict).dialects.changed, ["github"]);
        let exempt = "[www.change_hook_dialects.github]\nsecret = 'old-secret'\n\
                      change_hook_auth = false\n[www.change_hook_dialects.gitlab]\nsecret = 't'\n";
        assert_eq!(diff(old, exempt).dialects.changed, ["github"]);
    }

    #[test]
    fn a_rotated_secret_file_is_a_change_and_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        let file = dir.path().join("master.toml");
        let text = "[master]\nsecrets_dir = 'secrets'\n\
                    [www.change_hook_dialects.gitlab]\nsecret = { from_secret = 'gitlab' }\n";
        std::fs::write(dir.path().join("secrets/gitlab"), "first-token\n").unwrap();
        let old = Config::parse(&file, text).unwrap();
        std::fs::write(dir.path().join("secrets/gitlab"), "second-token\n").unwrap();
        let new = Config::parse(&file, text).unwrap();
        let difference = ConfigDiff::between(&old, &new);
        assert_eq!(difference.dialects.changed, ["gitlab"]);
        let shown = format!("{difference:?} {:?} {:?}", difference.summary(), new);
        assert!(!shown.contains("first-token") && !shown.contains("second-token"));
    }

    #[test]
    fn entries_are_added_changed_and_removed_by_name() {
        let old =
            "[[workers]]\ntype = 'local'\nname = 'a'\n[[workers]]\ntype = 'local'\nname = 'b'\n\
                   [[builders]]\nname = 'x'\nworkernames = ['a']\n\
                   [[builders.steps]]\ntype = 'shell'\ncommand = 'true'\n";
        let new = "[[workers]]\ntype = 'local'\nname = 'a'\nmax_builds = 2\n\
                   [[workers]]\ntype = 'local'\nname = 'c'\n\
                   [[builders]]\nname = 'x'\nworkernames = ['a']\n\
                   [[builders.steps]]\ntype = 'shell'\ncommand = 'true'\n";
        let difference = diff(old, new);
        assert_eq!(
            difference.workers,
            Difference {
                added: vec!["c".into()],
                changed: vec!["a".into()],
                removed: vec!["b".into()],
            }
        );
        assert!(difference.builders.is_empty());
        assert_eq!(difference.summary(), ["workers +1 ~1 -1 (+c, ~a, -b)"]);
    }

    #[test]
    fn single_settings_are_named() {
        let difference = diff(
            "[www]\nport = 8010\n",
            "[master]\ntitle = 't'\n[www]\nport = 8011\nmax_body_size = 5\n",
        );
        assert_eq!(
            difference.settings,
            [
                Setting::Title,
                Setting::BuildbotUrl,
                Setting::ListenAddress,
                Setting::MaxBodySize
            ]
        );
        assert!(difference.changed(Setting::ListenAddress));
        assert_eq!(
            difference.summary(),
            [
                "title changed",
                "buildbot_url changed",
                "port changed",
                "max_body_size changed"
            ]
        );
    }

    #[test]
    fn a_changed_password_is_a_change() {
        let difference = diff(
            "[www]\nchange_hook_auth = ['memory:u:one']\n",
            "[www]\nchange_hook_auth = ['memory:u:two']\n",
        );
        assert_eq!(difference.settings, [Setting::ChangeHookAuth]);
    }

    #[test]
    fn marking_a_dialect_changed_counts_it_once() {
        let mut difference = Difference {
            added: vec!["new".into()],
            ..Difference::default()
        };
        difference.mark_changed("new");
        difference.mark_changed("kept");
        difference.mark_changed("kept");
        assert_eq!(difference.changed, ["kept"]);
    }
}
