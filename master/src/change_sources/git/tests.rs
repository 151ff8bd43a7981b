use super::*;

const A: &str = "5369f4925a8cba5268e0d0f39127adf834643d81";
const B: &str = "e0f0d97dd20c38158f755fd6b9f96e2295720de3";

/// Output as [`LOG_FORMAT`] prints it: a NUL before each field.
fn log(commits: &[[&str; LOG_FIELDS]]) -> Vec<u8> {
    commits
        .iter()
        .flatten()
        .flat_map(|field| std::iter::once(&0).chain(field.as_bytes()))
        .copied()
        .collect()
}

#[test]
fn log_output_gives_every_field_and_file() {
    let output = log(&[
        [
            A,
            "Ann",
            "ann@example.org",
            "Cy",
            "cy@example.org",
            "1700000000",
            "subject\n\nbody\n\n",
            "\n\na.c\n\"tab\\there\"\ndir/é\n",
        ],
        [B, "Bo", "bo@x", "Bo", "bo@x", "1700000100", "merge\n", "\n"],
    ]);
    let commits = parse_log(&output).unwrap();
    assert_eq!(
        commits,
        [
            Commit {
                revision: A.into(),
                author_name: "Ann".into(),
                author_email: "ann@example.org".into(),
                committer_name: "Cy".into(),
                committer_email: "cy@example.org".into(),
                commit_time: 1_700_000_000,
                message: "subject\n\nbody".into(),
                files: vec!["a.c".into(), "tab\there".into(), "dir/é".into()],
            },
            Commit {
                revision: B.into(),
                author_name: "Bo".into(),
                author_email: "bo@x".into(),
                committer_name: "Bo".into(),
                committer_email: "bo@x".into(),
                commit_time: 1_700_000_100,
                message: "merge".into(),
                files: Vec::new(),
            },
        ]
    );
    assert_eq!(parse_log(b"").unwrap(), []);
}

#[test]
fn malformed_log_output_is_an_error() {
    assert!(parse_log(b"garbage\0").is_err());
    let mut short = log(&[[A, "a", "b", "c", "d", "1", "msg", "\n"]]);
    short.pop();
    short.pop();
    assert!(parse_log(&short).unwrap_err().contains("fields"));
    let bad_time = log(&[[A, "a", "b", "c", "d", "soon", "msg", "\n"]]);
    assert!(parse_log(&bad_time)
        .unwrap_err()
        .contains("'soon' is not a time"));
    let bad_revision = log(&[["HEAD", "a", "b", "c", "d", "1", "msg", "\n"]]);
    assert!(parse_log(&bad_revision)
        .unwrap_err()
        .contains("not a revision"));
}

#[test]
fn quoted_paths_are_unquoted() {
    assert_eq!(unquote(b"plain name"), b"plain name");
    assert_eq!(unquote(b"\"new\\nline\""), b"new\nline");
    assert_eq!(unquote(b"\"q\\\"b\\\\s\""), b"q\"b\\s");
    assert_eq!(unquote(b"\"\\303\\251t\\303\\251\""), "été".as_bytes());
    assert_eq!(unquote(b"\"\""), b"");
}

#[test]
fn ls_remote_names_the_default_branch() {
    let output = format!(
        "ref: refs/heads/main\tHEAD\n{A}\tHEAD\n{A}\trefs/heads/main\n{B}\trefs/heads/topic\n"
    );
    let refs = RemoteRefs::parse(output.as_bytes());
    assert_eq!(refs.default_branch(), Ok(Some("main")));
    assert_eq!(refs.branches.len(), 2);
    assert_eq!(refs.branches["topic"], B);
    // Without the symref line, the one branch at HEAD's revision.
    let output = format!("{A}\tHEAD\n{A}\trefs/heads/main\n{B}\trefs/heads/topic\n");
    assert_eq!(
        RemoteRefs::parse(output.as_bytes()).default_branch(),
        Ok(Some("main"))
    );
    let output = format!("{A}\tHEAD\n{A}\trefs/heads/main\n{A}\trefs/heads/topic\n");
    assert_eq!(
        RemoteRefs::parse(output.as_bytes()).default_branch(),
        Err(())
    );
    // An empty repository, and a HEAD on a branch without commits.
    assert_eq!(RemoteRefs::parse(b"").default_branch(), Ok(None));
    let unborn = format!("ref: refs/heads/main\tHEAD\n{B}\trefs/heads/topic\n");
    assert_eq!(
        RemoteRefs::parse(unborn.as_bytes()).default_branch(),
        Ok(None)
    );
}

#[test]
fn tracking_heads_are_read_by_branch() {
    let output =
        format!("{A}\0refs/buildmaster/heads/main\n{B}\0refs/buildmaster/heads/feature/x\n");
    assert_eq!(
        parse_tracking_heads(output.as_bytes()).unwrap(),
        [
            ("main".to_string(), A.to_string()),
            ("feature/x".to_string(), B.to_string())
        ]
    );
    assert!(parse_tracking_heads(b"x\0refs/heads/main\n").is_err());
}

// ---------------------------------------------------------------------------
// Polls against real repositories.

/// A remote repository, a clone to commit in, a database and a poller of the
/// remote.
struct Fixture {
    dir: tempfile::TempDir,
    db: Db,
    poller: GitPoller,
    /// How many changes earlier calls of [`Fixture::poll`] returned.
    seen: usize,
}

impl Fixture {
    /// A remote whose `main` holds one commit, not polled yet.
    fn new(branches: Branches) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        run_git(
            dir.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        run_git(dir.path(), &["init", "-q", "-b", "main", "work"]);
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let poller = GitPoller::new(GitPollerConfig {
            name: "src".into(),
            repourl: dir.path().join("remote.git").display().to_string(),
            branches,
            poll_interval: Duration::from_secs(1),
            poll_at_launch: false,
            project: String::new(),
            category: None,
            codebase: String::new(),
            revlink: String::new(),
            workdir: dir.path().join("clone"),
        });
        let fixture = Fixture {
            dir,
            db,
            poller,
            seen: 0,
        };
        fixture.git(&["remote", "add", "origin", "../remote.git"]);
        fixture.commit("initial");
        fixture.git(&["push", "-q", "origin", "main"]);
        fixture
    }

    /// Runs git in the clone; returns its output, trimmed.
    fn git(&self, args: &[&str]) -> String {
        run_git(&self.dir.path().join("work"), args)
    }

    /// Commits a change of file `message` in the clone; returns the revision.
    fn commit(&self, message: &str) -> String {
        let file = self.dir.path().join("work").join(message);
        std::fs::write(file, message).unwrap();
        self.git(&["add", "--all"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn push(&self, refspec: &str) {
        self.git(&["push", "-q", "--force", "origin", refspec]);
    }

    /// Polls and returns the (branch, comments) of the changes it stored.
    async fn poll(&mut self) -> Vec<(String, String)> {
        self.poller.poll(&self.db).await.unwrap();
        let mut new = Vec::new();
        while let Some(change) = self.db.change(self.seen as i64 + 1).await.unwrap() {
            new.push((change.branch.unwrap_or_default(), change.comments));
            self.seen += 1;
        }
        new
    }

    async fn state(&self) -> BTreeMap<String, String> {
        self.db.source_revisions("src").await.unwrap().revisions
    }
}

/// Runs git in `dir` with a fixed identity; returns its output, trimmed.
fn run_git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .current_dir(dir)
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_AUTHOR_NAME", "A")
        .env("GIT_AUTHOR_EMAIL", "a@example.org")
        .env("GIT_COMMITTER_NAME", "C")
        .env("GIT_COMMITTER_EMAIL", "c@example.org")
        .output()
        .unwrap();
    assert!(output.status.success(), "git {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn changes(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(b, c)| (b.to_string(), c.to_string()))
        .collect()
}

#[tokio::test]
async fn the_first_poll_records_heads_and_later_ones_find_new_commits() {
    let mut f = Fixture::new(Branches::RemoteHead);
    assert_eq!(f.poll().await, []);
    let head = f.git(&["rev-parse", "HEAD"]);
    assert_eq!(f.state().await, BTreeMap::from([("main".into(), head)]));
    f.commit("one");
    f.commit("two");
    f.push("main");
    assert_eq!(f.poll().await, changes(&[("main", "one"), ("main", "two")]));
    let transactions = f.db.stats().transactions;
    assert_eq!(f.poll().await, []);
    assert_eq!(
        f.db.stats().transactions,
        transactions,
        "a poll that finds nothing writes nothing"
    );
}

#[tokio::test]
async fn a_force_push_brings_only_the_rewritten_commits() {
    let mut f = Fixture::new(Branches::Named(vec!["main".into()]));
    f.poll().await;
    f.commit("kept");
    f.commit("dropped");
    f.push("main");
    assert_eq!(f.poll().await.len(), 2);
    f.git(&["reset", "-q", "--hard", "HEAD~1"]);
    f.commit("rewritten");
    f.push("main");
    assert_eq!(f.poll().await, changes(&[("main", "rewritten")]));
    // Back to an older commit: nothing new, but the head moves.
    f.git(&["reset", "-q", "--hard", "HEAD~1"]);
    f.push("main");
    assert_eq!(f.poll().await, []);
    assert_eq!(f.state().await["main"], f.git(&["rev-parse", "HEAD"]));
}

#[tokio::test]
async fn a_merge_brings_the_merge_commit_with_the_files_it_brings() {
    let mut f = Fixture::new(Branches::RemoteHead);
    f.poll().await;
    f.git(&["checkout", "-q", "-b", "side"]);
    f.commit("side-1");
    f.commit("side-2");
    f.git(&["checkout", "-q", "main"]);
    f.commit("main-1");
    f.git(&["merge", "-q", "--no-ff", "side", "-m", "merge side"]);
    f.push("main");
    assert_eq!(
        f.poll().await,
        changes(&[("main", "main-1"), ("main", "merge side")])
    );
    let merge = f.db.change(2).await.unwrap().unwrap();
    assert_eq!(merge.files, ["side-1", "side-2"]);
}

#[tokio::test]
async fn a_commit_on_several_branches_is_announced_once() {
    let mut f = Fixture::new(Branches::All);
    f.push("main:refs/heads/feature");
    f.poll().await;
    assert_eq!(f.state().await.len(), 2);
    f.commit("shared");
    f.push("main");
    f.push("main:refs/heads/feature");
    // Branches are taken in name order: `feature` first.
    assert_eq!(f.poll().await, changes(&[("feature", "shared")]));
}

#[tokio::test]
async fn new_branches_bring_their_own_commits_and_deleted_ones_are_forgotten() {
    let mut f = Fixture::new(Branches::All);
    f.poll().await;
    f.push("main:refs/heads/copy");
    assert_eq!(f.poll().await, []);
    f.git(&["checkout", "-q", "-b", "topic"]);
    f.commit("topic-1");
    f.push("topic");
    assert_eq!(f.poll().await, changes(&[("topic", "topic-1")]));
    f.push(":refs/heads/copy");
    f.poll().await;
    let state = f.state().await;
    assert_eq!(state.keys().collect::<Vec<_>>(), ["main", "topic"]);
}

#[tokio::test]
async fn a_lost_workdir_neither_loses_new_commits_nor_floods_after_a_rewrite() {
    let mut f = Fixture::new(Branches::RemoteHead);
    f.poll().await;
    std::fs::remove_dir_all(f.dir.path().join("clone")).unwrap();
    f.commit("after the loss");
    f.push("main");
    assert_eq!(f.poll().await, changes(&[("main", "after the loss")]));

    // The last-seen revision is not in the new history, and no clone holds it.
    std::fs::remove_dir_all(f.dir.path().join("clone")).unwrap();
    f.git(&["checkout", "-q", "--orphan", "fresh"]);
    f.commit("unrelated");
    f.push("fresh:main");
    assert_eq!(f.poll().await, []);
    assert_eq!(f.state().await["main"], f.git(&["rev-parse", "HEAD"]));
}

#[tokio::test]
async fn branches_missing_on_the_remote_are_skipped() {
    let mut f = Fixture::new(Branches::Named(vec!["release".into(), "main".into()]));
    f.poll().await;
    assert_eq!(f.state().await.keys().collect::<Vec<_>>(), ["main"]);
    f.commit("on main");
    f.push("main");
    f.push("main:refs/heads/release");
    // `release` comes first in the list, so the commit is announced there.
    assert_eq!(f.poll().await, changes(&[("release", "on main")]));
}

#[tokio::test]
async fn an_unreachable_remote_is_an_error_naming_the_command() {
    let mut f = Fixture::new(Branches::RemoteHead);
    f.poller.config.repourl = f.dir.path().join("nowhere.git").display().to_string();
    let error = f.poller.poll(&f.db).await.unwrap_err().to_string();
    assert!(error.starts_with("git ls-remote failed: "), "{error}");
    assert_eq!(f.state().await, BTreeMap::new());
}
