//! The fuzz targets: every built-in dialect with a configuration and seed
//! requests written for fuzzing (realistic shapes, made-up values).

use buildmaster_plugin_api::signature::{hmac_hex, Algorithm};
use buildmaster_plugin_api::testing;
use buildmaster_plugin_api::Request;
use serde_json::{json, Value};

use crate::mutate::encode_form;

/// One dialect to fuzz.
pub struct Target {
    pub name: &'static str,
    pub config: Value,
    pub seeds: Vec<Request>,
    /// Event-header values worth trying, as (header, value).
    pub events: &'static [(&'static str, &'static str)],
    /// Signs a mutated request the way the configured secret expects.
    pub sign: Option<fn(&mut Request)>,
}

const GITHUB_SECRET: &str = "fuzz-github-secret";
const BITBUCKET_SECRET: &str = "fuzz-bitbucket-secret";

fn json_post(path: &str, headers: &[(&str, &str)], body: &Value) -> Request {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    testing::request("POST", path, &all, &body.to_string())
}

fn form_post(path: &str, headers: &[(&str, &str)], pairs: &[(&str, String)]) -> Request {
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    testing::request("POST", path, &all, &encode_form(&pairs))
}

fn set_header(request: &mut Request, name: &str, value: String) {
    request
        .headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    request.headers.push((name.to_string(), value));
}

fn sign_github(request: &mut Request) {
    let sha256 = hmac_hex(Algorithm::Sha256, GITHUB_SECRET.as_bytes(), &request.body);
    let sha1 = hmac_hex(Algorithm::Sha1, GITHUB_SECRET.as_bytes(), &request.body);
    set_header(request, "X-Hub-Signature-256", format!("sha256={sha256}"));
    set_header(request, "X-Hub-Signature", format!("sha1={sha1}"));
}

fn sign_bitbucket(request: &mut Request) {
    let sha256 = hmac_hex(
        Algorithm::Sha256,
        BITBUCKET_SECRET.as_bytes(),
        &request.body,
    );
    set_header(request, "X-Hub-Signature", format!("sha256={sha256}"));
}

fn github_seeds() -> Vec<Request> {
    let repository = json!({
        "id": 7, "name": "widget", "full_name": "acme/widget", "private": false,
        "html_url": "https://github.com/acme/widget", "url": "https://github.com/acme/widget",
        "clone_url": "https://github.com/acme/widget.git", "owner": {"login": "acme", "name": "acme"},
    });
    let commit = |id: &str, message: &str| {
        json!({
            "id": id, "distinct": true, "message": message, "timestamp": "2024-03-01T10:00:00+01:00",
            "url": format!("https://github.com/acme/widget/commit/{id}"),
            "author": {"name": "Ada", "email": "ada@example.org", "username": "ada"},
            "committer": {"name": "Bob", "email": "bob@example.org"},
            "added": ["src/new.rs"], "modified": ["README.md"], "removed": [],
        })
    };
    let push = json!({
        "ref": "refs/heads/main", "before": "1111111111111111111111111111111111111111",
        "after": "2222222222222222222222222222222222222222", "created": false, "deleted": false,
        "repository": repository, "pusher": {"name": "ada"},
        "commits": [commit("aaaa", "First"), commit("bbbb", "Second [ci skip]")],
        "head_commit": commit("bbbb", "Second"),
    });
    let mut tag = push.clone();
    tag["ref"] = json!("refs/tags/v1.0");
    let mut deleted = push.clone();
    deleted["deleted"] = json!(true);
    deleted["after"] = json!("0000000000000000000000000000000000000000");
    let pull = json!({
        "action": "opened", "number": 12,
        "pull_request": {
            "number": 12, "title": "Add frobnicator", "body": "Please review",
            "html_url": "https://github.com/acme/widget/pull/12",
            "url": "https://api.github.com/repos/acme/widget/pulls/12",
            "commits_url": "https://api.github.com/repos/acme/widget/pulls/12/commits",
            "created_at": "2024-03-01T09:00:00Z", "updated_at": "2024-03-01T09:30:00Z",
            "user": {"login": "ada"},
            "head": {"ref": "feature", "sha": "cccc", "label": "ada:feature",
                     "repo": {"full_name": "ada/widget", "html_url": "https://github.com/ada/widget"}},
            "base": {"ref": "main", "sha": "dddd", "repo": repository},
        },
        "repository": repository, "sender": {"login": "ada"},
    });
    let mut synchronize = pull.clone();
    synchronize["action"] = json!("synchronize");
    let ping = json!({"zen": "Design for failure.", "hook_id": 1, "repository": repository});
    vec![
        json_post("/change_hook/github", &[("X-GitHub-Event", "push")], &push),
        json_post("/change_hook/github", &[("X-GitHub-Event", "push")], &tag),
        json_post(
            "/change_hook/github",
            &[("X-GitHub-Event", "push")],
            &deleted,
        ),
        json_post(
            "/change_hook/github",
            &[("X-GitHub-Event", "pull_request")],
            &pull,
        ),
        json_post(
            "/change_hook/github",
            &[("X-GitHub-Event", "pull_request")],
            &synchronize,
        ),
        json_post("/change_hook/github", &[("X-GitHub-Event", "ping")], &ping),
        form_post(
            "/change_hook/github",
            &[("X-GitHub-Event", "push")],
            &[("payload", push.to_string())],
        ),
    ]
}

fn gitlab_seeds() -> Vec<Request> {
    let project = json!({"name": "widget", "path_with_namespace": "acme/widget",
        "web_url": "https://gitlab.example.org/acme/widget", "git_http_url": "https://gitlab.example.org/acme/widget.git",
        "git_ssh_url": "git@gitlab.example.org:acme/widget.git"});
    let repository = json!({"name": "widget", "url": "git@gitlab.example.org:acme/widget.git",
        "homepage": "https://gitlab.example.org/acme/widget", "git_http_url": "https://gitlab.example.org/acme/widget.git"});
    let commit = json!({"id": "aaaa", "message": "Fix", "timestamp": "2024-03-01T10:00:00+01:00",
        "url": "https://gitlab.example.org/acme/widget/-/commit/aaaa",
        "author": {"name": "Ada", "email": "ada@example.org"}, "added": ["a"], "modified": ["b"], "removed": []});
    let push = json!({"object_kind": "push", "ref": "refs/heads/main", "before": "1111", "after": "aaaa",
        "user_name": "Ada", "user_email": "ada@example.org", "project": project, "repository": repository,
        "commits": [commit], "total_commits_count": 1});
    let mut tag = push.clone();
    tag["object_kind"] = json!("tag_push");
    tag["ref"] = json!("refs/tags/v1");
    let merge = json!({"object_kind": "merge_request", "user": {"name": "Ada", "username": "ada"},
        "project": project, "repository": repository,
        "object_attributes": {"iid": 3, "action": "open", "state": "opened", "title": "Add it",
            "source_branch": "feature", "target_branch": "main", "url": "https://gitlab.example.org/acme/widget/-/merge_requests/3",
            "created_at": "2024-03-01 09:00:00 UTC", "updated_at": "2024-03-01 09:30:00 UTC",
            "source": project, "target": project,
            "last_commit": {"id": "cccc", "message": "Add it", "timestamp": "2024-03-01T09:00:00+00:00",
                "author": {"name": "Ada", "email": "ada@example.org"}}}});
    let note = json!({"object_kind": "note", "user": {"name": "Ada"}, "project": project,
        "object_attributes": {"note": "retry", "noteable_type": "MergeRequest"},
        "merge_request": merge["object_attributes"].clone()});
    let token = ("X-Gitlab-Token", "fuzz-gitlab-token");
    vec![
        json_post(
            "/change_hook/gitlab",
            &[("X-Gitlab-Event", "Push Hook"), token],
            &push,
        ),
        json_post(
            "/change_hook/gitlab",
            &[("X-Gitlab-Event", "Tag Push Hook"), token],
            &tag,
        ),
        json_post(
            "/change_hook/gitlab",
            &[("X-Gitlab-Event", "Merge Request Hook"), token],
            &merge,
        ),
        json_post(
            "/change_hook/gitlab",
            &[("X-Gitlab-Event", "Note Hook"), token],
            &note,
        ),
    ]
}

fn bitbucket_seeds() -> Vec<Request> {
    let payload = |scm: &str| {
        json!({
            "canon_url": "https://bitbucket.org", "user": "ada",
            "repository": {"absolute_url": "/acme/widget/", "name": "widget", "owner": "acme", "scm": scm, "slug": "widget"},
            "commits": [{"node": "aaaa", "raw_node": "aaaa1111", "author": "ada", "raw_author": "Ada <ada@example.org>",
                "branch": "main", "message": "Fix", "timestamp": "2024-03-01 10:00:00", "utctimestamp": "2024-03-01 09:00:00+00:00",
                "files": [{"file": "src/a.c", "type": "modified"}]}],
        })
    };
    vec![
        form_post(
            "/change_hook/bitbucket",
            &[],
            &[("payload", payload("git").to_string())],
        ),
        form_post(
            "/change_hook/bitbucket?project=widget",
            &[],
            &[("payload", payload("hg").to_string())],
        ),
    ]
}

fn bitbucket_cloud_seeds() -> Vec<Request> {
    let repository = json!({"scm": "git", "full_name": "acme/widget", "project": {"name": "Widgets"},
        "links": {"self": {"href": "https://api.bitbucket.org/2.0/repositories/acme/widget"},
                  "html": {"href": "https://bitbucket.org/acme/widget"}}});
    let actor = json!({"display_name": "Ada Lovelace", "nickname": "ada"});
    let change = |new: Value, old: Value| json!({"new": new, "old": old});
    let branch = json!({"type": "branch", "name": "main", "target": {"hash": "aaaa"}});
    let push = json!({"actor": actor, "repository": repository,
        "push": {"changes": [change(branch.clone(), Value::Null), change(Value::Null, branch)]}});
    let pull = json!({"actor": actor, "repository": repository,
        "pullrequest": {"id": 5, "title": "Add it", "link": "https://bitbucket.org/acme/widget/pull-requests/5",
            "fromRef": {"branch": {"name": "feature"}, "commit": {"hash": "cccc"}, "repository": repository},
            "toRef": {"branch": {"name": "main"}, "commit": {"hash": "dddd"}, "repository": repository},
            "source": {"branch": {"name": "feature"}, "commit": {"hash": "cccc"}},
            "destination": {"branch": {"name": "main"}, "commit": {"hash": "dddd"}},
            "links": {"html": {"href": "https://bitbucket.org/acme/widget/pull-requests/5"}},
            "author": {"display_name": "Ada Lovelace", "nickname": "ada"}}});
    vec![
        json_post(
            "/change_hook/bitbucketcloud",
            &[("X-Event-Key", "repo:push")],
            &push,
        ),
        json_post(
            "/change_hook/bitbucketcloud",
            &[("X-Event-Key", "pullrequest:created")],
            &pull,
        ),
        json_post(
            "/change_hook/bitbucketcloud",
            &[("X-Event-Key", "pullrequest:fulfilled")],
            &pull,
        ),
    ]
}

fn bitbucket_server_seeds() -> Vec<Request> {
    let repository = json!({"scmId": "git", "slug": "widget", "project": {"key": "ACME", "name": "Acme"},
        "links": {"self": [{"href": "https://bitbucket.example.org/projects/ACME/repos/widget/browse"}]}});
    let actor = json!({"displayName": "Ada Lovelace", "username": "ada"});
    let branch = json!({"type": "branch", "name": "main", "target": {"hash": "aaaa"}});
    let push = json!({"actor": actor, "repository": repository,
        "push": {"changes": [{"new": branch, "old": null}]}});
    let pull = json!({"actor": actor, "repository": repository,
        "pullrequest": {"id": 9, "title": "Add it", "link": "https://bitbucket.example.org/projects/ACME/repos/widget/pull-requests/9",
            "fromRef": {"branch": {"name": "feature"}, "commit": {"hash": "cccc"}, "repository": repository},
            "toRef": {"branch": {"name": "main"}, "commit": {"hash": "dddd"}, "repository": repository}}});
    vec![
        json_post(
            "/change_hook/bitbucketserver",
            &[("X-Event-Key", "repo:refs_changed")],
            &push,
        ),
        json_post(
            "/change_hook/bitbucketserver",
            &[("X-Event-Key", "pullrequest:updated")],
            &pull,
        ),
        json_post(
            "/change_hook/bitbucketserver",
            &[("X-Event-Key", "pullrequest:rejected")],
            &pull,
        ),
    ]
}

fn gitorious_seeds() -> Vec<Request> {
    let payload = json!({"after": "bbbb", "before": "aaaa", "ref": "main", "pushed_by": "ada",
        "project": {"name": "widget", "description": "a widget"},
        "repository": {"name": "mainline", "url": "https://gitorious.example.org/widget/mainline", "owner": {"name": "acme"}},
        "commits": [{"id": "bbbb", "message": "Fix", "timestamp": "2024-03-01T10:00:00+01:00",
            "url": "https://gitorious.example.org/widget/mainline/commit/bbbb",
            "author": {"name": "Ada", "email": "ada@example.org"}, "committed_at": "2024-03-01T10:00:00+01:00"}]});
    vec![form_post(
        "/change_hook/gitorious",
        &[],
        &[("payload", payload.to_string())],
    )]
}

fn mattermost_seeds() -> Vec<Request> {
    let form = |text: &str| {
        form_post(
            "/change_hook/mattermost",
            &[],
            &[
                ("token", "fuzz-mattermost-token".into()),
                ("team_domain", "acme".into()),
                ("channel_name", "ci".into()),
                ("user_name", "ada".into()),
                ("command", "/build".into()),
                ("text", text.into()),
            ],
        )
    };
    // As a real Mattermost server sends it: the token in a header too.
    let mut with_header = form("widget develop");
    set_header(
        &mut with_header,
        "Authorization",
        "Token fuzz-mattermost-token".into(),
    );
    vec![
        form("widget"),
        form("widget develop"),
        form("widget develop 1a2b3c extra"),
        form("../widget develop"),
        with_header,
    ]
}

fn poller_seeds() -> Vec<Request> {
    vec![
        testing::request("GET", "/change_hook/poller", &[], ""),
        testing::request(
            "GET",
            "/change_hook/poller?poller=example&poller=other",
            &[],
            "",
        ),
        form_post("/change_hook/poller", &[], &[("poller", "example".into())]),
    ]
}

fn base_seeds() -> Vec<Request> {
    let form = |properties: &str| {
        form_post(
            "/change_hook/base",
            &[],
            &[
                ("author", "Ada <ada@example.org>".into()),
                ("comments", "Fix".into()),
                ("files", "[\"a.c\"]".into()),
                ("properties", properties.into()),
                ("when_timestamp", "1700000000".into()),
                ("branch", "main".into()),
            ],
        )
    };
    vec![form("{\"ticket\": 42}"), form("{\"\": 1, \"ticket\": 42}")]
}

/// The target of each built-in dialect, by name.
pub fn target(name: &str) -> Option<Target> {
    let target = match name {
        "base" => Target {
            name: "base",
            config: json!({}),
            seeds: base_seeds(),
            events: &[],
            sign: None,
        },
        "github" => Target {
            name: "github",
            config: json!({"secret": GITHUB_SECRET, "strict": true, "codebase": "widget"}),
            seeds: github_seeds(),
            events: &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Event", "pull_request"),
                ("X-GitHub-Event", "ping"),
                ("X-GitHub-Event", "workflow_run"),
            ],
            sign: Some(sign_github),
        },
        "gitlab" => Target {
            name: "gitlab",
            config: json!({"secret": "fuzz-gitlab-token"}),
            seeds: gitlab_seeds(),
            events: &[
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Event", "Tag Push Hook"),
                ("X-Gitlab-Event", "Merge Request Hook"),
                ("X-Gitlab-Event", "Note Hook"),
                ("X-Gitlab-Event", "System Hook"),
            ],
            sign: None,
        },
        "bitbucket" => Target {
            name: "bitbucket",
            config: json!({}),
            seeds: bitbucket_seeds(),
            events: &[],
            sign: None,
        },
        "bitbucketcloud" => Target {
            name: "bitbucketcloud",
            config: json!({"secret": BITBUCKET_SECRET}),
            seeds: bitbucket_cloud_seeds(),
            events: &[
                ("X-Event-Key", "repo:push"),
                ("X-Event-Key", "pullrequest:created"),
                ("X-Event-Key", "pullrequest:updated"),
                ("X-Event-Key", "pullrequest:rejected"),
                ("X-Event-Key", "pullrequest:fulfilled"),
                ("X-Event-Key", "issue:created"),
            ],
            sign: Some(sign_bitbucket),
        },
        "bitbucketserver" => Target {
            name: "bitbucketserver",
            config: json!({"secret": BITBUCKET_SECRET}),
            seeds: bitbucket_server_seeds(),
            events: &[
                ("X-Event-Key", "repo:push"),
                ("X-Event-Key", "repo:refs_changed"),
                ("X-Event-Key", "pullrequest:created"),
                ("X-Event-Key", "pullrequest:fulfilled"),
            ],
            sign: Some(sign_bitbucket),
        },
        "gitorious" => Target {
            name: "gitorious",
            config: json!({}),
            seeds: gitorious_seeds(),
            events: &[],
            sign: None,
        },
        "mattermost" => Target {
            name: "mattermost",
            config: json!({"token": "fuzz-mattermost-token", "channel": "ci", "repo_base_url": "git@github.com:acme/"}),
            seeds: mattermost_seeds(),
            events: &[],
            sign: None,
        },
        "poller" => Target {
            name: "poller",
            config: json!({"allowed": ["example"]}),
            seeds: poller_seeds(),
            events: &[],
            sign: None,
        },
        _ => return None,
    };
    Some(target)
}
