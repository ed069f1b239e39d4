//! The one upstream client: pick, acquire, send, classify, record, retry elsewhere.
//!
//! Proxied requests (`request`) and endpoint fan-out calls (`plugin`) both go through
//! [`send`], so both get the same balancer, pool, outlier detection, retry budget,
//! `portcullis_retries_total`, connect timeout and failure vocabulary. Where the two callers
//! differ (how many attempts, which statuses are retried, how long a response head may take)
//! the difference is a field of [`Policy`], never a second loop.
//!
//! Each attempt is stamped through a [`Journal`]: the proxy's is the request's passport, a
//! fan-out call's is its call record.

use super::connect::{Outbound, UpstreamBody};
use super::pool::Conn;
use super::retry::{RetryPermit, RetryReason};
use super::stats::Outcome;
use super::{Cluster, Endpoint, EndpointSet};
use crate::config::{self, Priority};
use crate::core::body::{ReqBody, ReqBodyFault, ReqShared, UpBody};
use crate::core::failure::Failure;
use crate::core::passport::State;
use crate::shed::Permit;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one call may be attempted. Built per call by the caller from its route (proxy) or its
/// manifest and the call's own timeout (fan-out).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy<'a> {
    /// Attempts in total, including the first; 1 disables retries. Only honoured when the
    /// method is replayable and the body is buffered (see [`Policy::for_request`]).
    pub max_attempts: u32,
    /// Upstream statuses answered by another attempt (the retry's answer replaces them).
    pub retry_on_status: &'a [u16],
    /// Connect (TCP + TLS + handshake), or waiting for a pooled connection.
    pub connect: Duration,
    /// From the request head sent to the response head received, per attempt.
    pub response_headers: Duration,
    /// Nothing goes on past this instant, retries included.
    pub deadline: Instant,
    /// Shedding class against the cluster's concurrency limit.
    pub priority: Priority,
    /// Per attempt, the wait for a response head before another endpoint is tried (only
    /// when more than one attempt is allowed).
    pub per_try: Option<Duration>,
    /// At `per_try`, race a second attempt instead of abandoning the first.
    pub hedge: bool,
}

impl<'a> Policy<'a> {
    /// The policy of a request with `method` under `retry`: replayable methods (or every
    /// method when `retry.idempotent`) get `retry.attempts`, others one.
    pub(crate) fn for_request(
        method: &Method,
        retry: &'a config::Retry,
        connect: Duration,
        response_headers: Duration,
        deadline: Instant,
        priority: Priority,
    ) -> Self {
        let attempts = if replayable_method(method) || retry.idempotent {
            retry.attempts.max(1)
        } else {
            1
        };
        let per_try = retry
            .per_try_timeout_ms
            .filter(|_| attempts > 1)
            .map(Duration::from_millis);
        Policy {
            max_attempts: attempts,
            retry_on_status: &retry.on_status,
            connect,
            response_headers,
            deadline,
            priority,
            per_try,
            hedge: retry.hedge && per_try.is_some(),
        }
    }
}

/// RFC 9110 §9.2.2 idempotent methods: safe to send twice.
pub(crate) fn replayable_method(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// What goes up.
pub(crate) enum Body {
    /// Empty or fully buffered: can be sent again.
    Replayable(Bytes),
    /// Streamed from the client as it arrives: one attempt only. `ReqShared` tells a client
    /// body fault (too large, stalled, gone) from an upstream failure.
    Once(ReqBody, Arc<ReqShared>),
}

/// The request head that goes up: origin-form path and query, headers already cleaned of
/// hop-by-hop fields. `Host` is the authority; h2 upstreams get it as `:authority`.
pub(crate) struct Head {
    pub method: Method,
    pub path_and_query: http::uri::PathAndQuery,
    pub headers: HeaderMap,
}

/// Per-attempt bookkeeping of a caller.
pub(crate) trait Journal {
    /// A lifecycle state at an instant.
    fn stamp_at(&mut self, state: State, at: Instant);
    /// Time spent waiting on the upstream (connect, response head).
    fn waited(&mut self, d: Duration);
    /// An attempt goes to `endpoint`, starting `at`. `Some` is the `traceparent` it carries
    /// up (the attempt's span, when the caller is traced); `None` leaves the head as it is.
    fn attempt(&mut self, endpoint: &Arc<str>, at: Instant) -> Option<HeaderValue>;
    /// How that attempt ended: a response head with its status, or a failure's code. Only a
    /// traced caller cares (for the attempt's span).
    /// `attempt` is its number, 1 for the first: a hedge's two attempts end in either order.
    fn attempt_ended(&mut self, _attempt: u32, _how: Result<(u16, Instant), &'static str>) {}
    /// A detail worth keeping (a TLS failure's reason).
    fn detail(&mut self, d: String);
}

/// An upstream's answer, with what must live as long as its body.
pub(crate) struct Answered {
    pub response: Response<UpstreamBody>,
    /// The connection the body arrives on, returned to its pool after the last byte.
    pub conn: Conn,
    /// The endpoint that answered; its pool takes the connection back.
    pub endpoint: Arc<Endpoint>,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// When the response head arrived.
    pub at: Instant,
    /// Held until the request ends: the cluster's concurrency slot and any retry budget.
    pub permits: Held,
}

/// Slots a call holds until its response is over.
#[derive(Default)]
pub(crate) struct Held {
    pub cluster: Option<Permit>,
    pub retries: SmallVec<[RetryPermit; 1]>,
}

/// Sends `head` + `body` to `cluster` under `policy`, retrying on another endpoint where
/// that is safe, and returns the first answer worth keeping.
///
/// Retries happen only for a replayable body and method, on connect failures, resets,
/// the statuses in `policy.retry_on_status` and a passed `policy.per_try` timeout, each to a
/// new endpoint, under the cluster's retry budget and the deadline. With `policy.hedge` the
/// per-try timeout does not abandon the attempt: a second one races it ([`hedged`]).
///
/// A pooled connection reset before any response byte is the benign keep-alive race (the
/// upstream closed it as the request went out): when the body allows it, that attempt is
/// replayed once per endpoint on a *fresh* connection to the *same* endpoint, one attempt on top
/// of `max_attempts` (so even with retries off, and a dead endpoint's refusal of the replay
/// still leaves the retries elsewhere). Whatever the attempt it happens on: a retry
/// that lands on a stale pooled connection is as innocent as a first attempt, and with
/// every other endpoint tried (or down) the same endpoint is the only place left to go.
pub(crate) async fn send(
    cluster: &Arc<Cluster>,
    mut head: Head,
    body: Body,
    policy: &Policy<'_>,
    journal: &mut (impl Journal + Send),
) -> Result<Box<Answered>, Failure> {
    let mut held = Held {
        cluster: Some(
            cluster
                .limit
                .try_acquire(policy.priority)
                .ok_or(Failure::Overloaded)?,
        ),
        retries: SmallVec::new(),
    };
    let (replay, mut once, shared) = match body {
        Body::Replayable(b) => (Some(b), None, None),
        Body::Once(b, s) => (None, Some(b), Some(s)),
    };
    let mut tries = Tries::new(if replay.is_some() {
        policy.max_attempts.max(1)
    } else {
        1
    });
    // One snapshot of the endpoint set for the whole call: indices stay valid across its
    // attempts while DNS discovery may swap the cluster's set.
    let set = cluster.endpoints.load();
    let retry = |tried: Option<&[usize]>, why, held: &mut Held, journal: &mut _| {
        may_retry((&**cluster, &*set), tried, why, held, journal)
    };
    let mut last = Failure::NoHealthyUpstream;
    loop {
        if Instant::now() >= policy.deadline {
            return Err(Failure::DeadlineExceeded);
        }
        let Some((ei, fresh)) = tries.next(&set) else {
            return Err(last);
        };
        let body = (&replay, &mut once, shared.as_deref());
        let ran = next_attempt(
            (cluster, &set),
            (ei, fresh),
            &mut head,
            body,
            policy,
            (&mut tries, &mut held),
            journal,
        )
        .await;
        let (step, ei) = (ran.step, ran.ei);
        let attempt = tries.attempt();
        let can_retry = attempt < tries.max;
        let (why, reason) = match step {
            Step::Answer(mut a) => {
                let status = a.response.status().as_u16();
                if can_retry
                    && policy.retry_on_status.contains(&status)
                    && retry(Some(&tries.tried), RetryReason::Status, &mut held, journal)
                {
                    journal.stamp_at(State::RespHeadersReceived, a.at);
                    // The connection carries an unread body: drop it rather than pool it.
                    drop(a);
                    continue;
                }
                a.attempts = attempt;
                a.permits = held;
                return Ok(a);
            }
            Step::Connect(why) => (why, RetryReason::ConnectFailed),
            Step::TryTimeout => (Failure::UpstreamTimeout, RetryReason::PerTryTimeout),
            Step::Reset { reused } => {
                journal.stamp_at(State::UpstreamReset, Instant::now());
                if reused
                    && replay.is_some()
                    && tries
                        .replay_fresh(ei, || retry(None, RetryReason::Reset, &mut held, journal))
                {
                    last = Failure::UpstreamReset;
                    continue;
                }
                (Failure::UpstreamReset, RetryReason::Reset)
            }
            Step::Fatal(why) => return Err(why),
        };
        let retry = attempt < tries.max
            && why != Failure::DeadlineExceeded
            && retry(Some(&tries.tried), reason, &mut held, journal);
        if !retry {
            return Err(why);
        }
        last = why;
    }
}

/// The attempts of one call: which endpoints were tried, how many attempts it may make, and
/// the keep-alive race's replay (a pooled connection reset before any response byte is
/// replayed once per endpoint, on a new connection to the same endpoint).
struct Tries {
    tried: SmallVec<[usize; 4]>,
    /// Attempts allowed, the first included; each race replay adds one.
    max: u32,
    /// Endpoints whose race replay was spent.
    raced: SmallVec<[usize; 4]>,
    /// The endpoint the next attempt replays to, fresh.
    fresh: Option<usize>,
}

impl Tries {
    fn new(max: u32) -> Self {
        Tries {
            tried: SmallVec::new(),
            max,
            raced: SmallVec::new(),
            fresh: None,
        }
    }

    /// The next attempt's endpoint, and whether it must be a fresh connection: the race
    /// replay's endpoint if one is due, else the balancer's pick among the untried.
    fn next(&mut self, set: &EndpointSet) -> Option<(usize, bool)> {
        let fresh = self.fresh.is_some();
        let ei = self.fresh.take().or_else(|| set.pick(&self.tried))?;
        self.tried.push(ei);
        Some((ei, fresh))
    }

    /// The number of the attempt `next` just started (1 for the first).
    fn attempt(&self) -> u32 {
        self.tried.len() as u32
    }

    /// Schedules the race replay to `ei` if it was not spent there and `allowed` (the retry
    /// budget) says yes. On top of `max`: if the endpoint turns out to be down (it died with
    /// the connection), the replay's failure still leaves the retries owed.
    fn replay_fresh(&mut self, ei: usize, allowed: impl FnOnce() -> bool) -> bool {
        if self.raced.contains(&ei) {
            return false;
        }
        self.raced.push(ei);
        if !allowed() {
            return false;
        }
        self.max = self.max.saturating_add(1);
        self.fresh = Some(ei);
        true
    }
}

/// The attempt to `ei`: alone, or [`hedged`] when the policy says so and another attempt
/// is allowed; its ending goes to the journal and an adaptive limit.
async fn next_attempt(
    (cluster, set): (&Arc<Cluster>, &EndpointSet),
    (ei, fresh): (usize, bool),
    head: &mut Head,
    (replay, once, shared): (&Option<Bytes>, &mut Option<ReqBody>, Option<&ReqShared>),
    policy: &Policy<'_>,
    (tries, held): (&mut Tries, &mut Held),
    journal: &mut (impl Journal + Send),
) -> Ran {
    let sent = cluster.limit.is_adaptive().then(Instant::now);
    let ran = match replay {
        Some(r) if policy.hedge && tries.attempt() < tries.max => {
            // Boxed: two attempts' futures side by side would make every proxied request's
            // state machine that much bigger (measured +2.4 KiB), for the few that hedge.
            Box::pin(hedged(
                (cluster, set),
                (ei, fresh),
                head,
                r,
                policy,
                tries,
                held,
                journal,
            ))
            .await
        }
        _ => {
            let attempt = tries.attempt();
            // Each attempt borrows the head (HTTP/1.1 encodes it straight from the map): no
            // copy of it per attempt, kept for a retry or not (was 1.3k instructions).
            let step = attempt_once(
                (&**cluster, set),
                ei,
                (&head.method, &head.path_and_query, &head.headers),
                attempt_body(replay, once),
                shared,
                (policy, fresh),
                journal,
            )
            .await;
            Ran {
                step,
                ei,
                attempt,
                other: None,
            }
        }
    };
    if let Some((n, how)) = ran.other {
        journal.attempt_ended(n, how);
    }
    journal.attempt_ended(ran.attempt, ran.step.outcome());
    if let Some(sent) = sent {
        observe(cluster, sent, &ran.step);
    }
    ran
}

/// Runs the attempt to `first` alone for the route's `per_try_timeout_ms`; if no response
/// head came by then, races a second attempt (a hedge, under the retry budget) on another
/// endpoint. The first response head wins and the other attempt is dropped; when one attempt
/// fails, the other is waited for. Tail latency from one slow endpoint then costs
/// `per_try_timeout_ms` plus a normal answer, instead of the slow endpoint's latency
/// ("The Tail at Scale"; Finagle's backup requests, Envoy's hedging).
#[allow(clippy::too_many_arguments)]
async fn hedged<J: Journal + Send>(
    (cluster, set): (&Arc<Cluster>, &EndpointSet),
    (first, fresh): (usize, bool),
    head: &Head,
    replay: &Bytes,
    policy: &Policy<'_>,
    tries: &mut Tries,
    held: &mut Held,
    journal: &mut J,
) -> Ran {
    let n_first = tries.attempt();
    let cell = std::sync::Mutex::new(journal);
    let (mut ja, mut jb) = (Shared(&cell), Shared(&cell));
    let target = (&head.method, &head.path_and_query);
    let body = || attempt_body(&Some(replay.clone()), &mut None);
    let a_started = Instant::now();
    let a = attempt_once(
        (&**cluster, set),
        first,
        (target.0, target.1, &head.headers),
        body(),
        None,
        (policy, fresh),
        &mut ja,
    );
    tokio::pin!(a);
    let alone = policy.per_try.unwrap_or(policy.response_headers);
    let ran = |step, ei, attempt, other| Ran {
        step,
        ei,
        attempt,
        other,
    };
    if let Ok(step) = tokio::time::timeout(alone, &mut a).await {
        return ran(step, first, n_first, None);
    }
    let allowed = may_retry(
        (&**cluster, set),
        Some(&tries.tried),
        RetryReason::Hedge,
        held,
        &mut Shared(&cell),
    );
    let Some((second, fresh_b)) = allowed.then(|| tries.next(set)).flatten() else {
        return ran(a.await, first, n_first, None);
    };
    let n_second = tries.attempt();
    let b_started = Instant::now();
    let b = attempt_once(
        (&**cluster, set),
        second,
        (target.0, target.1, &head.headers),
        body(),
        None,
        (policy, fresh_b),
        &mut jb,
    );
    tokio::pin!(b);
    let hedge_lost = Err("hedge-lost");
    // The attempt that lost is dropped mid-wait, which records nothing for its endpoint (a
    // client's impatience says nothing about an endpoint). A lost race does: the endpoint was
    // slower than the other by at least this much, which the latency-aware balancers must see.
    let lost = |ei: usize, since: Instant| {
        let now = Instant::now();
        let latency = now.saturating_duration_since(since);
        set.stats[ei].record(
            super::stats::Outcome {
                latency,
                failed: false,
            },
            now,
        );
    };
    tokio::select! {
        s = &mut a => match s {
            Step::Answer(..) => {
                lost(second, b_started);
                ran(s, first, n_first, Some((n_second, hedge_lost)))
            }
            failed => {
                let other = Some((n_first, failed.outcome()));
                ran(b.await, second, n_second, other)
            }
        },
        s = &mut b => match s {
            Step::Answer(..) => {
                lost(first, a_started);
                ran(s, second, n_second, Some((n_first, hedge_lost)))
            }
            failed => {
                let other = Some((n_second, failed.outcome()));
                ran(a.await, first, n_first, other)
            }
        },
    }
}

/// One journal shared by a hedge's two attempts, which run in the same task: each call
/// holds it for its own duration only, never across an await, so the lock is never
/// contended (a `Mutex` only because the request's future must be `Send`).
struct Shared<'c, 'j, J>(&'c std::sync::Mutex<&'j mut J>);

impl<'c, 'j, J: Journal> Shared<'c, 'j, J> {
    fn get(&self) -> std::sync::MutexGuard<'c, &'j mut J> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<J: Journal> Journal for Shared<'_, '_, J> {
    fn stamp_at(&mut self, state: State, at: Instant) {
        self.get().stamp_at(state, at);
    }
    fn waited(&mut self, d: Duration) {
        self.get().waited(d);
    }
    fn attempt(&mut self, endpoint: &Arc<str>, at: Instant) -> Option<HeaderValue> {
        self.get().attempt(endpoint, at)
    }
    fn attempt_ended(&mut self, attempt: u32, how: Result<(u16, Instant), &'static str>) {
        self.get().attempt_ended(attempt, how);
    }
    fn detail(&mut self, d: String) {
        self.get().detail(d);
    }
}

/// An adaptive `max_concurrency` learns from each attempt that waited on the endpoint: the
/// time to its response head, or to the timeout that cut the wait short.
fn observe(cluster: &Cluster, sent: Instant, step: &Step) {
    let at = match step {
        Step::Answer(a) => a.at,
        Step::Fatal(why) if why.is_timeout() => Instant::now(),
        _ => return,
    };
    cluster
        .limit
        .observe(at.saturating_duration_since(sent), at);
}

/// This attempt's body: a replayable one again (a `Bytes` clone), a streamed one only once.
fn attempt_body(replay: &Option<Bytes>, once: &mut Option<ReqBody>) -> UpBody {
    match (replay, once.take()) {
        (Some(b), _) if b.is_empty() => UpBody::Empty,
        (Some(b), _) => UpBody::Full(Some(b.clone())),
        (None, Some(b)) => UpBody::Stream(b),
        (None, None) => UpBody::Empty,
    }
}

/// What one attempt came to.
enum Step {
    /// A response head. Boxed where it is made, as the request's answer leaves in
    /// (`request::Answer::Upstream`): the attempt, the retry loop and the caller then move a
    /// pointer, not the ~500-byte head, body and connection (the moves were ~800 instructions
    /// of `memcpy` per proxied request under callgrind, `bench/PROFILE.md` round 8). `attempts`
    /// and `permits` are filled in by [`send`] when it keeps the answer.
    Answer(Box<Answered>),
    /// No connection: retryable on another endpoint.
    Connect(Failure),
    /// The request went up and the connection failed before a response head.
    Reset { reused: bool },
    /// The route's `retry.per_try_timeout_ms` passed without a response head: retryable.
    TryTimeout,
    /// Not retried: a timeout waiting for the head, or the deadline.
    Fatal(Failure),
}

/// An attempt's step, which endpoint and attempt number it was, and how the other attempt of
/// a hedge ended (its number and outcome), if there was one.
struct Ran {
    step: Step,
    ei: usize,
    attempt: u32,
    other: Option<(u32, AttemptEnd)>,
}

/// How an attempt ended, as the journal hears it: a response head's status and instant, or a
/// failure's code.
type AttemptEnd = Result<(u16, Instant), &'static str>;

impl Step {
    /// What the journal learns of the attempt.
    fn outcome(&self) -> Result<(u16, Instant), &'static str> {
        match self {
            Step::Answer(a) => Ok((a.response.status().as_u16(), a.at)),
            Step::Connect(why) | Step::Fatal(why) => Err(why.code()),
            Step::Reset { .. } => Err(Failure::UpstreamReset.code()),
            Step::TryTimeout => Err("per-try-timeout"),
        }
    }
}

async fn attempt_once(
    (cluster, set): (&Cluster, &EndpointSet),
    ei: usize,
    (method, path_q, headers): (&Method, &http::uri::PathAndQuery, &HeaderMap),
    body: UpBody,
    body_state: Option<&ReqShared>,
    (policy, fresh): (&Policy<'_>, bool),
    journal: &mut impl Journal,
) -> Step {
    let ep = &set.endpoints[ei];
    // One clock reading per step: the stamps and bookkeeping below happen back to back.
    let picked = Instant::now();
    let traceparent = journal.attempt(&ep.addr, picked);
    journal.stamp_at(State::UpstreamPicked, picked);
    journal.stamp_at(State::ConnAcquireStart, picked);
    let inflight = set.stats[ei].begin_at(picked);
    let mut conn = match ep
        .pool
        .acquire((picked + policy.connect).min(policy.deadline), fresh)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            inflight.finish(Outcome {
                latency: Duration::ZERO,
                failed: true,
            });
            return Step::Connect(connect_failed((cluster, set), ei, &e, policy, journal));
        }
    };
    journal.waited(conn.connect_time);
    let sent = Instant::now();
    journal.stamp_at(State::ConnAcquired, sent);

    journal.stamp_at(State::ReqHeadersSent, sent);
    let wait_until = (sent + policy.response_headers).min(policy.deadline);
    // A hedged attempt runs to the end: the race in `hedged` watches the per-try timer.
    let try_until = policy
        .per_try
        .filter(|_| !policy.hedge)
        .map(|t| sent + t)
        .filter(|t| *t < wait_until);
    let req = Outbound {
        method,
        path_and_query: path_q,
        headers,
        traceparent,
        addr: &ep.addr,
        scheme: ep.pool.connector().scheme(),
    };
    let res = tokio::time::timeout_at(
        try_until.unwrap_or(wait_until).into(),
        conn.sender.send(req, body),
    )
    .await;
    let got = Instant::now();
    let latency = got.saturating_duration_since(sent);
    journal.waited(latency);
    settle(
        ((cluster, set), ei, inflight),
        res,
        conn,
        body_state,
        (got, latency),
        (try_until.is_some(), policy.deadline),
    )
}

/// How the send went up: no send at all (`None`), a response head or a failure, or the
/// response-head or per-try timer first.
type Sent = Result<
    Option<Result<Response<UpstreamBody>, crate::core::body::BoxError>>,
    tokio::time::error::Elapsed,
>;

/// What an attempt to endpoint `ei` came to once its send ended (`got`, `latency` after it
/// went up). The endpoint's stats (through its `inflight` count) and outlier state learn the
/// outcome; a client body fault is not the endpoint's failure. `per_try`: the timer that ran
/// was the route's per-try timeout (retryable), not the response-head wait.
fn settle(
    ((cluster, set), ei, inflight): ((&Cluster, &EndpointSet), usize, super::stats::InFlight),
    res: Sent,
    conn: Conn,
    body_state: Option<&ReqShared>,
    (got, latency): (Instant, Duration),
    (per_try, deadline): (bool, Instant),
) -> Step {
    let ep = &set.endpoints[ei];
    match res {
        Ok(None) => {
            inflight.finish(Outcome {
                latency: Duration::ZERO,
                failed: false,
            });
            Step::Fatal(Failure::BadRequest)
        }
        Ok(Some(Ok(resp))) => {
            let status = resp.status();
            // The balancer's failure rate always counts a 5xx (an endpoint answering 500s
            // fast must not look attractive); outlier ejection only when the cluster opts in.
            inflight.finish_at(
                Outcome {
                    latency,
                    failed: status.is_server_error(),
                },
                got,
            );
            if status.is_server_error() && cluster.outlier_cfg.eject_on_5xx {
                set.outlier.on_failure(ei, got);
            } else {
                set.outlier.on_success(ei);
            }
            Step::Answer(Box::new(Answered {
                response: resp,
                conn,
                endpoint: ep.clone(),
                attempts: 0,
                at: got,
                permits: Held::default(),
            }))
        }
        Ok(Some(Err(e))) => {
            // A client body fault is not the endpoint's failure.
            let client_fault = match body_state.map(ReqShared::fault) {
                Some(ReqBodyFault::TooLarge) => Some(Failure::BodyTooLarge),
                Some(ReqBodyFault::IdleTimeout) => Some(Failure::ClientBodyTimeout),
                Some(ReqBodyFault::ClientError) => Some(Failure::ClientGone),
                Some(ReqBodyFault::None) | None => None,
            };
            if let Some(why) = client_fault {
                inflight.finish(Outcome {
                    latency,
                    failed: false,
                });
                return Step::Fatal(why);
            }
            tracing::debug!(cluster = %cluster.name, endpoint = %ep.addr, error = %e, "upstream request failed");
            inflight.finish(Outcome {
                latency,
                failed: true,
            });
            set.outlier.on_failure(ei, got);
            Step::Reset {
                reused: conn.reused,
            }
        }
        Err(_) => {
            inflight.finish(Outcome {
                latency,
                failed: true,
            });
            set.outlier.on_failure(ei, got);
            if per_try {
                return Step::TryTimeout;
            }
            Step::Fatal(if got >= deadline {
                Failure::DeadlineExceeded
            } else {
                Failure::UpstreamTimeout
            })
        }
    }
}

/// Records a failed connect against the endpoint and names the failure.
fn connect_failed(
    (cluster, set): (&Cluster, &EndpointSet),
    ei: usize,
    e: &super::connect::ConnectError,
    policy: &Policy<'_>,
    journal: &mut impl Journal,
) -> Failure {
    let now = Instant::now();
    set.outlier.on_failure(ei, now);
    let ep = &set.endpoints[ei];
    tracing::debug!(cluster = %cluster.name, endpoint = %ep.addr, error = %e, "upstream connect failed");
    if e.is_tls() {
        tracing::warn!(cluster = %cluster.name, error = %e, "upstream TLS handshake failed");
    }
    // The passport says why (a TLS failure's reason, a name that does not resolve, a refusal).
    journal.detail(e.to_string());
    if now >= policy.deadline {
        Failure::DeadlineExceeded
    } else if e.is_tls() {
        Failure::UpstreamTls
    } else if e.is_timeout() {
        Failure::ConnectTimeout
    } else {
        Failure::ConnectFailed
    }
}

/// A retry goes ahead only if another endpoint is eligible (`tried` given: it must not be
/// one of those; `None`: the replay goes to the same endpoint) and the cluster's retry budget
/// allows it (measured against the requests in flight to the cluster, proxied and fan-out
/// alike); the budget permit is held until the request ends.
fn may_retry(
    (cluster, set): (&Cluster, &EndpointSet),
    tried: Option<&[usize]>,
    why: RetryReason,
    held: &mut Held,
    journal: &mut impl Journal,
) -> bool {
    if tried.is_some_and(|t| !set.has_eligible(t)) {
        return false;
    }
    match cluster.retry_budget.try_acquire(cluster.limit.in_flight()) {
        Some(p) => {
            cluster.retry_budget.record_retry(why);
            held.retries.push(p);
            journal.stamp_at(State::Retry, Instant::now());
            true
        }
        None => false,
    }
}
