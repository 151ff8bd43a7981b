//! Watching master.toml, the plugin directories and the secrets.
//!
//! The directories are watched, not the files: editors and `git pull` replace
//! a file by renaming a new one over it, and Kubernetes swaps a `..data`
//! link, so a watch on the file itself would follow the old inode. Events
//! about other files (the database, the plugin cache, an editor's swap file)
//! are ignored. A burst of events — a save is often a write, a rename and a
//! chmod — becomes one reload once the files have been quiet for [`QUIET`].

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Trigger;
use crate::config::Config;
use crate::tasks::{Policy, Supervisor, TaskHandle};

/// How long the watched files must be left alone before a reload.
const QUIET: Duration = Duration::from_millis(200);

/// Which files of one directory concern the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DirRule {
    /// These names (master.toml, a password file).
    names: BTreeSet<OsString>,
    /// Every `*.so` (a plugin directory).
    libraries: bool,
    /// Every file but hidden ones (the secrets directory).
    every_file: bool,
}

impl DirRule {
    fn matches(&self, name: &str) -> bool {
        // Kubernetes volumes swap their content by renaming `..data`.
        name.starts_with("..")
            || self.names.contains(std::ffi::OsStr::new(name))
            || (self.libraries && name.ends_with(".so"))
            || (self.every_file && !name.starts_with('.'))
    }
}

/// What to watch: directories, and in each which files count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSpec {
    dirs: BTreeMap<PathBuf, DirRule>,
}

impl WatchSpec {
    /// master.toml, the plugin directories, the secrets directory and the
    /// `change_hook_auth` password files of `config`.
    pub fn of(config: &Config) -> WatchSpec {
        let mut spec = WatchSpec::default();
        spec.add_file(&config.file);
        for dir in &config.plugin_dirs {
            spec.rule(&dir.path).libraries = true;
        }
        if let Some(dir) = &config.secrets_dir {
            spec.rule(dir).every_file = true;
        }
        for file in &config.www.auth_files {
            spec.add_file(file);
        }
        spec
    }

    fn rule(&mut self, dir: &Path) -> &mut DirRule {
        self.dirs.entry(dir.to_path_buf()).or_default()
    }

    fn add_file(&mut self, file: &Path) {
        let dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if let Some(name) = file.file_name() {
            self.rule(dir).names.insert(name.to_os_string());
        }
    }

    /// The directories that exist now: only those can be watched, so a
    /// directory created later needs a new watch.
    pub fn existing_dirs(&self) -> Vec<PathBuf> {
        self.dirs
            .keys()
            .filter(|dir| dir.is_dir())
            .cloned()
            .collect()
    }

    /// Whether an event about `path` concerns the configuration.
    fn relevant(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return false;
        };
        self.dirs.get(dir).is_some_and(|rule| rule.matches(name))
    }
}

/// A running watch; dropping it stops watching.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
    /// Turns bursts of events into triggers; ends when the watcher is dropped.
    _debounce: TaskHandle,
    /// What is watched, to tell whether a new configuration needs a new watch.
    pub spec: WatchSpec,
    /// The directories watched.
    pub dirs: Vec<PathBuf>,
}

/// Watches what `spec` names (the directories that exist) and sends
/// [`Trigger::FileChange`] on `triggers` after each burst of relevant changes.
pub fn start(
    spec: WatchSpec,
    triggers: mpsc::UnboundedSender<Trigger>,
    supervisor: &Supervisor,
) -> notify::Result<FileWatch> {
    let (events, received) = mpsc::unbounded_channel::<()>();
    let filter = spec.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|path| filter.relevant(path)) {
            let _ = events.send(());
        }
    })?;
    let dirs = spec.existing_dirs();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    // The receiver outlives a restart of the task that reads it.
    let received = Arc::new(tokio::sync::Mutex::new(received));
    let debounce = supervisor.spawn("file watch", Policy::UntilDone, move || {
        let (received, triggers) = (Arc::clone(&received), triggers.clone());
        async move {
            let mut received = received.lock().await;
            while received.recv().await.is_some() {
                // Wait for the burst to end.
                while let Ok(Some(())) = tokio::time::timeout(QUIET, received.recv()).await {}
                if triggers.send(Trigger::FileChange).is_err() {
                    return;
                }
            }
        }
    });
    Ok(FileWatch {
        _watcher: watcher,
        _debounce: debounce,
        spec,
        dirs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(config: &str) -> WatchSpec {
        WatchSpec::of(&Config::parse(Path::new("/base/master.toml"), config).unwrap())
    }

    #[test]
    fn only_the_configuration_links_libraries_and_secrets_are_relevant() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hook.passwd"), "u:p\n").unwrap();
        let passwd = dir.path().join("hook.passwd");
        let spec = spec(&format!(
            "[master]\nplugin_dirs = ['/plugins']\nsecrets_dir = '/base/secrets'\n\
             [www]\nchange_hook_auth = ['file:{}']\n",
            passwd.display()
        ));
        for path in [
            "/base/master.toml",
            "/base/..data",
            "/plugins/libx.so",
            "/base/secrets/github_token",
            "/base/secrets/..2026_12_04",
        ] {
            assert!(spec.relevant(Path::new(path)), "{path}");
        }
        assert!(spec.relevant(&passwd));
        for path in [
            "/base/state.sqlite-wal",
            "/base/.master.toml.swp",
            "/base/reconfig.json",
            "/base/libx.so",
            "/base/secrets/.token.swp",
            "/plugins/README",
        ] {
            assert!(!spec.relevant(Path::new(path)), "{path}");
        }
        assert!(!spec.relevant(&dir.path().join("other.passwd")));
    }

    #[tokio::test]
    async fn a_save_by_rename_triggers_one_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.toml");
        std::fs::write(&file, "a").unwrap();
        let (triggers, mut received) = mpsc::unbounded_channel();
        let _watch = start(
            WatchSpec::of(&Config::parse(&file, "").unwrap()),
            triggers,
            &Supervisor::new(),
        )
        .unwrap();
        // An editor's save: write a temporary file, then rename it over.
        let temporary = dir.path().join("master.toml.new");
        std::fs::write(&temporary, "b").unwrap();
        std::fs::rename(&temporary, &file).unwrap();
        std::fs::write(dir.path().join("state.sqlite"), "noise").unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), received.recv()).await;
        assert_eq!(first.unwrap(), Some(Trigger::FileChange));
        let second = tokio::time::timeout(QUIET * 3, received.recv()).await;
        assert!(second.is_err(), "one burst, one reload");
    }

    #[tokio::test]
    async fn a_kubernetes_data_link_swap_triggers_one_reload() {
        use std::os::unix::fs::symlink;
        // A ConfigMap volume: master.toml -> ..data/master.toml, ..data -> ..v1.
        let dir = tempfile::tempdir().unwrap();
        let version = |name: &str, text: &str| {
            std::fs::create_dir(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("master.toml"), text).unwrap();
        };
        version("..v1", "a");
        symlink("..v1", dir.path().join("..data")).unwrap();
        symlink("..data/master.toml", dir.path().join("master.toml")).unwrap();
        let (triggers, mut received) = mpsc::unbounded_channel();
        let file = dir.path().join("master.toml");
        let _watch = start(
            WatchSpec::of(&Config::parse(&file, "").unwrap()),
            triggers,
            &Supervisor::new(),
        )
        .unwrap();
        // The kubelet writes the new version aside and swaps the link by rename.
        version("..v2", "b");
        symlink("..v2", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        std::fs::remove_dir_all(dir.path().join("..v1")).unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), received.recv()).await;
        assert_eq!(first.unwrap(), Some(Trigger::FileChange));
        let second = tokio::time::timeout(QUIET * 3, received.recv()).await;
        assert!(second.is_err(), "one swap, one reload");
        let text = std::fs::read_to_string(dir.path().join("master.toml")).unwrap();
        assert_eq!(text, "b");
    }
}
