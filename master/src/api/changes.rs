//! The `/api/v2/changes` endpoints, independent of the HTTP framework: the
//! caller passes the id from the path, the decoded query pairs and the
//! `Accept` header, and sends back the [`ApiResponse`].

use serde_json::{json, Value};

use super::query::grouped;
use crate::changes::FIELDS;
use crate::db::{ChangeQuery, Column, Db, Filter, Operand, Operator, Order};

const JSON: &str = "application/json; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// What to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// Answers `GET /api/v2/changes` (`id` is `None`) or `GET /api/v2/changes/<id>`.
///
/// The body is Buildbot's envelope, `{"changes": [...], "meta": {...}}`, compact
/// JSON when `accept` mentions `application/json` and indented text otherwise.
/// Errors are `{"error": "..."}` as text, as Buildbot sends them.
pub async fn changes_endpoint(
    db: &Db,
    id: Option<&str>,
    query: &[(String, String)],
    accept: Option<&str>,
) -> ApiResponse {
    let result = match id {
        None => collection(db, query).await,
        Some(id) => single(db, id, query).await,
    };
    match result {
        Ok(body) if accept.is_some_and(|accept| accept.contains("application/json")) => {
            ApiResponse {
                status: 200,
                content_type: JSON,
                body: body.to_string(),
            }
        }
        Ok(body) => ApiResponse {
            status: 200,
            content_type: TEXT,
            body: format!("{body:#}"),
        },
        Err(failure) => ApiResponse {
            status: failure.status,
            content_type: TEXT,
            body: format!("{{\"error\": {}}}", Value::from(failure.message)),
        },
    }
}

async fn collection(db: &Db, query: &[(String, String)]) -> Result<Value, Failure> {
    let spec = parse(query)?;
    let page = db.changes(spec.query).await.map_err(internal)?;
    let changes: Vec<Value> = page
        .changes
        .iter()
        .map(|change| select(change.to_rest(), spec.fields.as_deref()))
        .collect();
    Ok(json!({"changes": changes, "meta": {"total": page.total}}))
}

async fn single(db: &Db, id: &str, query: &[(String, String)]) -> Result<Value, Failure> {
    let changeid: i64 = id
        .parse()
        .map_err(|_| Failure::bad_request(format!("invalid change id '{id}'")))?;
    let spec = parse(query)?;
    if !spec.query.filters.is_empty() {
        return Err(Failure::bad_request(
            "filters apply only to collections".into(),
        ));
    }
    let change = db
        .change(changeid)
        .await
        .map_err(internal)?
        .ok_or(Failure {
            status: 404,
            message: format!("not found while getting change {changeid}"),
        })?;
    let changes = [select(change.to_rest(), spec.fields.as_deref())];
    Ok(json!({"changes": changes, "meta": {}}))
}

/// Why a request gets no changes.
struct Failure {
    status: u16,
    message: String,
}

impl Failure {
    fn bad_request(message: String) -> Failure {
        Failure {
            status: 400,
            message,
        }
    }
}

/// Logs the details of a storage failure, which the client does not need.
fn internal(error: crate::db::Error) -> Failure {
    tracing::error!("cannot answer a changes request: {error}");
    Failure {
        status: 500,
        message: "internal error while getting changes".into(),
    }
}

/// A parsed query string.
struct Spec {
    /// The fields to return; all of them when `None`.
    fields: Option<Vec<String>>,
    query: ChangeQuery,
}

/// Reads `field`, `order`, `limit`, `offset` and the filters `name=value` and
/// `name__op=value`. A repeated parameter contributes all its values.
fn parse(query: &[(String, String)]) -> Result<Spec, Failure> {
    let mut spec = Spec {
        fields: None,
        query: ChangeQuery::default(),
    };
    for (name, values) in grouped(query) {
        match name {
            "field" => {
                let fields = spec.fields.get_or_insert_with(Vec::new);
                for field in values.iter().flat_map(|value| value.split(',')) {
                    if !FIELDS.contains(&field) {
                        return Err(no_such_field(field));
                    }
                    fields.push(field.to_owned());
                }
            }
            "order" => {
                for value in values {
                    let (descending, field) = match value.strip_prefix('-') {
                        Some(field) => (true, field),
                        None => (false, value),
                    };
                    let column = column(field, "sort on")?;
                    spec.query.order.push(Order { column, descending });
                }
            }
            "limit" => spec.query.limit = Some(count(name, values[0])?),
            "offset" => spec.query.offset = count(name, values[0])?,
            _ => spec.query.filters.push(filter(name, &values)?),
        }
    }
    Ok(spec)
}

/// A filter parameter: `field=value` means equality; `in` and `notin` also take
/// comma-separated lists. Integer fields parse their values as integers, except
/// for `contains`, which looks for text in the decimal form.
fn filter(name: &str, values: &[&str]) -> Result<Filter, Failure> {
    let unrecognized = || Failure::bad_request(format!("unrecognized query parameter '{name}'"));
    let (field, operator) = match name.rsplit_once("__") {
        Some((field, operator)) => (
            field,
            Operator::from_name(operator).ok_or_else(unrecognized)?,
        ),
        None if FIELDS.contains(&name) => (name, Operator::Eq),
        None => return Err(unrecognized()),
    };
    let column = column(field, "filter on")?;
    let values: Vec<&str> = match operator {
        Operator::In | Operator::NotIn => {
            values.iter().flat_map(|value| value.split(',')).collect()
        }
        _ => values.to_vec(),
    };
    let values = values
        .into_iter()
        .map(|value| {
            if column.is_integer() && operator != Operator::Contains {
                integer(name, value).map(Operand::Integer)
            } else {
                Ok(Operand::Text(value.to_owned()))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(Filter {
        column,
        operator,
        values,
    })
}

/// The column behind a field; `files`, `properties` and the other structured
/// fields cannot be compared.
fn column(field: &str, action: &str) -> Result<Column, Failure> {
    Column::from_name(field).ok_or_else(|| {
        if FIELDS.contains(&field) {
            Failure::bad_request(format!("cannot {action} field '{field}'"))
        } else {
            no_such_field(field)
        }
    })
}

fn no_such_field(field: &str) -> Failure {
    Failure::bad_request(format!("no such field '{field}'"))
}

fn invalid_value(parameter: &str, value: &str) -> Failure {
    Failure::bad_request(format!("invalid value '{value}' for '{parameter}'"))
}

fn integer(parameter: &str, value: &str) -> Result<i64, Failure> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid_value(parameter, value))
}

fn count(parameter: &str, value: &str) -> Result<u64, Failure> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid_value(parameter, value))
}

/// Keeps only the requested fields of a change object.
fn select(mut change: Value, fields: Option<&[String]>) -> Value {
    if let (Some(fields), Some(object)) = (fields, change.as_object_mut()) {
        object.retain(|key, _| fields.contains(key));
    }
    change
}

#[cfg(test)]
mod tests {
    use super::super::query::pairs;
    use super::*;
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
        let response = changes_endpoint(db, id, &pairs(query), Some("application/json")).await;
        (
            response.status,
            serde_json::from_str(&response.body).unwrap(),
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
        let response = changes_endpoint(db, id, &pairs(query), None).await;
        assert_eq!(response.content_type, TEXT);
        let body: Value = serde_json::from_str(&response.body).unwrap();
        (response.status, body["error"].as_str().unwrap().to_owned())
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
        let query = pairs("field=changeid&field=author&limit=1");
        let json =
            changes_endpoint(&db, None, &query, Some("text/html, application/json;q=0.9")).await;
        assert_eq!(json.status, 200);
        assert_eq!(json.content_type, "application/json; charset=utf-8");
        assert_eq!(
            json.body,
            r#"{"changes":[{"author":"alice","changeid":4}],"meta":{"total":4}}"#
        );

        let text = changes_endpoint(&db, None, &query, None).await;
        assert_eq!(text.content_type, "text/plain; charset=utf-8");
        let expected = "{\n  \"changes\": [\n    {\n      \"author\": \"alice\",\n      \
                        \"changeid\": 4\n    }\n  ],\n  \"meta\": {\n    \"total\": 4\n  }\n}";
        assert_eq!(text.body, expected);
        let html = changes_endpoint(&db, None, &query, Some("text/html")).await;
        assert_eq!(html.body, expected);
    }
}
