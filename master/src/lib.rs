//! buildmaster: a continuous-integration build master with plugin dialects.
//!
//! The modules, from the top down; a module uses only modules below it:
//!
//! - [`topology`] owns what runs: it starts every service from a
//!   configuration, applies each reload in place, answers commands, and stops
//!   and joins everything. [`reconfig`] holds reloads' triggers (the file
//!   watch) and their record; [`systemd`] tells a `Type=notify` unit how it
//!   goes; [`pidfile`] marks a running master.
//! - [`www`] serves HTTP: change hooks, the REST API ([`api`]) and the front
//!   page. Neither holds a service: they read the topology's view and send it
//!   commands through [`control`].
//! - The services: [`change_sources`] poll repositories, [`schedulers`] turn
//!   changes into build requests, [`builds`] runs builds on [`workers`];
//!   [`durable`] feeds consumers that must see every build event. Their
//!   tasks run under the [`tasks`] supervisor.
//! - [`registry`] holds one configuration's live plugin instances, loaded by
//!   [`plugins`]; [`host`] is what plugins may ask of the master.
//! - The ground floor: [`config`] (what `master.toml` asks for), [`db`]
//!   (storage), [`events`] (the bus), [`changes`] (the Change model),
//!   [`results`], [`clock`].

pub mod api;
pub mod builds;
pub mod change_sources;
pub mod changes;
pub mod clock;
pub mod config;
pub mod control;
pub mod db;
pub mod durable;
pub mod events;
pub mod host;
pub mod pidfile;
pub mod plugins;
pub mod reconfig;
pub mod registry;
pub mod results;
pub mod schedulers;
pub mod systemd;
pub mod tasks;
pub mod topology;
pub mod workers;
pub mod www;
