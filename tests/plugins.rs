//! Plugin libraries end to end: the out-of-tree example dialect, a panicking
//! plugin, and libraries the master must refuse with one line while it keeps
//! serving everything else.

use buildmaster_e2e::{build_dir, fixture, Basedir, Master};
use serde_json::json;

const PUSH: &str = r#"{"repository": "https://git.example.org/app.git", "branch": "main",
    "commits": [{"id": "1a2b", "author": "Ada <ada@example.org>", "message": "Fix it",
                 "files": ["src/main.c"], "timestamp": 1700000000}]}"#;

fn json_post(
    master: &Master,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> buildmaster_e2e::Reply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    master.send("POST", path, &all, body.as_bytes())
}

#[test]
fn the_out_of_tree_example_dialect_is_enabled_by_file() {
    let library = fixture("example_dialect");
    let master = Master::start(&format!(
        "[www.change_hook_dialects.mine]\nplugin = \"{}\"\ndialect = \"example\"\ntoken = \"t0k3n\"\n\
         [www.change_hook_dialects.greeter]\nplugin = \"example\"\ndialect = \"example\"\ngreeting = \"queued\"\n",
        library.display()
    ));
    let reply = json_post(
        &master,
        "/change_hook/mine",
        &[("X-Example-Token", "t0k3n")],
        PUSH,
    );
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
    let change = &master.changes()[0];
    assert_eq!(change["revision"], "1a2b");
    assert_eq!(change["author"], "Ada <ada@example.org>");
    assert_eq!(change["files"], json!(["src/main.c"]));
    assert_eq!(change["when_timestamp"], 1700000000);

    let reply = json_post(
        &master,
        "/change_hook/mine",
        &[("X-Example-Token", "nope")],
        PUSH,
    );
    assert_eq!(reply.status, 403);
    assert!(!reply.body.contains("t0k3n"));

    // The second instance is found by plugin name and answers with its own reply.
    let reply = json_post(&master, "/change_hook/greeter", &[], PUSH);
    assert_eq!(reply.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&reply.body).unwrap(),
        json!({"text": "queued", "changes": 1})
    );
    assert_eq!(master.changes().len(), 2);
    assert!(
        master.log().contains("plugin=example"),
        "the plugin's log line names it"
    );
}

#[test]
fn a_panicking_plugin_fails_its_request_only() {
    let base = Basedir::new(&format!(
        "[www.change_hook_dialects]\nbase = true\n\
         [www.change_hook_dialects.boom]\nplugin = \"{}\"\ndialect = \"panicky\"\n\
         [www.change_hook_dialects.ctor]\nplugin = \"panicky\"\ndialect = \"panicky_ctor\"\n",
        fixture("fixture_panicking").display()
    ));
    let master = base.start();
    let reply = master.post_form("/change_hook/boom", "x=1");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "Error processing changes.")
    );
    let log = master.log();
    assert!(
        log.lines()
            .any(|l| l.contains("plugin=panicky") && l.contains("this dialect always panics")),
        "the log names the plugin:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("dialect 'ctor'") && l.contains("this constructor always panics")),
        "a panicking constructor is reported:\n{log}"
    );
    let reply = master.post_form("/change_hook/ctor", "x=1");
    assert_eq!(
        reply.status, 400,
        "a dialect that could not be constructed: {}",
        reply.body
    );
    let reply = master.post_form("/change_hook/base", "comments=still+here");
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
    assert_eq!(master.changes()[0]["comments"], "still here");
    assert_eq!(
        master.stop().1.code(),
        Some(0),
        "the master survived the panics"
    );
}

#[test]
fn incompatible_libraries_are_refused_with_one_line_each() {
    let base = Basedir::new("[master]\nplugin_dirs = [\"plugins\", \"@builtin\"]\n[www.change_hook_dialects]\nbase = true\n");
    for (name, file) in [
        ("fixture_not_a_plugin", "not-a-plugin.so"),
        ("fixture_old_api", "old-api.so"),
        ("fixture_wrong_layout", "wrong-layout.so"),
    ] {
        std::fs::create_dir_all(base.path().join("plugins")).unwrap();
        std::fs::copy(fixture(name), base.path().join("plugins").join(file)).unwrap();
    }
    base.write("plugins/notes.so", "this is text, not a library");
    let master = base.start();
    let log = master.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains(" refused: ")).collect();
    assert_eq!(refused.len(), 4, "{log}");
    let line = |file: &str| {
        *refused
            .iter()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file}: {log}"))
    };
    assert!(line("not-a-plugin.so").contains("not a buildmaster plugin"));
    assert!(line("old-api.so").contains("built against plugin API 0.0.1"));
    assert!(line("wrong-layout.so").contains("layout mismatch"));
    assert!(line("notes.so").contains("not a shared library"));
    assert!(
        !log.contains("Could not") && !log.contains("mismatch:\n"),
        "no abi_stable dump:\n{log}"
    );
    let reply = master.post_form("/change_hook/base", "comments=ok");
    assert_eq!(reply.status, 200);
}

#[test]
fn checkconfig_reports_refused_plugins_and_bad_dialects() {
    let base = Basedir::new(&format!(
        "[www.change_hook_dialects.x]\nplugin = \"{}\"\n[www.change_hook_dialects.y]\nplugin = \"missing.so\"\n",
        fixture("fixture_old_api").display()
    ));
    let out = buildmaster_e2e::run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("master.toml:3:1: dialect 'x'") && stderr.contains("plugin API 0.0.1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("master.toml:5:1: dialect 'y'")
            && stderr.contains("missing.so refused: no such file"),
        "{stderr}"
    );
    assert!(build_dir().join("libbuildmaster_dialect_base.so").exists());
}
