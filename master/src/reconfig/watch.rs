//! Watching master.toml and the plugin directories.
//!
//! The directories are watched, not the files: editors and `git pull` replace
//! a file by renaming a new one over it, and Kubernetes swaps a `..data`
//! link, so a watch on the file itself would follow the old inode. Events
//! about other files of the basedir (the database, the plugin cache) are
//! ignored. A burst of events — a save is often a write, a rename and a
//! chmod — becomes one reload once the directory has been quiet for
//! [`QUIET`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::Trigger;

/// How long the watched files must be left alone before a reload.
const QUIET: Duration = Duration::from_millis(200);

/// A running watch; dropping it stops watching.
pub struct FileWatch {
    _watcher: RecommendedWatcher,
    /// The directories watched, to tell whether a new configuration needs a
    /// new watch.
    pub dirs: Vec<PathBuf>,
}

/// Whether an event about `path` concerns the configuration.
fn relevant(path: &Path, config_file: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    path.file_name() == config_file.file_name() || name.starts_with("..") || name.ends_with(".so")
}

/// Watches the directory of `config_file` and `plugin_dirs` (those that
/// exist) and sends [`Trigger::FileChange`] on `triggers` after each burst of
/// relevant changes.
pub fn start(
    config_file: &Path,
    plugin_dirs: &[PathBuf],
    triggers: mpsc::UnboundedSender<Trigger>,
) -> notify::Result<FileWatch> {
    let (events, mut received) = mpsc::unbounded_channel::<()>();
    let file = config_file.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if event.kind.is_access() {
            return;
        }
        if event.paths.iter().any(|path| relevant(path, &file)) {
            let _ = events.send(());
        }
    })?;
    let config_dir = match config_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![config_dir];
    dirs.extend(plugin_dirs.iter().filter(|d| d.is_dir()).cloned());
    dirs.dedup();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while received.recv().await.is_some() {
            // Wait for the burst to end.
            while let Ok(Some(())) = tokio::time::timeout(QUIET, received.recv()).await {}
            if triggers.send(Trigger::FileChange).is_err() {
                return;
            }
        }
    });
    Ok(FileWatch {
        _watcher: watcher,
        dirs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_configuration_links_and_libraries_are_relevant() {
        let config = Path::new("/base/master.toml");
        assert!(relevant(Path::new("/base/master.toml"), config));
        assert!(relevant(Path::new("/base/..data"), config));
        assert!(relevant(Path::new("/plugins/libx.so"), config));
        assert!(!relevant(Path::new("/base/state.sqlite-wal"), config));
        assert!(!relevant(Path::new("/base/.master.toml.swp"), config));
        assert!(!relevant(Path::new("/base/reconfig.json"), config));
    }

    #[tokio::test]
    async fn a_save_by_rename_triggers_one_reload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("master.toml");
        std::fs::write(&file, "a").unwrap();
        let (triggers, mut received) = mpsc::unbounded_channel();
        let _watch = start(&file, &[], triggers).unwrap();
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
        let _watch = start(&dir.path().join("master.toml"), &[], triggers).unwrap();
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
