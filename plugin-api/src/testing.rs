//! Run a dialect or reporter the way the master does, without the master.
//!
//! The calls go through the real boundary (envelopes, JSON, `catch_unwind`), with a
//! [`TestHost`] that answers HTTP requests from a script and records log lines.
//!
//! ```
//! use buildmaster_plugin_api::testing::{self, TestHost};
//! # use buildmaster_plugin_api::{Change, Dialect, HookError, HookOutcome, Host, Request};
//! # struct Echo;
//! # impl Dialect for Echo {
//! #     fn new(_: &str, _: &serde_json::Value) -> Result<Self, String> { Ok(Echo) }
//! #     fn handle(&self, r: &Request, _: &Host<'_>) -> Result<HookOutcome, HookError> {
//! #         Ok(vec![Change { comments: r.args().first("c").map(String::from), ..Change::default() }].into())
//! #     }
//! # }
//! let request = testing::form_post("/change_hook/echo", "c=hi");
//! let outcome = testing::run_dialect::<Echo>(&serde_json::json!({}), &request, &TestHost::default()).unwrap();
//! assert_eq!(outcome.changes[0].comments.as_deref(), Some("hi"));
//! ```

use std::collections::VecDeque;
use std::sync::Mutex;

use abi_stable::std_types::{RResult, RSlice, RString, RVec};

use crate::boundary::{self, FfiHttpRequest, FfiHttpResponse, HostFfi};
use crate::{
    Change, ErrorClass, HookError, HookOutcome, HttpRequest, HttpResponse, LogLevel,
    OutgoingRequest, Request, Response,
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

/// Constructs dialect `D` from `config` and lets it handle `request`, through the
/// plugin boundary. A constructor error comes back as an internal [`HookError`].
pub fn run_dialect<D: crate::Dialect>(
    config: &serde_json::Value,
    request: &Request,
    host: &TestHost,
) -> Result<HookOutcome, HookError> {
    let dialect = match boundary::new_dialect::<D>("test", config) {
        RResult::ROk(dialect) => dialect,
        RResult::RErr(e) => return Err(HookError::internal(e.message.to_string())),
    };
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

/// Constructs reporter `R` from `config` and renders `event`, through the boundary.
pub fn run_reporter<R: crate::Reporter>(
    config: &serde_json::Value,
    event: &serde_json::Value,
    host: &TestHost,
) -> Result<Vec<OutgoingRequest>, String> {
    let reporter = match boundary::new_reporter::<R>("test", config) {
        RResult::ROk(reporter) => reporter,
        RResult::RErr(e) => return Err(e.message.to_string()),
    };
    match reporter.render(event.to_string().as_str().into(), boundary::host_ref(host)) {
        RResult::ROk(json) => serde_json::from_str(&json).map_err(|e| e.to_string()),
        RResult::RErr(e) => Err(e.message.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dialect, Host, Reporter, Wants};

    struct Panicky;

    impl Dialect for Panicky {
        fn new(_: &str, config: &serde_json::Value) -> Result<Self, String> {
            if config.get("fail").is_some() {
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
        let err =
            run_dialect::<Panicky>(&serde_json::json!({"fail": 1}), &form_post("/", ""), &host);
        assert_eq!(err.unwrap_err().message, "told to fail");
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
        fn new(_: &str, _: &serde_json::Value) -> Result<Self, String> {
            Ok(Echo)
        }
        fn wants(&self) -> Wants {
            Wants::default()
        }
        fn render(
            &self,
            event: &serde_json::Value,
            _: &Host<'_>,
        ) -> Result<Vec<OutgoingRequest>, String> {
            Ok(vec![OutgoingRequest::post_json("http://x.invalid/", event)])
        }
    }

    #[test]
    fn reporters_render_through_the_boundary() {
        let out = run_reporter::<Echo>(
            &serde_json::json!({}),
            &serde_json::json!({"build": 1}),
            &TestHost::default(),
        )
        .unwrap();
        assert_eq!(out[0].body, r#"{"build":1}"#);
        assert_eq!(out[0].method, "POST");
    }
}
