//! Zero-downtime binary upgrade: a running gateway hands its listening sockets to a new
//! process over a Unix socket (`[admin] upgrade_socket`), as nginx's binary upgrade and
//! pingora's graceful upgrade do. Both processes accept on the same kernel sockets for a
//! moment, so no connection attempt is refused: the backlog never closes.
//!
//! One connection, protocol version 1:
//! 1. new → old: `portcullis-upgrade 1\n`.
//! 2. old → new: a 4-byte big-endian length and a JSON [`Offer`] naming each socket, with
//!    the sockets themselves as `SCM_RIGHTS` on the same message, in the same order.
//! 3. new → old: `ready\n` once it serves on them. If it closes the connection instead (its
//!    config or a plugin failed), the old process carries on as if nothing happened.
//! 4. old → new: `bye\n`, after the old process removed the socket file and began to drain;
//!    the new process then listens on the path itself, ready for the next upgrade.
//!
//! Only a peer with this process' user id (or root) is served: whoever gets the sockets
//! can answer every client. The socket file is created 0600.

use anyhow::Context as _;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const HELLO: &[u8] = b"portcullis-upgrade 1\n";
/// Most sockets one hand-over carries (listeners, their UDP twins, the admin port).
const MAX_FDS: usize = 253;
/// Largest offer description; a few hundred bytes per socket in practice.
const MAX_OFFER: usize = 64 * 1024;
/// Each short step of the exchange (everything but waiting for the new process to boot).
const STEP: Duration = Duration::from_secs(10);

/// What a socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    /// A `[[listener]]`'s TCP socket.
    Tcp,
    /// A `[[listener]]`'s HTTP/3 UDP socket.
    Udp,
    /// The `[admin] listen` socket.
    Admin,
}

/// One handed-over socket, described.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SocketInfo {
    pub name: String,
    pub kind: Kind,
    /// The config's `listen` string it was bound for: the new process matches on it.
    pub listen: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    pid: u32,
    sockets: Vec<SocketInfo>,
    /// The QUIC stateless-reset key, hex (see `server::h3::bind`).
    quic_reset_key: String,
}

/// The running process' side: what it offers and what happens once the new one is ready.
pub(crate) trait Donor: Send + Sync {
    /// Duplicates of every listening socket, described.
    fn sockets(&self) -> Vec<(SocketInfo, OwnedFd)>;
    /// The new process serves now: stop accepting and drain.
    fn handed_over(&self);
    /// The key that signs this gateway's QUIC stateless resets.
    fn quic_reset_key(&self) -> Vec<u8>;
}

/// Sockets taken over from the previous process, matched to the config by kind and `listen`
/// string (addresses are unique in a config, so a renamed listener keeps its socket, and
/// `127.0.0.1:0` keeps the port the old process was given).
#[derive(Default)]
pub(crate) struct Inherited {
    sockets: Vec<(SocketInfo, OwnedFd)>,
    /// The previous process' QUIC stateless-reset key.
    pub(crate) quic_reset_key: Option<Vec<u8>>,
}

impl Inherited {
    pub(crate) fn take(&mut self, kind: Kind, listen: &str) -> Option<OwnedFd> {
        let i = self
            .sockets
            .iter()
            .position(|(s, _)| s.kind == kind && s.listen == listen)?;
        Some(self.sockets.swap_remove(i).1)
    }

    /// A TCP listener ready for tokio.
    pub(crate) fn take_tcp(
        &mut self,
        kind: Kind,
        listen: &str,
    ) -> std::io::Result<Option<std::net::TcpListener>> {
        let Some(fd) = self.take(kind, listen) else {
            return Ok(None);
        };
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        Ok(Some(l))
    }

    /// Sockets no listener of the new config took: closed when dropped.
    pub(crate) fn leftover(&self) -> Vec<&SocketInfo> {
        self.sockets.iter().map(|(s, _)| s).collect()
    }
}

/// The new process' side of a hand-over in progress.
pub(crate) struct Handoff {
    stream: UnixStream,
    from_pid: u32,
}

impl Handoff {
    /// Connects to the running gateway at `path` and takes its sockets.
    pub(crate) fn connect(path: &Path) -> anyhow::Result<(Handoff, Inherited)> {
        let mut stream = UnixStream::connect(path).with_context(|| {
            format!(
                "admin.upgrade_socket: no running gateway answers on `{}`",
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(STEP))?;
        stream.set_write_timeout(Some(STEP))?;
        stream.write_all(HELLO)?;
        let (offer, fds) = receive(&stream).context("receiving the listening sockets")?;
        if fds.len() != offer.sockets.len() {
            anyhow::bail!(
                "the running gateway described {} sockets but sent {}",
                offer.sockets.len(),
                fds.len()
            );
        }
        let sockets = offer.sockets.into_iter().zip(fds).collect();
        let quic_reset_key = unhex(&offer.quic_reset_key);
        Ok((
            Handoff {
                stream,
                from_pid: offer.pid,
            },
            Inherited {
                sockets,
                quic_reset_key,
            },
        ))
    }

    /// The process the sockets came from.
    pub(crate) fn donor_pid(&self) -> u32 {
        self.from_pid
    }

    /// Tells the old process this one serves; returns once it stopped accepting and gave up
    /// the socket path.
    pub(crate) fn ready(mut self) -> anyhow::Result<()> {
        self.stream.write_all(b"ready\n")?;
        let line = read_line(&mut self.stream).context("waiting for the old process")?;
        anyhow::ensure!(line == "bye", "unexpected answer `{line}`");
        Ok(())
    }
}

/// Reads the length-prefixed offer and the fds sent with its first bytes.
fn receive(stream: &UnixStream) -> anyhow::Result<(Offer, Vec<OwnedFd>)> {
    let mut data = vec![0u8; MAX_OFFER + 4];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut data)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    let mut have = got.bytes;
    anyhow::ensure!(have >= 4, "the running gateway closed the connection");
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    anyhow::ensure!(len <= MAX_OFFER, "offer of {len} bytes is too large");
    let mut rest = stream;
    while have < len + 4 {
        let n = rest.read(&mut data[have..len + 4])?;
        anyhow::ensure!(n > 0, "the running gateway closed the connection");
        have += n;
    }
    let offer = serde_json::from_slice(&data[4..len + 4]).context("malformed offer")?;
    Ok((offer, fds))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One `\n`-terminated line of at most 64 bytes.
fn read_line(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        if stream.read(&mut b)? == 0 {
            break;
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Binds the upgrade socket: a stale file from a process that died is replaced, a live one
/// (something answers on it) is an error rather than stolen.
pub(crate) fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "admin.upgrade_socket: `{}` exists and is not a socket",
            path.display()
        );
        anyhow::ensure!(
            UnixStream::connect(path).is_err(),
            "admin.upgrade_socket: another gateway listens on `{}`",
            path.display()
        );
        std::fs::remove_file(path)?;
    }
    let l = std::os::unix::net::UnixListener::bind(path).with_context(|| {
        format!(
            "admin.upgrade_socket: cannot listen on `{}`",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(l)?)
}

/// Serves hand-overs on `listener` until one succeeds or `stop` flips. One at a time.
pub(crate) async fn serve(
    listener: tokio::net::UnixListener,
    path: PathBuf,
    wait_ready: Duration,
    donor: Arc<dyn Donor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let donor = donor.clone();
        let path = path.clone();
        let done = tokio::task::spawn_blocking(move || {
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            give(stream, &path, wait_ready, &*donor)
        })
        .await;
        match done {
            Ok(Ok(())) => {
                tracing::info!("upgrade: the new process serves; draining this one");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "upgrade aborted: this process keeps serving")
            }
            Err(e) => tracing::warn!(error = %e, "upgrade aborted: this process keeps serving"),
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// One hand-over, blocking: check the peer, send the sockets, wait for `ready`.
fn give(
    mut stream: UnixStream,
    path: &Path,
    wait_ready: Duration,
    donor: &dyn Donor,
) -> anyhow::Result<()> {
    let peer = rustix::net::sockopt::socket_peercred(&stream)?;
    let me = rustix::process::geteuid();
    anyhow::ensure!(
        peer.uid == me || peer.uid.is_root(),
        "refused a peer of another user (uid {}, pid {})",
        peer.uid.as_raw(),
        peer.pid.as_raw_nonzero()
    );
    stream.set_read_timeout(Some(STEP))?;
    stream.set_write_timeout(Some(STEP))?;
    let mut hello = [0u8; HELLO.len()];
    stream.read_exact(&mut hello)?;
    anyhow::ensure!(hello == HELLO, "not an upgrade request");
    let sockets = donor.sockets();
    anyhow::ensure!(sockets.len() <= MAX_FDS, "too many sockets to hand over");
    let offer = Offer {
        pid: std::process::id(),
        sockets: sockets.iter().map(|(s, _)| s.clone()).collect(),
        quic_reset_key: donor
            .quic_reset_key()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    };
    let json = serde_json::to_vec(&offer)?;
    anyhow::ensure!(json.len() <= MAX_OFFER, "offer too large");
    let mut msg = (json.len() as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&json);
    let fds: Vec<_> = sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    anyhow::ensure!(
        control.push(SendAncillaryMessage::ScmRights(&fds)),
        "cannot attach the sockets"
    );
    let sent = rustix::net::sendmsg(
        &stream,
        &[IoSlice::new(&msg)],
        &mut control,
        SendFlags::empty(),
    )?;
    stream.write_all(&msg[sent..])?;
    tracing::info!(
        pid = peer.pid.as_raw_nonzero().get(),
        sockets = sockets.len(),
        "upgrade: sockets handed to the new process, waiting for it to be ready"
    );
    stream.set_read_timeout(Some(wait_ready))?;
    let line = read_line(&mut stream).context("the new process did not become ready")?;
    anyhow::ensure!(
        line == "ready",
        "the new process gave up before it was ready"
    );
    let _ = std::fs::remove_file(path);
    donor.handed_over();
    stream.write_all(b"bye\n")?;
    Ok(())
}
