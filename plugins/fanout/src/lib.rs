//! A generic fan-out endpoint, used by the gateway's tests and benchmark: calls every cluster
//! in `clusters` at `path` (concurrently, or one after another with `sequential = true`) and
//! reports each result.
//!
//! ```toml
//! kind = "endpoint"
//! [config]
//! clusters = "a,b,c"
//! path = "/"
//! timeout_ms = 1000
//! sequential = false
//! mode = "ok"            # or "loop" / "memory": misbehave before calling anything
//! ```

use portcullis_sdk::json;
use portcullis_sdk::prelude::*;
use std::hint::black_box;

struct Fanout;

#[derive(serde::Deserialize)]
struct Settings {
    #[serde(default = "ok")]
    mode: String,
    #[serde(default)]
    clusters: String,
    #[serde(default = "root")]
    path: String,
    #[serde(default = "one_second")]
    timeout_ms: u32,
    #[serde(default)]
    sequential: bool,
}

fn ok() -> String {
    "ok".into()
}
fn root() -> String {
    "/".into()
}
fn one_second() -> u32 {
    1000
}

static CONFIG: Config<Settings> = Config::new();

impl Endpoint for Fanout {
    fn handle(req: Request) -> Response {
        let cfg = CONFIG.get();
        match cfg.mode.as_str() {
            "loop" => {
                let mut x = 0u64;
                loop {
                    x = black_box(x.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            _ => {}
        }
        let (clusters, path, timeout) = (&cfg.clusters, &cfg.path, cfg.timeout_ms);
        // `?cluster=x` adds one more call, so tests can name an unknown cluster.
        let extra = req.query("cluster").map(str::to_string);
        let calls: Vec<Call> = clusters
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .chain(extra)
            .map(|c| {
                Call::get(&c, path)
                    .timeout_ms(timeout)
                    .forward_context(&req)
            })
            .collect();
        let names: Vec<String> = calls.iter().map(|c| c.cluster.clone()).collect();
        let results = if cfg.sequential {
            calls.into_iter().map(fetch).collect()
        } else {
            fetch_all(calls)
        };
        // Serialized straight from these structs, not built as `json!` values: a `Value`
        // object is a BTreeMap with owned keys, and building and dropping three of them was
        // most of this guest's ~129 allocations per request (bench/PROFILE.md, round 10).
        // Fields are in the order the `Value` map sorted them, so the output is unchanged.
        let results: Vec<Outcome> = names
            .iter()
            .zip(results)
            .map(|(cluster, r)| match r {
                Ok(reply) => Outcome::Reply {
                    body: String::from_utf8_lossy(&reply.body[..reply.body.len().min(256)])
                        .into_owned(),
                    bytes: reply.body.len(),
                    cluster,
                    status: reply.status,
                },
                Err(e) => Outcome::Failed {
                    cluster,
                    error: e.to_string(),
                },
            })
            .collect();
        json::response(200, &Report { results })
    }
}

#[derive(serde::Serialize)]
struct Report<'a> {
    results: Vec<Outcome<'a>>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Outcome<'a> {
    Reply {
        body: String,
        bytes: usize,
        cluster: &'a str,
        status: u16,
    },
    Failed {
        cluster: &'a str,
        error: String,
    },
}

export_endpoint!(Fanout);
