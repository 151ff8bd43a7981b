//! `[[change_sources]]`: the polling change sources, Buildbot's `GitPoller`.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, SourceMap};

/// Default time between two polls of a change source: 10 minutes, as in Buildbot.
const DEFAULT_POLL_INTERVAL: u64 = 600;

/// Where a git poller keeps its bare clone unless `workdir` says otherwise:
/// `<basedir>/gitpoller-work/<sanitized name>`.
const GITPOLLER_WORK: &str = "gitpoller-work";

/// `[[change_sources]]`: Buildbot's `GitPoller` options in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChangeSource {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub name: Option<Spanned<String>>,
    pub repourl: Option<Spanned<String>>,
    /// A list of branch names, or `true` for every branch.
    pub branches: Option<Spanned<toml::Value>>,
    pub poll_interval: Option<Spanned<i64>>,
    pub poll_at_launch: Option<bool>,
    pub project: Option<String>,
    pub category: Option<String>,
    pub codebase: Option<String>,
    pub revlink: Option<String>,
    pub workdir: Option<String>,
}

/// One `[[change_sources]]` entry of `type = "git"`, the only kind so far:
/// Buildbot's `GitPoller`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitPollerConfig {
    /// Unique among the change sources; the `poller` dialect asks for it by
    /// name. Default: the repourl, its credentials masked.
    pub name: String,
    /// What `git fetch` is given; also the `repository` of every change.
    pub repourl: String,
    pub branches: Branches,
    pub poll_interval: Duration,
    /// Poll once at start-up instead of waiting a whole interval first.
    pub poll_at_launch: bool,
    pub project: String,
    pub category: Option<String>,
    pub codebase: String,
    /// A template whose `%s` becomes the revision; `""` gives changes an empty revlink.
    pub revlink: String,
    /// The bare clone the poller fetches into.
    pub workdir: PathBuf,
}

/// Which branches a git poller follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Branches {
    /// The branch the remote's `HEAD` points at.
    RemoteHead,
    /// Every branch of the remote (`branches = true`).
    All,
    /// These branches, in this order, those that exist.
    Named(Vec<String>),
}

/// Builds every `[[change_sources]]` entry, recording what is wrong in `errors`.
pub(super) fn change_sources(
    map: &SourceMap,
    basedir: &Path,
    raw: Vec<Spanned<RawChangeSource>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<GitPollerConfig> {
    Reader {
        map,
        basedir,
        errors,
    }
    .change_sources(raw)
}

/// Reads change sources, collecting errors.
struct Reader<'a> {
    map: &'a SourceMap,
    basedir: &'a Path,
    errors: &'a mut Vec<ConfigError>,
}

impl Reader<'_> {
    /// Builds every `[[change_sources]]` entry, then checks that names and
    /// work directories are unique, since the name keys the stored state and two
    /// pollers must not fetch into the same clone.
    fn change_sources(&mut self, raw: Vec<Spanned<RawChangeSource>>) -> Vec<GitPollerConfig> {
        let mut built: Vec<(GitPollerConfig, Range<usize>)> = Vec::new();
        for entry in raw {
            let span = entry.span();
            let Some((source, name_span)) = self.change_source(span.clone(), entry.into_inner())
            else {
                continue;
            };
            if let Some((_, first)) = built.iter().find(|(s, _)| s.name == source.name) {
                let message = format!(
                    "change source name '{}' is already used at {}",
                    source.name,
                    self.map.locate(first.start)
                );
                self.errors.push(self.map.error(name_span, message));
                continue;
            }
            if let Some((other, _)) = built.iter().find(|(s, _)| s.workdir == source.workdir) {
                let message = format!(
                    "change source '{}' would share workdir {} with change source '{}'",
                    source.name,
                    source.workdir.display(),
                    other.name
                );
                self.errors.push(self.map.error(span, message));
                continue;
            }
            built.push((source, span));
        }
        built.into_iter().map(|(source, _)| source).collect()
    }

    /// One change source and the span its name comes from, or `None` after
    /// recording what is wrong with it.
    fn change_source(
        &mut self,
        span: Range<usize>,
        raw: RawChangeSource,
    ) -> Option<(GitPollerConfig, Range<usize>)> {
        let errors_before = self.errors.len();
        match raw.kind {
            None => self.errors.push(
                self.map
                    .error(span.clone(), "a change source needs type = \"git\""),
            ),
            Some(kind) if kind.get_ref() != "git" => {
                let message = format!(
                    "unknown change source type '{}' (known: git)",
                    kind.get_ref()
                );
                self.errors.push(self.map.error(kind.span(), message));
            }
            Some(_) => {}
        }
        let repourl = match raw.repourl {
            Some(url) if !url.get_ref().is_empty() => Some(url),
            Some(url) => {
                let err = self.map.error(url.span(), "repourl must not be empty");
                self.errors.push(err);
                None
            }
            None => {
                let err = self
                    .map
                    .error(span.clone(), "a change source needs repourl");
                self.errors.push(err);
                None
            }
        };
        let name = match raw.name {
            Some(name) if name.get_ref().is_empty() => {
                let err = self.map.error(name.span(), "name must not be empty");
                self.errors.push(err);
                None
            }
            Some(name) => Some((name.get_ref().clone(), name.span())),
            // Masked: the name shows in logs and names the workdir.
            None => repourl
                .as_ref()
                .map(|url| (redact_url(url.get_ref()).into_owned(), url.span())),
        };
        let branches = raw.branches.map_or(Branches::RemoteHead, |branches| {
            self.branches(branches).unwrap_or(Branches::RemoteHead)
        });
        let poll_interval = match raw.poll_interval {
            None => DEFAULT_POLL_INTERVAL,
            Some(secs) if *secs.get_ref() > 0 => *secs.get_ref() as u64,
            Some(secs) => {
                let err = self.map.error(
                    secs.span(),
                    "poll_interval must be a positive number of seconds",
                );
                self.errors.push(err);
                DEFAULT_POLL_INTERVAL
            }
        };
        if self.errors.len() > errors_before {
            return None;
        }
        let (name, name_span) = name?;
        let workdir = match raw.workdir {
            Some(dir) => self.basedir.join(dir),
            None => self
                .basedir
                .join(GITPOLLER_WORK)
                .join(sanitize_dir_name(&name)),
        };
        Some((
            GitPollerConfig {
                name,
                repourl: repourl?.into_inner(),
                branches,
                poll_interval: Duration::from_secs(poll_interval),
                poll_at_launch: raw.poll_at_launch.unwrap_or(false),
                project: raw.project.unwrap_or_default(),
                category: raw.category,
                codebase: raw.codebase.unwrap_or_default(),
                revlink: raw.revlink.unwrap_or_default(),
                workdir,
            },
            name_span,
        ))
    }

    /// `branches`: a non-empty list of branch names (`refs/heads/` optional) or `true`.
    fn branches(&mut self, value: Spanned<toml::Value>) -> Option<Branches> {
        let span = value.span();
        let invalid = "branches must be true (every branch) or a list of branch names";
        let names = match value.into_inner() {
            toml::Value::Boolean(true) => return Some(Branches::All),
            toml::Value::Array(items) => items,
            _ => {
                self.errors.push(self.map.error(span, invalid));
                return None;
            }
        };
        let mut branches = Vec::with_capacity(names.len());
        for item in names {
            match item {
                toml::Value::String(name) => {
                    let name = name.strip_prefix("refs/heads/").unwrap_or(&name);
                    if name.is_empty() {
                        self.errors.push(self.map.error(span, invalid));
                        return None;
                    }
                    if !branches.iter().any(|b| b == name) {
                        branches.push(name.to_string());
                    }
                }
                _ => {
                    self.errors.push(self.map.error(span, invalid));
                    return None;
                }
            }
        }
        if branches.is_empty() {
            let message = "branches = [] follows no branch: leave it out to follow the remote's default branch";
            self.errors.push(self.map.error(span, message));
            return None;
        }
        Some(Branches::Named(branches))
    }
}

/// A change source name as one directory name: characters other than ASCII
/// letters, digits, `-`, `_` and `.` become `_`, and so does a leading `.`, so the
/// result never climbs out of its parent or hides.
fn sanitize_dir_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            '.' if i > 0 => c,
            _ => '_',
        })
        .collect()
}

/// A repository URL fit for logs: the password of `scheme://user:password@…`
/// is masked, and so is a lone user name over HTTP(S), where it is usually a
/// token.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Cow::Borrowed(url);
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return Cow::Borrowed(url);
    };
    let path = &rest[authority.len()..];
    let masked = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
            "***".to_string()
        }
        None => return Cow::Borrowed(url),
    };
    Cow::Owned(format!("{scheme}://{masked}@{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, parse};
    use super::*;

    #[test]
    fn a_git_change_source_with_defaults() {
        let config =
            parse("[[change_sources]]\ntype = 'git'\nrepourl = 'https://example.org/r.git'\n")
                .unwrap();
        assert_eq!(
            config.change_sources,
            [GitPollerConfig {
                name: "https://example.org/r.git".into(),
                repourl: "https://example.org/r.git".into(),
                branches: Branches::RemoteHead,
                poll_interval: Duration::from_secs(600),
                poll_at_launch: false,
                project: String::new(),
                category: None,
                codebase: String::new(),
                revlink: String::new(),
                workdir: "base/gitpoller-work/https___example.org_r.git".into(),
            }]
        );
        let config =
            parse("[[change_sources]]\ntype = 'git'\nrepourl = 'https://u:pw@example.org/r.git'\n")
                .unwrap();
        assert_eq!(
            config.change_sources[0].name,
            "https://u:***@example.org/r.git"
        );
        assert_eq!(
            config.change_sources[0].repourl,
            "https://u:pw@example.org/r.git"
        );
    }

    #[test]
    fn a_git_change_source_with_every_option() {
        let config = parse(
            "[[change_sources]]\ntype = 'git'\nname = 'app'\nrepourl = 'git@example.org:app.git'\n\
             branches = ['main', 'refs/heads/release', 'main']\npoll_interval = 30\n\
             poll_at_launch = true\nproject = 'p'\ncategory = 'c'\ncodebase = 'cb'\n\
             revlink = 'https://example.org/app/commit/%s'\nworkdir = 'clones/app'\n\
             [[change_sources]]\ntype = 'git'\nname = '..'\nrepourl = 'r2'\nbranches = true\n",
        )
        .unwrap();
        let [app, all] = &config.change_sources[..] else {
            panic!("{:?}", config.change_sources)
        };
        assert_eq!(app.name, "app");
        assert_eq!(
            app.branches,
            Branches::Named(vec!["main".into(), "release".into()])
        );
        assert_eq!(app.poll_interval, Duration::from_secs(30));
        assert!(app.poll_at_launch);
        assert_eq!(
            (&*app.project, app.category.as_deref(), &*app.codebase),
            ("p", Some("c"), "cb")
        );
        assert_eq!(app.revlink, "https://example.org/app/commit/%s");
        assert_eq!(app.workdir, Path::new("base/clones/app"));
        assert_eq!(all.branches, Branches::All);
        assert_eq!(all.workdir, Path::new("base/gitpoller-work/_."));
    }

    #[test]
    fn change_source_mistakes_name_file_and_line() {
        let errs = errors("[[change_sources]]\ntype = 'git'\nrepourl = 'r'\npollInterval = 5\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("base/master.toml:4:1: unknown field `pollInterval`"),
            "{}",
            errs[0]
        );
        let errs = errors(
            "[[change_sources]]\ntype = 'svn'\nrepourl = 'r'\n\
             [[change_sources]]\ntype = 'git'\npoll_interval = 0\n\
             [[change_sources]]\nrepourl = 'r'\nbranches = false\n\
             [[change_sources]]\ntype = 'git'\nrepourl = 'r'\nbranches = []\n\
             [[change_sources]]\ntype = 'git'\nrepourl = 'r'\nname = ''\n",
        );
        assert_eq!(
            errs,
            [
                "base/master.toml:2:8: unknown change source type 'svn' (known: git)",
                "base/master.toml:4:1: a change source needs repourl",
                "base/master.toml:6:17: poll_interval must be a positive number of seconds",
                "base/master.toml:7:1: a change source needs type = \"git\"",
                "base/master.toml:9:12: branches must be true (every branch) or a list of branch names",
                "base/master.toml:13:12: branches = [] follows no branch: leave it out to follow the remote's default branch",
                "base/master.toml:17:8: name must not be empty",
            ]
        );
    }

    #[test]
    fn change_source_names_and_workdirs_are_unique() {
        let errs = errors(
            "[[change_sources]]\ntype = 'git'\nrepourl = 'r'\n\
             [[change_sources]]\ntype = 'git'\nrepourl = 'r'\n\
             [[change_sources]]\ntype = 'git'\nrepourl = 'r'\nname = 'r:'\n\
             [[change_sources]]\ntype = 'git'\nrepourl = 'r'\nname = 'r_'\n",
        );
        assert_eq!(
            errs,
            [
                "base/master.toml:6:11: change source name 'r' is already used at base/master.toml:1:1",
                "base/master.toml:11:1: change source 'r_' would share workdir base/gitpoller-work/r_ with change source 'r:'",
            ]
        );
    }

    #[test]
    fn credentials_in_urls_are_masked() {
        for (url, shown) in [
            (
                "https://user:s3cret@example.org/r.git",
                "https://user:***@example.org/r.git",
            ),
            (
                "https://ghp_token@github.com/o/r.git",
                "https://***@github.com/o/r.git",
            ),
            ("ssh://git@example.org/r.git", "ssh://git@example.org/r.git"),
            ("git@example.org:r.git", "git@example.org:r.git"),
            ("file:///srv/git/r.git", "file:///srv/git/r.git"),
            ("https://example.org/a@b", "https://example.org/a@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
