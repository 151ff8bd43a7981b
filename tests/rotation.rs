//! Rotating the secrets of dialects by reload: a GitHub webhook secret, a
//! GitLab token and a Mattermost slash-command token, written in master.toml
//! or in a secret file, each taking effect by SIGHUP, by `buildmaster
//! reconfig` and by the file watch (the new one accepted, the old refused),
//! and an edit that changes only a dialect's `strict`.

use buildmaster_e2e::{github_signature, replace_file, run_cli, wait_until, Basedir, Master};

const LISTEN: &str = "[www]\nport = \"127.0.0.1:0\"\n";

/// A master.toml with the three dialects guarded by `secrets`
/// (github, gitlab, mattermost) and `master` as its `[master]` table.
fn config(master: &str, [github, gitlab, mattermost]: [&str; 3]) -> String {
    format!(
        "[master]\n{master}\n{LISTEN}\
         [www.change_hook_dialects.github]\nsecret = \"{github}\"\n\
         [www.change_hook_dialects.gitlab]\nsecret = \"{gitlab}\"\n\
         [www.change_hook_dialects.mattermost]\ntoken = \"{mattermost}\"\n\
         repo_base_url = \"https://git.example.org/\"\n"
    )
}

const OLD: [&str; 3] = ["old-github", "old-gitlab", "old-mattermost"];
const NEW: [&str; 3] = ["new-github", "new-gitlab", "new-mattermost"];

/// Whether `dialect` accepts a request authenticated with `secret`.
fn accepts(master: &Master, dialect: &str, secret: &str) -> bool {
    match dialect {
        "github" => {
            let body = br#"{"zen": "Keep it logically awesome.", "hook_id": 1}"#;
            let signature = github_signature(secret, body);
            let headers = [
                ("X-GitHub-Event", "ping"),
                ("Content-Type", "application/json"),
                ("X-Hub-Signature-256", signature.as_str()),
            ];
            master
                .send("POST", "/change_hook/github", &headers, body)
                .status
                == 200
        }
        "gitlab" => {
            let headers = [
                ("X-Gitlab-Token", secret),
                ("Content-Type", "application/json"),
            ];
            let reply = master.send(
                "POST",
                "/change_hook/gitlab",
                &headers,
                br#"{"object_kind": "build"}"#,
            );
            reply.status == 200
        }
        "mattermost" => {
            let authorization = format!("Token {secret}");
            let headers = [
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Authorization", authorization.as_str()),
            ];
            let body = "channel_name=ci&command=%2Fbuild&text=web";
            let reply = master.send("POST", "/change_hook/mattermost", &headers, body.as_bytes());
            assert_eq!(reply.status, 200, "{}", reply.body);
            reply.body.contains("Build queued")
        }
        other => panic!("no probe for {other}"),
    }
}

/// Asserts that every dialect takes its secret from `live` and refuses `stale`.
fn assert_rotated(master: &Master, live: [&str; 3], stale: [&str; 3]) {
    for (i, dialect) in ["github", "gitlab", "mattermost"].into_iter().enumerate() {
        assert!(
            accepts(master, dialect, live[i]),
            "{dialect} refuses {}",
            live[i]
        );
        assert!(
            !accepts(master, dialect, stale[i]),
            "{dialect} still accepts {}",
            stale[i]
        );
    }
}

const ROTATED: &str = "dialects +0 ~3 -0 (~github, ~gitlab, ~mattermost)";

#[test]
fn rotated_secrets_take_effect_on_sighup() {
    let master = Master::start_with(&config("reload_on_change = false", OLD));
    assert_rotated(&master, OLD, NEW);
    let file = master.basedir.path().join("master.toml");
    replace_file(&file, config("reload_on_change = false", NEW));
    // SAFETY: signalling the master this test started.
    unsafe { libc::kill(master.pid() as i32, libc::SIGHUP) };
    let status = master.wait_for_generation(2);
    assert_eq!(status["result"], "applied");
    assert_eq!(status["changes"], serde_json::json!([ROTATED]));
    assert_rotated(&master, NEW, OLD);
}

#[test]
fn rotated_secrets_take_effect_on_reconfig() {
    let master = Master::start_with(&config("reload_on_change = false", OLD));
    let file = master.basedir.path().join("master.toml");
    replace_file(&file, config("reload_on_change = false", NEW));
    let output = run_cli(&["reconfig", master.basedir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert_eq!(
        stdout,
        format!("reconfig applied: generation 2; {ROTATED}\n")
    );
    assert_rotated(&master, NEW, OLD);
    // The log names what changed and never a secret.
    let log = master.log();
    assert!(log.contains(ROTATED), "{log}");
    for secret in OLD.iter().chain(&NEW) {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
}

#[test]
fn rotated_secrets_take_effect_on_save_and_reconfig_then_says_the_file_is_live() {
    let master = Master::start_with(&config("", OLD));
    replace_file(&master.basedir.path().join("master.toml"), config("", NEW));
    let status = master.wait_for_generation(2);
    assert_eq!(status["trigger"], "file change");
    assert_rotated(&master, NEW, OLD);

    let output = run_cli(&["reconfig", master.basedir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("master.toml is already live in generation 2 (applied by the file watch"),
        "{stdout}"
    );
    let status = master.reconfig();
    assert_eq!(status["result"], "unchanged");
    assert_eq!(status["last_applied"]["generation"], 2);
    assert_eq!(status["last_applied"]["trigger"], "file change");
    assert_eq!(
        status["last_applied"]["changes"],
        serde_json::json!([ROTATED])
    );
}

#[test]
fn a_rotated_secret_file_takes_effect_on_its_own() {
    let base = Basedir::with_file(&format!(
        "[master]\nsecrets_dir = \"secrets\"\n{LISTEN}\
         [www.change_hook_dialects.gitlab]\nsecret = {{ from_secret = \"gitlab\" }}\n"
    ));
    base.write("secrets/gitlab", "first-token\n");
    let master = base.start();
    assert!(accepts(&master, "gitlab", "first-token"));
    // As a secrets manager writes it: aside, then renamed over.
    replace_file(
        &master.basedir.path().join("secrets/gitlab"),
        "second-token\n",
    );
    let status = master.wait_for_generation(2);
    assert_eq!(status["trigger"], "file change");
    assert_eq!(
        status["changes"],
        serde_json::json!(["dialects +0 ~1 -0 (~gitlab)"])
    );
    assert!(accepts(&master, "gitlab", "second-token"));
    assert!(!accepts(&master, "gitlab", "first-token"));
}

#[test]
fn an_edit_that_changes_only_strict_applies() {
    let github = |strict: bool| {
        format!(
            "[master]\nreload_on_change = false\n{LISTEN}\
             [www.change_hook_dialects.github]\nsecret = \"s\"\nstrict = {strict}\n"
        )
    };
    let master = Master::start_with(&github(false));
    replace_file(&master.basedir.path().join("master.toml"), github(true));
    let output = run_cli(&["reconfig", master.basedir.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout,
        "reconfig applied: generation 2; dialects +0 ~1 -0 (~github)\n"
    );
    assert!(accepts(&master, "github", "s"));
    // And strict without a secret is refused as a whole reload.
    replace_file(
        &master.basedir.path().join("master.toml"),
        format!(
            "[master]\nreload_on_change = false\n{LISTEN}\
             [www.change_hook_dialects.github]\nstrict = true\n"
        ),
    );
    let output = run_cli(&["reconfig", master.basedir.path().to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("options.strict: set, but no 'secret' is configured"),
        "{stderr}"
    );
    wait_until("the old dialect to keep serving", || {
        accepts(&master, "github", "s").then_some(())
    });
}
