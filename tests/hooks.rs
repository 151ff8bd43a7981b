//! The change-hook endpoint over real HTTP: methods, body limit, authentication
//! with a password file, concurrency and durability, the REST shapes.

use buildmaster_e2e::{Basedir, Master};
use serde_json::json;

#[test]
fn unsupported_methods_get_405_with_allow_and_store_nothing() {
    let master = Master::start("[www.change_hook_dialects]\nbase = true\n");
    for method in ["HEAD", "PUT", "DELETE", "PATCH"] {
        let reply = master.send(method, "/change_hook/base?comments=x", &[], b"");
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, POST"), "{method}");
    }
    assert!(master.changes().is_empty());
    let reply = master.send("GET", "/change_hook/base?comments=from+get", &[], b"");
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
}

#[test]
fn an_oversized_body_gets_413_and_stores_nothing() {
    let master = Master::start("max_body_size = 1000\n[www.change_hook_dialects]\nbase = true\n");
    let big = format!("comments={}", "x".repeat(2000));
    let reply = master.post_form("/change_hook/base", &big);
    assert_eq!(reply.status, 413);
    assert!(reply.body.contains("1000 bytes"), "{}", reply.body);
    let reply = master.post_form("/change_hook/base", "comments=small");
    assert_eq!(reply.status, 200);
    assert_eq!(master.changes().len(), 1);
}

#[test]
fn change_hook_auth_accepts_plain_and_bcrypt_entries() {
    let base = Basedir::new(
        "change_hook_auth = ['file:hook.passwd']\n[www.change_hook_dialects]\nbase = true\n",
    );
    // A bcrypt entry as `htpasswd -B` writes it ($2y$).
    let hash = bcrypt::hash("secret", 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    base.write(
        "hook.passwd",
        format!("# users\nalice:plain-pw\nbob:{hash}\n"),
    );
    let master = base.start();
    let basic = |cred: &str| format!("Basic {}", b64(cred));
    for (cred, status) in [
        ("alice:plain-pw", 200),
        ("bob:secret", 200),
        ("alice:secret", 401),
        ("bob:plain-pw", 401),
    ] {
        let auth = basic(cred);
        let reply = master.send(
            "POST",
            "/change_hook/base",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"comments=auth",
        );
        assert_eq!(reply.status, status, "{cred}");
        if status == 401 {
            assert_eq!(
                reply.header("www-authenticate"),
                Some("basic realm=\"Protected area\"")
            );
            assert_eq!(reply.body, "Unauthorized");
        }
    }
    assert_eq!(master.changes().len(), 2);
    assert!(!master.log().contains("plain-pw"), "no password in the log");
}

fn b64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn concurrent_hooks_are_all_stored_and_survive_a_restart() {
    let master = Master::start("[www.change_hook_dialects]\nbase = true\n");
    std::thread::scope(|scope| {
        for t in 0..8 {
            let master = &master;
            scope.spawn(move || {
                for i in 0..25 {
                    let reply = master.post_form(
                        "/change_hook/base",
                        &format!("comments=t{t}-{i}&branch=b{t}"),
                    );
                    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
                }
            });
        }
    });
    assert_eq!(
        master.get_json("/api/v2/changes?limit=1")["meta"]["total"],
        200
    );
    let (base, status) = master.stop();
    assert_eq!(status.code(), Some(0));
    let master = base.start();
    let changes = master.changes();
    assert_eq!(changes.len(), 200, "every acknowledged change is on disk");
    // Each branch's changes chain to their predecessor on the same branch.
    let b3: Vec<_> = changes.iter().filter(|c| c["branch"] == "b3").collect();
    assert_eq!(b3[0]["parent_changeids"], json!([]));
    assert_eq!(b3[1]["parent_changeids"], json!([b3[0]["changeid"]]));
}

#[test]
fn the_changes_api_has_buildbot_shapes() {
    let master = Master::start("[www.change_hook_dialects]\nbase = true\n");
    for (branch, comments) in [("main", "one"), ("dev", "two"), ("main", "three")] {
        let reply = master.post_form(
            "/change_hook/base",
            &format!("branch={branch}&comments={comments}&revision=r-{comments}"),
        );
        assert_eq!(reply.status, 200);
    }
    let page = master
        .get_json("/api/v2/changes?branch=main&order=-changeid&field=comments&field=changeid");
    assert_eq!(page["meta"]["total"], 2);
    assert_eq!(
        page["changes"],
        json!([{"changeid": 3, "comments": "three"}, {"changeid": 1, "comments": "one"}])
    );
    let one = master.get_json("/api/v2/changes/2");
    assert_eq!(one["meta"], json!({}));
    assert_eq!(one["changes"][0]["sourcestamp"]["revision"], "r-two");
    let missing = master.send(
        "GET",
        "/api/v2/changes/99",
        &[("Accept", "application/json")],
        b"",
    );
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("error"));
    let bad = master.send("GET", "/api/v2/changes?colour=red", &[], b"");
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("colour"));
    let pretty = master.send("GET", "/api/v2/changes?limit=1", &[], b"");
    assert_eq!(
        pretty.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        pretty.body.contains("\n  "),
        "indented without Accept: application/json"
    );
}

#[test]
fn a_redelivered_hook_is_answered_200_and_stores_nothing() {
    let master = Master::start("[www.change_hook_dialects]\nbase = true\n");
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let send = |header: &str, id: &str, comments: &str| {
        master.send(
            "POST",
            "/change_hook/base",
            &[form, (header, id)],
            format!("comments={comments}").as_bytes(),
        )
    };
    let first = send(
        "X-GitHub-Delivery",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "first",
    );
    assert_eq!((first.status, first.body.as_str()), (200, "1 change found"));
    let again = send(
        "X-GitHub-Delivery",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "again",
    );
    assert_eq!(
        (again.status, again.body.as_str()),
        (200, "no change found")
    );
    for (header, id) in [
        ("X-Gitlab-Event-UUID", "g-1"),
        ("X-Request-UUID", "b-1"),
        ("X-GitHub-Delivery", "other"),
    ] {
        assert_eq!(send(header, id, "new").body, "1 change found", "{header}");
        assert_eq!(
            send(header, id, "repeat").body,
            "no change found",
            "{header}"
        );
    }
    let comments: Vec<String> = master
        .changes()
        .iter()
        .map(|c| c["comments"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(comments, ["first", "new", "new", "new"]);

    // Remembered across a restart.
    let (base, _) = master.stop();
    let master = base.start();
    let again = master.send(
        "POST",
        "/change_hook/base",
        &[
            form,
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ],
        b"comments=after-restart",
    );
    assert_eq!(again.body, "no change found");
}

#[test]
fn a_zero_delivery_window_turns_de_duplication_off() {
    let master = Master::start("delivery_id_window = 0\n[www.change_hook_dialects]\nbase = true\n");
    let headers = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("X-GitHub-Delivery", "same"),
    ];
    for _ in 0..2 {
        let reply = master.send("POST", "/change_hook/base", &headers, b"comments=x");
        assert_eq!(reply.body, "1 change found");
    }
    assert_eq!(master.changes().len(), 2);
}

#[test]
fn the_status_page_names_the_master_and_the_api_root_lists_its_collections() {
    let master = Master::start("[master]\ntitle = \"Acme <CI>\"\n");
    let reply = master.send("GET", "/status", &[], b"");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        reply.headers
    );
    assert!(
        reply
            .body
            .contains("<title>Status · Acme &lt;CI&gt;</title>"),
        "{}",
        reply.body
    );
    assert!(reply.body.contains(env!("CARGO_PKG_VERSION")));
    for link in ["builders", "builds", "changes", "workers"] {
        assert!(
            reply.body.contains(&format!("href=\"/api/v2/{link}\"")),
            "{link}"
        );
    }
    assert!(reply
        .body
        .contains("configuration generation 1, last reload: started"));
    for path in ["/api/v2", "/api/v2/"] {
        let index = master.get_json(path);
        let names: Vec<&str> = index["rootlinks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|link| link["name"].as_str().unwrap())
            .collect();
        for name in [
            "builders",
            "builds",
            "changes",
            "workers",
            "forceschedulers",
        ] {
            assert!(names.contains(&name), "{path}: {names:?}");
        }
        assert_eq!(index["meta"]["total"], names.len());
        // Every link answers.
        for name in names {
            master.get_json(&format!("/api/v2/{name}"));
        }
    }
}

#[test]
fn each_hook_leaves_one_log_line_and_no_secret() {
    let master = Master::start(
        "change_hook_auth = [\"memory:ci:hook-password\"]\n\
         [www.change_hook_dialects]\nbase = true\n\
         [www.change_hook_dialects.gitlab]\nsecret = \"gitlab-token\"\n",
    );
    let basic = format!("Basic {}", b64("ci:hook-password"));
    let form = [
        ("Authorization", basic.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let reply = master.send(
        "POST",
        "/change_hook/base",
        &form,
        b"comments=one&properties=%7B%22%22%3A1%7D",
    );
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.body,
        "'properties' names a property with an empty name"
    );
    let reply = master.send("POST", "/change_hook/base", &form, b"comments=two");
    assert_eq!(reply.status, 200);
    let wrong = format!("Basic {}", b64("ci:guess"));
    let reply = master.send(
        "POST",
        "/change_hook/base",
        &[("Authorization", &wrong)],
        b"",
    );
    assert_eq!(reply.status, 401);
    let reply = master.send(
        "POST",
        "/change_hook/gitlab",
        &[
            ("Authorization", basic.as_str()),
            ("X-Gitlab-Token", "guessed-token"),
            ("X-Gitlab-Event-UUID", "uuid-1"),
        ],
        b"{}",
    );
    assert_eq!(reply.status, 400);
    let reply = master.send(
        "POST",
        "/change_hook/gitlab",
        &[
            ("Authorization", basic.as_str()),
            ("X-Gitlab-Token", "gitlab-token"),
            ("X-Gitlab-Event-UUID", "uuid-2"),
        ],
        br#"{"object_kind": "build"}"#,
    );
    assert_eq!(reply.status, 200);
    let log = master.log();
    let hooks: Vec<&str> = log.lines().filter(|l| l.contains(" hook ")).collect();
    assert_eq!(hooks.len(), 5, "{log}");
    assert!(hooks[0].contains("hook refused: 'properties' names a property with an empty name"));
    assert!(hooks[0].contains("dialect=base") && hooks[0].contains("status=400"));
    assert!(hooks[1].contains("hook accepted: 1 change(s) stored (ids 1)"));
    assert!(hooks[2].contains("status=401"));
    assert!(hooks[3].contains("hook refused: Invalid secret: X-Gitlab-Token does not match"));
    assert!(
        hooks[4].contains("hook accepted: 0 change(s) stored")
            && hooks[4].contains("delivery=uuid-2")
    );
    for secret in ["hook-password", "guess", "gitlab-token", "guessed-token"] {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}
