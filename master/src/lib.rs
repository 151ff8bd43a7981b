//! buildmaster: a continuous-integration build master with plugin dialects.
//!
//! The modules, from the top down; a module uses only modules below it:
//!
//! - [`topology`] owns what runs: it starts every service from a
//!   configuration, applies each reload in place, answers commands, and stops
//!   and joins everything. [`reconfig`] holds reloads' triggers (the file
//!   watch) and their record; [`systemd`] tells a `Type=notify` unit how it
//!   goes; [`pidfile`] marks a running master.
//! - [`www`] serves HTTP: change hooks, the REST API ([`api`]), the front
//!   page and the Telegram webhook. Neither holds a service: they read the
//!   topology's view and send it commands through [`control`]. [`telegram`]
//!   is the Bot API transport of [`chat`], the command engine, which reads
//!   and commands the master the same way.
//! - The services: [`change_sources`] poll repositories, [`schedulers`] turn
//!   changes into build requests, [`builds`] runs builds on [`workers`]
//!   (local, or remote over the worker protocol, whose worker side
//!   [`native_worker`] is);
//!   [`durable`] feeds consumers that must see every build event, such as
//!   [`reporters`], which renders them into an outbox and delivers it. Their
//!   tasks run under the [`tasks`] supervisor.
//! - [`registry`] holds one configuration's live plugin instances, loaded by
//!   [`plugins`]; [`host`] is what plugins may ask of the master.
//! - The ground floor: [`config`] (what `master.toml` asks for), [`db`]
//!   (storage), [`events`] (the bus), [`changes`] (the Change model),
//!   [`results`], [`clock`], and [`metrics`], what `/metrics` shows.

pub mod api;
pub mod builds;
pub mod change_sources;
pub mod changes;
pub mod chat;
pub mod clock;
pub mod config;
pub mod control;
pub mod db;
pub mod descriptors;
pub mod durable;
pub mod events;
pub mod host;
pub mod metrics;
pub mod native_worker;
pub mod pidfile;
pub mod plugins;
pub mod reconfig;
pub mod registry;
pub mod reporters;
pub mod results;
pub mod schedulers;
pub mod systemd;
pub mod tasks;
pub mod telegram;
pub mod topology;
pub mod workers;
pub mod www;

/// The layering the crate documentation describes, checked against the
/// sources: a module uses only modules below it.
#[cfg(test)]
mod layering {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// From the top down.
    const LAYERS: &[&str] = &[
        "topology",
        "pidfile",
        "systemd",
        "descriptors",
        "www",
        "api",
        "telegram",
        "chat",
        "control",
        "reconfig",
        "reporters",
        "durable",
        "change_sources",
        "schedulers",
        "builds",
        "native_worker",
        "workers",
        "registry",
        "plugins",
        "host",
        "db",
        "events",
        "tasks",
        "config",
        "changes",
        "results",
        "clock",
        "metrics",
    ];

    /// The modules `text` names as `crate::<module>`, outside its tests
    /// and comments.
    fn uses(text: &str) -> BTreeSet<String> {
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        code.lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .flat_map(|line| line.split("crate::").skip(1))
            .map(|rest| {
                rest.chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect()
            })
            .collect()
    }

    fn sources(dir: &Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }

    #[test]
    fn every_module_uses_only_modules_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut wrong = Vec::new();
        for (path, text) in files {
            let relative = path.strip_prefix(&*src.display().to_string()).unwrap();
            let module = relative
                .trim_start_matches('/')
                .split(['/', '.'])
                .next()
                .unwrap();
            // The crate root and the binary's own modules.
            if ["lib", "main", "new_plugin"].contains(&module) {
                continue;
            }
            let level = LAYERS
                .iter()
                .position(|m| *m == module)
                .unwrap_or_else(|| panic!("module {module} is not in LAYERS"));
            for used in uses(&text) {
                if used == module {
                    continue;
                }
                match LAYERS.iter().position(|m| *m == used) {
                    Some(below) if below > level => {}
                    _ => wrong.push(format!("{relative}: {module} uses {used}")),
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
