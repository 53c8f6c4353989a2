//! hopline-balance: the load balancer's decisions, with no I/O — which server of a pool
//! takes the next request (the five algorithms of the seeds), and which servers are up
//! (active health checks and passive outlier detection). The edge proxy feeds it
//! outcomes and health results; DNS pools may use the same algorithms.
//!
//! # The algorithms
//! - **round robin**: each eligible server in turn.
//! - **weighted round robin**: nginx's smooth weighted round robin — every pick adds each
//!   server's weight to its `current`, takes the largest `current`, and subtracts the
//!   total weight from it. Weights 5,1,1 give `a a b a c a a`: interleaved, exact shares.
//! - **dynamic round robin**: smooth weighted round robin over *effective* weights
//!   recomputed at every pick from what the proxy observed:
//!   `effective = weight × speed × health`, where
//!   `speed = clamp(fastest_ewma / own_ewma, 0.05, 1)` (a server twice as slow as the
//!   fastest gets half its share), and
//!   `health = clamp((1 − error_rate)², 0.05, 1)` with `error_rate` a decaying average
//!   (time constant [`PoolOptions::decay`]) of failed outcomes (connect error, timeout,
//!   5xx). Servers with no observation yet count as fastest and healthy. The effective
//!   weight is kept in thousandths so shares stay smooth.
//! - **fastest**: the lowest peak-EWMA response time, as linkerd and finagle compute it:
//!   a new sample above the estimate replaces it at once (peaks count), below it the
//!   estimate moves toward it with weight `exp(−Δt/τ)`; between samples the estimate
//!   decays toward zero with the same `τ`, so a server that stopped getting traffic (say
//!   it recovered) looks fast again after a while and is explored. The cost is
//!   `estimate × (in_flight + 1)`; ties are broken at random.
//! - **least connections**: the fewest in-flight requests relative to weight
//!   (`in_flight / weight`), ties broken at random.
//! - **ring hash** and **Maglev**: consistent hashing of a key the request brings
//!   ([`Affinity::key`]: its client address, a header, a cookie, the URI), so the same key
//!   keeps its server while the set of servers changes little ([`hash`]). A request
//!   without a key is balanced round robin, as HAProxy does.
//!
//! A request may also name the server it is stuck to ([`Affinity::sticky`], from a
//! sticky-session cookie): it goes there while that server may take traffic, and is
//! balanced as any other when it may not.
//!
//! # Availability
//! A server is *eligible* when its active health checks pass (`fails` failures in a row
//! take it out, `passes` successes bring it back) and it is not ejected by passive outlier
//! detection:
//! - `outlier_consecutive_errors` failed outcomes in a row eject it for
//!   `outlier_base_ejection`. Failures are counted once per server, not per request in
//!   flight: a request picked before the server's last ejection (say one of 200 upgrades
//!   that all hit a full listen backlog at once) neither counts toward the next ejection
//!   nor extends the current one.
//! - When the window ends the server is *probed*: exactly one live request goes to it
//!   (the others still go elsewhere). A success brings it back at once; a failure ejects
//!   it again for the base window (as nginx's `fail_timeout`), so a dead server costs one
//!   request per window and a revived one is used again within one base window, never
//!   after a doubled one.
//! - A server that flaps (ejected again by fresh errors less than `outlier_max_ejection`
//!   after it came back) is ejected for twice as long each time, up to
//!   `outlier_max_ejection`; once it stays good that long, its record is clean.
//!
//! Backup servers are picked only when no primary server is eligible. When no server at
//! all is eligible the pool *panics* (Envoy's panic threshold; nginx never marks its only
//! server down): it picks among every server not yet tried by this request, primaries
//! first, rather than answering 503 — a pool whose servers are all ejected or failing
//! their checks may still have one that answers. [`Pool::panicking`] and
//! [`Pool::panic_picks`] say so for status pages and metrics.

pub mod hash;
pub mod histogram;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use tokio::time::Instant;

/// A balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Each server in turn.
    RoundRobin,
    /// Smooth weighted round robin (nginx).
    WeightedRoundRobin,
    /// Weights adjusted continuously from observed latency and errors.
    DynamicRoundRobin,
    /// Lowest peak-EWMA response time.
    Fastest,
    /// Fewest in-flight requests per weight.
    LeastConnections,
    /// Consistent hashing of the request's key on a ring of virtual nodes.
    RingHash,
    /// Consistent hashing of the request's key with a Maglev table.
    Maglev,
}

impl Algorithm {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::DynamicRoundRobin => "dynamic_round_robin",
            Algorithm::Fastest => "fastest",
            Algorithm::LeastConnections => "least_connections",
            Algorithm::RingHash => "ring_hash",
            Algorithm::Maglev => "maglev",
        }
    }

    /// Does it balance by a key the request brings?
    pub fn is_hash(self) -> bool {
        matches!(self, Algorithm::RingHash | Algorithm::Maglev)
    }
}

/// What a request brings to the choice of its server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Affinity {
    /// The hash of its key ([`hash::hash_key`]), for the hashing algorithms.
    pub key: Option<u64>,
    /// The server its sticky-session cookie names ([`Pool::sticky_index`]).
    pub sticky: Option<usize>,
}

/// One server as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Display name, e.g. "127.0.0.1:9001".
    pub id: String,
    /// Relative share (≥ 1).
    pub weight: u32,
    /// Only used when no primary is eligible.
    pub backup: bool,
}

/// Health and outlier settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Failed active checks in a row that take a server out.
    pub fails: u32,
    /// Passed active checks in a row that bring it back.
    pub passes: u32,
    /// Failed outcomes in a row that eject a server (passive outlier detection).
    pub outlier_consecutive_errors: u32,
    /// First ejection time.
    pub outlier_base_ejection: Duration,
    /// Longest ejection time.
    pub outlier_max_ejection: Duration,
    /// Time constant of the latency and error-rate averages.
    pub decay: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            fails: 2,
            passes: 2,
            outlier_consecutive_errors: 3,
            outlier_base_ejection: Duration::from_secs(10),
            outlier_max_ejection: Duration::from_secs(60),
            decay: Duration::from_secs(5),
        }
    }
}

/// What happened to a request sent to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response (not 5xx) arrived after `latency`.
    Success {
        /// Time to the response head.
        latency: Duration,
    },
    /// A 5xx response arrived after `latency`.
    ServerError {
        /// Time to the response head.
        latency: Duration,
    },
    /// The connection could not be made.
    ConnectError,
    /// No response in time.
    Timeout,
}

/// A server's state as the status page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerStatus {
    /// Display name.
    pub id: String,
    /// Takes traffic now (healthy and not ejected).
    pub up: bool,
    /// Active health checks pass.
    pub healthy: bool,
    /// Remaining passive ejection, if ejected.
    pub ejected_for_ms: Option<u64>,
    /// Backup server.
    pub backup: bool,
    /// Configured weight.
    pub weight: u32,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests sent.
    pub requests: u64,
    /// Failed outcomes (connect errors, timeouts, 5xx).
    pub errors: u64,
    /// Peak-EWMA response time, ms.
    pub ewma_ms: f64,
    /// Decaying error rate, 0..1.
    pub error_rate: f64,
    /// The weight the algorithm uses now (dynamic round robin: adjusted; others: configured).
    pub effective_weight: f64,
}

#[derive(Debug)]
struct State {
    healthy: bool,
    check_fails: u32,
    check_passes: u32,
    consecutive_errors: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    /// When the last ejection began: failures of requests picked before it are old news.
    ejected_at: Option<Instant>,
    /// The single live request sent to probe an ejected server is in flight.
    probing: bool,
    /// When its last probe succeeded (flapping within `outlier_max_ejection` doubles).
    restored_at: Option<Instant>,
    ewma_ns: f64,
    error_rate: f64,
    observed_at: Option<Instant>,
    current: i64,
}

#[derive(Debug)]
struct Server {
    spec: ServerSpec,
    in_flight: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
}

/// A Maglev table and the servers it was made for.
type MaglevFor = (SmallVec<[usize; 16]>, std::sync::Arc<hash::Maglev>);

/// A pool of servers and its balancing state. `Send + Sync`; share it in an `Arc`.
#[derive(Debug)]
pub struct Pool {
    algorithm: Algorithm,
    servers: Vec<Server>,
    states: Mutex<Vec<State>>,
    next: AtomicUsize,
    opts: PoolOptions,
    panic_picks: AtomicU64,
    /// The ring (ring hash).
    ring: Option<hash::Ring>,
    /// The Maglev table of the servers that last took traffic, made again when they
    /// change.
    maglev: Mutex<Option<MaglevFor>>,
    /// Each server's sticky-session id ([`hash::sticky_id`] of its address).
    sticky: Vec<String>,
}

/// A picked server; finish it with the outcome (dropping it unfinished counts as a
/// cancelled request: in-flight goes down, nothing is learned).
#[derive(Debug)]
pub struct Pick<'a> {
    pool: &'a Pool,
    index: usize,
    done: bool,
    /// When it was picked (failures of picks older than an ejection do not count).
    at: Instant,
    /// This request probes an ejected server whose window ended.
    probe: bool,
}

impl Pick<'_> {
    /// Index of the server in the pool.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Record the outcome: latency (EWMA), errors (dynamic weights, outlier detection).
    pub fn finish(mut self, outcome: Outcome) {
        self.done = true;
        self.pool.finish(self.index, outcome, self.at, self.probe);
    }

    /// Is this request the single probe of an ejected server whose window ended?
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Pick<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pool.servers[self.index]
                .in_flight
                .fetch_sub(1, Ordering::AcqRel);
            if self.probe {
                // a cancelled probe proves nothing: the next request probes again
                self.pool.states.lock()[self.index].probing = false;
            }
        }
    }
}

fn decay_weight(elapsed: Duration, tau: Duration) -> f64 {
    (-elapsed.as_secs_f64() / tau.as_secs_f64().max(1e-9)).exp()
}

impl Pool {
    /// A pool of `servers` balanced by `algorithm`. Weights of 0 count as 1.
    pub fn new(algorithm: Algorithm, servers: Vec<ServerSpec>, opts: PoolOptions) -> Pool {
        let states = servers
            .iter()
            .map(|_| State {
                healthy: true,
                check_fails: 0,
                check_passes: 0,
                consecutive_errors: 0,
                ejections: 0,
                ejected_until: None,
                ejected_at: None,
                probing: false,
                restored_at: None,
                ewma_ns: 0.0,
                error_rate: 0.0,
                observed_at: None,
                current: 0,
            })
            .collect();
        let weighted: Vec<(&str, u32)> = servers
            .iter()
            .map(|s| (s.id.as_str(), s.weight.max(1)))
            .collect();
        let ring = (algorithm == Algorithm::RingHash).then(|| hash::Ring::new(&weighted));
        let sticky = servers.iter().map(|s| hash::sticky_id(&s.id)).collect();
        Pool {
            ring,
            maglev: Mutex::new(None),
            sticky,
            algorithm,
            servers: servers
                .into_iter()
                .map(|mut spec| {
                    spec.weight = spec.weight.max(1);
                    Server {
                        spec,
                        in_flight: AtomicU64::new(0),
                        requests: AtomicU64::new(0),
                        errors: AtomicU64::new(0),
                    }
                })
                .collect(),
            states: Mutex::new(states),
            next: AtomicUsize::new(0),
            opts,
            panic_picks: AtomicU64::new(0),
        }
    }

    /// Number of servers.
    pub fn servers(&self) -> usize {
        self.servers.len()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Takes traffic now: healthy, and not ejected (or its window ended and no probe is
    /// in flight).
    fn eligible(st: &State, now: Instant) -> bool {
        st.healthy && st.ejected_until.is_none_or(|t| t <= now && !st.probing)
    }

    /// No server of the pool is eligible: picks go to all of them anyway.
    pub fn panicking(&self) -> bool {
        let now = Instant::now();
        let states = self.states.lock();
        !states.iter().any(|st| Self::eligible(st, now))
    }

    /// Picks made in panic since the pool was built.
    pub fn panic_picks(&self) -> u64 {
        self.panic_picks.load(Ordering::Relaxed)
    }

    /// Pick a server for the next request, skipping `exclude` (servers this request
    /// already tried). Primaries first; backups only when no primary is eligible; when
    /// no server is eligible at all, any server not excluded (panic, primaries first).
    /// `None` only when every server was excluded.
    pub fn pick(&self, exclude: &[usize]) -> Option<Pick<'_>> {
        self.pick_for(exclude, Affinity::default())
    }

    /// The server a sticky-session cookie's value names, if any.
    pub fn sticky_index(&self, value: &str) -> Option<usize> {
        self.sticky.iter().position(|s| s == value)
    }

    /// The sticky-session cookie's value for the server `index`.
    pub fn sticky_value(&self, index: usize) -> &str {
        &self.sticky[index]
    }

    /// The Maglev table of `members` (made again when they changed since the last one).
    fn maglev_of(&self, members: &[usize]) -> std::sync::Arc<hash::Maglev> {
        let mut cached = self.maglev.lock();
        if let Some((m, table)) = cached.as_ref()
            && m.as_slice() == members
        {
            return table.clone();
        }
        let weighted: Vec<(&str, u32)> = self
            .servers
            .iter()
            .map(|s| (s.spec.id.as_str(), s.spec.weight))
            .collect();
        let table = std::sync::Arc::new(hash::Maglev::new(&weighted, |i| members.contains(&i)));
        *cached = Some((members.iter().copied().collect(), table.clone()));
        table
    }

    /// [`Pool::pick`] for a request that brings a key to hash, or names the server it is
    /// stuck to ([`Affinity`]). The sticky server when it may take traffic; else, with
    /// a hashing algorithm and a key, the key's server among those that may (a retry's
    /// excluded ones skipped); else as [`Pool::pick`].
    pub fn pick_for(&self, exclude: &[usize], affinity: Affinity) -> Option<Pick<'_>> {
        let now = Instant::now();
        let mut states = self.states.lock();
        // (on the stack for pools of up to 16 servers: a pick allocates nothing)
        let mut candidates: [SmallVec<[usize; 16]>; 2] = [SmallVec::new(), SmallVec::new()];
        for (i, s) in self.servers.iter().enumerate() {
            if !exclude.contains(&i) && Self::eligible(&states[i], now) {
                candidates[s.spec.backup as usize].push(i);
            }
        }
        let mut panic = false;
        if candidates[0].is_empty() && candidates[1].is_empty() {
            // panic: nothing is eligible, but a 503 wall helps nobody
            for (i, s) in self.servers.iter().enumerate() {
                if !exclude.contains(&i) {
                    candidates[s.spec.backup as usize].push(i);
                }
            }
            panic = true;
        }
        let set = if !candidates[0].is_empty() {
            &candidates[0]
        } else if !candidates[1].is_empty() {
            &candidates[1]
        } else {
            return None;
        };
        let hashed = match (self.algorithm, affinity.key) {
            _ if affinity.sticky.is_some_and(|i| set.contains(&i)) => affinity.sticky,
            (Algorithm::RingHash, Some(key)) => self
                .ring
                .as_ref()
                .and_then(|r| r.pick(key, |i| set.contains(&i))),
            (Algorithm::Maglev, Some(key)) => {
                // the table of the servers that may take traffic, the excluded ones
                // included (a retry must not make another table)
                let tier = set.first().is_some_and(|&i| self.servers[i].spec.backup);
                let members: SmallVec<[usize; 16]> = (0..self.servers.len())
                    .filter(|&i| {
                        self.servers[i].spec.backup == tier
                            && (panic || Self::eligible(&states[i], now))
                    })
                    .collect();
                self.maglev_of(&members)
                    .pick_among(key, |i| set.contains(&i))
            }
            _ => None,
        };
        let index = match self.algorithm {
            _ if hashed.is_some() => hashed.unwrap_or(set[0]),
            Algorithm::RoundRobin | Algorithm::RingHash | Algorithm::Maglev => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                set[n % set.len()]
            }
            Algorithm::WeightedRoundRobin => {
                let weights: SmallVec<[i64; 16]> = set
                    .iter()
                    .map(|&i| self.servers[i].spec.weight as i64 * 1000)
                    .collect();
                smooth_pick(&mut states, set, &weights)
            }
            Algorithm::DynamicRoundRobin => {
                let weights: SmallVec<[i64; 16]> = set
                    .iter()
                    .map(|&i| {
                        (self.dynamic_weight(&states, set, i, now) * 1000.0)
                            .round()
                            .max(1.0) as i64
                    })
                    .collect();
                smooth_pick(&mut states, set, &weights)
            }
            Algorithm::Fastest => {
                let mut rng = rand::rng();
                let mut best = set[0];
                let mut best_cost = f64::INFINITY;
                let mut ties = 0u32;
                for &i in set {
                    let est = self.estimate_ns(&states[i], now);
                    let cost = est * (self.servers[i].in_flight.load(Ordering::Acquire) + 1) as f64;
                    if cost < best_cost {
                        best_cost = cost;
                        best = i;
                        ties = 1;
                    } else if cost == best_cost {
                        ties += 1;
                        if rng.random_range(0..ties) == 0 {
                            best = i;
                        }
                    }
                }
                best
            }
            Algorithm::LeastConnections => {
                let mut rng = rand::rng();
                let mut best = set[0];
                let mut ties = 0u32;
                for &i in set {
                    let cmp = {
                        let (a, wa) = (
                            self.servers[i].in_flight.load(Ordering::Acquire),
                            self.servers[i].spec.weight as u64,
                        );
                        let (b, wb) = (
                            self.servers[best].in_flight.load(Ordering::Acquire),
                            self.servers[best].spec.weight as u64,
                        );
                        (a * wb).cmp(&(b * wa))
                    };
                    if ties == 0 || cmp == std::cmp::Ordering::Less {
                        best = i;
                        ties = 1;
                    } else if cmp == std::cmp::Ordering::Equal {
                        ties += 1;
                        if rng.random_range(0..ties) == 0 {
                            best = i;
                        }
                    }
                }
                best
            }
        };
        // an ejected server whose window ended gets this one request as its probe
        let st = &mut states[index];
        let probe = !panic && st.ejected_until.is_some_and(|t| t <= now);
        if probe {
            st.probing = true;
        }
        drop(states);
        if panic {
            self.panic_picks.fetch_add(1, Ordering::Relaxed);
        }
        let s = &self.servers[index];
        s.in_flight.fetch_add(1, Ordering::AcqRel);
        s.requests.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            pool: self,
            index,
            done: false,
            at: now,
            probe,
        })
    }

    /// The latency estimate (ns), decayed toward zero since the last observation.
    fn estimate_ns(&self, st: &State, now: Instant) -> f64 {
        match st.observed_at {
            None => 0.0,
            Some(at) => {
                st.ewma_ns * decay_weight(now.saturating_duration_since(at), self.opts.decay)
            }
        }
    }

    fn error_rate(&self, st: &State, now: Instant) -> f64 {
        match st.observed_at {
            None => 0.0,
            Some(at) => {
                st.error_rate * decay_weight(now.saturating_duration_since(at), self.opts.decay)
            }
        }
    }

    fn dynamic_weight(&self, states: &[State], set: &[usize], i: usize, now: Instant) -> f64 {
        let fastest = set
            .iter()
            .map(|&j| self.estimate_ns(&states[j], now))
            .filter(|e| *e > 0.0)
            .fold(f64::INFINITY, f64::min);
        let own = self.estimate_ns(&states[i], now);
        let speed = if own <= 0.0 || !fastest.is_finite() {
            1.0
        } else {
            (fastest / own).clamp(0.05, 1.0)
        };
        let health = (1.0 - self.error_rate(&states[i], now))
            .powi(2)
            .clamp(0.05, 1.0);
        self.servers[i].spec.weight as f64 * speed * health
    }

    fn finish(&self, index: usize, outcome: Outcome, picked_at: Instant, probe: bool) {
        let server = &self.servers[index];
        server.in_flight.fetch_sub(1, Ordering::AcqRel);
        let now = Instant::now();
        let (latency, failed) = match outcome {
            Outcome::Success { latency } => (Some(latency), false),
            Outcome::ServerError { latency } => (Some(latency), true),
            Outcome::ConnectError => (None, true),
            Outcome::Timeout => (None, true),
        };
        if failed {
            server.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut states = self.states.lock();
        let st = &mut states[index];
        let w = st
            .observed_at
            .map(|at| decay_weight(now.saturating_duration_since(at), self.opts.decay))
            .unwrap_or(0.0);
        if let Some(lat) = latency {
            let sample = lat.as_nanos() as f64;
            let prev = st.ewma_ns * w;
            st.ewma_ns = if sample > prev {
                sample
            } else {
                prev * w + sample * (1.0 - w)
            };
        } else if matches!(outcome, Outcome::Timeout) {
            // a timeout is at least as slow as the slowest thing we have seen
            st.ewma_ns = st.ewma_ns.max(1e9);
        }
        let sample = if failed { 1.0 } else { 0.0 };
        st.error_rate = st.error_rate * w + sample * (1.0 - w);
        st.observed_at = Some(now);
        if probe {
            st.probing = false;
        }
        if failed {
            let stale = st.ejected_at.is_some_and(|at| picked_at < at);
            let ejected_now = st.ejected_until.is_some_and(|t| t > now);
            if probe {
                // the probe failed: out again for the base window
                st.ejected_until = Some(now + self.opts.outlier_base_ejection);
                st.ejected_at = Some(now);
            } else if !stale && !ejected_now {
                st.consecutive_errors += 1;
                if st.consecutive_errors >= self.opts.outlier_consecutive_errors.max(1) {
                    self.eject(st, now);
                }
            }
        } else {
            st.consecutive_errors = 0;
            if probe || st.ejected_until.is_some_and(|t| t <= now) {
                st.ejected_until = None;
                st.restored_at = Some(now);
            }
        }
    }

    /// Eject a server for its next window (base, doubling per ejection, capped).
    fn eject(&self, st: &mut State, now: Instant) {
        if st
            .restored_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.opts.outlier_max_ejection)
        {
            // good for long enough since it came back: a clean record
            st.ejections = 0;
        }
        st.ejections += 1;
        let factor = 1u32
            .checked_shl(st.ejections.saturating_sub(1).min(16))
            .unwrap_or(u32::MAX);
        let t = self
            .opts
            .outlier_base_ejection
            .saturating_mul(factor)
            .min(self.opts.outlier_max_ejection);
        st.ejected_until = Some(now + t);
        st.ejected_at = Some(now);
        st.consecutive_errors = 0;
    }

    /// Feed one active health check result: `fails` failures in a row take the server
    /// out, `passes` successes in a row bring it back (and clear a passive ejection).
    pub fn report_health_check(&self, server: usize, ok: bool) {
        let mut states = self.states.lock();
        let Some(st) = states.get_mut(server) else {
            return;
        };
        if ok {
            st.check_fails = 0;
            st.check_passes = st.check_passes.saturating_add(1);
            if !st.healthy && st.check_passes >= self.opts.passes.max(1) {
                st.healthy = true;
                st.ejected_until = None;
                st.ejections = 0;
                st.consecutive_errors = 0;
                st.probing = false;
            }
        } else {
            st.check_passes = 0;
            st.check_fails = st.check_fails.saturating_add(1);
            if st.healthy && st.check_fails >= self.opts.fails.max(1) {
                st.healthy = false;
            }
        }
    }

    /// Every server's state.
    pub fn snapshot(&self) -> Vec<ServerStatus> {
        let now = Instant::now();
        let states = self.states.lock();
        let set: Vec<usize> = (0..self.servers.len())
            .filter(|&i| Self::eligible(&states[i], now))
            .collect();
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let st = &states[i];
                ServerStatus {
                    id: s.spec.id.clone(),
                    up: Self::eligible(st, now),
                    healthy: st.healthy,
                    ejected_for_ms: st
                        .ejected_until
                        .filter(|t| *t > now)
                        .map(|t| (t - now).as_millis() as u64),
                    backup: s.spec.backup,
                    weight: s.spec.weight,
                    in_flight: s.in_flight.load(Ordering::Acquire),
                    requests: s.requests.load(Ordering::Relaxed),
                    errors: s.errors.load(Ordering::Relaxed),
                    ewma_ms: self.estimate_ns(st, now) / 1e6,
                    error_rate: self.error_rate(st, now),
                    effective_weight: match self.algorithm {
                        Algorithm::DynamicRoundRobin if !set.is_empty() => {
                            self.dynamic_weight(&states, &set, i, now)
                        }
                        _ => s.spec.weight as f64,
                    },
                }
            })
            .collect()
    }
}

/// nginx's smooth weighted round robin over `set` with `weights` (same order).
fn smooth_pick(states: &mut [State], set: &[usize], weights: &[i64]) -> usize {
    let total: i64 = weights.iter().sum();
    let mut best = set[0];
    let mut best_cur = i64::MIN;
    for (k, &i) in set.iter().enumerate() {
        states[i].current += weights[k];
        if states[i].current > best_cur {
            best_cur = states[i].current;
            best = i;
        }
    }
    states[best].current -= total;
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(weights: &[(u32, bool)]) -> Vec<ServerSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, (w, b))| ServerSpec {
                id: format!("s{i}"),
                weight: *w,
                backup: *b,
            })
            .collect()
    }

    fn count(pool: &Pool, n: usize) -> Vec<usize> {
        let mut c = vec![0; pool.servers()];
        for _ in 0..n {
            let p = pool.pick(&[]).unwrap();
            c[p.index()] += 1;
            p.finish(Outcome::Success {
                latency: Duration::from_millis(1),
            });
        }
        c
    }

    #[tokio::test(start_paused = true)]
    async fn round_robin_in_turn() {
        let p = Pool::new(
            Algorithm::RoundRobin,
            specs(&[(1, false); 3]),
            PoolOptions::default(),
        );
        let order: Vec<usize> = (0..6).map(|_| p.pick(&[]).unwrap().index()).collect();
        assert_eq!(order, vec![0, 1, 2, 0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn smooth_weighted_sequence_is_nginx_s() {
        let p = Pool::new(
            Algorithm::WeightedRoundRobin,
            specs(&[(5, false), (1, false), (1, false)]),
            PoolOptions::default(),
        );
        let order: Vec<usize> = (0..7).map(|_| p.pick(&[]).unwrap().index()).collect();
        assert_eq!(order, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn weights_three_to_one_give_75_percent() {
        let p = Pool::new(
            Algorithm::WeightedRoundRobin,
            specs(&[(3, false), (1, false)]),
            PoolOptions::default(),
        );
        let c = count(&p, 10_000);
        let share = c[0] as f64 / 10_000.0;
        assert!((share - 0.75).abs() <= 0.02, "{c:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn least_connections_with_weights_and_random_ties() {
        let p = Pool::new(
            Algorithm::LeastConnections,
            specs(&[(1, false), (1, false), (2, false)]),
            PoolOptions::default(),
        );
        // hold picks: weight 2 takes twice the in-flight of the others
        let held: Vec<Pick<'_>> = (0..40).map(|_| p.pick(&[]).unwrap()).collect();
        let snap = p.snapshot();
        assert_eq!(snap[0].in_flight, 10);
        assert_eq!(snap[1].in_flight, 10);
        assert_eq!(snap[2].in_flight, 20);
        drop(held);
        // ties are broken at random: both equal servers get picks
        let p = Pool::new(
            Algorithm::LeastConnections,
            specs(&[(1, false); 2]),
            PoolOptions::default(),
        );
        let c = count(&p, 1000);
        assert!(c[0] > 300 && c[1] > 300, "{c:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn fastest_prefers_the_fast_and_explores_a_recovered_one() {
        let p = Pool::new(
            Algorithm::Fastest,
            specs(&[(1, false); 2]),
            PoolOptions::default(),
        );
        let mut c = [0usize; 2];
        for _ in 0..200 {
            let pick = p.pick(&[]).unwrap();
            let i = pick.index();
            c[i] += 1;
            let ms = if i == 0 { 2 } else { 100 };
            pick.finish(Outcome::Success {
                latency: Duration::from_millis(ms),
            });
            tokio::time::advance(Duration::from_millis(5)).await;
        }
        assert!(c[0] > 190, "{c:?}");
        assert!(c[1] >= 1, "slow server never explored: {c:?}");
        // server 1 recovers: after its estimate decays it is tried and, now fast, kept
        let mut later = [0usize; 2];
        for _ in 0..2000 {
            let pick = p.pick(&[]).unwrap();
            let i = pick.index();
            later[i] += 1;
            pick.finish(Outcome::Success {
                latency: Duration::from_millis(2),
            });
            tokio::time::advance(Duration::from_millis(20)).await;
        }
        assert!(later[1] > 400, "recovered server not used again: {later:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn dynamic_round_robin_shifts_away_and_back() {
        let p = Pool::new(
            Algorithm::DynamicRoundRobin,
            specs(&[(1, false); 2]),
            PoolOptions::default(),
        );
        let mut c = [0usize; 2];
        for _ in 0..1000 {
            let pick = p.pick(&[]).unwrap();
            let i = pick.index();
            c[i] += 1;
            let ms = if i == 0 { 5 } else { 50 };
            pick.finish(Outcome::Success {
                latency: Duration::from_millis(ms),
            });
            tokio::time::advance(Duration::from_millis(2)).await;
        }
        assert!(c[0] > 3 * c[1], "slow server kept its share: {c:?}");
        assert!(c[1] > 0);
        let w = p.snapshot();
        assert!(w[1].effective_weight < 0.3, "{w:?}");
        // errors cut the share too
        let p = Pool::new(
            Algorithm::DynamicRoundRobin,
            specs(&[(1, false); 2]),
            PoolOptions {
                outlier_consecutive_errors: 1000,
                ..Default::default()
            },
        );
        let mut c = [0usize; 2];
        for _ in 0..1000 {
            let pick = p.pick(&[]).unwrap();
            let i = pick.index();
            c[i] += 1;
            pick.finish(if i == 1 {
                Outcome::ServerError {
                    latency: Duration::from_millis(5),
                }
            } else {
                Outcome::Success {
                    latency: Duration::from_millis(5),
                }
            });
            tokio::time::advance(Duration::from_millis(2)).await;
        }
        assert!(c[0] > 5 * c[1], "erroring server kept its share: {c:?}");
        // recovery: errors stop, the share comes back
        let mut c = [0usize; 2];
        for _ in 0..4000 {
            let pick = p.pick(&[]).unwrap();
            c[pick.index()] += 1;
            pick.finish(Outcome::Success {
                latency: Duration::from_millis(5),
            });
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert!(c[1] > 1200, "share did not come back: {c:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn health_checks_eject_and_restore_and_backups_wait() {
        let p = Pool::new(
            Algorithm::RoundRobin,
            specs(&[(1, false), (1, false), (1, true)]),
            PoolOptions {
                fails: 2,
                passes: 3,
                ..Default::default()
            },
        );
        assert_eq!(count(&p, 100)[2], 0, "backup used while primaries are up");
        p.report_health_check(0, false);
        assert!(p.snapshot()[0].up, "one failure must not eject (fails = 2)");
        p.report_health_check(0, false);
        assert!(!p.snapshot()[0].up);
        assert_eq!(count(&p, 10), vec![0, 10, 0]);
        p.report_health_check(1, false);
        p.report_health_check(1, false);
        assert_eq!(count(&p, 10), vec![0, 0, 10], "backup must take over");
        for _ in 0..2 {
            p.report_health_check(0, true);
        }
        assert!(
            !p.snapshot()[0].up,
            "two passes must not restore (passes = 3)"
        );
        p.report_health_check(0, true);
        assert_eq!(count(&p, 10), vec![10, 0, 0]);
        p.report_health_check(0, false);
        p.report_health_check(0, false);
        p.report_health_check(2, false);
        p.report_health_check(2, false);
        // every server is out: panic, primaries first, rather than a 503 wall
        assert!(p.panicking());
        assert_eq!(p.panic_picks(), 0);
        let picked = count(&p, 10);
        assert_eq!(picked[2], 0, "panic picks primaries first: {picked:?}");
        assert_eq!(picked[0] + picked[1], 10);
        assert_eq!(p.panic_picks(), 10);
        assert!(
            p.pick(&[0, 1, 2]).is_none(),
            "a request never retries a server it tried"
        );
        for _ in 0..3 {
            p.report_health_check(1, true);
        }
        assert!(!p.panicking());
    }

    #[tokio::test(start_paused = true)]
    async fn passive_outliers_are_ejected_with_backoff() {
        let p = Pool::new(
            Algorithm::RoundRobin,
            specs(&[(1, false); 2]),
            PoolOptions {
                outlier_consecutive_errors: 2,
                outlier_base_ejection: Duration::from_secs(1),
                outlier_max_ejection: Duration::from_secs(3),
                ..Default::default()
            },
        );
        for _ in 0..2 {
            let pick = p.pick(&[1]).unwrap();
            assert_eq!(pick.index(), 0);
            pick.finish(Outcome::ConnectError);
        }
        assert!(!p.snapshot()[0].up);
        assert_eq!(count(&p, 4), vec![0, 4]);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(p.snapshot()[0].up, "ejection must end");
        // the window ended: one live request probes it, the others go elsewhere
        let probe = p.pick(&[1]).unwrap();
        assert!(probe.is_probe());
        assert_eq!(count(&p, 4), vec![0, 4], "only one probe at a time");
        // the probe fails: ejected again at once, for the base window (not doubled)
        probe.finish(Outcome::Timeout);
        assert!(!p.snapshot()[0].up);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(p.snapshot()[0].up, "a failed probe waits one base window");
        // a cancelled probe proves nothing: the next request probes again
        drop(p.pick(&[1]).unwrap());
        let probe = p.pick(&[1]).unwrap();
        assert!(probe.is_probe());
        // the probe succeeds: back at once
        probe.finish(Outcome::Success {
            latency: Duration::from_millis(1),
        });
        assert_eq!(count(&p, 4), vec![2, 2]);
        p.pick(&[1]).unwrap().finish(Outcome::ServerError {
            latency: Duration::from_millis(1),
        });
        assert!(
            p.snapshot()[0].up,
            "one error after a success must not eject"
        );
        assert_eq!(p.snapshot()[0].errors, 4);
        // flapping (ejected again soon after it came back): twice as long
        p.pick(&[1]).unwrap().finish(Outcome::ConnectError);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert!(
            !p.snapshot()[0].up,
            "a flapping server's second ejection lasts 2 s"
        );
        tokio::time::advance(Duration::from_millis(600)).await;
        let probe = p.pick(&[1]).unwrap();
        assert!(probe.is_probe());
        probe.finish(Outcome::Success {
            latency: Duration::from_millis(1),
        });
        // good for longer than the cap: a clean record, the base window again
        tokio::time::advance(Duration::from_secs(4)).await;
        for _ in 0..2 {
            p.pick(&[1]).unwrap().finish(Outcome::ConnectError);
        }
        assert!(!p.snapshot()[0].up);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(
            p.snapshot()[0].up,
            "a clean record starts from the base window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_flight_count_once() {
        // 200 requests in flight at once all fail (a full listen backlog): the server is
        // ejected once, for the base window, not extended by each failure
        let p = Pool::new(
            Algorithm::RoundRobin,
            specs(&[(1, false)]),
            PoolOptions {
                outlier_consecutive_errors: 3,
                outlier_base_ejection: Duration::from_secs(10),
                outlier_max_ejection: Duration::from_secs(60),
                ..Default::default()
            },
        );
        let picks: Vec<_> = (0..200).map(|_| p.pick(&[]).unwrap()).collect();
        tokio::time::advance(Duration::from_millis(5)).await;
        for pick in picks {
            pick.finish(Outcome::ConnectError);
        }
        let s = &p.snapshot()[0];
        assert!(!s.up);
        assert_eq!(s.errors, 200);
        assert!(
            s.ejected_for_ms.unwrap() <= 10_000,
            "ejection extended by in-flight failures: {:?}",
            s.ejected_for_ms
        );
        // the only server is ejected, yet requests still reach it (panic), and their
        // failures do not extend the window either
        let pick = p.pick(&[]).expect("panic pick");
        pick.finish(Outcome::ConnectError);
        assert!(p.snapshot()[0].ejected_for_ms.unwrap() <= 10_000);
        tokio::time::advance(Duration::from_millis(10_001)).await;
        let probe = p.pick(&[]).unwrap();
        assert!(probe.is_probe());
        probe.finish(Outcome::Success {
            latency: Duration::from_millis(1),
        });
        assert!(p.snapshot()[0].up && !p.panicking());
    }

    #[tokio::test(start_paused = true)]
    async fn exclusion_for_retries_and_cancelled_picks() {
        let p = Pool::new(
            Algorithm::RoundRobin,
            specs(&[(1, false); 3]),
            PoolOptions::default(),
        );
        for _ in 0..10 {
            let pick = p.pick(&[0, 2]).unwrap();
            assert_eq!(pick.index(), 1);
        }
        assert!(p.pick(&[0, 1, 2]).is_none());
        let pick = p.pick(&[]).unwrap();
        assert_eq!(p.snapshot()[pick.index()].in_flight, 1);
        drop(pick);
        assert!(p.snapshot().iter().all(|s| s.in_flight == 0));
    }

    #[test]
    fn concurrent_picks_balance_to_zero_in_flight() {
        let p = std::sync::Arc::new(Pool::new(
            Algorithm::LeastConnections,
            specs(&[(1, false), (2, false), (3, false)]),
            PoolOptions::default(),
        ));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                let handle = rt.handle().clone();
                std::thread::spawn(move || {
                    let _g = handle.enter();
                    for k in 0..5000u64 {
                        let pick = p.pick(&[]).unwrap();
                        if k % 7 == 0 {
                            drop(pick);
                        } else {
                            pick.finish(Outcome::Success {
                                latency: Duration::from_micros(k % 100),
                            });
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = p.snapshot();
        assert!(s.iter().all(|s| s.in_flight == 0), "{s:?}");
        assert_eq!(s.iter().map(|s| s.requests).sum::<u64>(), 40_000);
    }

    #[test]
    fn algorithm_names_round_trip() {
        for a in [
            Algorithm::RoundRobin,
            Algorithm::WeightedRoundRobin,
            Algorithm::DynamicRoundRobin,
            Algorithm::Fastest,
            Algorithm::LeastConnections,
            Algorithm::RingHash,
            Algorithm::Maglev,
        ] {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
            let back: Algorithm = serde_json::from_str(&json).unwrap();
            assert_eq!(back, a);
        }
    }

    /// Where each of `keys` keys goes now.
    fn by_key(p: &Pool, keys: u64) -> Vec<usize> {
        (0..keys)
            .map(|k| {
                let key = hash::hash_key(format!("client-{k}").as_bytes());
                let pick = p
                    .pick_for(
                        &[],
                        Affinity {
                            key: Some(key),
                            sticky: None,
                        },
                    )
                    .unwrap();
                let i = pick.index();
                pick.finish(Outcome::Success {
                    latency: Duration::from_millis(1),
                });
                i
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn hashing_keeps_a_key_on_its_server_and_spreads_a_down_servers_keys() {
        for algorithm in [Algorithm::RingHash, Algorithm::Maglev] {
            let p = Pool::new(algorithm, specs(&[(1, false); 4]), PoolOptions::default());
            let before = by_key(&p, 4000);
            assert_eq!(
                before,
                by_key(&p, 4000),
                "{algorithm:?}: the same key, the same server"
            );
            let mut shares = [0usize; 4];
            for &i in &before {
                shares[i] += 1;
            }
            assert!(shares.iter().all(|&c| c > 700), "{algorithm:?}: {shares:?}");
            // server 2 fails its health checks: its keys go to the others, spread
            p.report_health_check(2, false);
            p.report_health_check(2, false);
            let during = by_key(&p, 4000);
            let mut went = [0usize; 4];
            let mut others_moved = 0;
            for (b, d) in before.iter().zip(&during) {
                assert_ne!(*d, 2);
                if *b == 2 {
                    went[*d] += 1;
                } else if b != d {
                    others_moved += 1;
                }
            }
            assert!(
                went.iter().filter(|&&c| c > 0).count() == 3,
                "{algorithm:?}: spread over the rest: {went:?}"
            );
            assert!(
                others_moved < 4000 / 20,
                "{algorithm:?}: {others_moved} others moved"
            );
            // back: every key on its first server again
            p.report_health_check(2, true);
            p.report_health_check(2, true);
            assert_eq!(before, by_key(&p, 4000), "{algorithm:?}");
            // a retry skips the server tried, and the next one is the key's too
            let key = hash::hash_key(b"client-7");
            let first = p
                .pick_for(
                    &[],
                    Affinity {
                        key: Some(key),
                        sticky: None,
                    },
                )
                .unwrap()
                .index();
            let second = p
                .pick_for(
                    &[first],
                    Affinity {
                        key: Some(key),
                        sticky: None,
                    },
                )
                .unwrap()
                .index();
            assert_ne!(first, second);
            let again = p
                .pick_for(
                    &[first],
                    Affinity {
                        key: Some(key),
                        sticky: None,
                    },
                )
                .unwrap()
                .index();
            assert_eq!(second, again);
            // no key: round robin
            assert_eq!(count(&p, 8), vec![2, 2, 2, 2], "{algorithm:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sticky_client_stays_while_its_server_is_up() {
        let p = Pool::new(
            Algorithm::RoundRobin,
            specs(&[(1, false); 3]),
            PoolOptions::default(),
        );
        let id = p.sticky_value(1).to_string();
        assert_eq!(p.sticky_index(&id), Some(1));
        assert_eq!(p.sticky_index("0000000000000000"), None);
        let stuck = Affinity {
            key: None,
            sticky: Some(1),
        };
        for _ in 0..10 {
            assert_eq!(p.pick_for(&[], stuck).unwrap().index(), 1);
        }
        // down: balanced as any other request, never to it
        p.report_health_check(1, false);
        p.report_health_check(1, false);
        let picked: Vec<usize> = (0..10)
            .map(|_| p.pick_for(&[], stuck).unwrap().index())
            .collect();
        assert!(picked.iter().all(|&i| i != 1) && picked.contains(&0) && picked.contains(&2));
        // tried already (a retry): elsewhere too
        p.report_health_check(1, true);
        p.report_health_check(1, true);
        assert_ne!(p.pick_for(&[1], stuck).unwrap().index(), 1);
        assert_eq!(p.pick_for(&[], stuck).unwrap().index(), 1);
    }

    proptest::proptest! {
        /// Least connections never picks a busier server (per weight) when an idler one exists.
        #[test]
        fn least_connections_never_picks_busier(held in proptest::collection::vec(0usize..6, 2..6), weights in proptest::collection::vec(1u32..4, 6)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let _g = rt.enter();
            let n = held.len();
            let pool = Pool::new(Algorithm::LeastConnections, (0..n).map(|i| ServerSpec { id: i.to_string(), weight: weights[i], backup: false }).collect(), PoolOptions::default());
            // load each server i with held[i] in-flight requests by excluding the others
            let mut keep = Vec::new();
            for (i, &h) in held.iter().enumerate() {
                let others: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                for _ in 0..h { keep.push(pool.pick(&others).unwrap()); }
            }
            let pick = pool.pick(&[]).unwrap();
            let chosen = pick.index();
            let load = |i: usize| held[i] as f64 / weights[i] as f64;
            for i in 0..n {
                proptest::prop_assert!(load(chosen) <= load(i) + 1e-9, "picked {} (load {}) over {} (load {})", chosen, load(chosen), i, load(i));
            }
        }
    }
}
