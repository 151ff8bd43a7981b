//! The capabilities the master lends to plugin code: blocking HTTP and logging.
//!
//! Plugin calls run on the blocking pool, so a blocking HTTP request here waits on
//! the shared async client through the runtime handle without holding up an async
//! worker. Limits: a timeout of at most [`MAX_TIMEOUT`], a response body of at most
//! [`MAX_RESPONSE_BYTES`]. Each request is logged at debug level with its method,
//! host and path only (query strings and headers may carry tokens).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use buildmaster_plugin_api::boundary::{FfiHttpRequest, FfiHttpResponse, HostFfi};
use buildmaster_plugin_api::{HttpRequest, HttpResponse, LogLevel};

/// The longest a plugin's HTTP request may take.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest response body handed to a plugin.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The polling change sources a plugin may list and ask to poll (the `poller`
/// dialect does).
pub trait Pollers: Send + Sync {
    /// The names of the polling change sources, in configuration order.
    fn names(&self) -> Vec<String>;
    /// Asks the named sources to poll as soon as they can; unknown names are ignored.
    fn force(&self, names: &[String]);
}

/// A master without polling change sources.
struct NoPollers;

impl Pollers for NoPollers {
    fn names(&self) -> Vec<String> {
        Vec::new()
    }

    fn force(&self, _names: &[String]) {}
}

/// What every plugin call shares: the HTTP client, the runtime it runs on, and
/// the polling change sources.
#[derive(Clone)]
pub struct HostServices {
    /// Built on the first request: setting up TLS (parsing the root
    /// certificates) costs memory a master whose plugins never ask for HTTP
    /// should not pay.
    client: Arc<OnceLock<reqwest::Client>>,
    runtime: tokio::runtime::Handle,
    pollers: Arc<dyn Pollers>,
}

impl HostServices {
    /// Services bound to the current tokio runtime (panics outside one).
    pub fn from_current_runtime() -> HostServices {
        HostServices {
            client: Arc::new(OnceLock::new()),
            runtime: tokio::runtime::Handle::current(),
            pollers: Arc::new(NoPollers),
        }
    }

    /// The same services with these polling change sources.
    pub fn with_pollers(self, pollers: Arc<dyn Pollers>) -> HostServices {
        HostServices { pollers, ..self }
    }

    /// The master's HTTP client, for plugin calls and report deliveries;
    /// built on first use.
    pub fn client(&self) -> &reqwest::Client {
        self.client.get_or_init(|| {
            reqwest::Client::builder()
                .user_agent(concat!("buildmaster/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("the HTTP client's TLS setup is static")
        })
    }

    /// The host handed to one call of plugin `plugin`.
    pub fn for_plugin<'a>(&'a self, plugin: &'a str) -> PluginHost<'a> {
        PluginHost {
            plugin,
            services: self,
        }
    }

    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse, String> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("invalid HTTP method '{}'", request.method))?;
        let url = reqwest::Url::parse(&request.url).map_err(|e| format!("invalid URL: {e}"))?;
        let timeout = request.timeout.min(MAX_TIMEOUT);
        let mut builder = self.client().request(method, url).timeout(timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut response = builder
            .body(request.body)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(format!("response larger than {MAX_RESPONSE_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }
}

/// A reqwest error without its URL, which may carry a token.
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    let detail = std::error::Error::source(error)
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    format!("{kind}{detail}")
}

/// The host of one plugin call.
pub struct PluginHost<'a> {
    plugin: &'a str,
    services: &'a HostServices,
}

impl HostFfi for PluginHost<'_> {
    fn http_request(&self, request: &FfiHttpRequest) -> RResult<FfiHttpResponse, RString> {
        let request = HttpRequest::from_ffi(request);
        let target = reqwest::Url::parse(&request.url)
            .map(|u| format!("{}{}", u.host_str().unwrap_or_default(), u.path()))
            .unwrap_or_default();
        tracing::debug!(plugin = %self.plugin, "HTTP {} {}", request.method, target);
        match self.services.runtime.block_on(self.services.fetch(request)) {
            Ok(response) => RResult::ROk(response.into_ffi()),
            Err(reason) => {
                tracing::debug!(plugin = %self.plugin, "HTTP request to {target} failed: {reason}");
                RResult::RErr(reason.into())
            }
        }
    }

    fn log(&self, level: u8, message: RStr<'_>) {
        let plugin = self.plugin;
        match LogLevel::from_u8(level) {
            LogLevel::Error => tracing::error!(plugin = %plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin = %plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin = %plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin = %plugin, "{message}"),
        }
    }

    fn polling_sources(&self) -> RVec<RString> {
        self.services
            .pollers
            .names()
            .into_iter()
            .map(RString::from)
            .collect()
    }

    fn force_poll(&self, names: RSlice<'_, RString>) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        tracing::info!(plugin = %self.plugin, "poll requested for [{}]", names.join(", "));
        self.services.pollers.force(&names);
    }
}
