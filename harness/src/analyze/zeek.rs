//! Zeek's connection summary: per-endpoint states, `conn_state` and the
//! `history` letters, so that a report reads the way people who know Zeek
//! expect, and lines up with Zeek's own conn.log for the same capture.
//!
//! [`Tracker`] follows the rules of Zeek's TCP analyzer (its
//! TCPSessionAdapter): how each endpoint's state moves on a segment, which
//! segment earns which history letter (S, H, F and R again at a new
//! sequence number; T and W at the 1st, 10th, 100th ... time), when
//! retransmission is flagged (a data segment that ends at or below the
//! highest sequence number the side has sent), and when the originator and
//! responder swap (`^`). [`conn_state`] is main.zeek's function over the
//! two endpoint states; its whole table is snapshotted in the tests, so a
//! change to any cell shows in review.
//!
//! Not followed: `C` (bad checksum; captures taken on the sending host
//! carry offloaded, unfilled checksums) and `G` (content gaps, which need
//! Zeek's reassembler).

use crate::tcp::Flags;
use crate::wire::{Segment, SeqNum};

/// Zeek's per-endpoint TCP state, as far as it matters for `conn_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Endpoint {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    /// Seen without its handshake (the capture started mid-connection).
    Partial,
    Established,
    Closed,
    Reset,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Inactive,
        Endpoint::SynSent,
        Endpoint::SynAckSent,
        Endpoint::Partial,
        Endpoint::Established,
        Endpoint::Closed,
        Endpoint::Reset,
    ];
}

/// What `conn_state` needs to know of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointView {
    pub state: Endpoint,
    /// Sent any payload.
    pub sent_data: bool,
}

/// Zeek's `/\^?S[^HAFGIQ]*R.*/ == history`, on the whole history (both
/// sides' letters): the originator's SYN first, then its RST before any of
/// its H, A, F, G, I or Q.
pub(crate) fn syn_then_reset(history: &str) -> bool {
    let h = history.strip_prefix('^').unwrap_or(history);
    h.strip_prefix('S')
        .and_then(|rest| rest.chars().find(|c| "HAFGIQR".contains(*c)))
        == Some('R')
}

/// Zeek's `conn_state` (base/protocols/conn/main.zeek), given the
/// originator's and responder's endpoints and the connection's history.
pub fn conn_state(orig: EndpointView, resp: EndpointView, history: &str) -> &'static str {
    use Endpoint::*;
    let (os, rs) = (orig.state, resp.state);
    let o_inactive = matches!(os, Inactive | Partial);
    let r_inactive = matches!(rs, Inactive | Partial);
    if rs == Reset {
        if matches!(os, SynSent | SynAckSent) || (os == Reset && !orig.sent_data && !resp.sent_data)
        {
            "REJ"
        } else if o_inactive {
            "RSTRH"
        } else {
            "RSTR"
        }
    } else if os == Reset {
        if !r_inactive {
            "RSTO"
        } else if syn_then_reset(history) {
            "RSTOS0"
        } else {
            // Zeek too: a reset from the originator of a connection whose
            // start was not seen is "other".
            "OTH"
        }
    } else if rs == Closed && os == Closed {
        "SF"
    } else if os == Closed {
        if r_inactive { "SH" } else { "S2" }
    } else if rs == Closed {
        if o_inactive { "SHR" } else { "S3" }
    } else if os == SynSent && rs == Inactive {
        "S0"
    } else if os == Established && rs == Established {
        "S1"
    } else {
        "OTH"
    }
}

/// The history letters one side has shown (each counts once): a bit per
/// lowercase ASCII letter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Letters(u32);

impl Letters {
    /// Records `c` (a lowercase ASCII letter) the first time; returns
    /// whether it was new.
    fn mark(&mut self, c: u8) -> bool {
        debug_assert!(c.is_ascii_lowercase(), "history letters are a..z");
        let bit = 1 << (c - b'a');
        let new = self.0 & bit == 0;
        self.0 |= bit;
        new
    }
}

/// Letters a history holds; past this the rest are dropped (Zeek's own
/// repeats are logarithmic, so only a pathological connection gets here).
const HISTORY_ROOM: usize = 62;

/// Zeek's `history`: each side's letters in the order first seen, the
/// originator's in uppercase, `^` where the roles swapped. It is held
/// inline: a capture keeps one per open connection, and a string would
/// cost each of them an allocation or two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct History {
    /// Letters seen, by side: [responder, originator].
    seen: [Letters; 2],
    text: [u8; HISTORY_ROOM],
    len: u8,
}

impl Default for History {
    fn default() -> History {
        History {
            seen: [Letters::default(); 2],
            text: [0; HISTORY_ROOM],
            len: 0,
        }
    }
}

impl History {
    /// Records letter `c` (lowercase ASCII) for the originator or the
    /// responder, the first time that side shows it; returns whether it
    /// had been seen before.
    pub fn mark(&mut self, orig: bool, c: u8) -> bool {
        if self.seen[usize::from(orig)].mark(c) {
            self.add(orig, c);
            false
        } else {
            true
        }
    }

    /// Appends `c` for a side whether or not it was seen before.
    fn add(&mut self, orig: bool, c: u8) {
        self.push(if orig { c.to_ascii_uppercase() } else { c });
    }

    fn push(&mut self, byte: u8) {
        if usize::from(self.len) < HISTORY_ROOM {
            self.text[usize::from(self.len)] = byte;
            self.len += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters and `^` are ever written.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The roles swapped: the letters so far stay as they were written.
    fn flipped(&mut self) {
        self.push(b'^');
        self.seen.swap(0, 1);
    }
}

/// Sequence-number jumps a SYN or RST may make and still be believed.
const TOO_LARGE_SEQ_DELTA: i32 = 1 << 20;

/// A count that earns its letter again at 1, 10, 100, ... (Zeek's scaled
/// history entries).
#[derive(Clone, Copy, Debug)]
struct Scaled {
    count: u32,
    next: u32,
}

impl Default for Scaled {
    fn default() -> Scaled {
        Scaled { count: 0, next: 1 }
    }
}

impl Scaled {
    /// Counts one more; whether the letter is due.
    fn bump(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        if self.count != self.next {
            return false;
        }
        self.next = self.next.saturating_mul(10);
        true
    }
}

/// One endpoint as Zeek's TCP analyzer keeps it.
#[derive(Clone, Copy, Debug, Default)]
struct Ep {
    state: Endpoint,
    prev_state: Endpoint,
    /// Sequence numbers: the ISN (or one before the first seen), the end
    /// of the highest segment sent, the highest acknowledgment received.
    start: SeqNum,
    last: SeqNum,
    acked: SeqNum,
    /// Sent a FIN or a RST that closed it (Zeek's `did_close`).
    did_close: bool,
    fins: u32,
    /// Relative sequence numbers of the last SYN, FIN and RST, for their
    /// letters' repeats.
    last_syn: i64,
    last_fin: i64,
    last_rst: i64,
    retransmits: Scaled,
    zero_windows: Scaled,
}

impl Ep {
    fn set(&mut self, state: Endpoint) {
        self.prev_state = self.state;
        self.state = state;
    }

    fn init_seq(&mut self, start: SeqNum, last: SeqNum) {
        self.start = start;
        self.acked = start;
        self.last = last;
    }

    /// `seq` relative to the start, as a signed 32-bit distance.
    fn rel(&self, seq: SeqNum) -> i64 {
        i64::from(seq.since(self.start) as i32)
    }

    /// Zeek's endpoint `size`: the sequence space sent or acknowledged,
    /// less the SYN and the FIN.
    fn size(&self) -> u64 {
        let end = if delta(self.last, self.acked) > 0 {
            self.last
        } else {
            self.acked
        };
        let mut size = u64::from(end.since(self.start));
        size = size.saturating_sub(1);
        if self.fins > 0 {
            size = size.saturating_sub(1);
        }
        size
    }
}

fn delta(a: SeqNum, b: SeqNum) -> i32 {
    a.0.wrapping_sub(b.0) as i32
}

/// Zeek's view of one connection, fed a segment at a time.
#[derive(Clone, Debug)]
pub(crate) struct Tracker {
    /// The two endpoints, by the order they were made; `orig` says which
    /// is the originator now.
    eps: [Ep; 2],
    orig: usize,
    history: History,
    /// Whether the roles may swap: not when the harness knows which side
    /// is its client.
    may_flip: bool,
}

/// What [`Tracker::push`] did to the roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Roles {
    Kept,
    /// The originator and the responder swapped.
    Swapped,
}

impl Tracker {
    /// A connection whose originator is known (a case's client): the roles
    /// never swap.
    pub fn fixed() -> Tracker {
        Tracker {
            eps: [Ep::default(); 2],
            orig: 1,
            history: History::default(),
            may_flip: false,
        }
    }

    /// A connection of a capture: `swapped_at_start` when the first
    /// segment's sender was taken for the responder (see
    /// [`swap_at_start`]).
    pub fn found(swapped_at_start: bool) -> Tracker {
        let mut t = Tracker {
            may_flip: true,
            ..Tracker::fixed()
        };
        if swapped_at_start {
            t.history.flipped();
        }
        t
    }

    pub fn history(&self) -> &str {
        self.history.as_str()
    }

    /// Zeek's `conn_state` now.
    pub fn conn_state(&self) -> &'static str {
        let (o, r) = (&self.eps[self.orig], &self.eps[1 - self.orig]);
        let view = |e: &Ep| EndpointView {
            state: e.state,
            sent_data: e.size() > 0,
        };
        conn_state(view(o), view(r), self.history.as_str())
    }

    fn flip(&mut self) -> bool {
        if !self.may_flip {
            return false;
        }
        self.orig = 1 - self.orig;
        self.history.flipped();
        true
    }

    /// Folds in one segment, sent by the originator or the responder as
    /// they are before it. Says whether the roles swapped.
    pub fn push(&mut self, is_orig: bool, seg: &Segment) -> Roles {
        let f = seg.flags;
        let me = if is_orig { self.orig } else { 1 - self.orig };
        let peer = 1 - me;
        let mut swapped = false;
        let len = seg.len;
        let seg_len = if f.rst() {
            u32::from(f.syn()) + u32::from(f.fin())
        } else {
            len + u32::from(f.syn()) + u32::from(f.fin())
        };
        let end = seg.seq + seg_len;
        self.init_endpoint(me, f, seg.seq, end);
        let rel_seq = self.eps[me].rel(seg.seq);
        swapped |= self.update_history(me, f, rel_seq, len);
        // Zero windows, unless with or after a RST, or once the peer closed.
        if seg.window == 0
            && !f.rst()
            && self.eps[peer].state != Endpoint::Closed
            && self.eps[me].state != Endpoint::Reset
            && self.eps[me].zero_windows.bump()
        {
            self.history.add(me == self.orig, b'w');
        }
        if f.fin() {
            self.eps[me].fins += 1;
        }
        if f.ack() {
            let p = &mut self.eps[peer];
            if p.state == Endpoint::Inactive {
                // Numbered as if the peer's SYN had been seen.
                p.init_seq(seg.ack + u32::MAX, seg.ack + u32::MAX);
            } else if !f.rst() {
                let d = delta(seg.ack, p.acked);
                if !(seg.ack.0 == 0 && d > TOO_LARGE_SEQ_DELTA) && d > 0 {
                    p.acked = seg.ack;
                }
            }
        }
        self.update_last(me, f, end, len);
        swapped |= self.state_machine(me, is_orig, seg);
        if swapped { Roles::Swapped } else { Roles::Kept }
    }

    fn init_endpoint(&mut self, me: usize, f: Flags, seq: SeqNum, end: SeqNum) {
        let e = &mut self.eps[me];
        match e.state {
            Endpoint::Inactive => {
                if f.syn() {
                    e.init_seq(seq, end);
                } else {
                    // As though a SYN had come before: the first byte is
                    // relative 1, and this segment is not a repeat.
                    e.init_seq(seq + u32::MAX, seq);
                }
            }
            Endpoint::SynSent | Endpoint::SynAckSent => {
                if f.syn() && seq != e.start {
                    e.init_seq(seq, end);
                }
            }
            Endpoint::Established | Endpoint::Partial => {
                if f.syn() {
                    e.init_seq(seq, end);
                }
            }
            Endpoint::Reset => {
                if f.syn() && e.prev_state == Endpoint::Inactive {
                    e.init_seq(seq, end);
                }
            }
            Endpoint::Closed => {}
        }
    }

    /// The segment's history letters; whether the roles swapped.
    fn update_history(&mut self, me: usize, f: Flags, rel_seq: i64, len: u32) -> bool {
        let bits = u32::from(f.syn()) + u32::from(f.fin()) + u32::from(f.rst());
        if bits > 1 {
            let c = if f.fin() && f.rst() { b'i' } else { b'q' };
            self.check(me, c);
            return false;
        }
        if bits == 1 {
            if f.syn() {
                let c = if f.ack() { b'h' } else { b's' };
                if self.check(me, c) && rel_seq != self.eps[me].last_syn {
                    self.history.add(me == self.orig, c);
                }
                self.eps[me].last_syn = rel_seq;
            }
            if f.fin() {
                let at = rel_seq + i64::from(len);
                if self.check(me, b'f') && at != self.eps[me].last_fin {
                    self.history.add(me == self.orig, b'f');
                }
                self.eps[me].last_fin = at;
            }
            if f.rst() {
                if self.check(me, b'r') && rel_seq != self.eps[me].last_rst {
                    self.history.add(me == self.orig, b'r');
                }
                self.eps[me].last_rst = rel_seq;
            }
            return false;
        }
        let c = if len > 0 {
            b'd'
        } else if f.ack() {
            b'a'
        } else {
            return false;
        };
        // A connection that began with a SYN-ACK and now carries an ACK or
        // data was not a scan: its SYN-ACK's sender is the responder.
        let mut swapped = false;
        if self.history.as_str() == "H" && self.may_flip {
            self.orig = 1 - self.orig;
            self.history = History::default();
            self.history.push(b'^');
            self.history.mark(false, b'h');
            swapped = true;
        }
        self.check(me, c);
        swapped
    }

    /// Zeek's `CheckHistory`: the letter the first time the side shows it;
    /// whether it had shown it before.
    fn check(&mut self, me: usize, c: u8) -> bool {
        self.history.mark(me == self.orig, c)
    }

    /// Moves the end of what the side sent; a data segment that does not
    /// move it is a retransmission (`T`).
    fn update_last(&mut self, me: usize, f: Flags, end: SeqNum, len: u32) {
        let orig = me == self.orig;
        let e = &mut self.eps[me];
        let d = delta(end, e.last);
        if (f.syn() || f.rst()) && !(-TOO_LARGE_SEQ_DELTA..=TOO_LARGE_SEQ_DELTA).contains(&d) {
            // An implausible jump: not believed.
        } else if f.fin() && e.last == e.start + 1 {
            // Only the SYN seen so far: a FIN past 2 GiB is believed too.
            e.last = end;
        } else if e.state == Endpoint::Reset {
            // Nothing after a RST is believed.
        } else if d > 0 {
            e.last = end;
        } else if len > 0 && e.retransmits.bump() {
            self.history.add(orig, b't');
        }
    }

    /// The endpoints' states; whether the roles swapped.
    fn state_machine(&mut self, me: usize, is_orig: bool, seg: &Segment) -> bool {
        let f = seg.flags;
        let peer = 1 - me;
        let mut close = false;
        let mut swapped = false;
        match self.eps[me].state {
            Endpoint::Inactive => {
                if f.syn() {
                    if is_orig {
                        self.eps[me].set(if f.ack() {
                            Endpoint::SynAckSent
                        } else {
                            Endpoint::SynSent
                        });
                    } else {
                        if !f.ack()
                            && self.eps[peer].state == Endpoint::SynAckSent
                            && seg.seq == self.eps[me].start
                        {
                            // A SYN seen after its SYN-ACK (two interfaces
                            // read out of order): the roles were reversed.
                            swapped |= self.flip();
                            self.eps[peer].set(Endpoint::Established);
                        }
                        if self.eps[peer].state == Endpoint::SynSent {
                            self.eps[peer].set(Endpoint::Established);
                        }
                        self.eps[me].set(Endpoint::Established);
                    }
                }
                if f.fin() {
                    self.eps[me].set(Endpoint::Closed);
                    close = true;
                }
                if f.rst() {
                    self.eps[me].set(Endpoint::Reset);
                    close = true;
                }
                if self.eps[me].state == Endpoint::Inactive {
                    let orig_state = self.eps[self.orig].state;
                    if !is_orig && seg.len == 0 && orig_state == Endpoint::SynSent {
                        // An ACK of a SYN before the SYN-ACK: not partial.
                    } else if f.ack() && self.eps[peer].state == Endpoint::Established {
                        self.eps[me].set(Endpoint::Established);
                    } else {
                        self.eps[me].set(Endpoint::Partial);
                    }
                }
            }
            Endpoint::SynSent | Endpoint::SynAckSent => {
                if f.fin() {
                    self.eps[me].set(Endpoint::Closed);
                    close = true;
                }
                if f.rst() {
                    self.eps[me].set(Endpoint::Reset);
                    close = true;
                }
            }
            Endpoint::Established | Endpoint::Partial => {
                if f.syn()
                    && !f.ack()
                    && self.eps[me].state == Endpoint::Partial
                    && self.eps[peer].state == Endpoint::Inactive
                {
                    self.eps[me].set(Endpoint::SynSent);
                }
                if f.fin() && !f.rst() {
                    self.eps[me].set(Endpoint::Closed);
                    let p = &mut self.eps[peer];
                    if p.state == Endpoint::Reset && p.prev_state == Endpoint::Closed {
                        // The peer's FIN then RST: a normal close after all.
                        p.set(Endpoint::Closed);
                    }
                    close = true;
                }
                if f.rst() {
                    self.eps[me].set(Endpoint::Reset);
                    close = true;
                }
            }
            Endpoint::Closed => {
                // A RST after both FINs leaves the close as it was.
                if f.rst() && self.eps[peer].state != Endpoint::Closed {
                    self.eps[me].set(Endpoint::Reset);
                    close |= !self.eps[me].did_close;
                }
            }
            Endpoint::Reset => {}
        }
        if close {
            self.eps[me].did_close = true;
        }
        swapped
    }
}

/// Zeek's ports that servers likely listen on (`likely_server_ports`: the
/// ports its default protocol analyzers register).
pub(crate) const LIKELY_SERVER_PORTS: &[u16] = &[
    21, 22, 23, 25, 53, 79, 80, 81, 88, 135, 139, 143, 389, 443, 445, 465, 502, 514, 563, 585, 587,
    614, 631, 636, 989, 990, 992, 993, 995, 1080, 1434, 1883, 2811, 3128, 3268, 3306, 3389, 5222,
    5223, 5269, 5432, 6379, 6666, 6667, 6668, 6669, 8000, 8080, 8888, 20000,
];

fn likely_server(port: u16) -> bool {
    LIKELY_SERVER_PORTS.binary_search(&port).is_ok()
}

/// Whether a connection's first segment, which is not a plain SYN, was
/// sent by the responder (Zeek's rule): its source port is one servers
/// listen on, and, when both ports are, it is no SYN-ACK and its source
/// port is the lower.
pub(crate) fn swap_at_start(seg: &Segment) -> bool {
    let f = seg.flags;
    if f.syn() && !f.ack() {
        return false;
    }
    let (src, dst) = (seg.src.port(), seg.dst.port());
    if !likely_server(src) {
        return false;
    }
    if likely_server(dst) {
        !f.syn() && src < dst
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(e: Endpoint) -> &'static str {
        match e {
            Endpoint::Inactive => "inactive",
            Endpoint::SynSent => "syn-sent",
            Endpoint::SynAckSent => "syn-ack-sent",
            Endpoint::Partial => "partial",
            Endpoint::Established => "established",
            Endpoint::Closed => "closed",
            Endpoint::Reset => "reset",
        }
    }

    /// The whole table: originator state x responder state, for three
    /// originator histories: no data and `SR`, data and `SDR`, no data and
    /// `SAR`. Any change to a cell shows up in this snapshot.
    #[test]
    fn conn_state_table() {
        let mut out = String::from("orig \\ resp: SR (no data), SDR (data), SAR (no data)\n");
        for os in Endpoint::ALL {
            for rs in Endpoint::ALL {
                let mut cells = Vec::new();
                for (data, history) in [(false, "SR"), (true, "SDR"), (false, "SAR")] {
                    let o = EndpointView {
                        state: os,
                        sent_data: data,
                    };
                    let r = EndpointView {
                        state: rs,
                        sent_data: false,
                    };
                    cells.push(conn_state(o, r, history));
                }
                out.push_str(&format!(
                    "{:<13} {:<13} {}\n",
                    name(os),
                    name(rs),
                    cells.join(" ")
                ));
            }
        }
        insta::assert_snapshot!(out);
    }

    #[test]
    fn history_letters_count_once_per_side() {
        let mut h = History::default();
        for (orig, c) in [
            (true, b's'),
            (false, b'h'),
            (true, b'a'),
            (true, b's'),
            (false, b's'),
        ] {
            h.mark(orig, c);
        }
        assert_eq!(h.as_str(), "ShAs");
        // Every letter on both sides fits.
        for c in b'a'..=b'z' {
            h.mark(true, c);
            h.mark(false, c);
        }
        assert_eq!(h.as_str().len(), 52);
        assert!(h.as_str().starts_with("ShAs"));
    }

    #[test]
    fn zeeks_rstos0_pattern_reads_the_whole_history() {
        for (h, want) in [
            ("SR", true),
            ("^SR", true),
            ("SdR", true),
            ("ShR", true),
            ("SAR", false),
            ("SFR", false),
            ("DSR", false),
            ("S", false),
        ] {
            assert_eq!(syn_then_reset(h), want, "{h}");
        }
    }
}
