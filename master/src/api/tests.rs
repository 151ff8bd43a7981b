//! The REST API through the engine, on a real database: the changes
//! collection's query options as SQL, single objects, errors, and the
//! streamed envelope in both formats.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::query::tests::pairs;
use super::response::{ApiResponse, TEXT};
use super::Engine;
use crate::control::{Control, View};
use crate::db::Db;
use crate::reconfig::SharedStatus;
use crate::tasks::Supervisor;

/// An engine on `db` with nothing running.
fn engine(db: &Db) -> Engine {
    let view = View {
        rest_timeout: Duration::from_secs(30),
        ..View::default()
    };
    let (_, view) = watch::channel(Arc::new(view));
    let (commands, _) = mpsc::channel(1);
    Engine {
        db: db.clone(),
        control: Control::new(
            commands,
            view,
            Arc::new(SharedStatus::default()),
            Supervisor::new(),
        ),
        outbox: Arc::new(tokio::sync::Notify::new()),
    }
}

async fn changes(db: &Db, id: Option<&str>, query: &str, accept: Option<&str>) -> ApiResponse {
    let path: Vec<&str> = ["changes"].into_iter().chain(id).collect();
    engine(db).get(&path, &pairs(query), accept).await.unwrap()
}

use crate::changes::NewChange;

/// Four changes; the comments tell them apart in failures.
async fn sample_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
    let changes = [
        json!({"author": "alice", "branch": "main", "repository": "r", "revision": "a1",
               "when_timestamp": 100, "comments": "fix build", "category": "bug"}),
        json!({"author": "bob", "repository": "r", "revision": "b2", "revlink": null,
               "when_timestamp": 200, "comments": "add tests"}),
        json!({"author": "carol", "branch": "dev", "repository": "r", "revision": "c3",
               "when_timestamp": 300, "comments": "Fix docs"}),
        json!({"author": "alice", "branch": "main", "repository": "r", "revision": "d4",
               "when_timestamp": 400, "comments": "release", "properties": {"n": 1}}),
    ];
    let changes: Vec<NewChange> = changes
        .into_iter()
        .map(|change| serde_json::from_value(change).unwrap())
        .collect();
    assert_eq!(db.add_changes(changes).await.unwrap(), [1, 2, 3, 4]);
    (dir, db)
}

async fn get(db: &Db, id: Option<&str>, query: &str) -> (u16, Value) {
    let response = changes(db, id, query, Some("application/json")).await;
    let status = response.status;
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

/// The ids a collection query returns, and its `meta.total`.
async fn ids(db: &Db, query: &str) -> (Vec<i64>, u64) {
    let (status, body) = get(db, None, query).await;
    assert_eq!(status, 200, "{query}: {body}");
    let ids = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["changeid"].as_i64().unwrap())
        .collect();
    (ids, body["meta"]["total"].as_u64().unwrap())
}

async fn error(db: &Db, id: Option<&str>, query: &str) -> (u16, String) {
    let response = changes(db, id, query, None).await;
    assert_eq!(response.content_type, TEXT);
    let status = response.status;
    let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn collections_list_newest_first_with_the_total() {
    let (_dir, db) = sample_db().await;
    assert_eq!(ids(&db, "").await, (vec![4, 3, 2, 1], 4));
    assert_eq!(ids(&db, "order=-changeid").await, (vec![4, 3, 2, 1], 4));
}

#[tokio::test]
async fn order_sorts_ascending_or_descending_with_nulls_lowest() {
    let (_dir, db) = sample_db().await;
    assert_eq!(ids(&db, "order=when_timestamp").await.0, [1, 2, 3, 4]);
    assert_eq!(ids(&db, "order=changeid").await.0, [1, 2, 3, 4]);
    // Ties are broken newest first.
    assert_eq!(ids(&db, "order=-author").await.0, [3, 2, 4, 1]);
    assert_eq!(ids(&db, "order=branch").await.0, [2, 3, 4, 1]);
    assert_eq!(ids(&db, "order=-branch").await.0, [4, 1, 3, 2]);
    assert_eq!(
        ids(&db, "order=author&order=changeid").await.0,
        [1, 4, 2, 3]
    );
}

#[tokio::test]
async fn limit_and_offset_page_while_total_counts_all_matches() {
    let (_dir, db) = sample_db().await;
    assert_eq!(ids(&db, "limit=2").await, (vec![4, 3], 4));
    assert_eq!(ids(&db, "limit=2&offset=1").await, (vec![3, 2], 4));
    assert_eq!(ids(&db, "offset=3").await, (vec![1], 4));
    assert_eq!(ids(&db, "offset=10").await, (vec![], 4));
    assert_eq!(ids(&db, "limit=0").await, (vec![], 4));
    assert_eq!(ids(&db, "author=alice&limit=1").await, (vec![4], 2));
    assert_eq!(
        ids(&db, "order=changeid&limit=1&offset=1").await,
        (vec![2], 4)
    );
}

#[tokio::test]
async fn field_limits_the_returned_fields() {
    let (_dir, db) = sample_db().await;
    let (_, body) = get(&db, None, "field=changeid&field=author&limit=1").await;
    assert_eq!(body["changes"], json!([{"changeid": 4, "author": "alice"}]));
    let (_, body) = get(&db, None, "field=comments,sourcestamp&limit=1").await;
    let keys: Vec<&String> = body["changes"][0].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["comments", "sourcestamp"]);
    let (_, body) = get(&db, Some("2"), "field=revlink").await;
    assert_eq!(body, json!({"changes": [{"revlink": null}], "meta": {}}));
}

#[tokio::test]
async fn equality_filters_match_any_repeated_value() {
    let (_dir, db) = sample_db().await;
    assert_eq!(ids(&db, "author=alice").await, (vec![4, 1], 2));
    assert_eq!(ids(&db, "author=alice&author=bob").await.0, [4, 2, 1]);
    assert_eq!(ids(&db, "author__eq=bob").await.0, [2]);
    assert_eq!(ids(&db, "changeid=3").await.0, [3]);
    assert_eq!(ids(&db, "branch=main&when_timestamp__gt=100").await.0, [4]);
    assert_eq!(ids(&db, "revlink=").await.0, [4, 3, 1]);
    assert_eq!(ids(&db, "author=nobody").await, (vec![], 0));
}

#[tokio::test]
async fn comparison_filters_compare_as_the_field_type() {
    let (_dir, db) = sample_db().await;
    assert_eq!(ids(&db, "when_timestamp__lt=300").await.0, [2, 1]);
    assert_eq!(ids(&db, "when_timestamp__le=300").await.0, [3, 2, 1]);
    assert_eq!(ids(&db, "when_timestamp__gt=200").await.0, [4, 3]);
    assert_eq!(ids(&db, "when_timestamp__ge=200").await.0, [4, 3, 2]);
    // As integers, 1000 sorts after 300; as text it would not.
    assert_eq!(ids(&db, "when_timestamp__lt=1000").await.0, [4, 3, 2, 1]);
    assert_eq!(ids(&db, "changeid__ge=2&changeid__le=3").await.0, [3, 2]);
    assert_eq!(ids(&db, "author__gt=bob").await.0, [3]);
}

#[tokio::test]
async fn ne_and_notin_keep_nulls_and_eq_does_not() {
    let (_dir, db) = sample_db().await;
    assert_eq!(ids(&db, "branch__ne=main").await.0, [3, 2]);
    assert_eq!(ids(&db, "branch__ne=main&branch__ne=dev").await.0, [2]);
    assert_eq!(ids(&db, "author__notin=alice,bob").await.0, [3]);
    assert_eq!(
        ids(&db, "changeid__notin=1&changeid__notin=4").await.0,
        [3, 2]
    );
    assert_eq!(ids(&db, "category__eq=bug").await.0, [1]);
}

#[tokio::test]
async fn contains_and_in_filters() {
    let (_dir, db) = sample_db().await;
    // Case-sensitive, like Buildbot's Python comparison.
    assert_eq!(ids(&db, "comments__contains=fix").await.0, [1]);
    assert_eq!(
        ids(&db, "comments__contains=fix&comments__contains=docs")
            .await
            .0,
        [3, 1]
    );
    assert_eq!(ids(&db, "changeid__in=1&changeid__in=3").await.0, [3, 1]);
    assert_eq!(ids(&db, "changeid__in=1,3").await.0, [3, 1]);
    assert_eq!(ids(&db, "revision__in=b2").await.0, [2]);
}

#[tokio::test]
async fn bad_parameters_are_rejected_with_400() {
    let (_dir, db) = sample_db().await;
    let cases = [
        ("x=1", "unrecognized query parameter 'x'"),
        (
            "author__like=a",
            "unrecognized query parameter 'author__like'",
        ),
        ("field=nope", "no such field 'nope'"),
        ("order=-nope", "no such field 'nope'"),
        ("nope__eq=1", "no such field 'nope'"),
        ("files=a.c", "cannot filter on field 'files'"),
        ("order=properties", "cannot sort on field 'properties'"),
        ("limit=ten", "invalid value 'ten' for 'limit'"),
        ("offset=-1", "invalid value '-1' for 'offset'"),
        ("changeid__gt=two", "invalid value 'two' for 'changeid__gt'"),
        (
            "when_timestamp=soon",
            "invalid value 'soon' for 'when_timestamp'",
        ),
    ];
    for (query, message) in cases {
        assert_eq!(
            error(&db, None, query).await,
            (400, message.to_owned()),
            "{query}"
        );
    }
    let many = vec!["comments__contains=x"; 201].join("&");
    let listed = format!("author__in={}", vec!["a"; 201].join(","));
    for (query, message) in [
        (
            many.as_str(),
            "too many values for 'comments__contains': 201 (at most 200)",
        ),
        (
            listed.as_str(),
            "too many values for 'author__in': 201 (at most 200)",
        ),
        (
            "offset=10001",
            "offset 10001 is larger than 10000: page further with a filter on the id \
             (e.g. id__lt=LAST) instead",
        ),
    ] {
        assert_eq!(error(&db, None, query).await, (400, message.to_owned()));
    }
    let most = vec!["comments__contains=x"; 200].join("&");
    assert_eq!(ids(&db, &most).await.0, [3, 1]);
}

#[tokio::test]
async fn single_changes_and_their_errors() {
    let (_dir, db) = sample_db().await;
    let (status, body) = get(&db, Some("3"), "").await;
    assert_eq!(status, 200);
    assert_eq!(body["meta"], json!({}));
    assert_eq!(body["changes"].as_array().unwrap().len(), 1);
    assert_eq!(body["changes"][0]["comments"], "Fix docs");

    assert_eq!(
        error(&db, Some("99"), "").await,
        (404, "not found while getting change 99".to_owned())
    );
    assert_eq!(
        error(&db, Some("abc"), "").await,
        (400, "invalid change id 'abc'".to_owned())
    );
    assert_eq!(
        error(&db, Some("3"), "author=carol").await,
        (400, "filters apply only to collections".to_owned())
    );
}

#[tokio::test]
async fn stored_changes_render_with_add_change_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
    let absent: NewChange = serde_json::from_value(json!({"src": "git"})).unwrap();
    let nulls: NewChange = serde_json::from_value(json!({
        "author": null, "committer": null, "comments": null, "files": null,
        "revision": null, "when_timestamp": 1_700_000_000, "branch": null,
        "category": null, "revlink": null, "properties": null, "repository": null,
        "project": null, "codebase": null,
    }))
    .unwrap();
    let before = crate::clock::now();
    db.add_changes(vec![absent, nulls]).await.unwrap();
    let after = crate::clock::now();

    let (_, body) = get(&db, Some("1"), "").await;
    let first = &body["changes"][0];
    let stored_at = first["when_timestamp"].as_i64().unwrap();
    assert!((before..=after).contains(&stored_at), "{stored_at}");
    assert_eq!(first["revlink"], "");
    assert_eq!(first["sourcestamp"]["created_at"], stored_at);

    let (_, body) = get(&db, Some("2"), "").await;
    let ssid = body["changes"][0]["sourcestamp"]["ssid"].clone();
    let created_at = body["changes"][0]["sourcestamp"]["created_at"].clone();
    assert_eq!(
        body["changes"][0],
        json!({
            "author": "", "branch": null, "category": null, "changeid": 2,
            "codebase": "", "comments": "", "committer": null, "files": [],
            "parent_changeids": [1], "project": "", "properties": {},
            "repository": "", "revision": null, "revlink": null,
            "sourcestamp": {"branch": null, "codebase": "", "created_at": created_at,
                            "patch": null, "project": "", "repository": "",
                            "revision": null, "ssid": ssid},
            "when_timestamp": 1_700_000_000,
        })
    );
}

#[tokio::test]
async fn accept_selects_compact_json_or_indented_text() {
    let (_dir, db) = sample_db().await;
    let query = "field=changeid&field=author&limit=1";
    let json = changes(&db, None, query, Some("text/html, application/json;q=0.9")).await;
    assert_eq!(json.status, 200);
    assert_eq!(json.content_type, "application/json; charset=utf-8");
    assert_eq!(
        json.text().await.unwrap(),
        r#"{"changes":[{"author":"alice","changeid":4}],"meta":{"total":4}}"#
    );

    let text = changes(&db, None, query, None).await;
    assert_eq!(text.content_type, "text/plain; charset=utf-8");
    let expected = "{\n  \"changes\": [\n    {\n      \"author\": \"alice\",\n      \
                    \"changeid\": 4\n    }\n  ],\n  \"meta\": {\n    \"total\": 4\n  }\n}";
    assert_eq!(text.text().await.unwrap(), expected);
    let html = changes(&db, None, query, Some("text/html")).await;
    assert_eq!(html.text().await.unwrap(), expected);
    // Without a limit, the streamed envelope counts what it listed.
    let all = changes(&db, None, "field=changeid", Some("application/json")).await;
    assert_eq!(
        all.text().await.unwrap(),
        r#"{"changes":[{"changeid":4},{"changeid":3},{"changeid":2},{"changeid":1}],"meta":{"total":4}}"#
    );
    let none = changes(&db, None, "author=nobody", None).await;
    assert_eq!(
        none.text().await.unwrap(),
        "{\n  \"changes\": [],\n  \"meta\": {\n    \"total\": 0\n  }\n}"
    );
}
