//! The exporter thread: drains the queue, builds span data, batches it, and posts each batch
//! with the `opentelemetry-otlp` exporter on a current-thread runtime of its own.
//!
//! Like the access log's writer it polls the queue (every few milliseconds) rather than
//! blocking on it, so a request's `try_send` never has to wake it with a syscall. A batch goes
//! out when it holds `batch_size` spans, when its oldest span is `export_interval_ms` old, or
//! when `flush` asks. Exports run one at a time (the OTLP exporter's contract); while one runs
//! the queue absorbs new spans up to its bound. Failures are counted, warned about at most
//! every 10 s, and never retried: the receiver's outage must not grow the gateway's memory.

use super::client::OtlpClient;
use super::{spans, Entry, Shared};
use crate::config;
use anyhow::Context as _;
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the exporter looks at the queue when it is idle.
const POLL: Duration = Duration::from_millis(5);
pub(super) struct Exporter {
    rx: Receiver<Box<Entry>>,
    shared: Arc<Shared>,
    otlp: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
    batch_size: usize,
    interval: Duration,
    timeout: Duration,
    batch: Vec<SpanData>,
    oldest: Option<Instant>,
    warnings: crate::telemetry::flush::LossWarnings,
}

impl Exporter {
    pub(super) fn new(
        cfg: &config::Tracing,
        rx: Receiver<Box<Entry>>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Exporter> {
        let timeout = Duration::from_millis(cfg.export_timeout_ms.max(1));
        let endpoint = format!("{}/v1/traces", cfg.otlp_endpoint.trim_end_matches('/'));
        let client = OtlpClient::new(timeout).context("OTLP HTTP client")?;
        let mut otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .with_headers(cfg.headers.clone().into_iter().collect())
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .context("OTLP span exporter")?;
        otlp.set_resource(
            &opentelemetry_sdk::Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        );
        Ok(Exporter {
            rx,
            shared,
            otlp,
            scope: InstrumentationScope::builder("portcullis")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            batch_size: cfg.batch_size.max(1),
            interval: Duration::from_millis(cfg.export_interval_ms.max(1)),
            timeout,
            batch: Vec::new(),
            oldest: None,
            warnings: Default::default(),
        })
    }

    /// The thread's loop, until every sender is gone (the tracer was dropped).
    pub(super) fn run(mut self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "tracing: cannot start the exporter's runtime; no spans will be exported");
                return;
            }
        };
        loop {
            let (asked, flushing) = self.shared.flush.pending();
            let (drained, gone) = self.drain(&rt);
            let due = self.oldest.is_some_and(|t| t.elapsed() >= self.interval);
            if due || flushing || gone {
                self.export(&rt);
            }
            if flushing {
                self.shared.flush.served(asked);
            }
            self.warn_if_needed();
            if gone {
                let _ = self.otlp.shutdown();
                return;
            }
            if drained < 64 {
                std::thread::park_timeout(POLL);
            }
        }
    }

    /// Builds the spans of what is queued now, exporting each full batch; returns the entries
    /// taken and whether every sender is gone.
    fn drain(&mut self, rt: &tokio::runtime::Runtime) -> (usize, bool) {
        let mut n = 0;
        loop {
            match self.rx.try_recv() {
                Ok(e) => {
                    spans::build(&e, &self.scope, &mut self.batch);
                    self.oldest.get_or_insert_with(Instant::now);
                    n += 1;
                    if self.batch.len() >= self.batch_size {
                        self.export(rt);
                    }
                }
                Err(TryRecvError::Empty) => return (n, false),
                Err(TryRecvError::Disconnected) => return (n, true),
            }
        }
    }

    /// Posts everything batched, `batch_size` spans per request.
    fn export(&mut self, rt: &tokio::runtime::Runtime) {
        while !self.batch.is_empty() {
            let rest = self.batch.split_off(self.batch.len().min(self.batch_size));
            let batch = std::mem::replace(&mut self.batch, rest);
            let n = batch.len() as u64;
            // The client bounds each request by the timeout too; this also bounds encoding.
            let bound = self.timeout + Duration::from_millis(100);
            let res =
                rt.block_on(async { tokio::time::timeout(bound, self.otlp.export(batch)).await });
            match res {
                Ok(Ok(())) => {
                    self.shared.exported.fetch_add(n, Ordering::Relaxed);
                }
                Ok(Err(e)) => self.failed(n, &e.to_string()),
                Err(_) => self.failed(n, "timed out"),
            }
        }
        self.oldest = None;
    }

    fn failed(&mut self, spans: u64, why: &str) {
        let failed = self.shared.failed.fetch_add(spans, Ordering::Relaxed) + spans;
        self.warnings.failure(failed, || {
            tracing::warn!(spans, error = why, "tracing: span export failed")
        });
    }

    /// Warns about new drops and failures, at most every `WARN_EVERY`.
    fn warn_if_needed(&mut self) {
        let dropped = self.shared.dropped.load(Ordering::Relaxed);
        let failed = self.shared.failed.load(Ordering::Relaxed);
        if let Some((dropped, failed)) = self.warnings.losses(dropped, failed) {
            tracing::warn!(
                dropped,
                failed,
                "tracing: spans lost since the last warning (queue full or export failed)"
            );
        }
    }
}
