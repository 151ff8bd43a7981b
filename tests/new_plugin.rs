//! `buildmaster new-plugin`: the crates it writes build, pass their own tests
//! and load in a master as they are.

use buildmaster_e2e::{cargo_in, run_cli, workspace_root, Basedir};

/// Writes plugin `name` of `kind` into a new directory, pinned to the
/// dependency versions the fixtures use, and runs its tests and its build.
fn create_and_build(kind: &str, name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join(name);
    let output = run_cli(&["new-plugin", kind, name, dir.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    std::fs::copy(
        workspace_root().join("tests/plugins/Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    cargo_in(&dir, &["test"]);
    let library = cargo_in(&dir, &["build"]).join(format!("lib{name}.so"));
    assert!(library.is_file(), "{}", library.display());
    (parent, library)
}

#[test]
fn a_new_dialect_builds_and_serves_in_a_master() {
    let (_dir, library) = create_and_build("dialect", "hello");
    let base = Basedir::new(
        "[master]\nplugin_dirs = [\"plugins\"]\n\
         [www.change_hook_dialects.hello]\ntoken = \"t0k3n\"\nproject = \"demo\"\n",
    );
    std::fs::create_dir(base.path().join("plugins")).unwrap();
    std::fs::copy(&library, base.path().join("plugins/libhello.so")).unwrap();
    let master = base.start();
    let body = br#"{"repository": "https://git.example.org/app.git", "revision": "1a2b", "author": "Ada"}"#;
    let with = |token: &str| {
        master.send(
            "POST",
            "/change_hook/hello",
            &[
                ("Content-Type", "application/json"),
                ("X-Hello-Token", token),
            ],
            body,
        )
    };
    assert_eq!(with("wrong").status, 403);
    let reply = with("t0k3n");
    assert_eq!((reply.status, reply.body.as_str()), (200, "1 change found"));
    let change = &master.changes()[0];
    assert_eq!(change["revision"], "1a2b");
    assert_eq!(change["project"], "demo");
}

#[test]
fn a_new_reporter_builds_and_the_master_reads_what_it_offers() {
    let (_dir, library) = create_and_build("reporter", "chatter");
    let base = Basedir::new("[master]\nplugin_dirs = [\"plugins\"]\n");
    std::fs::create_dir(base.path().join("plugins")).unwrap();
    std::fs::copy(&library, base.path().join("plugins/libchatter.so")).unwrap();
    let out = run_cli(&["checkconfig", base.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("1 plugin(s)"), "{stdout}");
}

#[test]
fn a_bad_name_or_a_used_directory_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let output = run_cli(&[
        "new-plugin",
        "dialect",
        "My-Hook",
        parent.path().join("x").to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("plugin name 'My-Hook'"));
    std::fs::write(parent.path().join("taken"), "").unwrap();
    let output = run_cli(&[
        "new-plugin",
        "reporter",
        "ok",
        parent.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not empty"));
}
