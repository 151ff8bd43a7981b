//! `[[change_sources]]` of type `git` against local repositories the tests
//! create and push into: what becomes a change, what does not, restarts,
//! polls forced through the `poller` dialect, unreachable repositories.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use buildmaster_e2e::{build_dir, git, Basedir, Master};
use serde_json::Value;

/// How long a test waits for a poll to show.
const DEADLINE: Duration = Duration::from_secs(20);

/// A bare repository standing for the remote, and a clone to commit in.
struct Remote {
    dir: tempfile::TempDir,
}

impl Remote {
    /// A remote whose `main` holds one commit.
    fn new() -> Remote {
        let remote = Remote::empty();
        remote.commit("initial", &[("README", "hello\n")], 1_600_000_000);
        remote.push("main");
        remote
    }

    /// A remote without commits, `main` as its default branch.
    fn empty() -> Remote {
        let remote = Remote::missing();
        remote.create_bare();
        remote
    }

    /// A remote whose bare repository is not created yet.
    fn missing() -> Remote {
        let remote = Remote {
            dir: tempfile::tempdir().expect("temporary dir"),
        };
        git(
            remote.dir.path(),
            &["init", "--quiet", "-b", "main", "work"],
        );
        remote.git(&["remote", "add", "origin", remote.bare().to_str().unwrap()]);
        remote
    }

    fn create_bare(&self) {
        git(
            self.dir.path(),
            &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
        );
    }

    fn bare(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    /// The `repourl` of the remote.
    fn url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Runs git in the clone.
    fn git(&self, args: &[&str]) -> String {
        git(&self.dir.path().join("work"), args)
    }

    /// Writes `files` and commits them by Ann, committed by Cy at `time` (epoch
    /// seconds; authored an hour earlier); returns the revision.
    fn commit(&self, message: &str, files: &[(&str, &str)], time: i64) -> String {
        let work = self.dir.path().join("work");
        for (name, content) in files {
            let path = work.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        self.git(&["add", "--all"]);
        let output = Command::new("git")
            .current_dir(&work)
            .args(["-c", "commit.gpgsign=false", "commit", "--quiet"])
            .args(["--allow-empty", "-m", message])
            .env("GIT_AUTHOR_NAME", "Ann Author")
            .env("GIT_AUTHOR_EMAIL", "ann@example.org")
            .env("GIT_AUTHOR_DATE", format!("{} +0000", time - 3600))
            .env("GIT_COMMITTER_NAME", "Cy Committer")
            .env("GIT_COMMITTER_EMAIL", "cy@example.org")
            .env("GIT_COMMITTER_DATE", format!("{time} +0000"))
            .output()
            .expect("run git commit");
        assert!(output.status.success(), "git commit: {output:?}");
        self.git(&["rev-parse", "HEAD"])
    }

    /// Pushes `refspec` to the remote, forcing.
    fn push(&self, refspec: &str) {
        self.git(&["push", "--quiet", "--force", "origin", refspec]);
    }
}

/// Runs git in `dir` and returns its trimmed standard output.
/// Starts a master with `config` and no plugins but those `config` names:
/// change sources need none, and loading every built-in one slows start-up.
fn start(config: &str) -> Master {
    Basedir::new(&format!("[master]\nplugin_dirs = []\n{config}")).start()
}

/// A `[[change_sources]]` table polling `remote` every second from launch,
/// with `extra` lines.
fn source(name: &str, remote: &Remote, extra: &str) -> String {
    format!(
        "[[change_sources]]\ntype = \"git\"\nname = \"{name}\"\nrepourl = {}\n\
         poll_interval = 1\npoll_at_launch = true\n{extra}",
        toml::Value::String(remote.url())
    )
}

/// Waits until `check` gives a value; panics with the master's log after [`DEADLINE`].
fn wait_until<T>(master: &Master, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            master.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the log holds `text` `times` times.
fn wait_for_log(master: &Master, text: &str, times: usize) {
    wait_until(master, &format!("{times} x '{text}' in the log"), || {
        (master.log().matches(text).count() >= times).then_some(())
    });
}

/// Waits until at least `count` changes are stored; returns them all.
fn wait_for_changes(master: &Master, count: usize) -> Vec<Value> {
    wait_until(master, &format!("{count} change(s)"), || {
        let changes = master.changes();
        (changes.len() >= count).then_some(changes)
    })
}

fn field<'a>(changes: &'a [Value], name: &str) -> Vec<&'a Value> {
    changes.iter().map(|c| &c[name]).collect()
}

#[test]
fn new_commits_become_changes_oldest_first_with_every_field() {
    let remote = Remote::new();
    let master = start(&source(
        "app",
        &remote,
        "project = \"proj\"\ncategory = \"cat\"\ncodebase = \"cb\"\n\
         revlink = \"https://example.org/app/commit/%s\"\n",
    ));
    assert!(master.log().contains(&format!(
        "change source 'app' polls {} every 1 s",
        remote.url()
    )));
    wait_for_log(&master, "change source 'app' follows branch 'main' from", 1);
    assert!(master.changes().is_empty(), "the first poll stores nothing");

    let first = remote.commit(
        "Add the sources",
        &[("src/lib.rs", "fn f() {}\n"), ("a.txt", "a\n")],
        1_700_000_000,
    );
    let second = remote.commit(
        "Fix a\n\nA longer explanation\nover two lines.\n",
        &[("a.txt", "b\n")],
        1_700_000_100,
    );
    remote.push("main");
    let changes = wait_for_changes(&master, 2);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    let change = &changes[0];
    assert_eq!(change["revision"], first.as_str());
    assert_eq!(change["author"], "Ann Author <ann@example.org>");
    assert_eq!(change["committer"], "Cy Committer <cy@example.org>");
    assert_eq!(change["comments"], "Add the sources");
    assert_eq!(change["files"], serde_json::json!(["a.txt", "src/lib.rs"]));
    assert_eq!(change["when_timestamp"], 1_700_000_000, "the commit time");
    assert_eq!(change["branch"], "main");
    assert_eq!(change["repository"], remote.url().as_str());
    assert_eq!(
        (&change["project"], &change["category"], &change["codebase"]),
        (&"proj".into(), &"cat".into(), &"cb".into())
    );
    assert_eq!(
        change["revlink"],
        format!("https://example.org/app/commit/{first}")
    );
    assert_eq!(changes[1]["revision"], second.as_str());
    assert_eq!(
        changes[1]["comments"],
        "Fix a\n\nA longer explanation\nover two lines."
    );
    assert_eq!(changes[1]["files"], serde_json::json!(["a.txt"]));
    assert_eq!(changes[1]["parent_changeids"], serde_json::json!([1]));
}

#[test]
fn commits_on_branches_not_followed_are_ignored() {
    let remote = Remote::new();
    let master = start(&source("app", &remote, "branches = [\"main\"]\n"));
    wait_for_log(&master, "change source 'app' follows branch 'main'", 1);

    remote.git(&["checkout", "--quiet", "-b", "other"]);
    remote.commit("elsewhere", &[("other.txt", "x\n")], 1_700_000_000);
    remote.push("other");
    remote.git(&["checkout", "--quiet", "main"]);
    let on_main = remote.commit("on main", &[("main.txt", "x\n")], 1_700_000_100);
    remote.push("main");
    let changes = wait_for_changes(&master, 1);
    // One more commit on main shows that later polls still ignore `other`.
    let sentinel = remote.commit("again", &[("main.txt", "y\n")], 1_700_000_200);
    remote.push("main");
    let changes = wait_until(&master, "the second change on main", || {
        let now = master.changes();
        (now.len() > changes.len()).then_some(now)
    });
    assert_eq!(
        field(&changes, "revision"),
        [on_main.as_str(), sentinel.as_str()]
    );
    assert_eq!(field(&changes, "branch"), ["main", "main"]);
}

#[test]
fn every_branch_is_followed_with_branches_true() {
    let remote = Remote::new();
    let master = start(&source("all", &remote, "branches = true\n"));
    wait_for_log(&master, "change source 'all' follows branch 'main'", 1);

    // A branch made from a known commit brings no change (Buildbot: only
    // commits no known branch head reaches are new).
    remote.push("main:refs/heads/feature");
    wait_for_log(
        &master,
        "change source 'all' follows new branch 'feature'",
        1,
    );
    assert!(master.changes().is_empty(), "{:#?}", master.changes());

    remote.git(&["checkout", "--quiet", "-b", "feature"]);
    let on_feature = remote.commit("feature work", &[("f.txt", "f\n")], 1_700_000_000);
    remote.push("feature");
    let changes = wait_for_changes(&master, 1);
    assert_eq!(changes[0]["revision"], on_feature.as_str());
    assert_eq!(changes[0]["branch"], "feature");

    // A new branch pushed with a commit of its own brings that commit.
    remote.git(&["checkout", "--quiet", "-b", "topic", "main"]);
    let on_topic = remote.commit("topic work", &[("t.txt", "t\n")], 1_700_000_100);
    remote.push("topic");
    let changes = wait_for_changes(&master, 2);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    assert_eq!(changes[1]["revision"], on_topic.as_str());
    assert_eq!(changes[1]["branch"], "topic");
}

#[test]
fn a_restart_neither_repeats_nor_loses_changes() {
    let remote = Remote::new();
    let master = start(&source("app", &remote, ""));
    wait_for_log(&master, "change source 'app' follows branch 'main'", 1);
    let before = remote.commit("before the restart", &[("a", "1\n")], 1_700_000_000);
    remote.push("main");
    wait_for_changes(&master, 1);
    let (basedir, status) = master.stop();
    assert_eq!(status.code(), Some(0));

    let while_stopped = [
        remote.commit("while stopped 1", &[("a", "2\n")], 1_700_000_100),
        remote.commit("while stopped 2", &[("a", "3\n")], 1_700_000_200),
    ];
    remote.push("main");
    let master = basedir.start();
    wait_for_changes(&master, 3);
    let after = remote.commit("after the restart", &[("a", "4\n")], 1_700_000_300);
    remote.push("main");
    let changes = wait_for_changes(&master, 4);
    assert_eq!(
        field(&changes, "revision"),
        [
            before.as_str(),
            while_stopped[0].as_str(),
            while_stopped[1].as_str(),
            after.as_str()
        ]
    );
    assert!(
        !master.log().contains("follows branch"),
        "the restarted master knew the branch:\n{}",
        master.log()
    );
}

#[test]
fn the_poller_hook_forces_a_poll_long_before_the_interval() {
    let remote = Remote::new();
    let plugin = build_dir().join("libbuildmaster_dialect_poller.so");
    let config = format!(
        "[www.change_hook_dialects.poller]\nplugin = {}\n\
         [[change_sources]]\ntype = \"git\"\nname = \"slow\"\nrepourl = {}\n\
         poll_interval = 3600\npoll_at_launch = true\n",
        toml::Value::String(plugin.display().to_string()),
        toml::Value::String(remote.url())
    );
    let master = start(&config);
    wait_for_log(&master, "change source 'slow' follows branch 'main'", 1);
    let commit = remote.commit("urgent", &[("u", "u\n")], 1_700_000_000);
    remote.push("main");

    let reply = master.post_form("/change_hook/poller?poller=slow", "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let changes = wait_for_changes(&master, 1);
    assert_eq!(changes[0]["revision"], commit.as_str());

    let reply = master.post_form("/change_hook/poller?poller=nope", "");
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[test]
fn an_unreachable_repository_is_logged_and_polled_again() {
    let remote = Remote::missing();
    let master = start(&source("late", &remote, ""));
    wait_for_log(
        &master,
        "change source 'late' cannot poll: git ls-remote failed",
        2,
    );
    assert!(master.changes().is_empty(), "the master keeps serving");

    remote.create_bare();
    remote.commit("first", &[("a", "1\n")], 1_700_000_000);
    remote.push("main");
    wait_for_log(&master, "change source 'late' follows branch 'main'", 1);
    let commit = remote.commit("second", &[("a", "2\n")], 1_700_000_100);
    remote.push("main");
    let changes = wait_for_changes(&master, 1);
    assert_eq!(field(&changes, "revision"), [commit.as_str()]);
}

#[test]
fn an_empty_repository_is_followed_from_its_first_push() {
    let remote = Remote::empty();
    let master = start(&source("fresh", &remote, ""));
    remote.commit("first", &[("a", "1\n")], 1_700_000_000);
    remote.push("main");
    wait_for_log(&master, "change source 'fresh' follows branch 'main'", 1);
    let commit = remote.commit("second", &[("a", "2\n")], 1_700_000_100);
    remote.push("main");
    let changes = wait_for_changes(&master, 1);
    assert_eq!(field(&changes, "revision"), [commit.as_str()]);
}
