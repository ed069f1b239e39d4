//! A real `redis-server` (Debian's package) for the global rate-limit tests, on a free
//! loopback port, without persistence. Installed on first use if missing (as root, with
//! apt-get), like `browser.rs` installs chromium, so `cargo test` needs no manual step.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

fn ensure_installed() {
    crate::debian::ensure(&[REDIS_SERVER], &["redis-server"], "the rate-limit tests");
}

/// A running `redis-server`; killed when dropped.
pub struct Redis {
    pub addr: SocketAddr,
    child: Option<Child>,
    /// What [`Redis::start_with`] added: AUTH, TLS.
    extra: Vec<String>,
    tls: bool,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_with(&[], None)
    }

    /// With extra `redis-server` arguments (`--requirepass s3cret`), and with TLS only (the
    /// port speaks TLS, `tls-auth-clients no`) when given a certificate and key (PEM files).
    pub fn start_with(extra: &[&str], tls: Option<(&std::path::Path, &std::path::Path)>) -> Redis {
        ensure_installed();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut r = Redis {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls: tls.is_some(),
        };
        if let Some((cert, key)) = tls {
            for (k, v) in [
                ("--tls-cert-file", cert),
                ("--tls-key-file", key),
                ("--tls-ca-cert-file", cert),
            ] {
                r.extra.push(k.into());
                r.extra.push(v.display().to_string());
            }
            r.extra.extend(["--tls-auth-clients".into(), "no".into()]);
        }
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server (SIGKILL, no goodbye to its clients) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port, empty, and waits until it accepts connections.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.addr.port().to_string();
        let ports: [&str; 4] = if self.tls {
            ["--port", "0", "--tls-port", &port]
        } else {
            ["--port", &port, "--tls-port", "0"]
        };
        let child = Command::new(REDIS_SERVER)
            .args(["--bind", "127.0.0.1"])
            .args(ports)
            .args(&self.extra)
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_err() {
            assert!(
                Instant::now() < until,
                "redis-server did not listen on {} within 10 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Redis {
    /// Sends one command in RESP and returns the first line of the reply (`:1`, `+OK`,
    /// `-ERR ...`): enough for the tests' direct writes into the store.
    pub fn command(&self, args: &[&[u8]]) -> String {
        command_at(self.addr, args)
    }

    /// How many times Redis ran `EVALSHA` and `EVAL` (`INFO commandstats`): script calls.
    pub fn script_calls(&self) -> u64 {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))
            .expect("connect to redis");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
            .expect("send INFO");
        // A bulk reply: `$<len>\r\n`, then the text.
        let mut r = BufReader::new(s);
        let mut head = String::new();
        r.read_line(&mut head).expect("INFO reply");
        let len: usize = head
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("INFO answered {head:?}"));
        let mut text = vec![0u8; len];
        r.read_exact(&mut text).expect("INFO text");
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

/// [`Redis::command`] by address, for a thread that cannot borrow the [`Redis`].
pub fn command_at(addr: SocketAddr, args: &[&[u8]]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    s.write_all(&req).expect("send command");
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("reply");
    line.trim_end().to_string()
}
