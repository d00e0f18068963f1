//! The step interpreter (see the module above): Linux's, for it drives
//! hosts in network namespaces.

#[path = "group.rs"]
mod group;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use super::calls::{self, CallResult, FdCall, StreamLog};
use super::endpoint::{Endpoint, Handle, Sock};
use super::program::{ProgramRecord, Running};
use super::{ConnectionApp, DriverOutput, FlowCounts, SERVER_PORT, StepRecord};
use crate::analyze::Connection;
use crate::capture::Capture;
use crate::fault::{FaultRecord, Firewall};
use crate::observe::{self, Destroyed, Ends, Observer, Snapshot, SockEntry, Timeline};
use crate::sandbox::Hosts;
use crate::scenario::{
    Actor, Call, Case, Control, Program, Role, Step, StepKind, WaitFor, WireEvent,
};
use crate::tcp::{PerSide, Side, TcpState};
use crate::wire::{self, Frame};

/// Sockets still open when the steps ended. Dropping this closes them; the
/// runner does so only after the capture has stopped, so implicit closes at
/// the end never appear as observations.
pub struct OpenSockets(#[allow(dead_code)] Vec<Sock>);

struct Pending {
    record_index: usize,
    rx: Receiver<(Instant, Instant, CallResult)>,
    deadline_hint: Duration,
}

/// The stages the driver feeds while it runs, all inside the case's
/// namespace.
pub struct Instruments<'a> {
    /// Where each side's sockets are made.
    pub hosts: &'a Hosts,
    /// Where each side's socket calls go.
    pub endpoints: &'a PerSide<Endpoint>,
    pub capture: &'a mut Capture,
    pub observer: &'a mut Observer,
    pub firewall: &'a mut Firewall,
}

struct Driver<'a, 'i> {
    case: &'a Case,
    t0: Instant,
    io: &'a mut Instruments<'i>,
    /// Fault rules added so far; the handle while the rule is in place.
    faults: Vec<(FaultRecord, Option<u64>)>,
    /// The same rules, with what they match and when they were in place.
    placed: Vec<crate::fault::Placed>,
    sockets: BTreeMap<Actor, Sock>,
    /// Actors whose socket the application closed.
    closed: Vec<Actor>,
    /// Whether connection 1's sides ever had a descriptor.
    held: PerSide<bool>,
    /// Whether `server accept` ever succeeded (for clearer misuse errors).
    accepted: bool,
    /// The errno of the last `server accept` that failed, while no accept
    /// has succeeded: the server's steps then cannot be made, an outcome
    /// of the stack, not a mistake of the scenario.
    accept_failed: Option<crate::tcp::ErrnoName>,
    ends: Ends,
    conns: Conns,
    /// Server sockets a newer connection of the same number displaced;
    /// still open, closed with the other leftovers after the capture.
    displaced: Vec<Sock>,
    records: Vec<StepRecord>,
    pending: HashMap<String, Pending>,
    /// The capture time of the segment each labelled `wait wire` segment
    /// step found (µs since the epoch).
    segment_times: HashMap<String, i64>,
    timeline: Timeline,
    last_snapshot: Snapshot,
    last_snapshot_ms: f64,
    /// The connection under test as the wire shows it so far.
    wire: WireWatch,
    destroyed: Destroyed,
    /// The program on one end while it runs, then what became of it.
    program: Option<Running>,
    program_record: Option<ProgramRecord>,
    problems: Vec<String>,
}

/// What the driver knows of each connection, by its number (client#N's;
/// server#N is the socket `accept` returned for that connection).
#[derive(Default)]
struct Conns {
    /// The client addresses each number connected from (a reconnect adds
    /// one), in order.
    addrs: BTreeMap<u32, Vec<SocketAddr>>,
    by_addr: HashMap<SocketAddr, u32>,
    /// Application byte counts, by writer: client->server, server->client.
    logs: BTreeMap<u32, Arc<PerSide<Mutex<StreamLog>>>>,
    /// The side a program is, whose streams cannot be checked.
    program: Option<Side>,
}

impl Conns {
    /// Numbers of every connection a client made.
    fn numbers(&self) -> Vec<u32> {
        self.addrs.keys().copied().collect()
    }

    fn logs(&mut self, index: u32) -> Arc<PerSide<Mutex<StreamLog>>> {
        let program = self.program;
        Arc::clone(self.logs.entry(index).or_insert_with(|| {
            // Seeds tell the two directions' patterns apart.
            let logs = PerSide::new(Mutex::new(StreamLog::new(1)), Mutex::new(StreamLog::new(2)));
            if let Some(side) = program {
                logs[side].lock().expect("stream log").written_by_program();
            }
            Arc::new(logs)
        }))
    }

    fn connected(&mut self, index: u32, addr: SocketAddr) {
        let list = self.addrs.entry(index).or_default();
        if !list.contains(&addr) {
            list.push(addr);
        }
        self.by_addr.insert(addr, index);
    }

    /// The number of the connection a peer address belongs to.
    fn number_of(&self, peer: SocketAddr) -> Option<u32> {
        self.by_addr.get(&peer).copied()
    }

    /// The client address a number connected from last.
    fn latest(&self, index: u32) -> Option<SocketAddr> {
        self.addrs.get(&index).and_then(|a| a.last().copied())
    }
}

/// The connection under test, folded in from the capture as it grows.
#[derive(Default)]
struct WireWatch {
    conn: Option<Connection>,
    /// Packets of the capture already folded in.
    seen: usize,
    /// Connection 1's segments so far, in capture order: its sender, flags,
    /// payload length and capture time (`wait wire c:R`).
    marks: Vec<(Side, crate::tcp::Flags, u32, i64)>,
    /// Marks already matched by a `wait wire` segment step.
    matched: usize,
}

impl WireWatch {
    /// Folds in the packets captured since the last call (once the client's
    /// address is known, from the start of the capture).
    fn update(&mut self, capture: &Capture, ends: &Ends) {
        let Some(pair) = ends.pair() else { return };
        if self.conn.is_none() {
            let segments: Vec<_> = capture
                .packets()
                .iter()
                .enumerate()
                .filter_map(|(i, p)| match wire::parse_frame(capture.linktype(), i, p) {
                    Frame::Tcp(s) => Some(s),
                    _ => None,
                })
                .collect();
            // Not yet on the wire: try again after the next drain.
            let Some(pair) = crate::analyze::resolve_ends(pair, &segments) else {
                return;
            };
            self.conn = Some(Connection::new(pair, 0, false));
            self.seen = 0;
        }
        let conn = self.conn.as_mut().expect("set above");
        for (i, p) in capture.packets().iter().enumerate().skip(self.seen) {
            if let Frame::Tcp(seg) = wire::parse_frame(capture.linktype(), i, p) {
                if let Some(side) = conn.side_of(&seg) {
                    conn.push(&seg, side);
                    self.marks.push((side, seg.flags, seg.len, seg.ts_us));
                }
            }
        }
        self.seen = capture.packets().len();
    }
}

/// The listening port of a case whose server is a remote machine: one
/// machine for every case, so the port of the case before may still be
/// held by that case's TIME-WAIT or orphans. Each case takes the next of a
/// thousand ports from [`SERVER_PORT`] (a catalogue's worth, far more than
/// TIME-WAIT outlives).
fn remote_server_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    SERVER_PORT + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 1000
}

/// Runs every step of `case`. Call on the case thread, inside its namespace,
/// with the capture already running.
pub fn run(case: &Case, t0: Instant, io: &mut Instruments) -> (DriverOutput, OpenSockets) {
    let ip = io.hosts.address(Side::Server, case.family);
    let port = match &case.program {
        Some(p) => p.port,
        None if !io.hosts.is_local(Side::Server) => remote_server_port(),
        None => SERVER_PORT,
    };
    let mut d = Driver {
        case,
        t0,
        io,
        faults: Vec::new(),
        placed: Vec::new(),
        sockets: BTreeMap::new(),
        closed: Vec::new(),
        held: PerSide::default(),
        accepted: false,
        accept_failed: None,
        ends: Ends {
            client: None,
            server: SocketAddr::new(ip, port),
            fds: PerSide::default(),
        },
        conns: Conns {
            program: case.program.as_ref().map(|p| p.side),
            ..Conns::default()
        },
        displaced: Vec::new(),
        records: Vec::new(),
        pending: HashMap::new(),
        segment_times: HashMap::new(),
        timeline: Timeline::default(),
        last_snapshot: Snapshot::default(),
        last_snapshot_ms: 0.0,
        wire: WireWatch::default(),
        destroyed: Destroyed::default(),
        program: None,
        program_record: None,
        problems: Vec::new(),
    };
    // A server program must be up and listening before the steps can use
    // it; a client program starts once the listener listens.
    let server_program = case.program.as_ref().filter(|p| p.side == Side::Server);
    let mut client_program = case.program.as_ref().filter(|p| p.side == Side::Client);
    let ready = server_program.is_none_or(|p| d.start_program(p));
    for (i, step) in case.steps.iter().enumerate() {
        if !ready {
            d.skip(
                i,
                step,
                "not run: the program on the server end never listened",
            );
            continue;
        }
        d.step(i, step);
        let listened = matches!(
            step.kind,
            StepKind::Socket {
                call: Call::Listen { .. },
                ..
            }
        );
        if let Some(p) = client_program.filter(|_| listened) {
            d.start_program(p);
            client_program = None;
        }
    }
    if let Some(p) = client_program {
        d.problem(format!(
            "line {}: the client program never started: no step made the listener listen",
            p.line
        ));
    }
    // bg steps nobody joined still finish before the case ends.
    let labels: Vec<String> = d.pending.keys().cloned().collect();
    for label in labels {
        d.join(&label, case.scenario.timeout);
    }
    // A program still running is stopped now, so what its stack does as it
    // goes is part of the case; a client, whose work has an end, is given
    // its stop grace to exit by itself first.
    if let Some(p) = case.program.as_ref().filter(|p| p.side == Side::Client) {
        if let Some(running) = d.program.as_mut() {
            running.exit_within(p.stop_grace);
        }
    }
    d.stop_program();
    let settled = d.settle(case.scenario.settle);
    d.unread_at_end();
    d.count_faults(|_| true);
    let counts = |logs: &PerSide<Mutex<StreamLog>>| {
        PerSide::both(()).map(|side, ()| {
            let log = logs[side].lock().expect("stream log");
            FlowCounts {
                written: log.written,
                read: log.read,
                corrupted: log.corrupted,
            }
        })
    };
    let flows = counts(&d.conns.logs(1));
    let connections = d
        .conns
        .addrs
        .iter()
        .map(|(&index, clients)| {
            let flows = d
                .conns
                .logs
                .get(&index)
                .map(|l| counts(l))
                .unwrap_or_default();
            let app = ConnectionApp {
                clients: clients.clone(),
                flows,
            };
            (index, app)
        })
        .collect();
    let closed = PerSide::both(()).map(|side, ()| {
        d.closed
            .iter()
            .any(|a| a.side() == Some(side) && a.index == 1)
    });
    let mut open: Vec<Sock> = std::mem::take(&mut d.sockets).into_values().collect();
    open.append(&mut d.displaced);
    let open = OpenSockets(open);
    let out = DriverOutput {
        steps: d.records,
        ends: d.ends,
        flows,
        connections,
        timeline: d.timeline,
        final_snapshot: d.last_snapshot,
        final_snapshot_ms: d.last_snapshot_ms,
        closed,
        held: d.held,
        settled,
        settle_bound: case.scenario.settle,
        faults: d.faults.into_iter().map(|(f, _)| f).collect(),
        placed: d.placed,
        program: d.program_record,
        destroyed: d.destroyed,
        problems: d.problems,
    };
    (out, open)
}

impl Driver<'_, '_> {
    fn elapsed_ms(&self, at: Instant) -> f64 {
        calls::ms(at.saturating_duration_since(self.t0))
    }

    /// The descriptors of connection 1's sides, as the driver holds them
    /// now (an agent's socket by the agent's own descriptor).
    fn sync_fds(&mut self) {
        let descriptor = |actor| self.handle(actor).map(|h| h.descriptor());
        self.ends.fds = PerSide::new(descriptor(Actor::CLIENT), descriptor(Actor::SERVER));
        for side in Side::BOTH {
            self.held[side] |= self.ends.fds[side].is_some();
        }
    }

    fn observe(&mut self) {
        self.sync_fds();
        if let Err(e) = self.io.capture.drain() {
            self.problem(format!("capture: {e}"));
        }
        self.wire.update(self.io.capture, &self.ends);
        let live: Vec<RawFd> = self
            .sockets
            .values()
            .filter_map(|s| s.handle().fd())
            .collect();
        // When the table was asked for: it is read as the request arrives
        // (an agent's answer may then wait on its way back, longer under
        // load), so a timer in it runs from about then.
        let mut asked = Instant::now();
        match self.snapshot(&live) {
            Ok(mut snap) => {
                // A sock_diag dump is not one atomic picture: a socket
                // moving from a full socket to its TIME-WAIT or FIN-WAIT-2
                // mini-socket can be in neither place the dump looks (seen
                // on 7.2: FIN-WAIT-1, "gone", FIN-WAIT-2 0.7 ms later). An
                // end the last snapshot had and this one lacks is looked
                // for again, twice at most, before it counts as gone.
                for _ in 0..2 {
                    if !self.ends.lost(&self.last_snapshot, &snap) {
                        break;
                    }
                    asked = Instant::now();
                    match self.snapshot(&live) {
                        Ok(again) => snap = again,
                        Err(_) => break,
                    }
                }
                let t = self.elapsed_ms(Instant::now());
                observe::record(&mut self.timeline, t, &snap, &self.ends);
                self.last_snapshot = snap;
                self.last_snapshot_ms = self.elapsed_ms(asked);
            }
            Err(e) => self.problem(e),
        }
        self.io
            .observer
            .destroyed(&mut self.destroyed, &self.last_snapshot, &self.ends);
    }

    /// The sockets the stack's state source sees now, with each agent's
    /// own (an agent reads its stack's table itself).
    fn snapshot(&mut self, live: &[RawFd]) -> Result<Snapshot, String> {
        let mut snap = self.io.observer.snapshot(live).map_err(|e| e.to_string())?;
        for side in Side::BOTH {
            let endpoint = &self.io.endpoints[side];
            if let Some(states) = endpoint.states(self.case.family, self.ends.server.port()) {
                snap.entries.extend(states?.into_iter().map(|e| SockEntry {
                    host: Some(side),
                    ..e
                }));
                let agent = endpoint.agent().expect("states come from an agent");
                snap.sees_orphans[side] = agent.hello().states.sees_orphans();
            }
        }
        Ok(snap)
    }

    fn problem(&mut self, p: String) {
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    fn step(&mut self, index: usize, step: &Step) {
        let bound = step.within.unwrap_or(self.case.scenario.timeout);
        let start = match step.since() {
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
        let record_index = self.records.len();
        self.records
            .push(self.record_of(index, step, start, CallResult::default()));
        match &step.kind {
            StepKind::Socket {
                actor,
                call,
                group: Some(group),
                ..
            } => {
                let result = self.group_call(*actor, *group, call, deadline);
                self.fill(record_index, start, Instant::now(), result);
            }
            StepKind::Socket {
                actor,
                call,
                background: true,
                ..
            } => self.spawn(*actor, call, step, record_index, deadline, bound),
            StepKind::Socket { actor, call, .. } => {
                let result = self
                    .socket_call(*actor, call, deadline)
                    .unwrap_or_else(|e| *e);
                self.fill(record_index, start, Instant::now(), result);
            }
            StepKind::Control(c) => {
                let result = self.control(c, step, deadline);
                self.fill(record_index, start, Instant::now(), result);
            }
        }
        self.observe();
    }

    /// Records a step that was not attempted, and why.
    fn skip(&mut self, index: usize, step: &Step, why: &str) {
        let r = self.record_of(index, step, Instant::now(), CallResult::harness_error(why));
        self.records.push(r);
    }

    /// The record of step `index`, begun at `start`, with `result` so far.
    fn record_of(
        &self,
        index: usize,
        step: &Step,
        start: Instant,
        result: CallResult,
    ) -> StepRecord {
        StepRecord {
            line: step.line,
            key: step.key(index),
            actor: step.actor(),
            verb: step.verb(),
            call: step.text.clone(),
            label: step.label.clone(),
            background: step.background(),
            start_ms: self.elapsed_ms(start),
            duration_ms: 0.0,
            result,
        }
    }

    /// When the earlier step labelled `label` returned.
    fn returned_at(&self, label: &str) -> Option<Instant> {
        let rec = self
            .records
            .iter()
            .find(|r| r.label.as_deref() == Some(label))?;
        Some(self.t0 + Duration::from_secs_f64((rec.start_ms + rec.duration_ms) / 1000.0))
    }

    fn fill(&mut self, index: usize, start: Instant, end: Instant, mut r: CallResult) {
        if let Some(why) = &r.harness_error {
            // Not an observation: the scenario's or the harness's problem.
            let rec = &self.records[index];
            let at = rec
                .line
                .map_or("implicit setup".to_string(), |l| format!("line {l}"));
            self.problem(format!("{at}: `{}`: {why}", rec.call));
        }
        if let Some(e @ ("EMFILE" | "ENFILE")) = r.errno.as_deref() {
            // The descriptor table is the harness's: a call that ran out of
            // it (accept, most likely) observed the harness, not the stack.
            let rec = &self.records[index];
            let at = rec
                .line
                .map_or("implicit setup".to_string(), |l| format!("line {l}"));
            let errno = if e == "EMFILE" {
                libc::EMFILE
            } else {
                libc::ENFILE
            };
            let remedy = crate::sandbox::descriptor_remedy(errno).unwrap_or_default();
            self.problem(format!("{at}: `{}`: {e} ({remedy})", rec.call));
        }
        let t0 = self.t0;
        // An agent timed the call where it ran; the rest of `end - start`
        // was the way to it and back.
        let took = match r.took_us.take() {
            Some(us) => Duration::from_micros(us),
            None => end.saturating_duration_since(start),
        };
        let rec = &mut self.records[index];
        rec.start_ms = calls::ms(start.saturating_duration_since(t0));
        rec.duration_ms = calls::ms(took);
        rec.result = r;
    }

    /// Files a result for a step that ended before it could start.
    fn fill_now(&mut self, index: usize, r: CallResult) {
        let now = Instant::now();
        self.fill(index, now, now, r);
    }

    fn control(&mut self, c: &Control, step: &Step, deadline: Instant) -> CallResult {
        match c {
            Control::Sleep(d) => {
                std::thread::sleep(*d);
                CallResult::ok(0)
            }
            Control::Join(label) => {
                let bound = deadline.saturating_duration_since(Instant::now());
                self.join(label, bound)
            }
            Control::Fault(rule) => match self.io.firewall.add(rule, self.ends.server.port()) {
                Ok((handle, native)) => {
                    let record = FaultRecord {
                        line: step.line,
                        key: step.key(self.records.len() - 1),
                        label: step.label.clone(),
                        rule: rule.to_string(),
                        native,
                        matched: None,
                    };
                    self.placed.push(crate::fault::Placed {
                        key: record.key.clone(),
                        rule: *rule,
                        from_ms: self.elapsed_ms(Instant::now()),
                        until_ms: None,
                    });
                    self.faults.push((record, Some(handle)));
                    CallResult::ok(0)
                }
                Err(e) => CallResult::harness_error(e.to_string()),
            },
            Control::Heal(label) => self.heal(label.as_deref()),
            Control::Stop(_) => match self.stop_program() {
                Some(r) => CallResult {
                    ret: Some(0),
                    value: r.exit_code.map(i64::from),
                    signal: r.signal.clone(),
                    note: r.ended.as_ref().map(|e| format!("the program {e}")),
                    ..Default::default()
                },
                None => CallResult::harness_error("the program had already been stopped"),
            },
            Control::WaitWire(event) => self.wait_wire(*event, deadline),
            Control::WaitSegment { pattern, since } => {
                self.wait_segment(*pattern, since.as_deref(), step.label.as_deref(), deadline)
            }
        }
    }

    /// `wait wire c:R [since LABEL]`: until the capture shows connection
    /// 1's next such segment after the last one a segment wait found. Its
    /// `value` is the segment's place in the trace (from 1); `since`
    /// another segment wait, its duration is the time between the two
    /// segments by the capture's clock (the harness's own timing is not in
    /// it).
    fn wait_segment(
        &mut self,
        pattern: crate::scenario::SegmentPattern,
        since: Option<&str>,
        label: Option<&str>,
        deadline: Instant,
    ) -> CallResult {
        let from = match since.map(|l| (l, self.segment_times.get(l).copied())) {
            None => None,
            Some((_, Some(t))) => Some(t),
            Some((l, None)) => {
                return CallResult::harness_error(format!(
                    "`since {l}`: step {l} is not a `wait wire` segment step that found its segment"
                ));
            }
        };
        self.observe_until(
            deadline,
            |d| {
                let w = &d.wire;
                let i = w.marks[w.matched..]
                    .iter()
                    .position(|(side, flags, len, _)| pattern.matches(*side, *flags, *len))
                    .map(|i| w.matched + i)?;
                d.wire.matched = i + 1;
                let ts_us = d.wire.marks[i].3;
                if let Some(l) = label {
                    d.segment_times.insert(l.to_string(), ts_us);
                }
                Some(CallResult {
                    value: i64::try_from(i + 1).ok(),
                    took_us: from.map(|f| u64::try_from(ts_us - f).unwrap_or(0)),
                    ..CallResult::ok(0)
                })
            },
            |_| "no such segment before the deadline".into(),
        )
    }

    /// `listener wait queued N`: until the listener's accept queue holds at
    /// least N connections; the `value` is how many it held then.
    fn wait_queued(&mut self, n: u32, deadline: Instant) -> CallResult {
        let queued = |d: &Self| d.ends.find_listener(&d.last_snapshot).map(|e| e.recv_queue);
        let mut r = self.observe_until(
            deadline,
            |d| {
                let q = queued(d).filter(|q| *q >= n)?;
                Some(CallResult {
                    value: Some(i64::from(q)),
                    ..CallResult::ok(0)
                })
            },
            |d| match queued(d) {
                Some(q) => format!("{q} queued"),
                None => "no listener in sight of the stack's state source".into(),
            },
        );
        if r.timed_out {
            r.value = queued(self).map(i64::from);
        }
        r
    }

    /// `A wait timer KIND`: until the stack shows that timer running on A's
    /// socket; the `value` is what is left of it then (ms).
    fn wait_timer(
        &mut self,
        actor: Actor,
        kind: crate::tcp::TimerKind,
        deadline: Instant,
    ) -> CallResult {
        self.observe_until(
            deadline,
            |d| {
                let e = d.entry_of(actor).filter(|e| e.timer == Some(kind))?;
                Some(CallResult {
                    value: e.timer_ms.map(i64::from),
                    ..CallResult::ok(0)
                })
            },
            |d| match d.entry_of(actor) {
                Some(e) => match e.timer {
                    Some(t) => format!("still {}, with its {} timer", e.state, t.name()),
                    None => format!("still {}, with no timer", e.state),
                },
                None => "still out of sight of the stack's state source".into(),
            },
        )
    }

    /// `wait wire closed|acked`: until the capture shows the event.
    fn wait_wire(&mut self, event: WireEvent, deadline: Instant) -> CallResult {
        self.observe_until(
            deadline,
            |d| {
                let seen = match (event, d.wire.conn.as_ref()) {
                    (_, None) => false,
                    (WireEvent::Closed, Some(c)) => c.closed_on_wire(),
                    (WireEvent::Acked, Some(c)) => {
                        let logs = d.conns.logs(1);
                        c.reset()
                            || (!c.in_flight()
                                && Side::BOTH.iter().all(|s| {
                                    c.acked(*s) >= logs[*s].lock().expect("stream log").written
                                }))
                    }
                };
                seen.then(|| CallResult::ok(0))
            },
            |_| {
                let what = match event {
                    WireEvent::Closed => "the close complete",
                    WireEvent::Acked => "everything written acknowledged",
                };
                format!("the wire did not show {what}")
            },
        )
    }

    /// What connection 1's sides hold unread as the case ends. A socket
    /// the application still holds is asked (SIOCINQ, which does not count
    /// a FIN); one it closed is announced when the stack destroys it, and a
    /// notice still on its way (they come from a kernel work queue) is
    /// waited for, bounded, for a socket gone from the stack's table.
    fn unread_at_end(&mut self) {
        for side in Side::BOTH {
            let actor = match side {
                Side::Client => Actor::CLIENT,
                Side::Server => Actor::SERVER,
            };
            if let Some(h) = self.handle(actor) {
                let logs = self.conns.logs(1);
                let r = fd_call(
                    &h,
                    &Call::Ioctl(crate::scenario::IoctlQuery::InQueue),
                    actor,
                    &logs,
                    Instant::now() + Duration::from_secs(1),
                );
                self.destroyed.held[side] = r.value.and_then(|v| u32::try_from(v).ok());
            }
        }
        let due = |d: &Self, side: Side| {
            d.destroyed.watched[side]
                && d.destroyed.held[side].is_none()
                && d.ends.find(&d.last_snapshot, side).is_none()
                && d.destroyed.notice(&d.ends, side).is_none()
                && d.timeline[side]
                    .iter()
                    .any(|c| !matches!(c.state, TcpState::SynReceived | TcpState::Closed))
        };
        let deadline = Instant::now() + Duration::from_millis(100);
        while Side::BOTH.iter().any(|&s| due(self, s)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            self.io
                .observer
                .destroyed(&mut self.destroyed, &self.last_snapshot, &self.ends);
        }
    }

    /// Observes, with a backoff, until `found` has the step's result, or
    /// the deadline passes: then the step timed out, and `missed` says what
    /// was seen instead.
    fn observe_until(
        &mut self,
        deadline: Instant,
        mut found: impl FnMut(&mut Self) -> Option<CallResult>,
        missed: impl FnOnce(&Self) -> String,
    ) -> CallResult {
        let mut backoff = Backoff::new();
        loop {
            self.observe();
            if let Some(r) = found(self) {
                return r;
            }
            if Instant::now() >= deadline {
                return CallResult {
                    timed_out: true,
                    note: Some(missed(self)),
                    ..Default::default()
                };
            }
            backoff.sleep(deadline);
        }
    }

    /// The stack's entry for the actor's socket (its side's, or the
    /// listener's) in the last snapshot.
    fn entry_of(&self, actor: Actor) -> Option<&SockEntry> {
        match actor.side() {
            Some(side) => self.ends.find(&self.last_snapshot, side),
            None => self.ends.find_listener(&self.last_snapshot),
        }
    }

    /// The actor's descriptor, if its socket is in this process.
    fn fd(&self, actor: Actor) -> Option<RawFd> {
        self.handle(actor).and_then(|h| h.fd())
    }

    fn handle(&self, actor: Actor) -> Option<Handle> {
        self.sockets.get(&actor).map(Sock::handle)
    }

    /// The endpoint of the host `actor` lives on.
    fn endpoint(&self, actor: Actor) -> &Endpoint {
        &self.io.endpoints[actor.host()]
    }

    /// The actor's socket, created on first use for client and listener
    /// (so options can be set before connect/listen), and again after a
    /// close (a reconnect, a listener rebinding its port).
    /// The server's socket comes from `server accept`, or from `server
    /// bind` (see [`Self::open_socket`]).
    fn ensure_socket(&mut self, actor: Actor) -> Result<Handle, Box<CallResult>> {
        if actor.role == Role::Server && self.handle(actor).is_none() {
            return Err(self.missing(actor));
        }
        self.open_socket(actor)
    }

    /// The actor's open socket, or a new one on its host.
    fn open_socket(&mut self, actor: Actor) -> Result<Handle, Box<CallResult>> {
        if let Some(h) = self.handle(actor) {
            return Ok(h);
        }
        let made = self
            .endpoint(actor)
            .socket(self.io.hosts, actor.host(), self.case.family);
        match made {
            Ok(s) => {
                let h = s.handle();
                self.sockets.insert(actor, s);
                Ok(h)
            }
            // The harness makes the socket, not a step: its failure
            // (EMFILE, ENOBUFS) is the harness's, not an observation.
            Err(e) => Err(Box::new(CallResult::harness_error(format!(
                "creating the {actor}'s socket: {e}"
            )))),
        }
    }

    /// The actor's open socket.
    fn existing(&self, actor: Actor) -> Result<Handle, Box<CallResult>> {
        self.handle(actor).ok_or_else(|| self.missing(actor))
    }

    /// Why `actor` has no socket to call on.
    fn missing(&self, actor: Actor) -> Box<CallResult> {
        if let (Role::Server, false, Some(errno)) = (actor.role, self.accepted, &self.accept_failed)
        {
            return Box::new(CallResult {
                unobserved: Some(format!(
                    "the server has no socket: its accept failed ({errno}), so this step was not made"
                )),
                ..Default::default()
            });
        }
        Box::new(CallResult::harness_error(
            match (actor.role, self.accepted) {
                _ if self.closed.contains(&actor) => {
                    format!("the {actor} has no open socket: it was already closed")
                }
                (Role::Server, false) => {
                    "the server has no socket yet: `server accept` first".to_string()
                }
                (Role::Client, _) if self.ends.client.is_none() => {
                    "the client has no connected socket: `client connect` first".to_string()
                }
                _ => format!("the {actor} has no open socket"),
            },
        ))
    }

    /// Takes the actor's socket out of the driver to close it: later steps
    /// see it closed.
    fn socket_to_close(&mut self, actor: Actor) -> Result<Sock, Box<CallResult>> {
        let sock = self
            .sockets
            .remove(&actor)
            .ok_or_else(|| self.missing(actor))?;
        self.closed.push(actor);
        Ok(sock)
    }

    fn socket_call(
        &mut self,
        actor: Actor,
        call: &Call,
        deadline: Instant,
    ) -> Result<CallResult, Box<CallResult>> {
        Ok(match call {
            // Bound already by a `listener bind` step, or bound here.
            Call::Listen { backlog } => self
                .ensure_socket(actor)?
                .listen(self.ends.server, *backlog),
            Call::Bind(port) => {
                // `server bind` makes a server socket of its own.
                let h = self.open_socket(actor)?;
                let addr = match port {
                    Some(p) => {
                        SocketAddr::new(self.io.hosts.address(actor.host(), self.case.family), *p)
                    }
                    None => self.ends.server,
                };
                h.bind(addr)
            }
            Call::Connect if actor.role == Role::Server => {
                let h = self.existing(actor)?;
                self.connect_to_client(actor, &h, deadline)
            }
            Call::Connect => {
                let h = self.ensure_socket(actor)?;
                self.connect(actor, &h, deadline)
            }
            Call::Accept => self.accept(actor, deadline)?,
            Call::Wait {
                what: WaitFor::State(want),
                optional,
                ..
            } => {
                if *optional && self.out_of_sight(actor) {
                    return Ok(CallResult {
                        unobserved: Some(format!(
                            "{want} of the {actor}'s closed socket is out of sight of this stack's state source ({}); the optional wait was skipped",
                            self.io.observer.source().name()
                        )),
                        ..Default::default()
                    });
                }
                self.wait_state(actor, *want, deadline)
            }
            Call::Wait {
                what: WaitFor::Timer(kind),
                ..
            } => self.wait_timer(actor, *kind, deadline),
            Call::Wait {
                what: WaitFor::Queued(n),
                ..
            } => self.wait_queued(*n, deadline),
            Call::SetOption(opt) => {
                // A server option in a case with no listener socket is for
                // a server socket of its own (the scenario's check allows it
                // only then); with one, the server's socket is accept's,
                // and a failed accept leaves none.
                let h = if actor.role == Role::Server && self.handle(Actor::LISTENER).is_none() {
                    self.open_socket(actor)?
                } else {
                    self.ensure_socket(actor)?
                };
                let logs = self.conns.logs(actor.index);
                h.call(
                    &FdCall::SetOption { opt: *opt },
                    actor.index,
                    actor.host(),
                    &logs,
                    deadline,
                )
            }
            Call::Close => self.socket_to_close(actor)?.close(),
            other => {
                let h = self.existing(actor)?;
                let logs = self.conns.logs(actor.index);
                fd_call(&h, other, actor, &logs, deadline)
            }
        })
    }

    /// `server#N accept`: accepts until connection N's server socket is
    /// accepted. Connections of other numbers that come first are accepted
    /// too, each as its own server#M. On a non-blocking listener, an empty
    /// queue is EAGAIN, as the application would see it.
    fn accept(&mut self, actor: Actor, deadline: Instant) -> Result<CallResult, Box<CallResult>> {
        let listener = self.listener()?;
        let app_nonblocking = listener.is_nonblocking();
        loop {
            match self.accept_one_for(Some(actor.index)) {
                Ok(Some((index, r))) if index == actor.index => return Ok(r),
                Ok(Some(_)) => continue,
                Ok(None) if app_nonblocking => return Ok(CallResult::failed(Errno::EAGAIN)),
                Ok(None) => {}
                Err(r) => {
                    self.accept_failed.clone_from(&r.errno);
                    return Ok(*r);
                }
            }
            let ready = listener.wait(calls::Ready::Readable, deadline);
            if ready.timed_out || ready.errno.is_some() || ready.harness_error.is_some() {
                return Ok(ready);
            }
        }
    }

    fn listener(&self) -> Result<Handle, Box<CallResult>> {
        self.handle(Actor::LISTENER).ok_or_else(|| {
            Box::new(CallResult::harness_error(
                "no listener: `listener listen` first",
            ))
        })
    }

    /// Accepts one connection if one is queued: `Some((its number, the
    /// result))`, `None` if the queue is empty.
    fn accept_one(&mut self) -> Result<Option<(u32, CallResult)>, Box<CallResult>> {
        self.accept_one_for(None)
    }

    /// [`Self::accept_one`]; a connection from an address no client
    /// connected from takes number `fallback` (or the next unused one).
    fn accept_one_for(
        &mut self,
        fallback: Option<u32>,
    ) -> Result<Option<(u32, CallResult)>, Box<CallResult>> {
        let Some((sock, peer)) = self.listener()?.accept_now()? else {
            return Ok(None);
        };
        let index = peer
            .and_then(|p| self.conns.number_of(p))
            .or(fallback)
            .unwrap_or_else(|| self.conns.addrs.keys().max().map_or(1, |m| m + 1));
        // A client program's connection is known from this end only.
        if let Some(p) = peer.filter(|p| {
            self.conns.program == Some(Side::Client) && self.conns.number_of(*p).is_none()
        }) {
            self.conns.connected(index, p);
            if index == 1 {
                self.ends.client = Some(p);
            }
        }
        let server = Actor {
            role: Role::Server,
            index,
        };
        // The new descriptor, as accept() returned it.
        let fd = match &sock {
            Sock::Local(s) => std::os::fd::AsRawFd::as_raw_fd(s),
            Sock::Agent { handle, .. } => i32::try_from(*handle).unwrap_or(i32::MAX),
        };
        let mut r = CallResult::ok(fd.into());
        if let Some(old) = self.sockets.insert(server, sock) {
            self.displaced.push(old);
            r.note = Some(format!(
                "{server} now names this newer connection; the socket accepted before stays open until the case ends"
            ));
        }
        self.closed.retain(|a| *a != server);
        self.accepted = true;
        Ok(Some((index, r)))
    }

    /// The state of one side of connection `index` in the last snapshot.
    fn state_of(&self, index: u32, side: Side) -> Option<TcpState> {
        let role = match side {
            Side::Client => Role::Client,
            Side::Server => Role::Server,
        };
        let ends = Ends {
            client: self.conns.latest(index),
            server: self.ends.server,
            fds: PerSide::both(()).map(|s, ()| {
                (s == side)
                    .then(|| self.fd(Actor { role, index }))
                    .flatten()
            }),
        };
        ends.find(&self.last_snapshot, side).map(|e| e.state)
    }

    /// Records the local address a client socket got from connect().
    fn note_connected(&mut self, actor: Actor) {
        let Some(addr) = self.sockets[&actor].handle().local_addr() else {
            return;
        };
        self.conns.connected(actor.index, addr);
        // The first connection is the one under test; a reconnect on
        // another 4-tuple is another connection.
        if actor.index == 1 && self.ends.client.is_none() {
            self.ends.client = Some(addr);
        }
    }

    /// Reads the counters of the rules in place that `which` selects into
    /// their records. Returns how many segments those rules matched.
    fn count_faults(&mut self, which: impl Fn(&FaultRecord) -> bool) -> Option<u64> {
        if !self.faults.iter().any(|(f, h)| h.is_some() && which(f)) {
            return Some(0);
        }
        let counters = match self.io.firewall.counters() {
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
                // In place until it is gone: the end of its removal.
                let key = record.key.clone();
                let removed = self.io.firewall.remove(h);
                let now = self.elapsed_ms(Instant::now());
                if let Some(p) = self.placed.iter_mut().find(|p| p.key == key) {
                    p.until_ms = Some(now);
                }
                if let Err(e) = removed {
                    return CallResult::harness_error(e.to_string());
                }
            }
        }
        CallResult {
            value: matched.and_then(|m| i64::try_from(m).ok()),
            ..CallResult::ok(0)
        }
    }

    /// `connect()` (see [`calls::connect`]), and the address it got.
    fn connect(&mut self, actor: Actor, h: &Handle, deadline: Instant) -> CallResult {
        let r = h.connect(self.ends.server, deadline);
        self.note_connected(actor);
        r
    }

    /// `server connect`: a server socket of its own (bound by `server
    /// bind`) connects to its client's address, a simultaneous open when
    /// the client's connect is still in SYN-SENT.
    fn connect_to_client(&mut self, actor: Actor, h: &Handle, deadline: Instant) -> CallResult {
        let client = Actor {
            role: Role::Client,
            index: actor.index,
        };
        // Its socket's own address (bound, or given by its connect), else
        // the one it last connected from.
        let Some(to) = self
            .handle(client)
            .and_then(|c| c.local_addr())
            .filter(|a| a.port() != 0)
            .or_else(|| self.conns.latest(actor.index))
        else {
            return CallResult::harness_error(format!(
                "the {client} has no address for the {actor} to connect to: `{client} connect` or `{client} bind PORT` first"
            ));
        };
        if actor.index == 1 && self.ends.client.is_none() {
            self.ends.client = Some(to);
        }
        h.connect(to, deadline)
    }

    /// Whether the stack's state source cannot see `actor`'s socket: it was
    /// closed, and only descriptors can be looked at.
    fn out_of_sight(&self, actor: Actor) -> bool {
        let sees_orphans = match self.endpoint(actor).agent() {
            Some(agent) => agent.hello().states.sees_orphans(),
            None => self.io.observer.source().sees_orphans(),
        };
        !sees_orphans && self.closed.contains(&actor) && !self.sockets.contains_key(&actor)
    }

    fn wait_state(&mut self, actor: Actor, want: TcpState, deadline: Instant) -> CallResult {
        // A socket gone from a complete table is CLOSED for this purpose.
        let state = |d: &Self| {
            let complete = d.last_snapshot.sees_orphans[actor.host()];
            (d.entry_of(actor).map(|e| e.state), complete)
        };
        self.observe_until(
            deadline,
            |d| {
                let (now, complete) = state(d);
                let gone = now.is_none() && complete;
                (now == Some(want) || (gone && want == TcpState::Closed)).then(|| CallResult::ok(0))
            },
            |d| match state(d) {
                (Some(s), _) => format!("still {s}"),
                (None, true) => "still not in the kernel's table".into(),
                (None, false) => "still out of sight of the stack's state source".into(),
            },
        )
    }

    fn spawn(
        &mut self,
        actor: Actor,
        call: &Call,
        step: &Step,
        index: usize,
        deadline: Instant,
        bound: Duration,
    ) {
        let label = step
            .label
            .clone()
            .expect("the parser requires a label on bg steps");
        let is_close = *call == Call::Close;
        // A close takes the socket with it; it comes back if no thread starts.
        let target = if is_close {
            self.socket_to_close(actor)
                .map(|s| BgTarget::Close(Arc::new(Mutex::new(Some(s)))))
        } else {
            self.existing(actor).map(BgTarget::Call)
        };
        let target = match target {
            Ok(t) => t,
            Err(r) => return self.fill_now(index, *r),
        };
        let (tx, rx) = mpsc::channel();
        let call = call.clone();
        let logs = self.conns.logs(actor.index);
        let theirs = target.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("bg-{label}"))
            .spawn(move || {
                let start = Instant::now();
                let r = match theirs {
                    BgTarget::Call(h) => fd_call(&h, &call, actor, &logs, deadline),
                    BgTarget::Close(s) => match s.lock().expect("bg socket").take() {
                        Some(s) => s.close(),
                        None => CallResult::harness_error("the socket was taken back"),
                    },
                };
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
                if let BgTarget::Close(s) = target {
                    // Not closed after all: give the socket back, so it is
                    // closed with the other leftovers once the capture stops.
                    if let Some(s) = s.lock().expect("bg socket").take() {
                        self.sockets.insert(actor, s);
                    }
                    self.closed.retain(|a| *a != actor);
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
                CallResult::ok(0)
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

    /// Starts the case's program and waits, bounded, until a socket listens
    /// on its port (seen in the stack's table); false, with the problem
    /// recorded, if it cannot start, exits first or never listens.
    fn start_program(&mut self, p: &Program) -> bool {
        let dir = self
            .case
            .scenario
            .path
            .parent()
            .and_then(|d| std::fs::canonicalize(d).ok())
            .unwrap_or_default();
        let values = [
            ("address", self.ends.server.ip().to_string()),
            ("port", p.port.to_string()),
            ("dir", dir.display().to_string()),
        ];
        let started = match self.io.hosts.on(p.side, || Running::start(p, &values)) {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.problem(e.to_string());
                return false;
            }
            Err(e) => {
                self.problem(format!("line {}: starting the program: {e}", p.line));
                return false;
            }
        };
        self.program = Some(started);
        if p.side == Side::Client {
            // It connects by itself; the steps wait for it (`server accept`).
            return true;
        }
        let deadline = Instant::now() + p.ready_within;
        let mut backoff = Backoff::new();
        loop {
            let to = self.ends.server;
            let listening = match self.io.hosts.on(p.side, || observe::listens(to)) {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let at = self.elapsed_ms(Instant::now());
            let running = self.program.as_mut().expect("started above");
            match listening {
                Ok(true) => {
                    running.ready_at(at);
                    return true;
                }
                Err(e) => {
                    self.problem(format!(
                        "line {}: watching for the program to listen: {e}",
                        p.line
                    ));
                    self.stop_program();
                    return false;
                }
                Ok(false) => {}
            }
            // Stopped first: its stderr is whole once the supervisor is gone.
            if running.exited() {
                let r = self.stop_program().cloned();
                let (how, tail) = r.map_or(("without a status".into(), String::new()), |r| {
                    let how = match (r.exit_code, &r.signal) {
                        (Some(c), _) => format!("with status {c}"),
                        (None, Some(s)) => format!("on {s}"),
                        (None, None) => "without a status".into(),
                    };
                    (how, r.stderr_tail())
                });
                self.problem(format!(
                    "line {}: the program exited {how} before it listened on port {}; {tail}",
                    p.line, p.port
                ));
                return false;
            }
            if Instant::now() >= deadline {
                let tail = self
                    .stop_program()
                    .map(|r| r.stderr_tail())
                    .unwrap_or_default();
                self.problem(format!(
                    "line {}: the program did not listen on port {} within {:?} (ready_within); {tail}",
                    p.line, p.port, p.ready_within
                ));
                return false;
            }
            backoff.sleep(deadline);
        }
    }

    /// Stops the program if it runs (see [`Running::stop`]), and says
    /// what became of it.
    fn stop_program(&mut self) -> Option<&ProgramRecord> {
        let running = self.program.take()?;
        self.program_record = Some(running.stop());
        self.program_record.as_ref()
    }

    /// Waits, bounded, until no socket of the case is in a transient state
    /// (a segment in flight) and two snapshots in a row agree, then keeps
    /// the final snapshot. Where the state source cannot see closed
    /// sockets, the wire must also show nothing in flight. (A sock_diag
    /// dump reads one socket after another: seen once in about ten runs
    /// of the catalogue, a dump read the server in FIN-WAIT-2, then the
    /// client's exchange of FIN and ACK completed and the client was gone
    /// by the time its turn came, a state of both that never was.)
    fn settle(&mut self, bound: Duration) -> bool {
        let deadline = Instant::now() + bound;
        let mut backoff = Backoff::new();
        let mut previous = None;
        loop {
            self.observe();
            let mut states: Vec<_> = self
                .last_snapshot
                .entries
                .iter()
                .map(|e| (e.local, e.remote, e.state))
                .collect();
            states.sort_by_key(|&(local, remote, _)| (local, remote));
            let busy = self
                .last_snapshot
                .entries
                .iter()
                .any(|e| e.state.is_transient())
                || (self
                    .last_snapshot
                    .sees_orphans
                    .iter()
                    .any(|(_, sees)| !sees)
                    && self.wire.conn.as_ref().is_some_and(Connection::in_flight));
            let stable = previous.as_ref() == Some(&states);
            previous = Some(states);
            if !busy && stable {
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

/// What a bg step works on: a socket's handle, or (for a close) the
/// socket itself.
#[derive(Clone)]
enum BgTarget {
    Call(Handle),
    Close(Arc<Mutex<Option<Sock>>>),
}

/// Calls that need only the socket; used for foreground and bg steps alike.
fn fd_call(
    h: &Handle,
    call: &Call,
    actor: Actor,
    logs: &PerSide<Mutex<StreamLog>>,
    deadline: Instant,
) -> CallResult {
    // The stream this actor writes is the one its side writes.
    let me = actor.side().unwrap_or(Side::Client);
    match FdCall::of(call) {
        Some(c) => h.call(&c, actor.index, me, logs, deadline),
        None => CallResult::harness_error(format!(
            "`{}` needs the driver, not just a descriptor",
            call.verb().name()
        )),
    }
}
