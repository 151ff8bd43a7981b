//! One generation of live plugin instances, built from a [`Config`] to one side.
//!
//! [`prepare`] learns what each library in the plugin directories offers, loads
//! only the libraries the configuration's dialects use, and constructs every
//! dialect. What cannot be used is recorded as a [`Problem`]: `checkconfig` fails
//! on any, `start` logs each in one line and serves everything else. Requests load
//! the current [`Registry`] once and finish on the instances they started with.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use abi_stable::std_types::RResult;
use buildmaster_plugin_api::boundary::{
    host_ref, DialectBox, FfiError, FfiHookResult, FfiRequest, ReporterBox,
};
use buildmaster_plugin_api::options::Secret;
use buildmaster_plugin_api::reporter::{Event, Wants};
use buildmaster_plugin_api::OutgoingRequest;

use crate::config::{
    Authz, Config, Credentials, DialectConfig, HttpLimits, PluginRef, ReporterConfig, WwwAuth,
};
use crate::host::HostServices;
use crate::plugins::{Library, LoadError, Loader, Offer};

/// Something in the configuration or a plugin directory that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A library was refused.
    Refused(LoadError),
    /// An enabled dialect cannot be served.
    Dialect { location: String, message: String },
    /// A configured reporter cannot be built.
    Reporter { location: String, message: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Refused(e) => e.fmt(f),
            Problem::Dialect { location, message } | Problem::Reporter { location, message } => {
                write!(f, "{location}: {message}")
            }
        }
    }
}

/// A constructed dialect instance and the library it came from.
pub struct DialectInstance {
    /// The name in the URL.
    pub name: String,
    pub library: Arc<Library>,
    /// The dialect kind and the digest of the options it was constructed
    /// with, which tell whether a new configuration can keep this instance.
    kind: String,
    options_digest: [u8; 32],
    instance: DialectBox,
}

impl DialectInstance {
    /// Lets the plugin handle one request. Blocking: call it on the blocking pool.
    pub fn handle(
        &self,
        request: &FfiRequest,
        services: &HostServices,
    ) -> Result<FfiHookResult, FfiError> {
        let host = services.for_plugin(&self.library.name);
        let started = std::time::Instant::now();
        let outcome = self.instance.handle(request, host_ref(&host));
        let panicked = matches!(&outcome, RResult::RErr(e) if is_panic(&e.message));
        let seconds = started.elapsed().as_secs_f64();
        crate::metrics::plugin_call(&self.library.name, "handle", seconds, panicked);
        outcome.into_result()
    }
}

/// A constructed reporter, with its configuration and what it wants.
pub struct ReporterInstance {
    pub config: ReporterConfig,
    pub library: Arc<Library>,
    /// What the plugin wants, with the generator's `want_*` and
    /// `report_started` added.
    pub wants: Wants,
    instance: ReporterBox,
}

impl ReporterInstance {
    /// Lets the plugin render one envelope (JSON). Blocking: call it on the
    /// blocking pool.
    pub fn render(
        &self,
        envelope: &str,
        services: &HostServices,
    ) -> Result<Vec<OutgoingRequest>, String> {
        let host = services.for_plugin(&self.library.name);
        let started = std::time::Instant::now();
        let outcome = self.instance.render(envelope.into(), host_ref(&host));
        let panicked = matches!(&outcome, RResult::RErr(e) if is_panic(&e.message));
        let seconds = started.elapsed().as_secs_f64();
        crate::metrics::plugin_call(&self.library.name, "render", seconds, panicked);
        match outcome {
            RResult::ROk(requests) => Ok(requests.iter().map(OutgoingRequest::from_ffi).collect()),
            RResult::RErr(error) => Err(error.message.to_string()),
        }
    }
}

/// Whether a plugin's error is a caught panic.
fn is_panic(message: &str) -> bool {
    message.starts_with(buildmaster_plugin_api::boundary::PANIC_PREFIX)
}

/// What `/change_hook/<name>` finds.
#[derive(Clone)]
pub enum DialectSlot {
    Ready(Arc<DialectInstance>),
    /// Enabled, but no loaded plugin offers it (Buildbot's "not registered").
    NotAPlugin,
    /// Enabled, but its plugin failed to load or to construct it.
    Unavailable,
}

/// The live instances of one configuration generation. Clones share the
/// instances.
#[derive(Clone, Default)]
pub struct Registry {
    /// The master's title, for the pages it serves.
    pub title: String,
    /// The master's address as users reach it, for links in reports.
    pub buildbot_url: String,
    pub dialects: HashMap<String, DialectSlot>,
    pub auth: Option<Arc<Credentials>>,
    /// `[www.auth]`: who may log in to the UI and the API.
    pub users: Option<Arc<WwwAuth>>,
    /// `[www.authz]`: what each may do.
    pub authz: Arc<Authz>,
    /// The bearer token `/metrics` wants, if any.
    pub metrics_token: Option<Secret>,
    /// How many deliveries of each dialect the inspector keeps.
    pub hook_deliveries_kept: usize,
    /// Dialects that `auth` does not apply to (`change_hook_auth = false`).
    pub exempt_from_auth: HashSet<String>,
    pub max_body_size: u64,
    pub delivery_id_window: u64,
    /// What one client may make the HTTP server do.
    pub limits: HttpLimits,
    /// The libraries this generation has loaded: those its dialects use, and
    /// those without a metadata section, which are loaded to be described.
    pub libraries: Vec<Arc<Library>>,
    /// Every library found in the plugin directories or named by file.
    pub offers: Vec<Offer>,
    /// The reporters that could be built, in configuration order.
    pub reporters: Vec<Arc<ReporterInstance>>,
    /// Each remote worker's `notify_on_missing`, for the reporters.
    pub worker_notify: HashMap<String, Vec<String>>,
}

impl Registry {
    /// The content hash of the library serving dialect `name`, if one does.
    pub fn dialect_library(&self, name: &str) -> Option<&str> {
        match self.dialects.get(name)? {
            DialectSlot::Ready(instance) => Some(&instance.library.hash),
            _ => None,
        }
    }
}

/// Builds a [`Registry`] for `config`, loading libraries through `loader`.
/// A dialect of `previous` whose library, kind and options are unchanged is
/// kept as it is rather than constructed again.
pub fn prepare(
    config: &Config,
    loader: &Loader,
    previous: Option<&Registry>,
) -> (Registry, Vec<Problem>) {
    let (mut offers, refused) = loader.scan(&config.plugin_dirs);
    let mut problems: Vec<Problem> = refused.into_iter().map(Problem::Refused).collect();
    // Not an error: an empty plugins/ is lost by git and by most copies.
    for dir in config
        .plugin_dirs
        .iter()
        .filter(|d| d.explicit && !d.path.is_dir())
    {
        tracing::warn!(
            "{}: plugin directory {} does not exist; no plugin is loaded from it",
            config.file.display(),
            dir.path.display()
        );
    }
    // Libraries named by file first, so that a dialect may name any of them by
    // plugin name whatever the order of the tables.
    let mut by_file = HashMap::new();
    let files = config
        .www
        .dialects
        .iter()
        .map(|d| &d.plugin)
        .chain(config.reporters.iter().map(|r| &r.plugin));
    for plugin in files {
        if let Some(PluginRef::File(path)) = plugin {
            let described = loader.describe(path);
            if let Ok(offer) = &described {
                if !offers.iter().any(|o| o.path() == offer.path()) {
                    offers.push(offer.clone());
                }
            }
            by_file.insert(path.clone(), described);
        }
    }
    let mut libraries: Vec<Arc<Library>> = offers
        .iter()
        .filter_map(|offer| match offer {
            Offer::Loaded(library) => Some(library.clone()),
            Offer::Described { .. } => None,
        })
        .collect();
    let mut dialects = HashMap::new();
    for dialect in &config.www.dialects {
        let kept = previous.and_then(|registry| registry.dialects.get(&dialect.name));
        let wanted = Wanted {
            role: Role::Dialect,
            name: &dialect.name,
            kind: &dialect.kind,
            plugin: dialect.plugin.as_ref(),
            location: &dialect.location,
        };
        let chosen = choose_offer(&wanted, &offers, &by_file);
        let slot = match chosen.and_then(|offer| match offer {
            Some(offer) => {
                let library = use_offer(loader, offer, &mut libraries)
                    .map_err(|e| format!("dialect '{}': {e}", dialect.name))?;
                build_dialect(dialect, library, kept)
            }
            None => Ok(DialectSlot::NotAPlugin),
        }) {
            Ok(slot) => slot,
            Err(message) => {
                problems.push(Problem::Dialect {
                    location: dialect.location.clone(),
                    message,
                });
                DialectSlot::Unavailable
            }
        };
        dialects.insert(dialect.name.clone(), slot);
    }
    let mut reporters = Vec::new();
    for reporter in &config.reporters {
        let wanted = Wanted {
            role: Role::Reporter,
            name: &reporter.name,
            kind: &reporter.kind,
            plugin: reporter.plugin.as_ref(),
            location: &reporter.location,
        };
        let built = choose_offer(&wanted, &offers, &by_file).and_then(|offer| {
            let offer = offer.ok_or_else(|| {
                format!(
                    "reporter '{}': no plugin offers the reporter type '{}'",
                    reporter.name, reporter.kind
                )
            })?;
            let library = use_offer(loader, offer, &mut libraries)
                .map_err(|e| format!("reporter '{}': {e}", reporter.name))?;
            build_reporter(reporter, library)
        });
        match built {
            Ok(instance) => reporters.push(Arc::new(instance)),
            Err(message) => problems.push(Problem::Reporter {
                location: reporter.location.clone(),
                message,
            }),
        }
    }
    let registry = Registry {
        title: config.title.clone(),
        buildbot_url: config.buildbot_url.clone(),
        dialects,
        auth: config.www.auth.clone().map(Arc::new),
        users: config.www.users.clone().map(Arc::new),
        authz: Arc::new(config.www.authz.clone()),
        metrics_token: config.www.metrics_token.clone(),
        hook_deliveries_kept: config.www.hook_deliveries_kept,
        exempt_from_auth: config
            .www
            .dialects
            .iter()
            .filter(|d| d.exempt_from_auth)
            .map(|d| d.name.clone())
            .collect(),
        max_body_size: config.www.max_body_size,
        delivery_id_window: config.www.delivery_id_window,
        limits: config.www.limits,
        libraries,
        offers,
        reporters,
        worker_notify: config
            .workers
            .iter()
            .filter_map(|w| Some((w.name.clone(), w.remote.as_ref()?.notify_on_missing.clone())))
            .collect(),
    };
    (registry, problems)
}

/// What a dialect or a reporter of the configuration asks for.
struct Wanted<'a> {
    role: Role,
    name: &'a str,
    kind: &'a str,
    plugin: Option<&'a PluginRef>,
    location: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Dialect,
    Reporter,
}

impl Role {
    fn word(self) -> &'static str {
        match self {
            Role::Dialect => "dialect",
            Role::Reporter => "reporter",
        }
    }

    fn kinds(self, offer: &Offer) -> &[String] {
        match self {
            Role::Dialect => offer.dialects(),
            Role::Reporter => offer.reporters(),
        }
    }
}

/// The library that serves `wanted`: the one named by file or by plugin
/// name, else the first that offers its kind. `None` when no library offers
/// the kind (for a dialect, Buildbot's "not registered": its requests answer
/// 400).
fn choose_offer<'a>(
    wanted: &Wanted<'_>,
    offers: &'a [Offer],
    by_file: &'a HashMap<PathBuf, Result<Offer, LoadError>>,
) -> Result<Option<&'a Offer>, String> {
    let (role, name, kind) = (wanted.role, wanted.name, wanted.kind);
    let what = role.word();
    let offer = match wanted.plugin {
        Some(PluginRef::File(path)) => match by_file.get(path) {
            Some(Ok(offer)) => offer,
            Some(Err(error)) => return Err(format!("{what} '{name}': {error}")),
            None => {
                return Err(format!(
                    "{what} '{name}': {} was not loaded",
                    path.display()
                ))
            }
        },
        Some(PluginRef::Name(plugin)) => match offers.iter().find(|o| o.name() == plugin) {
            Some(offer) => offer,
            None => {
                // A dialect's name given as its plugin's, as the Bitbucket
                // dialects were before they shared a library.
                let hint = offers
                    .iter()
                    .find(|o| role.kinds(o).contains(plugin))
                    .map(|o| format!(" ({what} '{plugin}' is offered by plugin '{}')", o.name()))
                    .unwrap_or_default();
                return Err(format!(
                    "{what} '{name}': no loaded plugin is named '{plugin}'{hint}"
                ));
            }
        },
        None => match offers
            .iter()
            .find(|o| role.kinds(o).iter().any(|k| k == kind))
        {
            Some(offer) => offer,
            None => {
                if role == Role::Dialect {
                    tracing::warn!(
                        "{}: dialect '{name}' is enabled but no loaded plugin offers it; its requests answer 400",
                        wanted.location
                    );
                }
                return Ok(None);
            }
        },
    };
    if !role.kinds(offer).iter().any(|k| k == kind) {
        return Err(format!(
            "{what} '{name}': plugin {} ({}) offers no {what} '{kind}' (it offers: {})",
            offer.name(),
            offer.path().display(),
            role.kinds(offer).join(", ")
        ));
    }
    Ok(Some(offer))
}

/// Maps the library of `offer` (once per generation) and records it among
/// the generation's `libraries`.
fn use_offer(
    loader: &Loader,
    offer: &Offer,
    libraries: &mut Vec<Arc<Library>>,
) -> Result<Arc<Library>, LoadError> {
    let library = match offer {
        Offer::Loaded(library) => library.clone(),
        Offer::Described { path, .. } => loader.load(path)?,
    };
    if !libraries.iter().any(|l| Arc::ptr_eq(l, &library)) {
        libraries.push(library.clone());
    }
    Ok(library)
}

fn build_reporter(
    reporter: &ReporterConfig,
    library: Arc<Library>,
) -> Result<ReporterInstance, String> {
    let name = &reporter.name;
    let instance = library
        .new_reporter(&reporter.kind, name, &reporter.options)
        .map_err(|e| format!("reporter '{name}' (plugin {}): {e}", library.name))?;
    // What the plugin asks for, and what the operator adds.
    let mut wants: Wants = serde_json::from_str(&instance.wants()).unwrap_or_default();
    let generator = &reporter.generator;
    wants.properties |= generator.want_properties;
    wants.logs |= generator.want_logs;
    // Logs come with their steps.
    wants.steps |= generator.want_steps || wants.logs;
    wants.previous_build |= generator.want_previous_build;
    if !generator.report_started {
        wants.events.retain(|event| *event != Event::Started);
    }
    Ok(ReporterInstance {
        config: reporter.clone(),
        library,
        wants,
        instance,
    })
}

fn build_dialect(
    dialect: &DialectConfig,
    library: Arc<Library>,
    previous: Option<&DialectSlot>,
) -> Result<DialectSlot, String> {
    let name = &dialect.name;
    if let Some(DialectSlot::Ready(instance)) = previous {
        let unchanged = instance.library.hash == library.hash
            && instance.kind == dialect.kind
            && instance.options_digest == dialect.options_digest;
        if unchanged {
            return Ok(DialectSlot::Ready(Arc::clone(instance)));
        }
    }
    let instance = library
        .new_dialect(&dialect.kind, name, &dialect.options)
        .map_err(|e| format!("dialect '{name}' (plugin {}): {e}", library.name))?;
    Ok(DialectSlot::Ready(Arc::new(DialectInstance {
        name: name.clone(),
        library,
        kind: dialect.kind.clone(),
        options_digest: dialect.options_digest,
        instance,
    })))
}
