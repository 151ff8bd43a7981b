//! The master's end of a file transfer: an upload written to a temporary
//! file beside its destination and moved there only when whole, and a
//! download read block by block. Both count bytes against the step's
//! `maxsize` themselves rather than trust the worker to.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A file copied between the master and a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTransfer {
    pub builder: String,
    /// On the worker, relative to the builder's directory.
    pub worker_path: String,
    /// On the master.
    pub master_path: PathBuf,
    /// The most bytes the file may have; a larger one fails the transfer.
    pub max_size: Option<u64>,
    pub block_size: usize,
    /// Permission bits of the written file.
    pub mode: Option<u32>,
    /// An upload keeps the worker file's modification time.
    pub keep_stamp: bool,
}

/// The reason a file over `max` bytes is refused.
pub fn too_large(max: u64) -> String {
    format!("the file is larger than maxsize ({max} bytes)")
}

/// An upload being received.
pub struct Upload {
    file: tokio::fs::File,
    temporary: PathBuf,
    destination: PathBuf,
    written: u64,
    max: Option<u64>,
    modified: Option<SystemTime>,
}

impl Upload {
    /// Opens a temporary file beside `destination`, making its directory.
    pub async fn create(destination: &Path, max: Option<u64>) -> io::Result<Upload> {
        let name = destination
            .file_name()
            .ok_or_else(|| io::Error::other(format!("{} names no file", destination.display())))?;
        if let Some(dir) = destination.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut temporary = destination.to_path_buf();
        temporary.set_file_name(format!(
            ".{}.{}.upload",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = tokio::fs::File::create(&temporary).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot write {}: {e}", temporary.display()),
            )
        })?;
        Ok(Upload {
            file,
            temporary,
            destination: destination.to_path_buf(),
            written: 0,
            max,
            modified: None,
        })
    }

    /// Appends a block; refused when it would pass the size limit.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        let total = self.written + data.len() as u64;
        if let Some(max) = self.max.filter(|max| total > *max) {
            return Err(too_large(max));
        }
        self.file
            .write_all(data)
            .await
            .map_err(|e| format!("cannot write {}: {e}", self.temporary.display()))?;
        self.written = total;
        Ok(())
    }

    /// The modification time to give the file, in seconds since the epoch.
    pub fn set_modified(&mut self, seconds: f64) {
        if seconds.is_finite() && seconds >= 0.0 {
            self.modified = Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds));
        }
    }

    /// Moves the whole file to its destination with `mode`.
    pub async fn finish(mut self, mode: Option<u32>) -> io::Result<u64> {
        let done = async {
            self.file.flush().await?;
            let file = self.file.try_clone().await?.into_std().await;
            if let Some(modified) = self.modified {
                file.set_modified(modified)?;
            }
            if let Some(mode) = mode {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            }
            tokio::fs::rename(&self.temporary, &self.destination).await
        }
        .await;
        match done {
            Ok(()) => Ok(self.written),
            Err(e) => {
                let _ = tokio::fs::remove_file(&self.temporary).await;
                Err(io::Error::new(
                    e.kind(),
                    format!("cannot write {}: {e}", self.destination.display()),
                ))
            }
        }
    }

    /// Drops what was received; the destination is left as it was.
    pub async fn abandon(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.temporary).await;
    }
}

/// A file of the master being sent.
pub struct Download {
    file: tokio::fs::File,
    pub size: u64,
}

impl Download {
    /// Opens `source`; a file over `max` bytes is refused before any byte
    /// is sent.
    pub async fn open(source: &Path, max: Option<u64>) -> Result<Download, String> {
        let cannot = |e: io::Error| format!("cannot read {}: {e}", source.display());
        let file = tokio::fs::File::open(source).await.map_err(cannot)?;
        let metadata = file.metadata().await.map_err(cannot)?;
        if !metadata.is_file() {
            return Err(format!("{} is not a file", source.display()));
        }
        if let Some(max) = max.filter(|max| metadata.len() > *max) {
            return Err(too_large(max));
        }
        Ok(Download {
            file,
            size: metadata.len(),
        })
    }

    /// The next block of at most `length` bytes; empty at the end.
    pub async fn read(&mut self, length: usize) -> io::Result<Vec<u8>> {
        let mut block = Vec::with_capacity(length.min(1 << 20));
        (&mut self.file)
            .take(length as u64)
            .read_to_end(&mut block)
            .await?;
        Ok(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_upload_appears_only_whole_and_never_over_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let destination = dir.path().join("out/artifact.txt");
        let mut upload = Upload::create(&destination, Some(5)).await.unwrap();
        upload.write(b"abc").await.unwrap();
        assert!(!destination.exists(), "not before it is whole");
        assert_eq!(upload.write(b"def").await, Err(too_large(5)));
        upload.write(b"de").await.unwrap();
        upload.set_modified(1_000_000.0);
        assert_eq!(upload.finish(Some(0o640)).await.unwrap(), 5);
        assert_eq!(std::fs::read(&destination).unwrap(), b"abcde");
        let metadata = std::fs::metadata(&destination).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(metadata.permissions().mode() & 0o777, 0o640);
        assert_eq!(
            metadata.modified().unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
        );

        let upload = Upload::create(&destination, None).await.unwrap();
        upload.abandon().await;
        assert_eq!(std::fs::read(&destination).unwrap(), b"abcde");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["artifact.txt"], "no temporary file left");
    }

    #[tokio::test]
    async fn a_download_is_read_in_blocks_and_refused_over_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("in.bin");
        std::fs::write(&source, b"0123456789").unwrap();
        assert_eq!(
            Download::open(&source, Some(9)).await.err(),
            Some(too_large(9))
        );
        let mut download = Download::open(&source, Some(10)).await.unwrap();
        assert_eq!(download.size, 10);
        assert_eq!(download.read(4).await.unwrap(), b"0123");
        assert_eq!(download.read(100).await.unwrap(), b"456789");
        assert!(download.read(4).await.unwrap().is_empty());
        let missing = Download::open(&dir.path().join("nope"), None).await;
        assert!(missing.err().unwrap().starts_with("cannot read "));
    }
}
