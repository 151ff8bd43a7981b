//! The `/build <repo> [branch] [revision]` command and the change it asks for.

use buildmaster_plugin_api::Change;

/// A parsed `/build` command.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Build {
    pub repo: String,
    pub branch: String,
    /// Empty: the scheduler builds the branch's latest revision.
    pub revision: String,
}

impl Build {
    /// Reads the command's text: words separated by any whitespace; words after
    /// the third are ignored. `None` when there is no word at all.
    pub fn parse(text: &str) -> Option<Build> {
        let mut words = text.split_whitespace();
        let repo = words.next()?.to_string();
        let branch = words.next().unwrap_or("master").to_string();
        let revision = words.next().unwrap_or_default().to_string();
        Some(Build {
            repo,
            branch,
            revision,
        })
    }

    /// Refuses a repository name that could climb out of `repo_base_url` or be
    /// read as an option by the tools a build runs: one containing `..`,
    /// starting with `/` or `-`, or holding whitespace or control characters.
    pub fn check_repo(&self) -> Result<(), String> {
        let repo = &self.repo;
        let why = if repo.contains("..") {
            "it must not contain '..'"
        } else if repo.starts_with('/') {
            "it must not start with '/'"
        } else if repo.starts_with('-') {
            "it must not start with '-'"
        } else if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "it must not contain whitespace or control characters"
        } else {
            return Ok(());
        };
        let shown: String = repo
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Err(format!("Repository '{shown}' is not allowed: {why}."))
    }

    /// The change a scheduler filtered on category `mattermost` and project
    /// `mattermost_build_<repo>_<branch>` reacts to.
    pub fn change(&self, repo_base_url: &str) -> Change {
        Change {
            author: Some("buildbot".into()),
            comments: Some("Build from mattermost".into()),
            revision: Some(self.revision.clone()),
            branch: Some(self.branch.clone()),
            category: Some("mattermost".into()),
            repository: format!("{repo_base_url}{}", self.repo),
            project: format!("mattermost_build_{}_{}", self.repo, self.branch),
            ..Change::default()
        }
    }

    /// What the user is told once the change is queued.
    pub fn summary(&self) -> String {
        let revision = match self.revision.as_str() {
            "" => "the latest revision".to_string(),
            revision => format!("revision {revision}"),
        };
        format!(
            "Build queued: {} on branch {} at {revision}.",
            self.repo, self.branch
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_fill_repo_branch_and_revision_in_order() {
        assert_eq!(Build::parse(" \t\n"), None);
        assert_eq!(
            Build::parse("web"),
            Some(Build {
                repo: "web".into(),
                branch: "master".into(),
                revision: String::new(),
            })
        );
        assert_eq!(
            Build::parse("  web \t fix-1\n  c0ffee  ignored words "),
            Some(Build {
                repo: "web".into(),
                branch: "fix-1".into(),
                revision: "c0ffee".into(),
            })
        );
    }

    #[test]
    fn repository_names_that_could_escape_or_pass_as_options_are_refused() {
        for repo in ["web", "team/web", "web.git", "w-e_b.2"] {
            assert_eq!(Build::parse(repo).unwrap().check_repo(), Ok(()), "{repo}");
        }
        for (repo, why) in [
            ("../etc", "must not contain '..'"),
            ("team/../../x", "must not contain '..'"),
            ("/srv/git/web", "must not start with '/'"),
            ("--upload-pack=touch", "must not start with '-'"),
            ("web\u{7}", "control characters"),
            ("web\u{a0}x", "whitespace"),
        ] {
            let build = Build {
                repo: repo.into(),
                branch: "master".into(),
                revision: String::new(),
            };
            let message = build.check_repo().unwrap_err();
            assert!(message.contains(why), "{repo:?}: {message}");
            assert!(!message.contains('\u{7}'), "{message:?}");
        }
    }

    #[test]
    fn the_summary_names_what_was_queued() {
        let latest = Build::parse("web").unwrap();
        assert_eq!(
            latest.summary(),
            "Build queued: web on branch master at the latest revision."
        );
        let pinned = Build::parse("web dev 1a2b").unwrap();
        assert_eq!(
            pinned.summary(),
            "Build queued: web on branch dev at revision 1a2b."
        );
    }
}
