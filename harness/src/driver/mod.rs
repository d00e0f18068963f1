//! The step interpreter: runs a case's steps on real sockets.
//!
//! It owns the client, server and listener sockets, performs each step's
//! calls (see [`calls`]), records what every call returned and how long it
//! took, and after every step drains the capture and takes a sock_diag
//! snapshot. Waits are on observable events (a TCP state, readability) and
//! always bounded. At the end it waits, bounded, for transient TCP states to
//! resolve, and takes the final snapshot. It never judges a result.

pub mod calls;
pub mod pattern;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub use calls::{CallResult, StreamLog};

use crate::capture::Capture;
use crate::fault::{FaultRecord, Firewall};
use crate::observe::{Ends, Observer, SockEntry, Timeline};
use crate::scenario::{Action, Actor, Case, Family, Step, WaitFor};
use crate::tcp::Side;

/// The port the listener binds. Each case has its own namespace, so a fixed
/// port never collides and keeps captures easy to read.
pub const SERVER_PORT: u16 = 9000;

/// One step as it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepRecord {
    /// Line in the scenario file (null for the implicit connection setup).
    pub line: Option<usize>,
    /// client | server | listener; null for sleep and join.
    pub actor: Option<String>,
    /// The step as written.
    pub call: String,
    pub label: Option<String>,
    pub background: bool,
    /// Milliseconds since the case started, when the call began.
    pub start_ms: f64,
    /// How long the call took (for bg steps: until it returned, not until joined).
    pub duration_ms: f64,
    /// What the call returned.
    #[serde(flatten)]
    pub result: CallResult,
}

/// Per-direction application-level accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub written: u64,
    pub read: u64,
    pub corrupted: u64,
}

/// What the driver observed.
#[derive(Debug)]
pub struct DriverOutput {
    pub steps: Vec<StepRecord>,
    pub ends: Ends,
    pub client_to_server: FlowCounts,
    pub server_to_client: FlowCounts,
    pub timeline: Timeline,
    /// The kernel's table at the end of the case.
    pub final_snapshot: Vec<SockEntry>,
    /// Whether every transient state resolved within the settle bound.
    pub settled: bool,
    /// Fault rules the steps put in place, with what each matched.
    pub faults: Vec<FaultRecord>,
    /// Problems of the harness or of the scenario as written (not of the OS).
    pub problems: Vec<String>,
}

/// Sockets still open when the steps ended. Dropping this closes them; the
/// runner does so only after the capture has stopped, so implicit closes at
/// the end never appear as observations.
pub struct OpenSockets(#[allow(dead_code)] Vec<Socket>);

struct Pending {
    record_index: usize,
    rx: Receiver<(Instant, Instant, CallResult)>,
    deadline_hint: Duration,
}

struct Driver<'a> {
    case: &'a Case,
    t0: Instant,
    capture: &'a mut Capture,
    observer: &'a mut Observer,
    firewall: &'a mut Firewall,
    /// Fault rules added so far; the handle while the rule is in place.
    faults: Vec<(FaultRecord, Option<u64>)>,
    client: Option<Socket>,
    server: Option<Socket>,
    listener: Option<Socket>,
    /// Whether `server accept` ever succeeded (for clearer misuse errors).
    accepted: bool,
    ends: Ends,
    /// [client->server, server->client]
    logs: Arc<[Mutex<StreamLog>; 2]>,
    records: Vec<StepRecord>,
    pending: HashMap<String, Pending>,
    timeline: Timeline,
    last_snapshot: Vec<SockEntry>,
    problems: Vec<String>,
}

/// Runs every step of `case`. Call on the case thread, inside its namespace,
/// with the capture already running.
pub fn run(
    case: &Case,
    t0: Instant,
    capture: &mut Capture,
    observer: &mut Observer,
    firewall: &mut Firewall,
) -> (DriverOutput, OpenSockets) {
    let ip = match case.family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    let mut d = Driver {
        case,
        t0,
        capture,
        observer,
        firewall,
        faults: Vec::new(),
        client: None,
        server: None,
        listener: None,
        accepted: false,
        ends: Ends {
            client: None,
            server: SocketAddr::new(ip, SERVER_PORT),
        },
        logs: Arc::new([Mutex::new(StreamLog::new(1)), Mutex::new(StreamLog::new(2))]),
        records: Vec::new(),
        pending: HashMap::new(),
        timeline: Timeline::default(),
        last_snapshot: Vec::new(),
        problems: Vec::new(),
    };
    for step in &case.steps {
        d.step(step);
    }
    // bg steps nobody joined still finish before the case ends.
    let labels: Vec<String> = d.pending.keys().cloned().collect();
    for label in labels {
        d.join(&label, case.scenario.timeout);
    }
    let settled = d.settle(case.scenario.settle);
    d.count_faults(|_| true);
    let flows = |i: usize| {
        let log = d.logs[i].lock().expect("stream log");
        FlowCounts {
            written: log.written,
            read: log.read,
            corrupted: log.corrupted,
        }
    };
    let (c2s, s2c) = (flows(0), flows(1));
    let open = OpenSockets(
        [d.client.take(), d.server.take(), d.listener.take()]
            .into_iter()
            .flatten()
            .collect(),
    );
    let out = DriverOutput {
        steps: d.records,
        ends: d.ends,
        client_to_server: c2s,
        server_to_client: s2c,
        timeline: d.timeline,
        final_snapshot: d.last_snapshot,
        settled,
        faults: d.faults.into_iter().map(|(f, _)| f).collect(),
        problems: d.problems,
    };
    (out, open)
}

impl Driver<'_> {
    fn elapsed_ms(&self, at: Instant) -> f64 {
        calls::ms(at.saturating_duration_since(self.t0))
    }

    fn observe(&mut self) {
        if let Err(e) = self.capture.drain() {
            self.problem(format!("capture: {e}"));
        }
        match self.observer.snapshot() {
            Ok(snap) => {
                let t = self.elapsed_ms(Instant::now());
                self.timeline.record(t, &snap, &self.ends);
                self.last_snapshot = snap;
            }
            Err(e) => self.problem(e.to_string()),
        }
    }

    fn problem(&mut self, p: String) {
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    fn step(&mut self, step: &Step) {
        let bound = step.within.unwrap_or(self.case.scenario.timeout);
        let start = match step.since.as_deref() {
            None => Instant::now(),
            Some(label) => self.returned_at(label).unwrap_or_else(|| {
                // The parser rejects this; a hand-built case could not.
                self.problem(format!(
                    "`since {label}`: no earlier step labelled {label:?} returned"
                ));
                Instant::now()
            }),
        };
        let deadline = start + bound;
        let index = self.records.len();
        self.records.push(StepRecord {
            line: step.line,
            actor: step.actor.map(|a| a.name().to_string()),
            call: step.text.clone(),
            label: step.label.clone(),
            background: step.background,
            start_ms: self.elapsed_ms(start),
            duration_ms: 0.0,
            result: CallResult::default(),
        });
        if step.background {
            self.spawn(step, index, deadline, bound);
        } else {
            let result = self.perform(step, deadline);
            self.fill(index, start, Instant::now(), result);
        }
        self.observe();
    }

    /// When the earlier step labelled `label` returned.
    fn returned_at(&self, label: &str) -> Option<Instant> {
        let rec = self
            .records
            .iter()
            .find(|r| r.label.as_deref() == Some(label))?;
        Some(self.t0 + Duration::from_secs_f64((rec.start_ms + rec.duration_ms) / 1000.0))
    }

    fn fill(&mut self, index: usize, start: Instant, end: Instant, r: CallResult) {
        if let Some(why) = &r.harness_error {
            // Not an observation: the scenario's or the harness's problem.
            let rec = &self.records[index];
            let at = rec
                .line
                .map_or("implicit setup".to_string(), |l| format!("line {l}"));
            self.problem(format!("{at}: `{}`: {why}", rec.call));
        }
        let t0 = self.t0;
        let rec = &mut self.records[index];
        rec.start_ms = calls::ms(start.saturating_duration_since(t0));
        rec.duration_ms = calls::ms(end.saturating_duration_since(start));
        rec.result = r;
    }

    fn slot(&mut self, actor: Actor) -> &mut Option<Socket> {
        match actor {
            Actor::Client => &mut self.client,
            Actor::Server => &mut self.server,
            Actor::Listener => &mut self.listener,
        }
    }

    /// Takes the actor's socket out of the driver to close it: later steps
    /// see it closed.
    fn socket_to_close(&mut self, actor: Actor) -> Result<Socket, Box<CallResult>> {
        self.existing(actor)?;
        Ok(self.slot(actor).take().expect("existing() found it"))
    }

    /// Files a result for a step that ended before it could start.
    fn fill_now(&mut self, index: usize, r: CallResult) {
        let now = Instant::now();
        self.fill(index, now, now, r);
    }

    fn fd(&self, actor: Actor) -> Option<RawFd> {
        match actor {
            Actor::Client => self.client.as_ref(),
            Actor::Server => self.server.as_ref(),
            Actor::Listener => self.listener.as_ref(),
        }
        .map(|s| s.as_raw_fd())
    }

    /// The actor's socket, created on first use for client and listener
    /// (so options can be set before connect/listen).
    fn ensure_socket(&mut self, actor: Actor) -> Result<RawFd, Box<CallResult>> {
        if let Some(fd) = self.fd(actor) {
            return Ok(fd);
        }
        let slot = match actor {
            Actor::Client => &mut self.client,
            Actor::Listener => &mut self.listener,
            Actor::Server => {
                return Err(Box::new(CallResult::harness_error(
                    "the server has no socket yet: `server accept` first",
                )));
            }
        };
        let domain = match self.case.family {
            Family::Ipv4 => Domain::IPV4,
            Family::Ipv6 => Domain::IPV6,
        };
        match Socket::new(domain, Type::STREAM, Some(Protocol::TCP)) {
            Ok(s) => {
                let fd = s.as_raw_fd();
                *slot = Some(s);
                Ok(fd)
            }
            Err(e) => Err(Box::new(io_result(&e))),
        }
    }

    fn existing(&self, actor: Actor) -> Result<RawFd, Box<CallResult>> {
        self.fd(actor).ok_or_else(|| {
            Box::new(CallResult::harness_error(match (actor, self.accepted) {
                (Actor::Server, false) => {
                    "the server has no socket yet: `server accept` first".to_string()
                }
                (Actor::Client, _) if self.ends.client.is_none() => {
                    "the client has no connected socket: `client connect` first".to_string()
                }
                _ => format!("the {actor} has no open socket: it was already closed"),
            }))
        })
    }

    fn perform(&mut self, step: &Step, deadline: Instant) -> CallResult {
        let actor = step.actor;
        let result = (|| -> Result<CallResult, Box<CallResult>> {
            Ok(match (&step.action, actor) {
                (Action::Sleep(d), _) => {
                    std::thread::sleep(*d);
                    CallResult {
                        ret: Some(0),
                        ..Default::default()
                    }
                }
                (Action::Join(label), _) => {
                    let bound = deadline.saturating_duration_since(Instant::now());
                    self.join(label, bound)
                }
                (Action::Fault(rule), _) => match self.firewall.add(rule, SERVER_PORT) {
                    Ok((handle, native)) => {
                        let record = FaultRecord {
                            line: step.line,
                            label: step.label.clone(),
                            rule: rule.to_string(),
                            native,
                            matched: None,
                        };
                        self.faults.push((record, Some(handle)));
                        CallResult {
                            ret: Some(0),
                            ..Default::default()
                        }
                    }
                    Err(e) => CallResult::harness_error(e.to_string()),
                },
                (Action::Heal(label), _) => self.heal(label.as_deref()),
                (_, None) => unreachable!("only sleep, join and faults have no actor"),
                (Action::Listen { backlog }, Some(a)) => {
                    let fd = self.ensure_socket(a)?;
                    let sock = self.listener.as_ref().expect("listener created");
                    debug_assert_eq!(sock.as_raw_fd(), fd);
                    match sock
                        .bind(&SockAddr::from(self.ends.server))
                        .and_then(|_| sock.listen(*backlog))
                    {
                        Ok(()) => CallResult {
                            ret: Some(0),
                            ..Default::default()
                        },
                        Err(e) => io_result(&e),
                    }
                }
                (Action::Bind(port), Some(a)) => {
                    self.ensure_socket(a)?;
                    let sock = self.client.as_ref().expect("bind is a client step");
                    let addr = SocketAddr::new(self.ends.server.ip(), *port);
                    match sock.bind(&SockAddr::from(addr)) {
                        Ok(()) => CallResult {
                            ret: Some(0),
                            ..Default::default()
                        },
                        Err(e) => io_result(&e),
                    }
                }
                (Action::Connect, Some(a)) => {
                    let fd = self.ensure_socket(a)?;
                    self.connect(fd, deadline)
                }
                (Action::Accept, Some(_)) => {
                    let lfd = self.fd(Actor::Listener).ok_or_else(|| {
                        CallResult::harness_error("no listener: `listener listen` first")
                    })?;
                    if !calls::is_nonblocking(lfd) {
                        let ready = calls::wait_ready(lfd, libc::POLLIN, deadline);
                        if ready.timed_out || ready.errno.is_some() {
                            return Ok(ready);
                        }
                    }
                    let listener = self.listener.as_ref().expect("listener exists");
                    match listener.accept() {
                        Ok((sock, _peer)) => {
                            let fd = sock.as_raw_fd();
                            self.server = Some(sock);
                            self.accepted = true;
                            CallResult {
                                ret: Some(fd.into()),
                                ..Default::default()
                            }
                        }
                        Err(e) => io_result(&e),
                    }
                }
                (Action::Wait(WaitFor::State(want)), Some(a)) => {
                    self.wait_state(a, *want, deadline)
                }
                (Action::SetOption(opt), Some(a)) => {
                    let fd = self.ensure_socket(a)?;
                    calls::setsockopt(fd, *opt)
                }
                (Action::Close, Some(a)) => calls::close(self.socket_to_close(a)?.into_raw_fd()),
                (action, Some(a)) => {
                    let fd = self.existing(a)?;
                    fd_call(fd, action, a, &self.logs, deadline)
                }
            })
        })();
        result.unwrap_or_else(|e| *e)
    }

    /// Reads the counters of the rules in place that `which` selects into
    /// their records. Returns how many segments those rules matched.
    fn count_faults(&mut self, which: impl Fn(&FaultRecord) -> bool) -> Option<u64> {
        if !self.faults.iter().any(|(f, h)| h.is_some() && which(f)) {
            return Some(0);
        }
        let counters = match self.firewall.counters() {
            Ok(c) => c,
            Err(e) => {
                self.problem(e.to_string());
                return None;
            }
        };
        let mut total = Some(0);
        for (record, handle) in &mut self.faults {
            if let Some(h) = handle.filter(|_| which(record)) {
                record.matched = counters.get(&h).copied();
                total = total.zip(record.matched).map(|(a, b)| a + b);
            }
        }
        total
    }

    /// `heal [LABEL]`: removes one fault rule or all; the call's value is
    /// how many segments the removed rules matched.
    fn heal(&mut self, label: Option<&str>) -> CallResult {
        let which = |f: &FaultRecord| label.is_none() || f.label.as_deref() == label;
        let matched = self.count_faults(which);
        for i in 0..self.faults.len() {
            let (record, handle) = &mut self.faults[i];
            if let Some(h) = handle.filter(|_| which(record)) {
                *handle = None;
                if let Err(e) = self.firewall.remove(h) {
                    return CallResult::harness_error(e.to_string());
                }
            }
        }
        CallResult {
            ret: Some(0),
            value: matched.map(|m| m as i64),
            ..Default::default()
        }
    }

    fn connect(&mut self, fd: RawFd, deadline: Instant) -> CallResult {
        let sock = self.client.as_ref().expect("client created");
        let mut r = match sock.connect(&SockAddr::from(self.ends.server)) {
            Ok(()) => CallResult {
                ret: Some(0),
                ..Default::default()
            },
            Err(e) => io_result(&e),
        };
        if r.errno.as_deref() == Some("EINPROGRESS") {
            // Non-blocking connect: wait (bounded) for the handshake's outcome.
            let ready = calls::wait_ready(fd, libc::POLLOUT, deadline);
            let so_error = sock.take_error().ok().flatten();
            r.note = Some(match (ready.timed_out, so_error) {
                (true, _) => "handshake did not finish before the deadline".into(),
                (false, Some(e)) => format!(
                    "connect failed later: SO_ERROR {}",
                    io_result(&e).errno.unwrap_or_default()
                ),
                (false, None) => "connected".into(),
            });
        }
        if let Ok(local) = sock.local_addr() {
            if let Some(addr) = local.as_socket() {
                if addr.port() != 0 {
                    self.ends.client = Some(addr);
                }
            }
        }
        r
    }

    fn wait_state(
        &mut self,
        actor: Actor,
        want: crate::tcp::TcpState,
        deadline: Instant,
    ) -> CallResult {
        let mut backoff = Backoff::new();
        loop {
            self.observe();
            let entry = match actor {
                Actor::Client => self.ends.find(&self.last_snapshot, Side::Client),
                Actor::Server => self.ends.find(&self.last_snapshot, Side::Server),
                Actor::Listener => self.ends.find_listener(&self.last_snapshot),
            };
            let now = entry.map(|e| e.state);
            // A socket gone from the table is CLOSED for this purpose.
            if now == Some(want) || (now.is_none() && want == crate::tcp::TcpState::Closed) {
                return CallResult {
                    ret: Some(0),
                    ..Default::default()
                };
            }
            if Instant::now() >= deadline {
                let seen = now.map_or("not in the kernel's table".to_string(), |s| s.to_string());
                return CallResult {
                    timed_out: true,
                    note: Some(format!("still {seen}")),
                    ..Default::default()
                };
            }
            backoff.sleep(deadline);
        }
    }

    fn spawn(&mut self, step: &Step, index: usize, deadline: Instant, bound: Duration) {
        let actor = step.actor.expect("bg steps have an actor");
        let label = step.label.clone().expect("bg steps have a label");
        let is_close = step.action == Action::Close;
        let fd = if is_close {
            self.socket_to_close(actor).map(IntoRawFd::into_raw_fd)
        } else {
            self.existing(actor)
        };
        let fd = match fd {
            Ok(fd) => fd,
            Err(r) => return self.fill_now(index, *r),
        };
        let (tx, rx) = mpsc::channel();
        let action = step.action.clone();
        let logs = Arc::clone(&self.logs);
        let spawned = std::thread::Builder::new()
            .name(format!("bg-{label}"))
            .spawn(move || {
                let start = Instant::now();
                let r = fd_call(fd, &action, actor, &logs, deadline);
                let _ = tx.send((start, Instant::now(), r));
            });
        match spawned {
            Ok(_) => {
                let pending = Pending {
                    record_index: index,
                    rx,
                    deadline_hint: bound,
                };
                self.pending.insert(label, pending);
            }
            Err(e) => {
                if is_close {
                    // Not closed after all: give the socket back, so it is
                    // closed with the other leftovers once the capture stops.
                    // SAFETY: fd came from into_raw_fd above and nothing else owns it.
                    *self.slot(actor) = Some(unsafe { Socket::from_raw_fd(fd) });
                }
                self.fill_now(
                    index,
                    CallResult::harness_error(format!("cannot start a thread: {e}")),
                );
            }
        }
    }

    /// Waits for a bg step and files its result under the bg step's record.
    fn join(&mut self, label: &str, bound: Duration) -> CallResult {
        let Some(p) = self.pending.remove(label) else {
            return CallResult::harness_error(format!("{label:?} is not running"));
        };
        // The bg call carries its own deadline; allow it that plus a margin.
        let wait = bound.max(p.deadline_hint) + Duration::from_millis(500);
        match p.rx.recv_timeout(wait) {
            Ok((start, end, r)) => {
                self.fill(p.record_index, start, end, r);
                CallResult {
                    ret: Some(0),
                    ..Default::default()
                }
            }
            Err(_) => {
                self.problem(format!("bg step {label:?} did not return within {wait:?}"));
                CallResult {
                    timed_out: true,
                    note: Some("the bg call did not return".into()),
                    ..Default::default()
                }
            }
        }
    }

    /// Waits, bounded, until no side of the connection is in a transient
    /// state (a segment in flight), then keeps the final snapshot.
    fn settle(&mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let mut backoff = Backoff::new();
        loop {
            self.observe();
            let busy = self.last_snapshot.iter().any(|e| e.state.is_transient());
            if !busy {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            backoff.sleep(deadline);
        }
    }
}

/// Pauses between polls of the kernel's socket table: 50 us doubling to
/// 5 ms, so short waits resolve fast and long ones cost little.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_micros(50))
    }

    /// Sleeps for the next pause, never past `deadline`.
    fn sleep(&mut self, deadline: Instant) {
        std::thread::sleep(
            self.0
                .min(deadline.saturating_duration_since(Instant::now())),
        );
        self.0 = (self.0 * 2).min(Duration::from_millis(5));
    }
}

/// Calls that need only the fd; used for foreground and bg steps alike.
fn fd_call(
    fd: RawFd,
    action: &Action,
    actor: Actor,
    logs: &[Mutex<StreamLog>; 2],
    deadline: Instant,
) -> CallResult {
    let (outgoing, incoming) = match actor {
        Actor::Server => (&logs[1], &logs[0]),
        _ => (&logs[0], &logs[1]),
    };
    match action {
        Action::Write {
            payload,
            nosignal,
            dontwait,
        } => calls::write(fd, payload, *nosignal, *dontwait, outgoing, deadline),
        Action::Read { amount, dontwait } => {
            calls::read(fd, *amount, *dontwait, incoming, deadline)
        }
        Action::Shutdown(how) => calls::shutdown(fd, *how),
        Action::Close => calls::close(fd),
        Action::SetOption(opt) => calls::setsockopt(fd, *opt),
        Action::Ioctl(q) => calls::ioctl(fd, *q),
        Action::Disconnect => calls::disconnect(fd),
        Action::Wait(WaitFor::Readable) => {
            calls::wait_ready(fd, libc::POLLIN | libc::POLLRDHUP, deadline)
        }
        Action::Wait(WaitFor::Writable) => calls::wait_ready(fd, libc::POLLOUT, deadline),
        other => CallResult::harness_error(format!("{other:?} cannot run here")),
    }
}

fn io_result(e: &std::io::Error) -> CallResult {
    match e.raw_os_error() {
        Some(code) => CallResult::failed(Errno::from_raw(code)),
        None => CallResult::harness_error(e.to_string()),
    }
}
