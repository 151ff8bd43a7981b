//! The `local` worker: steps run as child processes of the master, in
//! `<basedir>/workers/<worker>/<builder>/`.

use std::io;
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::process::{self, Command, Finished, Stream};
use super::transfer::{Download, Upload};
use super::{files, FileTransfer, PathKind, ShellCommand, Worker};

pub struct LocalWorker {
    name: String,
    /// The worker's own directory; each builder has a directory inside.
    basedir: PathBuf,
}

impl LocalWorker {
    pub fn new(name: String, basedir: PathBuf) -> LocalWorker {
        LocalWorker { name, basedir }
    }

    fn path(&self, builder: &str, relative: &str) -> PathBuf {
        let dir = self.basedir.join(builder);
        if relative.is_empty() || relative == "." {
            dir
        } else {
            dir.join(relative)
        }
    }
}

impl Worker for LocalWorker {
    fn name(&self) -> &str {
        &self.name
    }

    fn builder_dir(&self, builder: &str) -> String {
        self.basedir.join(builder).display().to_string()
    }

    fn run(
        &self,
        command: ShellCommand,
        output: mpsc::Sender<(Stream, String)>,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'static, io::Result<Finished>> {
        let command = Command {
            workdir: self.path(&command.builder, &command.workdir),
            argv: command.argv,
            env: command.env,
            timeout: command.timeout,
            max_time: command.max_time,
        };
        Box::pin(process::run(command, output, stop))
    }

    fn remove_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<()>> {
        let path = self.path(builder, dir);
        Box::pin(async move { files::remove(&path).await })
    }

    fn make_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<()>> {
        let path = self.path(builder, dir);
        Box::pin(async move { files::make_dir(&path).await })
    }

    fn stat(&self, builder: &str, path: &str) -> BoxFuture<'static, io::Result<Option<PathKind>>> {
        let path = self.path(builder, path);
        Box::pin(async move { files::stat(&path).await })
    }

    fn glob(&self, builder: &str, pattern: &str) -> BoxFuture<'static, io::Result<Vec<String>>> {
        let base = self.builder_dir(builder);
        let pattern = self.path(builder, pattern).display().to_string();
        Box::pin(async move {
            let found = files::glob(&pattern).await?;
            Ok(found.iter().map(|p| files::relative_to(&base, p)).collect())
        })
    }

    fn list_dir(&self, builder: &str, dir: &str) -> BoxFuture<'static, io::Result<Vec<String>>> {
        let path = self.path(builder, dir);
        Box::pin(async move { files::list_dir(&path).await })
    }

    fn upload(&self, transfer: FileTransfer) -> BoxFuture<'static, io::Result<u64>> {
        let source = self.path(&transfer.builder, &transfer.worker_path);
        Box::pin(async move {
            let mut reading = Download::open(&source, transfer.max_size)
                .await
                .map_err(io::Error::other)?;
            let mut upload = Upload::create(&transfer.master_path, transfer.max_size).await?;
            loop {
                let block = match reading.read(transfer.block_size).await {
                    Ok(block) => block,
                    Err(e) => {
                        upload.abandon().await;
                        return Err(e);
                    }
                };
                if block.is_empty() {
                    break;
                }
                if let Err(e) = upload.write(&block).await {
                    upload.abandon().await;
                    return Err(io::Error::other(e));
                }
            }
            if transfer.keep_stamp {
                if let Ok(modified) = tokio::fs::metadata(&source).await?.modified() {
                    let since = modified.duration_since(std::time::UNIX_EPOCH);
                    upload.set_modified(since.unwrap_or_default().as_secs_f64());
                }
            }
            upload.finish(transfer.mode).await
        })
    }

    fn download(&self, transfer: FileTransfer) -> BoxFuture<'static, io::Result<u64>> {
        let destination = self.path(&transfer.builder, &transfer.worker_path);
        Box::pin(async move {
            let mut reading = Download::open(&transfer.master_path, transfer.max_size)
                .await
                .map_err(io::Error::other)?;
            let mut writing = Upload::create(&destination, transfer.max_size).await?;
            loop {
                let block = reading.read(transfer.block_size).await?;
                if block.is_empty() {
                    break;
                }
                writing.write(&block).await.map_err(io::Error::other)?;
            }
            writing.finish(transfer.mode).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_run_in_the_builders_directory_which_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let worker = LocalWorker::new("w".into(), dir.path().join("w"));
        let (output, mut lines) = mpsc::channel(16);
        let (_stop, stop) = watch::channel(false);
        let command = ShellCommand {
            builder: "b".into(),
            workdir: "build".into(),
            argv: vec!["sh".into(), "-c".into(), "pwd; touch marker".into()],
            env: Vec::new(),
            timeout: None,
            max_time: None,
        };
        let finished = worker.run(command, output, stop).await.unwrap();
        assert_eq!(finished.ending, process::Ending::Exited(0));
        let (_, pwd) = lines.recv().await.unwrap();
        assert!(pwd.ends_with("w/b/build"), "{pwd}");
        assert_eq!(
            worker.stat("b", "build/marker").await.unwrap(),
            Some(PathKind::File)
        );
        assert_eq!(worker.glob("b", "*/mark*").await.unwrap(), ["build/marker"]);
        assert_eq!(worker.list_dir("b", "build").await.unwrap(), ["marker"]);
        worker.remove_dir("b", "build").await.unwrap();
        assert_eq!(worker.stat("b", "build").await.unwrap(), None);
        worker.remove_dir("b", "build").await.unwrap();
        assert_eq!(
            worker.builder_dir("b"),
            dir.path().join("w/b").display().to_string()
        );
    }

    #[tokio::test]
    async fn files_go_both_ways_within_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let worker = LocalWorker::new("w".into(), dir.path().join("w"));
        std::fs::write(dir.path().join("source.txt"), "hello").unwrap();
        let transfer = |worker_path: &str, master: &str, max_size| FileTransfer {
            builder: "b".into(),
            worker_path: worker_path.into(),
            master_path: dir.path().join(master),
            max_size,
            block_size: 2,
            mode: Some(0o600),
            keep_stamp: false,
        };
        let bytes = worker
            .download(transfer("build/in.txt", "source.txt", None))
            .await
            .unwrap();
        assert_eq!(bytes, 5);
        assert_eq!(
            std::fs::read(dir.path().join("w/b/build/in.txt")).unwrap(),
            b"hello"
        );
        let bytes = worker
            .upload(transfer("build/in.txt", "up/out.txt", Some(5)))
            .await
            .unwrap();
        assert_eq!(bytes, 5);
        assert_eq!(
            std::fs::read(dir.path().join("up/out.txt")).unwrap(),
            b"hello"
        );
        let refused = worker
            .upload(transfer("build/in.txt", "up/small.txt", Some(4)))
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("maxsize (4 bytes)"),
            "{refused}"
        );
        assert!(!dir.path().join("up/small.txt").exists());
        assert!(worker
            .upload(transfer("build/missing", "up/m.txt", None))
            .await
            .is_err());
    }
}
