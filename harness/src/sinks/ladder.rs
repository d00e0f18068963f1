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
    /// A call that spanned other events returned: the end of its span.
    Return(&'a StepRecord),
}

/// A call lasting at least this long is drawn as a span from its start to
/// its return.
pub(crate) const SPAN_MIN_MS: f64 = 1.0;

/// Gaps up to this long are drawn to scale; longer ones are cut, and say
/// how long they were.
pub(crate) const SCALE_LIMIT_MS: f64 = 100.0;

/// How the time between two consecutive rows is drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Gap {
    /// Under a millisecond: rows just follow each other.
    None,
    /// Drawn to scale (milliseconds).
    Scaled(f64),
    /// Longer than [`SCALE_LIMIT_MS`]: cut, with its length (milliseconds).
    Cut(f64),
}

/// The gap from the row at `before` to the row at `t` (milliseconds).
pub fn gap(before: f64, t: f64) -> Gap {
    let d = t - before;
    if d < 1.0 {
        Gap::None
    } else if d <= SCALE_LIMIT_MS {
        Gap::Scaled(d)
    } else {
        Gap::Cut(d)
    }
}

/// `1.997 s` or `250 ms`: an idle gap's length.
pub(crate) fn duration_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.3} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// The side a call's actor sits on (the listener on the server's).
pub(crate) fn call_side(s: &StepRecord) -> Option<Side> {
    s.actor.map(|a| match a.role {
        Role::Client => Side::Client,
        Role::Server | Role::Listener => Side::Server,
    })
}

/// Whether `s` is drawn as a span (it has a side and lasted long enough).
pub(crate) fn is_span(s: &StepRecord) -> bool {
    s.actor.is_some() && s.duration_ms >= SPAN_MIN_MS
}

/// One row of the ladder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Event<'a> {
    /// Milliseconds since the case started.
    pub t_ms: f64,
    pub side: Option<Side>,
    pub what: What<'a>,
}

/// Packets, calls, returns and state changes of a case, in time order (a
/// call at its start; ties keep calls before the packets they cause).
pub(crate) fn events(c: &CaseReport) -> Vec<Event<'_>> {
    let mut ev: Vec<Event> = Vec::new();
    for s in &c.steps {
        let side = call_side(s);
        ev.push(Event {
            t_ms: s.start_ms,
            side,
            what: What::Call(s),
        });
        if is_span(s) {
            ev.push(Event {
                t_ms: s.start_ms + s.duration_ms,
                side,
                what: What::Return(s),
            });
        }
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
pub(crate) fn packet_label(p: &PacketRecord) -> String {
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
const MIDDLE: usize = 56;
/// A blank row of the text ladder stands for this much of a gap drawn to
/// scale.
const ROW_MS: f64 = 20.0;

/// What the text ladder's marks mean; printed under every ladder.
pub(crate) const TEXT_LEGEND: &str = "\
legend: --> delivered segment; an arrow ending in X: dropped by the named fault rule (counted
        by the packet filter, not inferred); ┏┃┗ a call in progress, from its start to its return;
        [STATE] the socket's TCP state (sock_diag); a blank row is 20 ms; ~~ a longer idle
        gap, cut, with its length";

/// The ladder without its times: the segments in order (side, flags,
/// length, notes, drop), and each side's calls (text and result) and
/// states in order. Two runs with the same shape drew the same ladder but
/// for times, and for how events of different lanes interleave, which is
/// timing too.
pub fn shape(c: &CaseReport) -> String {
    // Lanes: segments, client, server, calls of no side.
    let mut lanes = [String::new(), String::new(), String::new(), String::new()];
    for e in events(c) {
        let lane = match (e.what, e.side) {
            (What::Packet(_), _) => 0,
            (_, Some(Side::Client)) => 1,
            (_, Some(Side::Server)) => 2,
            (_, None) => 3,
        };
        let out = &mut lanes[lane];
        let _ = match e.what {
            What::Packet(p) => writeln!(
                out,
                "{:?} {} len={} {:?} {:?}",
                e.side, p.flags, p.len, p.notes, p.dropped_by
            ),
            What::Call(s) => {
                // Not the shape: how long it took, the ephemeral port a
                // connect got, the descriptor number accept returned.
                let mut s = s.clone();
                s.duration_ms = 0.0;
                match s.verb {
                    crate::scenario::Verb::Connect => s.result.value = None,
                    crate::scenario::Verb::Accept => s.result.ret = s.result.ret.map(|r| r.min(0)),
                    _ => {}
                }
                writeln!(out, "{}", call_label(&s))
            }
            // Whether a call lasted long enough to be a span is timing.
            What::Return(_) => Ok(()),
            What::State(st) => writeln!(out, "{st}"),
        };
    }
    lanes.join("\n")
}

/// `close as lclose returned (1002.31 ms)`: the end of a span.
pub(crate) fn return_label(s: &StepRecord) -> String {
    let call = s
        .call
        .split_once(' ')
        .map_or(s.call.as_str(), |(_, rest)| rest);
    format!("{call} returned ({:.2} ms)", s.duration_ms)
}

/// `s` in lines of at most `n` characters, broken at spaces where it can be.
pub fn wrap(s: &str, n: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in s.split(' ') {
        let mut word: Vec<char> = word.chars().collect();
        while !word.is_empty() {
            let room = n.saturating_sub(line.chars().count() + usize::from(!line.is_empty()));
            if word.len() <= room {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.extend(word.drain(..));
            } else if line.is_empty() {
                line.extend(word.drain(..n));
                lines.push(std::mem::take(&mut line));
            } else {
                lines.push(std::mem::take(&mut line));
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The side of a call made in the span column: nothing, the start of a
/// span, one going on, its end.
fn gutter(open: usize, mark: Option<char>) -> char {
    mark.unwrap_or(if open > 0 { '┃' } else { ' ' })
}

/// The ladder as text for a terminal: one row per event, gaps to scale (a
/// blank row per [`ROW_MS`]) up to [`SCALE_LIMIT_MS`], longer ones cut and
/// marked; calls that last are spans beside their lifeline.
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
    let blank_middle = format!("|{}|", " ".repeat(MIDDLE - 2));
    // Calls in progress on the client's and the server's side.
    let mut open = [0usize; 2];
    let idx = |side: Option<Side>| usize::from(side == Some(Side::Server));
    let row =
        |out: &mut String, t: &str, left: &str, lg: char, middle: &str, rg: char, right: &str| {
            let line = format!("{t:>10}  {left:<w$}{lg}{middle}{rg} {right}", w = LEFT - 1);
            let _ = writeln!(out, "{}", line.trim_end());
        };
    let mut before: Option<f64> = None;
    for e in events(c) {
        match before.map(|b| gap(b, e.t_ms)) {
            Some(Gap::Scaled(d)) => {
                for _ in 0..(d / ROW_MS) as usize {
                    row(
                        &mut out,
                        "",
                        "",
                        gutter(open[0], None),
                        &blank_middle,
                        gutter(open[1], None),
                        "",
                    );
                }
            }
            Some(Gap::Cut(d)) => {
                let cut = format!("~~ {} idle, cut ~~", duration_text(d));
                row(
                    &mut out,
                    "",
                    "",
                    gutter(open[0], None),
                    &format!("{cut:~^MIDDLE$}"),
                    gutter(open[1], None),
                    "",
                );
            }
            Some(Gap::None) | None => {}
        }
        before = Some(e.t_ms);
        let side = idx(e.side);
        let mut mark = None;
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
            (What::Call(s), side_of) => {
                if is_span(s) {
                    open[side] += 1;
                    mark = Some('┏');
                }
                match side_of {
                    Some(Side::Server) => (String::new(), String::new(), call_label(s)),
                    _ => (call_label(s), String::new(), String::new()),
                }
            }
            (What::Return(s), side_of) => {
                open[side] = open[side].saturating_sub(1);
                mark = Some('┗');
                match side_of {
                    Some(Side::Server) => (String::new(), String::new(), return_label(s)),
                    _ => (return_label(s), String::new(), String::new()),
                }
            }
            (What::State(st), Some(Side::Server)) => {
                (String::new(), String::new(), format!("[{st}]"))
            }
            (What::State(st), _) => (format!("[{st}]"), String::new(), String::new()),
        };
        let middle = if middle.is_empty() {
            blank_middle.clone()
        } else {
            middle
        };
        // The mark goes on the event's side; the other keeps its span.
        let (lg, rg) = if e.side == Some(Side::Server) {
            (gutter(open[0], None), gutter(open[1], mark))
        } else {
            (gutter(open[0], mark), gutter(open[1], None))
        };
        // Text too long for its column wraps onto the following lines: a
        // result is never cut short.
        let lefts = wrap(&left, LEFT - 2);
        row(
            &mut out,
            &format!("{:.3}", e.t_ms),
            &lefts[0],
            lg,
            &middle,
            rg,
            &right,
        );
        for more in &lefts[1..] {
            row(
                &mut out,
                "",
                more,
                gutter(open[0], None),
                &blank_middle,
                gutter(open[1], None),
                "",
            );
        }
    }
    let _ = writeln!(out, "\n{TEXT_LEGEND}");
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

    /// The number of the first line of `t` that contains `needle`.
    fn line_of(t: &str, needle: &str) -> usize {
        t.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in\n{t}"))
    }

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
        let at = |needle: &str| line_of(&t, needle);
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

    #[test]
    fn long_calls_are_spans_and_long_gaps_are_cut_with_their_length() {
        let mut r = report("a", 1, None);
        let c = &mut r.cases[0];
        c.outcome.packets = serde_json::from_value(serde_json::json!([
            { "t_ms": 1.0, "from": "client", "flags": ".", "seq": 1, "ack": 1, "len": 0, "win": 0 },
            { "t_ms": 41.0, "from": "server", "flags": ".", "seq": 1, "ack": 1, "len": 0, "win": 0 },
            { "t_ms": 1041.0, "from": "client", "flags": "F.", "seq": 1, "ack": 1, "len": 0, "win": 0 }
        ]))
        .unwrap();
        c.steps[0].start_ms = 0.5;
        c.steps[0].duration_ms = 1040.0;
        let t = text(&r.cases[0]);
        let lines: Vec<&str> = t.lines().collect();
        let at = |needle: &str| line_of(&t, needle);
        // 40 ms drawn to scale: two blank rows of 20 ms, inside the span.
        assert_eq!(at("<-") - at("|-- . seq=1"), 3, "{t}");
        assert!(lines[at("|-- . seq=1") + 1].contains('┃'), "{t}");
        // 1000 ms cut, with its length, before the return.
        assert!(at("1000 ms idle, cut") < at("returned (1040.00 ms)"), "{t}");
        assert!(lines[at("client close -> 0")].contains('┏'), "{t}");
        assert!(lines[at("returned (1040.00 ms)")].contains('┗'), "{t}");
        assert_eq!(gap(0.0, 0.5), Gap::None);
        assert_eq!(gap(0.0, 100.0), Gap::Scaled(100.0));
        assert_eq!(gap(0.0, 100.5), Gap::Cut(100.5));
    }
}
