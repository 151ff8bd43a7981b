//! Run a dialect or reporter the way the master does, without the master.
//!
//! The calls go through the real boundary (envelopes, JSON, `catch_unwind`), with a
//! [`TestHost`] that answers HTTP requests from a script and records log lines.
//!
//! ```
//! use buildmaster_plugin_api::testing::{self, DialectHarness};
//! use buildmaster_plugin_api::ErrorClass;
//! # use buildmaster_plugin_api::{options::NoOptions, Change, Dialect, HookError, HookOutcome, Host, Request};
//! # struct Echo;
//! # impl Dialect for Echo {
//! #     type Options = NoOptions;
//! #     fn new(_: &str, _: NoOptions) -> Result<Self, String> { Ok(Echo) }
//! #     fn handle(&self, r: &Request, _: &Host<'_>) -> Result<HookOutcome, HookError> {
//! #         let c = r.args().first("c").ok_or_else(|| HookError::bad_request("no 'c'"))?.to_string();
//! #         Ok(vec![Change { comments: Some(c), ..Change::default() }].into())
//! #     }
//! # }
//! let echo = DialectHarness::<Echo>::new(serde_json::json!({}));
//! let changes = echo.changes(&testing::form_post("/change_hook/echo", "c=hi"));
//! assert_eq!(changes[0].comments.as_deref(), Some("hi"));
//! let refusal = echo.refusal(&testing::form_post("/change_hook/echo", ""), ErrorClass::BadRequest);
//! assert_eq!(refusal, "no 'c'");
//! let error = DialectHarness::<Echo>::try_new(serde_json::json!({"x": 1})).err().unwrap();
//! assert_eq!(error, "options.x: unknown option (it takes no options)");
//! ```

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Mutex;

use abi_stable::std_types::{RResult, RSlice, RString, RVec};

use crate::boundary::{self, DialectBox, FfiHttpRequest, FfiHttpResponse, HostFfi, ReporterBox};
use crate::reporter::Wants;
use crate::{
    Change, Dialect, ErrorClass, HookError, HookOutcome, HttpRequest, HttpResponse, LogLevel,
    OutgoingRequest, Reporter, Request, Response,
};

/// A host whose HTTP answers and polling change sources are scripted and whose
/// calls are recorded.
#[derive(Default)]
pub struct TestHost {
    responses: Mutex<VecDeque<Result<HttpResponse, String>>>,
    requests: Mutex<Vec<HttpRequest>>,
    logs: Mutex<Vec<(LogLevel, String)>>,
    polling_sources: Vec<String>,
    polled: Mutex<Vec<String>>,
}

impl TestHost {
    /// Queues the answer to the next HTTP request.
    pub fn respond(&self, response: Result<HttpResponse, String>) -> &Self {
        self.responses.lock().unwrap().push_back(response);
        self
    }

    /// The HTTP requests made so far.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The log lines written so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs.lock().unwrap().clone()
    }

    /// A host whose master has these polling change sources.
    pub fn with_polling_sources(names: &[&str]) -> TestHost {
        TestHost {
            polling_sources: names.iter().map(|n| n.to_string()).collect(),
            ..TestHost::default()
        }
    }

    /// The change sources asked to poll so far, in order.
    pub fn polled(&self) -> Vec<String> {
        self.polled.lock().unwrap().clone()
    }
}

impl HostFfi for TestHost {
    fn http_request(&self, request: &FfiHttpRequest) -> RResult<FfiHttpResponse, RString> {
        self.requests
            .lock()
            .unwrap()
            .push(HttpRequest::from_ffi(request));
        match self.responses.lock().unwrap().pop_front() {
            Some(Ok(response)) => RResult::ROk(response.into_ffi()),
            Some(Err(reason)) => RResult::RErr(reason.into()),
            None => RResult::RErr("unexpected HTTP request in test".into()),
        }
    }

    fn log(&self, level: u8, message: abi_stable::std_types::RStr<'_>) {
        self.logs
            .lock()
            .unwrap()
            .push((LogLevel::from_u8(level), message.to_string()));
    }

    fn polling_sources(&self) -> RVec<RString> {
        self.polling_sources
            .iter()
            .map(|n| RString::from(n.as_str()))
            .collect()
    }

    fn force_poll(&self, names: RSlice<'_, RString>) {
        self.polled
            .lock()
            .unwrap()
            .extend(names.iter().map(|n| n.to_string()));
    }
}

/// A form-encoded `POST` to `path` (which may carry a query string).
pub fn form_post(path: &str, body: &str) -> Request {
    request(
        "POST",
        path,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        body,
    )
}

/// The form-encoded body of `fields`, e.g. `payload=%7B%7D` for a form
/// carrying a JSON payload.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// A request with the given method, path (and query string), headers and body.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    Request {
        method: method.into(),
        path: path.into(),
        query: form_urlencoded::parse(query.as_bytes())
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
        remote_addr: "127.0.0.1:40000".into(),
    }
}

/// A JSON `POST` to `path` with `headers` (`Content-Type: application/json`
/// comes first) and `payload` as the body.
pub fn json_post(path: &str, headers: &[(&str, &str)], payload: &serde_json::Value) -> Request {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request("POST", path, &all, &payload.to_string())
}

/// Dialect `D` constructed from its options through the plugin boundary, as
/// the master constructs it, with a [`TestHost`].
pub struct DialectHarness<D> {
    dialect: DialectBox,
    host: TestHost,
    kind: PhantomData<fn() -> D>,
}

impl<D: Dialect> DialectHarness<D> {
    /// Panics with the constructor's message when `options` are refused.
    pub fn new(options: serde_json::Value) -> DialectHarness<D> {
        DialectHarness::try_new(options).unwrap_or_else(|e| panic!("options refused: {e}"))
    }

    /// The constructor's message (e.g. `options.secret: must not be empty`)
    /// when `options` are refused.
    pub fn try_new(options: serde_json::Value) -> Result<DialectHarness<D>, String> {
        match boundary::new_dialect::<D>("test", &options) {
            RResult::ROk(dialect) => Ok(DialectHarness {
                dialect,
                host: TestHost::default(),
                kind: PhantomData,
            }),
            RResult::RErr(e) => Err(e.message.to_string()),
        }
    }

    /// Uses `host` (scripted answers, polling sources) from now on.
    pub fn with_host(mut self, host: TestHost) -> DialectHarness<D> {
        self.host = host;
        self
    }

    /// The host, to script answers or read what the dialect did.
    pub fn host(&self) -> &TestHost {
        &self.host
    }

    /// Handles `request` as the master would.
    pub fn handle(&self, request: &Request) -> Result<HookOutcome, HookError> {
        handle(&self.dialect, request, &self.host)
    }

    /// The changes of an accepted request; panics, showing the error, when it
    /// is refused.
    pub fn changes(&self, request: &Request) -> Vec<Change> {
        match self.handle(request) {
            Ok(outcome) => outcome.changes,
            Err(e) => panic!("refused ({:?}): {}", e.class, e.message),
        }
    }

    /// The message of a request refused with `class`; panics when it is
    /// accepted or refused otherwise.
    pub fn refusal(&self, request: &Request, class: ErrorClass) -> String {
        match self.handle(request) {
            Err(e) if e.class == class => e.message,
            Err(e) => panic!("refused as {:?}, not {class:?}: {}", e.class, e.message),
            Ok(outcome) => panic!("accepted: {outcome:?}"),
        }
    }
}

/// Constructs dialect `D` from `options` and lets it handle `request` on
/// `host`, through the plugin boundary. A constructor error comes back as an
/// internal [`HookError`].
pub fn run_dialect<D: Dialect>(
    options: &serde_json::Value,
    request: &Request,
    host: &TestHost,
) -> Result<HookOutcome, HookError> {
    match boundary::new_dialect::<D>("test", options) {
        RResult::ROk(dialect) => handle(&dialect, request, host),
        RResult::RErr(e) => Err(HookError::internal(e.message.to_string())),
    }
}

/// Lets `dialect` handle `request` on `host`, across the boundary and back.
fn handle(
    dialect: &DialectBox,
    request: &Request,
    host: &TestHost,
) -> Result<HookOutcome, HookError> {
    let envelope = request.clone().into_ffi();
    match dialect.handle(&envelope, boundary::host_ref(host)) {
        RResult::ROk(result) => {
            let changes: Vec<Change> = serde_json::from_str(&result.changes_json)
                .map_err(|e| HookError::internal(format!("bad changes JSON: {e}")))?;
            Ok(HookOutcome {
                changes,
                response: result
                    .response
                    .as_ref()
                    .map(Response::from_ffi)
                    .into_option(),
            })
        }
        RResult::RErr(e) => Err(HookError::new(
            ErrorClass::from_status(e.status),
            e.message.to_string(),
        )),
    }
}

/// Reporter `R` constructed from its options through the plugin boundary.
pub struct ReporterHarness<R> {
    reporter: ReporterBox,
    host: TestHost,
    kind: PhantomData<fn() -> R>,
}

impl<R: Reporter> ReporterHarness<R> {
    /// Panics with the constructor's message when `options` are refused.
    pub fn new(options: serde_json::Value) -> ReporterHarness<R> {
        ReporterHarness::try_new(options).unwrap_or_else(|e| panic!("options refused: {e}"))
    }

    /// The constructor's message when `options` are refused.
    pub fn try_new(options: serde_json::Value) -> Result<ReporterHarness<R>, String> {
        match boundary::new_reporter::<R>("test", &options) {
            RResult::ROk(reporter) => Ok(ReporterHarness {
                reporter,
                host: TestHost::default(),
                kind: PhantomData,
            }),
            RResult::RErr(e) => Err(e.message.to_string()),
        }
    }

    /// The host, to read what the reporter logged.
    pub fn host(&self) -> &TestHost {
        &self.host
    }

    /// What the reporter declared it wants, as the master reads it.
    pub fn wants(&self) -> Wants {
        serde_json::from_str(&self.reporter.wants()).unwrap_or_default()
    }

    /// Renders `envelope` (`{"event": ..., "build": ...}`); the error is the
    /// reporter's message.
    pub fn try_render(&self, envelope: &serde_json::Value) -> Result<Vec<OutgoingRequest>, String> {
        let json = envelope.to_string();
        match self
            .reporter
            .render(json.as_str().into(), boundary::host_ref(&self.host))
        {
            RResult::ROk(requests) => Ok(requests.iter().map(OutgoingRequest::from_ffi).collect()),
            RResult::RErr(e) => Err(e.message.to_string()),
        }
    }

    /// Renders `envelope`; panics with the reporter's message on an error.
    pub fn render(&self, envelope: &serde_json::Value) -> Vec<OutgoingRequest> {
        self.try_render(envelope)
            .unwrap_or_else(|e| panic!("render failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reporter::{Envelope, Event};
    use crate::Host;

    struct Panicky;

    #[derive(serde::Deserialize)]
    struct PanickyOptions {
        #[serde(default)]
        fail: bool,
    }

    impl Dialect for Panicky {
        type Options = PanickyOptions;

        fn new(_: &str, options: PanickyOptions) -> Result<Self, String> {
            if options.fail {
                return Err("told to fail".into());
            }
            Ok(Panicky)
        }

        fn handle(&self, request: &Request, host: &Host<'_>) -> Result<HookOutcome, HookError> {
            match request.args().first("do") {
                Some("panic") => panic!("boom"),
                Some("fetch") => {
                    let response = host
                        .http_get("http://api.invalid/x", &[("Accept", "a")])
                        .map_err(HookError::internal)?;
                    host.info("fetched");
                    Ok(vec![Change {
                        comments: Some(String::from_utf8_lossy(&response.body).into()),
                        ..Change::default()
                    }]
                    .into())
                }
                _ => Err(HookError::forbidden("no")),
            }
        }
    }

    #[test]
    fn a_panic_becomes_an_internal_error() {
        let err = run_dialect::<Panicky>(
            &serde_json::json!({}),
            &form_post("/change_hook/p", "do=panic"),
            &TestHost::default(),
        )
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::Internal);
        assert_eq!(err.message, "plugin panicked: boom");
    }

    #[test]
    fn errors_keep_their_class_and_constructor_errors_are_reported() {
        let host = TestHost::default();
        let err = run_dialect::<Panicky>(&serde_json::json!({}), &form_post("/", ""), &host);
        assert_eq!(err.unwrap_err().class, ErrorClass::Forbidden);
        let err = run_dialect::<Panicky>(
            &serde_json::json!({"fail": true}),
            &form_post("/", ""),
            &host,
        );
        assert_eq!(err.unwrap_err().message, "told to fail");
        let err = DialectHarness::<Panicky>::try_new(serde_json::json!({"fail": 1}));
        assert_eq!(
            err.err().unwrap(),
            "options.fail: expected a boolean, found an integer"
        );
    }

    #[test]
    fn host_capabilities_cross_the_boundary() {
        let host = TestHost::default();
        host.respond(Ok(HttpResponse {
            status: 200,
            headers: vec![],
            body: b"payload".to_vec(),
        }));
        let outcome = run_dialect::<Panicky>(
            &serde_json::json!({}),
            &form_post("/change_hook/p?do=fetch", ""),
            &host,
        )
        .unwrap();
        assert_eq!(outcome.changes[0].comments.as_deref(), Some("payload"));
        let sent = host.requests();
        assert_eq!(sent[0].url, "http://api.invalid/x");
        assert_eq!(
            sent[0].headers,
            vec![("Accept".to_string(), "a".to_string())]
        );
        assert_eq!(host.logs(), vec![(LogLevel::Info, "fetched".to_string())]);
    }

    struct Echo;

    impl Reporter for Echo {
        type Options = crate::options::NoOptions;

        fn new(_: &str, _: crate::options::NoOptions) -> Result<Self, String> {
            Ok(Echo)
        }

        fn wants(&self) -> Wants {
            Wants {
                events: vec![Event::Started, Event::Finished],
                steps: true,
                ..Wants::default()
            }
        }

        fn render(&self, event: &Envelope, _: &Host<'_>) -> Result<Vec<OutgoingRequest>, String> {
            let build = event.build()?;
            Ok(vec![OutgoingRequest::post_json("http://x.invalid/", build)
                .timeout(std::time::Duration::from_secs(5))
                .idempotency_key(format!(
                    "{}-{}",
                    build["buildid"],
                    event.event.name()
                ))])
        }
    }

    #[test]
    fn reporters_render_through_the_boundary() {
        let echo = ReporterHarness::<Echo>::new(serde_json::json!({}));
        assert_eq!(echo.wants().events, [Event::Started, Event::Finished]);
        assert!(echo.wants().steps);
        let out = echo.render(&serde_json::json!({"event": "finished", "build": {"buildid": 1}}));
        assert_eq!(out[0].body, br#"{"buildid":1}"#);
        assert_eq!(out[0].method, "POST");
        assert_eq!(out[0].timeout, Some(std::time::Duration::from_secs(5)));
        assert_eq!(out[0].idempotency_key.as_deref(), Some("1-finished"));
        let error = echo.try_render(&serde_json::json!({"event": "worker_missing"}));
        assert_eq!(
            error.unwrap_err(),
            "a 'worker_missing' event carries no build"
        );
        let error = echo.try_render(&serde_json::json!({"event": "nonsense"}));
        assert!(error
            .unwrap_err()
            .starts_with("unreadable event: unknown variant"));
    }
}
