//! `GET /metrics`: the Prometheus text format, with the gauges of state read
//! now. With `[www] metrics_token` set, only a request bearing it gets them.

use std::collections::HashMap;

use warp::http::{header, HeaderMap, HeaderValue, StatusCode};
use warp::Reply;

use super::{text, AppState};
use crate::metrics::{self, Gauge};

pub async fn scrape(headers: HeaderMap, state: AppState) -> warp::reply::Response {
    let registry = state.registry.load_full();
    if let Some(token) = &registry.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !token.matches(given.trim().as_bytes()) {
            let mut reply = text(
                StatusCode::UNAUTHORIZED,
                "/metrics needs its bearer token\n",
            );
            reply
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return reply;
        }
    }
    let (pending, outbox) = match state.db.backlogs().await {
        Ok(backlogs) => backlogs,
        Err(e) => {
            tracing::error!("cannot read the backlogs for /metrics: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
        }
    };
    let pending: HashMap<i64, i64> = pending.into_iter().collect();
    let outbox: HashMap<String, i64> = outbox.into_iter().collect();
    let control = &state.engine.control;
    let view = control.view();
    let gauge = |name, labels, value| Gauge {
        name,
        labels,
        value,
    };
    let mut gauges = vec![
        gauge(
            "buildmaster_config_generation",
            Vec::new(),
            control.reload_status().generation as f64,
        ),
        gauge(
            "buildmaster_workers_connected",
            Vec::new(),
            view.workers.len() as f64,
        ),
    ];
    // Every configured builder and reporter, at zero when nothing waits.
    for (builderid, builder) in &view.builders {
        let waiting = pending.get(builderid).copied().unwrap_or(0);
        gauges.push(gauge(
            "buildmaster_build_requests_pending",
            vec![("builder", builder.name.clone())],
            waiting as f64,
        ));
    }
    for (reporter, _) in &view.reporters {
        let waiting = outbox.get(reporter).copied().unwrap_or(0);
        gauges.push(gauge(
            "buildmaster_reporter_deliveries_pending",
            vec![("reporter", reporter.clone())],
            waiting as f64,
        ));
    }
    let mut reply =
        warp::reply::with_status(metrics::render(&gauges), StatusCode::OK).into_response();
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    reply
}
