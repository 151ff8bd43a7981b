//! buildmaster: a continuous-integration build master with plugin dialects.
//!
//! Modules, one concern each: [`config`] (what `master.toml` asks for),
//! [`plugins`] (loading libraries), [`registry`] (live plugin instances of one
//! configuration), [`www`] (HTTP: change hooks and REST), [`api`] (the REST data
//! layer), [`db`] and [`changes`] (storage and the Change model),
//! [`change_sources`] (polling repositories for changes), [`host`] (what
//! plugins may ask of the master), [`server`] (running it all), [`systemd`]
//! (telling a `Type=notify` unit how it goes).

pub mod api;
pub mod builds;
pub mod change_sources;
pub mod changes;
pub mod config;
pub mod db;
pub mod events;
pub mod host;
pub mod plugins;
pub mod reconfig;
pub mod registry;
pub mod results;
pub mod schedulers;
pub mod server;
pub mod systemd;
pub mod workers;
pub mod www;
