//! A deliberately misbehaving filter for the gateway's own tests. `[config] mode` picks the
//! misbehaviour; every mode is something a real plugin might do by mistake.
//!
//! | mode          | what it does                                              |
//! |---------------|-----------------------------------------------------------|
//! | `ok`          | adds `x-testbed: ok` (and echoes metadata on responses)   |
//! | `loop`        | spins forever                                             |
//! | `memory`      | allocates without end                                     |
//! | `recursion`   | recurses without end                                      |
//! | `trap`        | executes `unreachable`                                    |
//! | `panic`       | panics                                                    |
//! | `huge-headers`| returns 100 000 headers                                 |
//! | `bad-header`  | returns a header name that is not valid HTTP              |
//! | `slow`        | burns `spin_ms` of CPU, then continues                    |
//! | `respond`     | answers 200 itself                                        |
//! | `reject`      | rejects with 403                                          |
//! | `reject-owned`| rejects with 401 and a `portcullis-error` header of its own |
//! | `print`       | writes to stdout and logs                                 |
//! | `count`       | adds `x-testbed-count`: calls this instance has served    |
//! |               | (traps instead when the request has `x-testbed-trap`)     |

use portcullis_sdk::prelude::*;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

/// Calls served by this instance: state that survives between calls only when the gateway
/// reuses the instance.
static CALLS: AtomicU64 = AtomicU64::new(0);

struct Testbed;

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default = "ok")]
    mode: String,
    #[serde(default = "five")]
    spin_ms: u64,
    rewrite_to: Option<String>,
    cluster: Option<String>,
    /// Outbound: the status to set.
    status: Option<u16>,
}

fn ok() -> String {
    "ok".into()
}
fn five() -> u64 {
    5
}

static CONFIG: Config<Settings> = Config::new();

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64, buf: &mut [u8; 256]) -> u64 {
    buf[(n % 256) as usize] = n as u8;
    let mut next = [0u8; 256];
    black_box(&mut next);
    recurse(n + 1, &mut next) + u64::from(buf[0])
}

fn spin(ms: u64) {
    let start = std::time::Instant::now();
    let mut x = 0u64;
    while start.elapsed().as_millis() < u128::from(ms) {
        x = black_box(x.wrapping_add(1));
    }
}

fn misbehave(mode: &str) -> Option<InboundAction> {
    match mode {
        "loop" => {
            let mut x = 0u64;
            loop {
                x = black_box(x.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                chunk[0] = 1;
                hoard.push(black_box(chunk));
            }
        }
        "recursion" => {
            let mut buf = [0u8; 256];
            black_box(recurse(0, &mut buf));
            None
        }
        "trap" => {
            #[cfg(target_arch = "wasm32")]
            core::arch::wasm32::unreachable();
            #[cfg(not(target_arch = "wasm32"))]
            None
        }
        "panic" => panic!("testbed panicked on purpose"),
        "huge-headers" => {
            let mut c = RequestEdit::new();
            for i in 0..100_000 {
                c = c.set_header(&format!("x-h{i}"), "v");
            }
            Some(c.action())
        }
        "bad-header" => Some(RequestEdit::new().set_header("bad header\n", "v").action()),
        "slow" => {
            spin(CONFIG.get().spin_ms);
            None
        }
        "respond" => Some(respond(200, "answered by testbed\n")),
        "reject" => Some(reject(403, "testbed says no")),
        "reject-owned" => Some(reject_with(
            401,
            "testbed says no",
            &[("portcullis-error", "none"), ("www-authenticate", "Bearer")],
        )),
        "print" => {
            println!("hello from testbed stdout");
            log::info("hello from testbed log");
            metrics::count("prints", 1);
            None
        }
        _ => None,
    }
}

impl Filter for Testbed {
    fn on_request(req: &RequestView) -> InboundAction {
        let cfg = CONFIG.get();
        let mode = cfg.mode.as_str();
        if mode == "count" {
            let n = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
            if req.header("x-testbed-trap").is_some() {
                misbehave("trap");
            }
            return RequestEdit::new()
                .set_header("x-testbed-count", &n.to_string())
                .action();
        }
        if let Some(a) = misbehave(mode) {
            return a;
        }
        let mut c = RequestEdit::new()
            .set_header("x-testbed", mode)
            .meta("testbed", mode);
        if let Some(to) = &cfg.rewrite_to {
            let q = req
                .path()
                .split_once('?')
                .map(|(_, q)| format!("?{q}"))
                .unwrap_or_default();
            c = c.path(&format!("{to}{q}"));
        }
        if let Some(cluster) = &cfg.cluster {
            c = c.cluster(cluster);
        }
        c.action()
    }

    fn on_response(req: &RequestView, resp: &ResponseView) -> OutboundAction {
        let cfg = CONFIG.get();
        let mode = cfg.mode.as_str();
        if let Some(InboundAction::Modify(_)) = misbehave(mode) {
            // huge-headers / bad-header apply to responses as well
            let c = if mode == "bad-header" {
                ResponseEdit::new().set_header("bad header\n", "v")
            } else {
                let mut c = ResponseEdit::new();
                for i in 0..100_000 {
                    c = c.set_header(&format!("x-h{i}"), "v");
                }
                c
            };
            return c.action();
        }
        let mut c = ResponseEdit::new().set_header("x-testbed-out", &resp.status().to_string());
        if let Some(m) = req.meta("testbed") {
            c = c.set_header("x-testbed-meta", &m);
        }
        if let Some(s) = cfg.status {
            c = c.status(s);
        }
        c.action()
    }
}

export_filter!(Testbed);
