//! Telling systemd how the master is doing, for units of `Type=notify`
//! (`contrib/buildmaster.service`): ready once it listens, reloading while a
//! reconfiguration runs, stopping once asked to. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call does nothing.
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the socket named by
//! `NOTIFY_SOCKET`: a path, or an abstract name written with a leading `@`.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

/// Where notifications go, if anywhere.
pub struct Notifier {
    socket: Option<PathBuf>,
}

impl Notifier {
    /// Takes `NOTIFY_SOCKET` out of the environment, so that the processes
    /// builds start do not inherit it. Call it before any thread starts.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from);
        // Sound only while no other thread may read the environment.
        std::env::remove_var("NOTIFY_SOCKET");
        Notifier { socket }
    }

    /// Start-up done, or a reload finished: `status` says how it went.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// A reconfiguration starts; [`Notifier::ready`] ends it.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
            monotonic_usec()
        ));
    }

    /// The master drains its requests and stops.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    fn send(&self, message: &str) {
        let Some(path) = &self.socket else {
            return;
        };
        if let Err(error) = send_to(path, message) {
            tracing::warn!("cannot notify systemd at {}: {error}", path.display());
        }
    }
}

fn send_to(path: &std::path::Path, message: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_os_str().as_encoded_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &address)?;
        }
        None => {
            socket.send_to(message.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` in microseconds, which systemd matches a reload with.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some(path.clone()),
        };
        notifier.ready("listening");
        let mut buffer = [0; 256];
        let n = receiver.recv(&mut buffer).unwrap();
        let message = String::from_utf8_lossy(&buffer[..n]);
        assert_eq!(
            message,
            format!("READY=1\nSTATUS=listening\nMAINPID={}", std::process::id())
        );
        notifier.reloading();
        let n = receiver.recv(&mut buffer).unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("RELOADING=1\nMONOTONIC_USEC="));

        use std::os::linux::net::SocketAddrExt;
        let name = format!("buildmaster-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
        let abstract_receiver = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = Notifier {
            socket: Some(PathBuf::from(format!("@{name}"))),
        };
        notifier.stopping();
        let n = abstract_receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"STOPPING=1\nSTATUS=stopping");
        // Without a socket, nothing happens.
        Notifier { socket: None }.ready("x");
    }
}
