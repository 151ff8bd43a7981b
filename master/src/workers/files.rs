//! File-system commands on this machine's paths, as a worker runs them:
//! the `local` kind and the native remote worker share them.

use std::io;
use std::path::Path;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    File,
    Dir,
    Other,
}

impl PathKind {
    /// From the `st_mode` of a `stat` (as a remote worker reports it).
    pub fn from_mode(mode: u32) -> PathKind {
        match mode & 0o170_000 {
            0o100_000 => PathKind::File,
            0o040_000 => PathKind::Dir,
            _ => PathKind::Other,
        }
    }

    fn from_type(file_type: std::fs::FileType) -> PathKind {
        if file_type.is_file() {
            PathKind::File
        } else if file_type.is_dir() {
            PathKind::Dir
        } else {
            PathKind::Other
        }
    }
}

fn with_path(path: &Path, what: &str) -> impl FnOnce(io::Error) -> io::Error {
    let path = path.display().to_string();
    let what = what.to_owned();
    move |e| io::Error::new(e.kind(), format!("cannot {what} {path}: {e}"))
}

/// Makes a directory and its parents.
pub async fn make_dir(path: &Path) -> io::Result<()> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(with_path(path, "create"))
}

/// Removes a directory with everything in it, or a file; a missing path is
/// fine.
pub async fn remove(path: &Path) -> io::Result<()> {
    let removed = match tokio::fs::symlink_metadata(path).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(metadata) if metadata.is_dir() => tokio::fs::remove_dir_all(path).await,
        Ok(_) => tokio::fs::remove_file(path).await,
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(path, "remove")(e)),
        _ => Ok(()),
    }
}

/// What is at `path` (links followed), `None` when nothing is.
pub async fn stat(path: &Path) -> io::Result<Option<PathKind>> {
    match tokio::fs::metadata(path).await {
        Ok(metadata) => Ok(Some(PathKind::from_type(metadata.file_type()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(with_path(path, "stat")(e)),
    }
}

/// The paths matching a shell pattern (`*`, `?`, `[…]`), sorted; unreadable
/// entries are skipped, as a shell does.
pub async fn glob(pattern: &str) -> io::Result<Vec<String>> {
    let pattern = pattern.to_owned();
    tokio::task::spawn_blocking(move || {
        let paths = glob::glob(&pattern).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad pattern {pattern}: {e}"),
            )
        })?;
        let mut found: Vec<String> = paths
            .filter_map(Result::ok)
            .map(|path| path.display().to_string())
            .collect();
        found.sort();
        Ok(found)
    })
    .await
    .map_err(io::Error::other)?
}

/// The names in a directory, sorted.
pub async fn list_dir(path: &Path) -> io::Result<Vec<String>> {
    let mut entries = tokio::fs::read_dir(path)
        .await
        .map_err(with_path(path, "list"))?;
    let mut names = Vec::new();
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(with_path(path, "list"))?
    {
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// `path` relative to `base` when it is inside it, else as it is.
pub fn relative_to(base: &str, path: &str) -> String {
    let base = base.trim_end_matches('/');
    match path.strip_prefix(base) {
        Some(rest) if rest.starts_with('/') => rest[1..].to_owned(),
        Some("") => ".".to_owned(),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_system_commands_do_what_a_worker_s_do() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        make_dir(&root.join("a/b")).await.unwrap();
        make_dir(&root.join("a/b")).await.unwrap();
        std::fs::write(root.join("a/one.txt"), "1").unwrap();
        std::fs::write(root.join("a/two.txt"), "2").unwrap();
        assert_eq!(
            list_dir(&root.join("a")).await.unwrap(),
            ["b", "one.txt", "two.txt"]
        );
        assert!(list_dir(&root.join("nope")).await.is_err());
        assert_eq!(stat(&root.join("a")).await.unwrap(), Some(PathKind::Dir));
        assert_eq!(
            stat(&root.join("a/one.txt")).await.unwrap(),
            Some(PathKind::File)
        );
        assert_eq!(stat(&root.join("nope")).await.unwrap(), None);
        let base = root.display().to_string();
        let found = glob(&format!("{base}/a/*.txt")).await.unwrap();
        let found: Vec<String> = found.iter().map(|p| relative_to(&base, p)).collect();
        assert_eq!(found, ["a/one.txt", "a/two.txt"]);
        assert!(glob(&format!("{base}/a/[")).await.is_err());
        remove(&root.join("a/one.txt")).await.unwrap();
        remove(&root.join("a")).await.unwrap();
        remove(&root.join("a")).await.unwrap();
        assert_eq!(stat(&root.join("a")).await.unwrap(), None);
    }

    #[test]
    fn modes_and_relative_paths() {
        assert_eq!(PathKind::from_mode(0o100_644), PathKind::File);
        assert_eq!(PathKind::from_mode(0o040_755), PathKind::Dir);
        assert_eq!(PathKind::from_mode(0o120_777), PathKind::Other);
        assert_eq!(relative_to("/w/b/", "/w/b/build/x"), "build/x");
        assert_eq!(relative_to("/w/b", "/w/b"), ".");
        assert_eq!(relative_to("/w/b", "/w/bb/x"), "/w/bb/x");
    }
}
