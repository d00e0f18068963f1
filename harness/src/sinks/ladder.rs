//! A case as a ladder diagram: the two endpoints as lifelines, every
//! segment as an arrow between them, every call as a marker on its side,
//! each side's TCP state over time. [`events`] merges the report's packets,
//! steps and state changes into one time-ordered list; [`text`] draws it for
//! a terminal (`teardown explain`), `render` as SVG.

use std::fmt::Write as _;

use crate::analyze::PacketRecord;
use crate::driver::StepRecord;
use crate::report::CaseReport;
use crate::scenario::Role;
use crate::tcp::{Side, TcpState};

/// What happened.
#[derive(Clone, Copy, Debug)]
pub enum What<'a> {
    /// A segment, sent by the event's side.
    Packet(&'a PacketRecord),
    /// A call made by the event's side (no side: sleep, join, faults).
    Call(&'a StepRecord),
    /// The side's socket entered this state (sock_diag).
    State(TcpState),
}

/// One row of the ladder.
#[derive(Clone, Copy, Debug)]
pub struct Event<'a> {
    /// Milliseconds since the case started.
    pub t_ms: f64,
    pub side: Option<Side>,
    pub what: What<'a>,
}

/// Packets, calls and state changes of a case, in time order (a call at its
/// start; ties keep calls before the packets they cause).
pub fn events(c: &CaseReport) -> Vec<Event<'_>> {
    let mut ev: Vec<Event> = Vec::new();
    for s in &c.steps {
        // The listener sits on the server's lifeline.
        let side = s.actor.map(|a| match a.role {
            Role::Client => Side::Client,
            Role::Server | Role::Listener => Side::Server,
        });
        ev.push(Event {
            t_ms: s.start_ms,
            side,
            what: What::Call(s),
        });
    }
    for (side, changes) in c.outcome.states.iter() {
        for ch in changes {
            ev.push(Event {
                t_ms: ch.t_ms,
                side: Some(side),
                what: What::State(ch.state),
            });
        }
    }
    for p in &c.outcome.packets {
        ev.push(Event {
            t_ms: p.t_ms,
            side: Some(p.from),
            what: What::Packet(p),
        });
    }
    ev.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    ev
}

/// `F. seq=1001 ack=1 len=0 win=512`, with what the analyzer noted about
/// the segment: `. seq=4096 ack=1 len=0 win=0 [window probe]`.
pub fn packet_label(p: &PacketRecord) -> String {
    let ack = p.ack.map_or("-".to_string(), |a| a.to_string());
    let mut out = format!(
        "{} seq={} ack={ack} len={} win={}",
        p.flags, p.seq, p.len, p.win
    );
    let mut notes: Vec<String> = p.notes.iter().map(|n| n.name().to_string()).collect();
    if let Some(rule) = &p.dropped_by {
        notes.push(format!("dropped by {rule}"));
    }
    if !notes.is_empty() {
        let _ = write!(out, " [{}]", notes.join(", "));
    }
    out
}

/// `client close as lclose -> 0 (1002.31 ms)`, `-> -1 ECONNRESET`, `timed out`.
pub fn call_label(s: &StepRecord) -> String {
    let r = &s.result;
    let mut out = s.call.clone();
    if let Some(e) = &r.harness_error {
        let _ = write!(out, " -> harness error: {e}");
        return out;
    }
    match (r.ret, &r.errno) {
        // A read or write that moved bytes before it failed says so: the
        // bytes are part of the result.
        (Some(ret), Some(errno)) if r.bytes.is_some_and(|b| b > 0) => {
            let _ = write!(
                out,
                " -> {} bytes, then {ret} {errno}",
                r.bytes.unwrap_or(0)
            );
        }
        (Some(ret), Some(errno)) => {
            let _ = write!(out, " -> {ret} {errno}");
        }
        (Some(ret), None) => {
            let _ = write!(out, " -> {ret}");
        }
        (None, Some(errno)) => {
            let _ = write!(out, " -> {errno}");
        }
        (None, None) => {}
    }
    if let Some(v) = r.value {
        let _ = write!(out, " value={v}");
    }
    if let Some(sig) = &r.signal {
        let _ = write!(out, " {sig}");
    }
    if let Some(g) = &r.group {
        let _ = write!(out, " [{} sockets: {} ok", g.sockets, g.ok);
        if g.timed_out > 0 {
            let _ = write!(out, ", {} timed out", g.timed_out);
        }
        for (errno, n) in &g.errnos {
            let _ = write!(out, ", {n} {errno}");
        }
        out.push(']');
    }
    if r.timed_out {
        out.push_str(" TIMED OUT");
    }
    let _ = write!(out, " ({:.2} ms)", s.duration_ms);
    out
}

const LEFT: usize = 40;
const MIDDLE: usize = 44;

/// The ladder as text for a terminal.
pub fn text(c: &CaseReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: {}", c.id, c.title);
    if let Some(p) = &c.capture {
        let _ = writeln!(out, "capture: {p}");
    }
    let _ = writeln!(
        out,
        "\n{:>10}  {:<LEFT$}{:^MIDDLE$}  server",
        "t (ms)", "client", ""
    );
    // Text too long for its column wraps onto the following lines: a
    // result is never cut short.
    let wrap = |s: &str, w: usize| -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        if chars.is_empty() {
            return vec![String::new()];
        }
        chars.chunks(w).map(|c| c.iter().collect()).collect()
    };
    for e in events(c) {
        let (left, middle, right) = match (e.what, e.side) {
            // A segment a fault rule took never reaches the peer: its
            // arrow stops short with an X.
            (What::Packet(p), Some(Side::Client)) => {
                let label = format!("-- {} ", packet_label(p));
                let bar = MIDDLE.saturating_sub(label.chars().count() + 2).max(2);
                let head = if p.dropped_by.is_some() { "X " } else { "->" };
                (
                    String::new(),
                    format!("|{label}{}{head}|", "-".repeat(bar - 1)),
                    String::new(),
                )
            }
            (What::Packet(p), _) => {
                let label = format!(" {} --", packet_label(p));
                let bar = MIDDLE.saturating_sub(label.chars().count() + 2).max(2);
                let head = if p.dropped_by.is_some() { " X" } else { "<-" };
                (
                    String::new(),
                    format!("|{head}{}{label}|", "-".repeat(bar - 1)),
                    String::new(),
                )
            }
            (What::Call(s), Some(Side::Server)) => (String::new(), String::new(), call_label(s)),
            (What::Call(s), _) => (call_label(s), String::new(), String::new()),
            (What::State(st), Some(Side::Server)) => {
                (String::new(), String::new(), format!("[{st}]"))
            }
            (What::State(st), _) => (format!("[{st}]"), String::new(), String::new()),
        };
        let middle = if middle.is_empty() {
            format!("|{}|", " ".repeat(MIDDLE - 2))
        } else {
            middle
        };
        let lefts = wrap(&left, LEFT - 1);
        let line = format!("{:>10.3}  {:<LEFT$}{}  {}", e.t_ms, lefts[0], middle, right);
        let _ = writeln!(out, "{}", line.trim_end());
        for more in &lefts[1..] {
            let line = format!("{:>10}  {more:<LEFT$}|{}|", "", " ".repeat(MIDDLE - 2));
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let w = c.outcome.wire.as_ref();
    let _ = writeln!(
        out,
        "\nverdict: {}{}",
        c.verdict.status.name(),
        w.map_or(String::new(), |w| format!(
            "; FIN/RST client {}/{} server {}/{}; TIME-WAIT {}",
            w.sides.client.fin,
            w.sides.client.rst,
            w.sides.server.fin,
            w.sides.server.rst,
            c.outcome
                .time_wait
                .side
                .map_or("unknown", crate::outcome::TimeWaitSide::name)
        ))
    );
    for m in &c.verdict.mismatches {
        let m = crate::verdict::Mismatch {
            check: m,
            file: &c.scenario_file,
        };
        let _ = writeln!(out, "  mismatch: {m}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::report;

    #[test]
    fn the_text_ladder_has_a_line_per_event_in_time_order() {
        let mut r = report("a", 1, None);
        let c = &mut r.cases[0];
        c.outcome.packets = serde_json::from_value(serde_json::json!([
            { "t_ms": 0.5, "from": "client", "flags": "F.", "seq": 1, "ack": 1, "len": 0, "win": 512 },
            { "t_ms": 0.7, "from": "server", "flags": ".", "seq": 1, "ack": 2, "len": 0, "win": 512 }
        ]))
        .unwrap();
        c.steps[0].start_ms = 0.4;
        c.outcome.states = serde_json::from_value(serde_json::json!({
            "client": [{ "t_ms": 0.6, "state": "FIN-WAIT-2" }], "server": []
        }))
        .unwrap();
        let t = text(&r.cases[0]);
        let lines: Vec<&str> = t.lines().collect();
        let at = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle:?} not in\n{t}"))
        };
        assert!(at("client close -> 0") < at("|-- F. seq=1 ack=1 len=0"));
        assert!(at("F. seq=1") < at("[FIN-WAIT-2]"));
        assert!(at("[FIN-WAIT-2]") < at("<-"));
        assert!(
            lines[at("<-")].contains(". seq=1 ack=2 len=0 win=512 --|"),
            "{t}"
        );
        assert!(
            t.contains("verdict: pass; FIN/RST client 1/0 server 1/0"),
            "{t}"
        );
        insta::assert_snapshot!(t);
    }
}
