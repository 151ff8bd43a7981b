//! Buildbot's `GitPoller`: finds new commits on the branches of a git
//! repository by fetching them into a bare clone, and stores one change per
//! commit together with the revisions it has now seen.
//!
//! Which commits are new follows Buildbot: on the very first poll (nothing
//! stored yet) the current revisions are recorded and no change is made, so a
//! new poller does not announce the whole history. After that, the new commits
//! of a branch are those of `git log --first-parent <head>` that no last-seen
//! revision of any branch reaches, taking the branches in order and counting the
//! heads already handled in this poll as seen. A commit is therefore announced
//! once, on the first branch it appears on; a branch created from a known one
//! brings only the commits made on it; a force-push brings the rewritten
//! commits; a merge brings the merge commit.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::changes::NewChange;
use crate::config::redact_url;
use crate::config::{Branches, GitPollerConfig};
use crate::db::{self, Db, SourceRevisions};

/// The longest one git command may run. A first fetch of a large repository
/// can take minutes; a connection that hangs must not stop the source forever.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the bare clone keeps the fetched branches: `<prefix><branch>`.
const TRACKING_PREFIX: &str = "refs/buildmaster/heads/";

/// The `git log` format of one commit: fields separated by NUL, which git
/// output never holds otherwise (without `-z`, file names are quoted instead).
/// The file names of `--name-only` follow the last NUL, one per line.
const LOG_FORMAT: &str = "--format=%x00%H%x00%aN%x00%aE%x00%cN%x00%cE%x00%ct%x00%B%x00";

/// The NUL-separated fields [`LOG_FORMAT`] prints per commit, file list included.
const LOG_FIELDS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("git {command} failed: {detail}")]
    Git { command: String, detail: String },
    #[error("git {command} printed what it should not: {detail}")]
    Output { command: String, detail: String },
    #[error("the remote HEAD of {0} matches several branches: set branches")]
    AmbiguousHead(String),
    #[error("cannot prepare the workdir {path}: {source}")]
    Workdir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] db::Error),
}

/// One git change source.
pub struct GitPoller {
    config: GitPollerConfig,
}

impl GitPoller {
    pub fn new(config: GitPollerConfig) -> GitPoller {
        GitPoller { config }
    }

    pub fn config(&self) -> &GitPollerConfig {
        &self.config
    }

    /// Fetches the followed branches and stores the changes of their new
    /// commits with the new last-seen revisions. On error nothing is stored, so
    /// the next poll finds the same commits.
    pub async fn poll(&self, db: &Db) -> Result<(), PollError> {
        let name = &self.config.name;
        let git = Git {
            dir: &self.config.workdir,
            url: &self.config.repourl,
        };
        git.init().await?;
        let heads = self.fetch(&git).await?;
        let previous = db.source_revisions(name).await?.revisions;
        let present = git.commits_present(previous.values()).await?;

        // Buildbot's `lastRev`: what counts as seen, updated branch by branch.
        let mut seen: BTreeMap<&str, &str> = previous
            .iter()
            .filter(|(_, rev)| present.contains(*rev))
            .map(|(branch, rev)| (branch.as_str(), rev.as_str()))
            .collect();
        let mut next = BTreeMap::new();
        let mut changes = Vec::new();
        let mut notes = Vec::new();
        let mut warnings = Vec::new();
        for (branch, head) in &heads {
            let old = previous.get(branch);
            if old == Some(head) {
                // Unchanged.
            } else if let Some(old) = old.filter(|old| !present.contains(*old)) {
                warnings.push(format!(
                    "follows branch '{branch}' from {} without changes: its last-seen revision {} is gone from {}",
                    short(head),
                    short(old),
                    self.config.workdir.display()
                ));
            } else if previous.is_empty() || seen.is_empty() {
                // The first poll, or nothing seen is left to tell new commits from old.
                notes.push(format!("follows branch '{branch}' from {}", short(head)));
            } else {
                if old.is_none() {
                    notes.push(format!("follows new branch '{branch}'"));
                }
                let exclusions: Vec<&str> = seen.values().copied().collect();
                let commits = git.new_commits(head, &exclusions).await?;
                changes.extend(commits.into_iter().map(|c| self.change(branch, c)));
            }
            seen.insert(branch, head);
            next.insert(branch.clone(), head.clone());
        }
        for branch in previous.keys().filter(|b| !next.contains_key(*b)) {
            notes.push(format!("no longer follows branch '{branch}'"));
        }
        if changes.is_empty() && next == previous {
            tracing::debug!("change source '{name}': nothing new");
            return Ok(());
        }
        let found = changes.len();
        db.add_polled_changes(
            changes,
            SourceRevisions {
                source: name.clone(),
                revisions: next,
            },
        )
        .await?;
        for warning in warnings {
            tracing::warn!("change source '{name}' {warning}");
        }
        for note in notes {
            tracing::info!("change source '{name}' {note}");
        }
        if found > 0 {
            tracing::info!("change source '{name}' stored {found} new change(s)");
        }
        Ok(())
    }

    /// Fetches the followed branches into the clone; returns each with its
    /// head, in the order they are handled: configuration order for a list,
    /// name order for all branches.
    async fn fetch(&self, git: &Git<'_>) -> Result<Vec<(String, String)>, PollError> {
        let wanted = match &self.config.branches {
            Branches::All => {
                // A wildcard refspec with --prune follows created and deleted
                // branches in one step, with no window between listing and fetching.
                let refspec = format!("+refs/heads/*:{TRACKING_PREFIX}*");
                git.run(
                    "fetch",
                    &["--quiet", "--no-tags", "--prune", git.url, &refspec],
                    None,
                )
                .await?;
                return git.tracking_heads().await;
            }
            Branches::RemoteHead => {
                let remote = git.ls_remote().await?;
                match remote.default_branch() {
                    Ok(branch) => branch.into_iter().map(str::to_string).collect(),
                    Err(()) => {
                        return Err(PollError::AmbiguousHead(redact_url(git.url).into_owned()))
                    }
                }
            }
            Branches::Named(names) => {
                let remote = git.ls_remote().await?;
                names
                    .iter()
                    .filter(|name| remote.branches.contains_key(*name))
                    .cloned()
                    .collect::<Vec<String>>()
            }
        };
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let refspecs: Vec<String> = wanted
            .iter()
            .map(|b| format!("+refs/heads/{b}:{TRACKING_PREFIX}{b}"))
            .collect();
        let mut args = vec!["--quiet", "--no-tags", git.url];
        args.extend(refspecs.iter().map(String::as_str));
        git.run("fetch", &args, None).await?;
        let mut fetched: BTreeMap<String, String> =
            git.tracking_heads().await?.into_iter().collect();
        wanted
            .into_iter()
            .map(|branch| match fetched.remove(&branch) {
                Some(head) => Ok((branch, head)),
                None => Err(PollError::Output {
                    command: "fetch".into(),
                    detail: format!("branch '{branch}' was not fetched"),
                }),
            })
            .collect()
    }

    /// The change of one new commit on `branch`.
    fn change(&self, branch: &str, commit: Commit) -> NewChange {
        let config = &self.config;
        NewChange {
            author: format!("{} <{}>", commit.author_name, commit.author_email),
            committer: Some(format!(
                "{} <{}>",
                commit.committer_name, commit.committer_email
            )),
            comments: commit.message,
            files: commit.files,
            revlink: Some(config.revlink.replace("%s", &commit.revision)),
            revision: Some(commit.revision),
            // The commit time, as Buildbot uses: it is when the commit took the
            // form it has on the branch (a rebase or cherry-pick renews it).
            when_timestamp: Some(commit.commit_time),
            branch: Some(branch.to_string()),
            category: config.category.clone(),
            properties: serde_json::Map::new(),
            repository: config.repourl.clone(),
            project: config.project.clone(),
            codebase: config.codebase.clone(),
            correlation: None,
        }
    }
}

/// The first 12 hex digits of a revision, for messages.
fn short(revision: &str) -> &str {
    &revision[..revision.len().min(12)]
}

/// The git commands run against one bare clone.
struct Git<'a> {
    dir: &'a Path,
    url: &'a str,
}

impl Git<'_> {
    /// Creates the bare clone unless it exists.
    async fn init(&self) -> Result<(), PollError> {
        let exists = tokio::fs::try_exists(self.dir.join("HEAD"))
            .await
            .unwrap_or(false);
        if exists {
            return Ok(());
        }
        tokio::fs::create_dir_all(self.dir)
            .await
            .map_err(|source| PollError::Workdir {
                path: self.dir.display().to_string(),
                source,
            })?;
        self.run("init", &["--bare", "--quiet"], None).await?;
        Ok(())
    }

    async fn ls_remote(&self) -> Result<RemoteRefs, PollError> {
        let output = self
            .run(
                "ls-remote",
                &["--symref", self.url, "HEAD", "refs/heads/*"],
                None,
            )
            .await?;
        Ok(RemoteRefs::parse(&output))
    }

    /// The fetched branches and their heads, by name.
    async fn tracking_heads(&self) -> Result<Vec<(String, String)>, PollError> {
        let output = self
            .run(
                "for-each-ref",
                &["--format=%(objectname)%00%(refname)", TRACKING_PREFIX],
                None,
            )
            .await?;
        parse_tracking_heads(&output).map_err(|detail| PollError::Output {
            command: "for-each-ref".into(),
            detail,
        })
    }

    /// Which of `revisions` are commits of the clone. One that is not was left
    /// behind by a force-push and pruned, or the workdir was lost.
    async fn commits_present<'r>(
        &self,
        revisions: impl Iterator<Item = &'r String>,
    ) -> Result<HashSet<String>, PollError> {
        let input: String = revisions.map(|rev| format!("{rev}\n")).collect();
        if input.is_empty() {
            return Ok(HashSet::new());
        }
        let output = self
            .run("cat-file", &["--batch-check"], Some(input.into_bytes()))
            .await?;
        Ok(String::from_utf8_lossy(&output)
            .lines()
            .filter_map(|line| match line.split_once(' ') {
                Some((rev, rest)) if rest.starts_with("commit ") => Some(rev.to_string()),
                _ => None,
            })
            .collect())
    }

    /// The commits of `head`'s first-parent history that none of `seen`
    /// reaches, oldest first. The exclusions go through stdin, so any number of
    /// branches fits.
    async fn new_commits(&self, head: &str, seen: &[&str]) -> Result<Vec<Commit>, PollError> {
        let exclusions: String = seen.iter().map(|rev| format!("^{rev}\n")).collect();
        let output = self
            .run(
                "log",
                &[
                    "--first-parent",
                    "-m",
                    "--name-only",
                    "--no-renames",
                    "--reverse",
                    "--no-color",
                    "--encoding=UTF-8",
                    LOG_FORMAT,
                    "--stdin",
                    head,
                ],
                Some(exclusions.into_bytes()),
            )
            .await?;
        parse_log(&output).map_err(|detail| PollError::Output {
            command: "log".into(),
            detail,
        })
    }

    /// Runs `git <command> <args>` in the clone and returns its standard output.
    /// Settings that would change what git prints are pinned, and git never
    /// waits for a password on a terminal.
    async fn run(
        &self,
        command: &str,
        args: &[&str],
        stdin: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, PollError> {
        let failed = |detail: String| PollError::Git {
            command: command.to_string(),
            detail: detail.replace(self.url, &redact_url(self.url)),
        };
        let mut child = Command::new("git")
            .env("GIT_DIR", self.dir)
            .env_remove("GIT_WORK_TREE")
            .env("GIT_TERMINAL_PROMPT", "0")
            .args([
                "-c",
                "log.showSignature=false",
                "-c",
                "core.quotePath=false",
            ])
            .arg(command)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot run git: {e}")))?;
        let input = child.stdin.take();
        // Written while the output is read: git may answer before it has read
        // all of its input, and a full pipe would then stop both sides.
        let write = async {
            if let (Some(mut pipe), Some(bytes)) = (input, stdin) {
                // A git that exits early closes the pipe; its status tells why.
                let _ = pipe.write_all(&bytes).await;
            }
        };
        let run = async { tokio::join!(write, child.wait_with_output()).1 };
        let output = match tokio::time::timeout(GIT_TIMEOUT, run).await {
            Err(_) => {
                return Err(failed(format!(
                    "timed out after {} s",
                    GIT_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(e)) => return Err(failed(e.to_string())),
            Ok(Ok(output)) => output,
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let detail: Vec<&str> = stderr
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect();
            return Err(failed(format!("{}: {}", output.status, detail.join(" "))));
        }
        Ok(output.stdout)
    }
}

/// What `git ls-remote --symref <url> HEAD refs/heads/*` tells.
#[derive(Debug, Default, PartialEq, Eq)]
struct RemoteRefs {
    /// The branch `HEAD` points at, when the server says.
    head_branch: Option<String>,
    head_revision: Option<String>,
    /// Branch name → revision.
    branches: BTreeMap<String, String>,
}

impl RemoteRefs {
    fn parse(output: &[u8]) -> RemoteRefs {
        let mut refs = RemoteRefs::default();
        for line in String::from_utf8_lossy(output).lines() {
            let Some((left, name)) = line.split_once('\t') else {
                continue;
            };
            if let Some(target) = left.strip_prefix("ref: ") {
                if name == "HEAD" {
                    refs.head_branch = target.strip_prefix("refs/heads/").map(str::to_string);
                }
            } else if name == "HEAD" {
                refs.head_revision = Some(left.to_string());
            } else if let Some(branch) = name.strip_prefix("refs/heads/") {
                refs.branches.insert(branch.to_string(), left.to_string());
            }
        }
        refs
    }

    /// The remote's default branch; `None` for an empty repository. A server
    /// that does not name `HEAD`'s target (an old one, or the dumb HTTP
    /// protocol) gets the one branch at `HEAD`'s revision; `Err` if several are.
    fn default_branch(&self) -> Result<Option<&str>, ()> {
        if let Some(branch) = &self.head_branch {
            return Ok(self
                .branches
                .contains_key(branch)
                .then_some(branch.as_str()));
        }
        let Some(head) = &self.head_revision else {
            return Ok(None);
        };
        let mut at_head = self
            .branches
            .iter()
            .filter(|(_, rev)| *rev == head)
            .map(|(branch, _)| branch.as_str());
        match (at_head.next(), at_head.next()) {
            (first, None) => Ok(first),
            _ => Err(()),
        }
    }
}

/// Parses `for-each-ref --format=%(objectname)%00%(refname)` under [`TRACKING_PREFIX`].
fn parse_tracking_heads(output: &[u8]) -> Result<Vec<(String, String)>, String> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|line| {
            let (revision, name) = line
                .split_once('\0')
                .ok_or_else(|| format!("unexpected line '{line}'"))?;
            let branch = name
                .strip_prefix(TRACKING_PREFIX)
                .ok_or_else(|| format!("unexpected ref '{name}'"))?;
            Ok((branch.to_string(), revision.to_string()))
        })
        .collect()
}

/// One commit as `git log` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Commit {
    revision: String,
    author_name: String,
    author_email: String,
    committer_name: String,
    committer_email: String,
    /// Epoch seconds.
    commit_time: i64,
    /// The whole message, without its trailing newlines.
    message: String,
    files: Vec<String>,
}

/// Parses the output of `git log --name-only` with [`LOG_FORMAT`].
fn parse_log(output: &[u8]) -> Result<Vec<Commit>, String> {
    let mut fields = output.split(|&b| b == 0);
    if fields.next().is_some_and(|before| !before.is_empty()) {
        return Err("output does not start with a commit".into());
    }
    let fields: Vec<&[u8]> = fields.collect();
    let commits = fields.chunks_exact(LOG_FIELDS);
    if !commits.remainder().is_empty() {
        return Err(format!(
            "{} fields, not a multiple of {LOG_FIELDS}",
            fields.len()
        ));
    }
    commits
        .map(|commit| {
            let text = |i: usize| String::from_utf8_lossy(commit[i]).into_owned();
            let revision = text(0);
            if !matches!(revision.len(), 40 | 64)
                || !revision.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(format!("'{revision}' is not a revision"));
            }
            let commit_time = text(5)
                .parse()
                .map_err(|_| format!("commit {revision}: '{}' is not a time", text(5)))?;
            let files = commit[7]
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| String::from_utf8_lossy(&unquote(line)).into_owned())
                .collect();
            Ok(Commit {
                author_name: text(1),
                author_email: text(2),
                committer_name: text(3),
                committer_email: text(4),
                commit_time,
                message: text(6).trim_end_matches(['\n', '\r']).to_string(),
                files,
                revision,
            })
        })
        .collect()
}

/// Undoes git's C-style quoting of a path (`"a\tb"`, `"\303\251"`); a path
/// without surrounding quotes is returned as it is.
fn unquote(path: &[u8]) -> Vec<u8> {
    let Some(inner) = path
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
    else {
        return path.to_vec();
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter().copied();
    while let Some(byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b'a') => out.push(0x07),
            Some(b'b') => out.push(0x08),
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'v') => out.push(0x0b),
            Some(b'f') => out.push(0x0c),
            Some(b'r') => out.push(b'\r'),
            Some(digit @ b'0'..=b'7') => {
                let mut value = u32::from(digit - b'0');
                for _ in 0..2 {
                    match bytes.clone().next() {
                        Some(d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            bytes.next();
                        }
                        _ => break,
                    }
                }
                out.push(value as u8);
            }
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests;
