//! The `local` worker: steps run as child processes of the master, in
//! `<basedir>/workers/<worker>/<builder>/`.

use std::io;
use std::path::PathBuf;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, watch};

use super::process::{self, Command, Finished, Stream};
use super::{ShellCommand, Worker};

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
        Box::pin(async move {
            match tokio::fs::remove_dir_all(&path).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove {}: {e}", path.display()),
                )),
                _ => Ok(()),
            }
        })
    }

    fn exists(&self, builder: &str, path: &str) -> BoxFuture<'static, io::Result<bool>> {
        let path = self.path(builder, path);
        Box::pin(async move { tokio::fs::try_exists(&path).await })
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
        assert!(worker.exists("b", "build/marker").await.unwrap());
        worker.remove_dir("b", "build").await.unwrap();
        assert!(!worker.exists("b", "build").await.unwrap());
        worker.remove_dir("b", "build").await.unwrap();
        assert_eq!(
            worker.builder_dir("b"),
            dir.path().join("w/b").display().to_string()
        );
    }
}
