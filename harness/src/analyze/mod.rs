//! Connection facts from the segments on the wire.
//!
//! [`Connection`] folds one TCP connection's segments, one at a time, into
//! per-side facts: SYN/FIN/RST counts, distinct payload bytes in sequence
//! space, retransmissions, how much the peer acknowledged; and connection
//! facts: whose FIN came first (and whether the close was simultaneous),
//! whose RST came first, Zeek's `conn_state` and `history`. It assumes
//! nothing about how a close should look (three or four segments, FIN or
//! RST) and knows nothing of any scenario.
//!
//! The driver folds segments in while a case runs (`wait wire closed`,
//! the settle of a stack without orphan visibility); `outcome` joins the
//! facts with what the driver observed into a case's typed facts.

mod covered;
pub mod file;
pub mod flows;
mod slab;
pub mod zeek;

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tcp::{Flags, PerSide, Side};
use crate::wire::{Segment, SeqNum};
use covered::Covered;
use zeek::{Roles, Tracker};

/// Segments one side sent, as seen in the capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SideCounts {
    pub syn: u32,
    /// FIN segments, retransmissions included.
    pub fin: u32,
    /// FINs with distinct sequence numbers: 1 for a side that closed its
    /// direction, however often that FIN was retransmitted (a tail-loss
    /// probe can repeat it when an ACK is merely late).
    pub distinct_fins: u32,
    pub rst: u32,
    /// Distinct payload bytes in sequence space (a retransmission counts once).
    pub data_bytes: u64,
    /// Segments that only repeated sequence space already sent (SYN, data or
    /// FIN); keepalives and window probes are counted apart.
    pub retransmits: u32,
    /// Distinct FINs that rode on a segment carrying data (`FP.`).
    #[serde(default)]
    pub fins_with_data: u32,
    /// RST segments with the ACK flag (`R.`) and without (`R`).
    #[serde(default)]
    pub rst_with_ack: u32,
    #[serde(default)]
    pub rst_without_ack: u32,
    /// Pure ACKs answering a SYN after the handshake, or a RST at a sequence
    /// number other than the one expected (RFC 5961 challenge ACKs).
    #[serde(default)]
    pub challenge_acks: u32,
    /// Keepalive-shaped segments (0 or 1 byte at one below the next
    /// sequence number) while the peer's window was open...
    #[serde(default)]
    pub keepalives: u32,
    /// ...and while the peer advertised a zero window: window probes.
    #[serde(default)]
    pub window_probes: u32,
    /// New payload bytes the side sent after the peer's FIN: what a
    /// half-closed peer still receives.
    #[serde(default)]
    pub data_after_peer_fin: u64,
    /// The side's first RST went out while some of its own data was not yet
    /// acknowledged: an abort that discarded data in flight.
    #[serde(default)]
    pub rst_with_unacked_data: bool,
    /// The side's first RST answered data that arrived after the side had
    /// sent its FIN: the answer of a closed socket to late data.
    #[serde(default)]
    pub rst_for_data_after_close: bool,
    /// The side's last window before the connection's first FIN or RST was
    /// zero: the close came while its receive buffer was full.
    #[serde(default)]
    pub zero_window_at_close: bool,
}

/// What a segment was, beyond its flags (as Wireshark's expert notes say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SegmentNote {
    /// Repeats sequence space already sent.
    Retransmission,
    /// Keepalive-shaped, the peer's window open.
    Keepalive,
    /// Keepalive-shaped, the peer's window zero.
    WindowProbe,
    /// A pure ACK answering an unexpected SYN or RST (RFC 5961).
    ChallengeAck,
    /// Advertises a zero receive window.
    ZeroWindow,
}

impl SegmentNote {
    pub fn name(self) -> &'static str {
        match self {
            SegmentNote::Retransmission => "retransmission",
            SegmentNote::Keepalive => "keepalive",
            SegmentNote::WindowProbe => "window probe",
            SegmentNote::ChallengeAck => "challenge ACK",
            SegmentNote::ZeroWindow => "zero window",
        }
    }
}

/// Whose FIN appeared first on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FirstFin {
    Client,
    Server,
    /// Each side sent its FIN before acknowledging the other's
    /// (simultaneous close, RFC 9293 section 3.6 case 2).
    Both,
}

impl FirstFin {
    pub fn name(self) -> &'static str {
        match self {
            FirstFin::Client => "client",
            FirstFin::Server => "server",
            FirstFin::Both => "both",
        }
    }
}

impl From<Side> for FirstFin {
    fn from(s: Side) -> FirstFin {
        match s {
            Side::Client => FirstFin::Client,
            Side::Server => FirstFin::Server,
        }
    }
}

/// The `wire` object of a case report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WireFacts {
    /// What each side sent: `client`, `server`.
    #[serde(flatten)]
    pub sides: PerSide<SideCounts>,
    pub first_fin: Option<FirstFin>,
    pub first_rst: Option<Side>,
    /// Zeek `conn_state`, the client being the originator.
    pub conn_state: String,
    /// Zeek `history` (uppercase: client, lowercase: server).
    pub history: String,
    /// Segments of either side from the first FIN or RST to the end of the
    /// capture: how many segments the close really took.
    pub close_segments: u32,
    /// Which side should hold TIME-WAIT, from the wire: the one that sent
    /// the last ACK of the FIN exchange (the first FIN's sender), both after
    /// a simultaneous close, none when a RST ended the connection; null
    /// while the FIN exchange is incomplete.
    #[serde(default)]
    pub time_wait_side: Option<crate::tcp::TimeWaitSide>,
    /// Every segment in capture order, one token each: side (`c`, `s`),
    /// flags in tcpdump's spelling and the payload length if any, e.g.
    /// `c:S s:S. c:. c:P.100 s:. c:FP.4096 s:. s:F. c:.`. Past
    /// [`TRACE_TOKENS`] tokens it ends with `...+N` (N more segments).
    #[serde(default)]
    pub trace: String,
}

/// Tokens a trace holds before it says how many more there were.
pub(crate) const TRACE_TOKENS: usize = 10_000;

/// Whether a connection's trace ([`WireFacts::trace`]) is spelled out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Traces {
    /// Spelled out, a token per segment.
    #[default]
    Kept,
    /// Left empty, for an output that shows none (`analyze`'s table and
    /// conn.log): spelling out a token per segment, in memory of its own
    /// for every connection held, is about a sixth of the analysis of a
    /// capture of many short connections.
    Skipped,
}

/// One segment of the connection, for reading a case without Wireshark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PacketRecord {
    /// Milliseconds since the case started.
    pub t_ms: f64,
    pub from: Side,
    /// tcpdump-style flags: `S`, `S.`, `.`, `P.`, `F.`, `R.`.
    pub flags: Flags,
    /// Sequence number relative to the sender's ISN (the SYN is 0).
    pub seq: u32,
    /// Acknowledgment relative to the receiver's ISN; null without ACK.
    pub ack: Option<u32>,
    pub len: u32,
    pub win: u16,
    /// What the segment was beyond its flags (retransmission, window
    /// probe, ...); empty for an ordinary segment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<SegmentNote>,
    /// The fault rule (its key) that dropped or rejected this segment on
    /// its way in: the capture saw it, the peer's stack did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_by: Option<String>,
}

/// Per-direction bookkeeping while walking the segments.
#[derive(Default)]
struct Dir {
    /// The sequence number of the side's SYN, if the capture saw it.
    isn: Option<SeqNum>,
    /// Where payload offset 0 is: ISN+1, or without a SYN the first
    /// sequence number the side sent, or the first acknowledgment of it
    /// (the capture began mid-connection).
    base: Option<SeqNum>,
    /// The highest payload offset seen so far: 32-bit sequence numbers are
    /// unwrapped to 64-bit offsets nearest it, so a connection may carry
    /// more than 4 GiB.
    top: u64,
    /// The payload the capture saw, as offsets from `base`.
    covered: Covered,
    /// The first FIN sent...
    first_fin: Option<FinSent>,
    /// ...and the sequence numbers of FINs after it at other sequence
    /// numbers (rare: a connection closes once).
    later_fins: Vec<SeqNum>,
    counts: SideCounts,
    /// Highest payload offset the peer acknowledged.
    acked: u64,
    /// The highest acknowledgment the peer sent, as an offset like
    /// `acked` but not capped at what the capture saw: beyond it, data the
    /// capture missed.
    acked_any: u64,
    /// The end of the sequence space sent so far (SYN, data, FIN).
    snd_max: Option<SeqNum>,
    /// The highest acknowledgment the peer sent for this direction.
    acked_by_peer: Option<SeqNum>,
    /// The acknowledgment this side sent last (what it expects next).
    last_ack_sent: Option<SeqNum>,
    /// Whether this side's last segment advertised a zero window.
    window_zero: bool,
    /// This side just received a SYN after the handshake, or a RST at an
    /// unexpected sequence number: its next pure ACK is a challenge ACK.
    challenge_due: bool,
    /// The peer sent data after this side's FIN.
    data_after_own_fin: bool,
    /// This side sent a SYN-ACK.
    sent_syn_ack: bool,
}

/// A side's first FIN.
#[derive(Clone, Copy)]
struct FinSent {
    seq: SeqNum,
    /// Its payload offset.
    at: u64,
    /// Its place among the connection's segments.
    index: usize,
    /// The acknowledgment it carried.
    ack: Option<SeqNum>,
}

impl Dir {
    /// `seq` as a payload offset from `base` (negative before it),
    /// unwrapped to the 64-bit offset nearest the highest seen; None
    /// before the side has a base.
    fn offset(&self, seq: SeqNum) -> Option<i64> {
        let low = i64::from(seq.since(self.base?));
        let top = i64::try_from(self.top).unwrap_or(i64::MAX);
        // The candidates 2^32 apart around `top`; the nearest wins.
        let near = (top & !0xffff_ffff) | low;
        let best = [near - (1 << 32), near, near + (1 << 32)]
            .into_iter()
            .min_by_key(|c| (c - top).abs())
            .unwrap_or(near);
        Some(best)
    }

    /// The end of the covered payload (relative offset).
    fn extent(&self) -> u64 {
        self.covered.extent()
    }

    /// Payload the peer acknowledged that the capture never saw: the gaps
    /// in `covered` below the highest acknowledgment (Zeek's
    /// `missed_bytes`). The acknowledgment of this side's FIN counts one
    /// sequence number beyond the payload.
    /// None for a side the capture never saw send or be acknowledged.
    fn missed(&self) -> Option<u64> {
        self.base?;
        let fin_at = self.first_fin.map(|fin| fin.at);
        let end = match fin_at {
            Some(f) if self.acked_any > f => f,
            _ => self.acked_any,
        };
        let seen: u64 = self
            .covered
            .ranges()
            .iter()
            .map(|&(a, b)| b.min(end).saturating_sub(a))
            .sum();
        Some(end.saturating_sub(seen))
    }

    /// Whether the peer acknowledged everything this side sent.
    fn all_acked(&self) -> bool {
        match (self.snd_max, self.acked_by_peer) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(end), Some(ack)) => ack >= end,
        }
    }

    /// Whether this side sent a FIN and the peer acknowledged it.
    fn fin_acked(&self) -> bool {
        match (self.first_fin, self.acked_by_peer) {
            (Some(fin), Some(ack)) => ack > fin.seq,
            _ => false,
        }
    }
}

/// One TCP connection's analysis, fed a segment at a time.
pub struct Connection {
    ends: PerSide<SocketAddr>,
    dirs: PerSide<Dir>,
    /// Zeek's states and history letters.
    zeek: Tracker,
    first_rst: Option<Side>,
    handshake_acked: bool,
    close_segments: u32,
    t0_us: i64,
    /// Keep a [`PacketRecord`] per segment (a case report's packet list).
    keep_packets: bool,
    packets: Vec<PacketRecord>,
    /// Spell out the trace (see [`Traces`]).
    traces: Traces,
    /// The trace so far, ASCII (see [`push_trace_token`]).
    trace: Vec<u8>,
    trace_tokens: usize,
    /// Segments pushed so far: their order, whatever the capture numbers.
    pushed: usize,
}

/// What [`Connection::finish`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionFacts {
    pub wire: WireFacts,
    pub packets: Vec<PacketRecord>,
    /// Payload bytes of each side that the peer acknowledged.
    pub acked: PerSide<u64>,
    /// Payload bytes of each side that the peer acknowledged but the
    /// capture did not see (what Zeek's `missed_bytes` counts, per side);
    /// None without any sequence number of the side.
    pub missed: PerSide<Option<u64>>,
}

impl Connection {
    /// A connection between these addresses, whose client is known (the
    /// case's); packet times are relative to `t0_us` (microseconds since
    /// the epoch).
    pub fn new(ends: PerSide<SocketAddr>, t0_us: i64, keep_packets: bool) -> Connection {
        Connection::with(ends, t0_us, keep_packets, Tracker::fixed())
    }

    /// A connection found in a capture: `ends` as its first segment
    /// suggests them, the roles swapped at the start if
    /// `swapped_at_start` (Zeek's rule, [`zeek::swap_at_start`]); they may
    /// swap again as Zeek's would (see [`Connection::ends`]).
    /// Its trace is spelled out only if `traces` says so.
    pub fn found(ends: PerSide<SocketAddr>, swapped_at_start: bool, traces: Traces) -> Connection {
        Connection {
            traces,
            ..Connection::with(ends, 0, false, Tracker::found(swapped_at_start))
        }
    }

    fn with(
        ends: PerSide<SocketAddr>,
        t0_us: i64,
        keep_packets: bool,
        zeek: Tracker,
    ) -> Connection {
        Connection {
            ends,
            dirs: PerSide::default(),
            zeek,
            first_rst: None,
            handshake_acked: false,
            close_segments: 0,
            t0_us,
            keep_packets,
            packets: Vec::new(),
            traces: Traces::Kept,
            trace: Vec::new(),
            trace_tokens: 0,
            pushed: 0,
        }
    }

    /// The client's and the server's address (Zeek's originator and
    /// responder; for a connection found in a capture, they can swap while
    /// it is pushed, as Zeek's do).
    pub fn ends(&self) -> PerSide<SocketAddr> {
        self.ends
    }

    /// Which side sent `seg`, if it belongs to this connection.
    pub(crate) fn side_of(&self, seg: &Segment) -> Option<Side> {
        let PerSide { client, server } = self.ends;
        if seg.src == client && seg.dst == server {
            Some(Side::Client)
        } else if seg.src == server && seg.dst == client {
            Some(Side::Server)
        } else {
            None
        }
    }

    /// Folds one segment sent by `side` into the facts, phase by phase:
    /// the close's bookkeeping, what kind of segment it is, the sender's
    /// sequence space, the acknowledgment and window it carries, the
    /// handshake (and Zeek's view of it), then the trace and the packet
    /// record.
    pub fn push(&mut self, seg: &Segment, side: Side) {
        self.note_closing(seg, side);
        let mut notes = Vec::new();
        let probe = self.classify(seg, side, &mut notes);
        if self.advance_sequence(seg, side) && !probe {
            self.dirs[side].counts.retransmits += 1;
            notes.push(SegmentNote::Retransmission);
        }
        self.take_acknowledgment(seg, side, &mut notes);
        let roles = self.track_handshake(seg, side);
        self.append_trace(seg, side);
        self.keep_packet(seg, side, notes);
        if roles == Roles::Swapped {
            self.swap_roles();
        }
    }

    /// The close's bookkeeping: whose window was shut at the first FIN or
    /// RST, how many segments the close took, and data sent after the
    /// sender's own FIN.
    fn note_closing(&mut self, seg: &Segment, side: Side) {
        let f = seg.flags;
        if self.close_segments == 0 && (f.fin() || f.rst()) {
            // The connection's first FIN or RST: whose window was shut then.
            for s in Side::BOTH {
                let d = &mut self.dirs[s];
                d.counts.zero_window_at_close = d.window_zero;
            }
        }
        if self.close_segments > 0 || f.fin() || f.rst() {
            self.close_segments += 1;
        }
        if seg.len > 0 && self.dirs[side.peer()].first_fin.is_some() {
            self.dirs[side.peer()].data_after_own_fin = true;
        }
    }

    /// Whether the segment is a probe: keepalive-shaped (0 or 1 byte at
    /// one below the next sequence number, Wireshark's definition) or a
    /// window probe (the same while the peer advertises a zero window).
    /// Neither is a retransmission. Also counts a challenge ACK (RFC 5961)
    /// where one was due.
    fn classify(&mut self, seg: &Segment, side: Side, notes: &mut Vec<SegmentNote>) -> bool {
        let f = seg.flags;
        let peer_window_zero = self.dirs[side.peer()].window_zero;
        let me = &mut self.dirs[side];
        let probe = !f.syn()
            && !f.fin()
            && !f.rst()
            && seg.len <= 1
            && me.snd_max.is_some_and(|m| seg.seq + 1 == m);
        if probe {
            if peer_window_zero {
                me.counts.window_probes += 1;
                notes.push(SegmentNote::WindowProbe);
            } else {
                me.counts.keepalives += 1;
                notes.push(SegmentNote::Keepalive);
            }
        }
        let pure_ack = f.ack() && !f.syn() && !f.fin() && !f.rst() && seg.len == 0;
        if me.challenge_due && pure_ack && !probe {
            me.counts.challenge_acks += 1;
            notes.push(SegmentNote::ChallengeAck);
        }
        me.challenge_due = false;
        probe
    }

    /// The sender's sequence space: its SYN, payload, FIN and RST.
    /// Whether the segment carried nothing new (a retransmission, unless
    /// it is a probe).
    fn advance_sequence(&mut self, seg: &Segment, side: Side) -> bool {
        let f = seg.flags;
        let peer_fin_seen = self.dirs[side.peer()].first_fin.is_some();
        let index = self.pushed;
        let me = &mut self.dirs[side];
        let mut retransmit = false;
        if f.syn() {
            me.counts.syn += 1;
            if me.isn == Some(seg.seq) {
                retransmit = true;
            }
            if me.isn.is_none() {
                me.isn = Some(seg.seq);
                if me.covered.extent() == 0 {
                    me.base = Some(seg.seq + 1);
                    me.top = 0;
                }
            }
        }
        let first_byte = seg.seq + u32::from(f.syn());
        me.base.get_or_insert(first_byte);
        let data_start = me.offset(first_byte).unwrap_or(0);
        let data_end = data_start + i64::from(seg.len);
        if let Ok(end) = u64::try_from(data_end) {
            me.top = me.top.max(end);
        }
        if seg.len > 0 {
            // Bytes before the base (sent before the capture began) are
            // not the capture's to count.
            let new = match u64::try_from(data_end) {
                Ok(end) if end > 0 => me.covered.add(data_start.max(0) as u64, end),
                _ => 0,
            };
            me.counts.data_bytes += new;
            if new == 0 {
                retransmit = true;
            }
            if peer_fin_seen {
                me.counts.data_after_peer_fin += new;
            }
        }
        if f.fin() {
            me.counts.fin += 1;
            let fin_seq = seg.seq + (u32::from(f.syn()) + seg.len);
            if me.first_fin.is_some_and(|fin| fin.seq == fin_seq)
                || me.later_fins.contains(&fin_seq)
            {
                retransmit |= seg.len == 0;
            } else {
                if me.first_fin.is_none() {
                    me.first_fin = Some(FinSent {
                        seq: fin_seq,
                        at: u64::try_from(data_end).unwrap_or(0),
                        index,
                        ack: f.ack().then_some(seg.ack),
                    });
                } else {
                    me.later_fins.push(fin_seq);
                }
                me.counts.distinct_fins += 1;
                if seg.len > 0 {
                    me.counts.fins_with_data += 1;
                }
            }
        }
        if f.rst() {
            if me.counts.rst == 0 {
                me.counts.rst_with_unacked_data = me.extent() > me.acked;
                me.counts.rst_for_data_after_close = me.data_after_own_fin;
            }
            me.counts.rst += 1;
            if f.ack() {
                me.counts.rst_with_ack += 1;
            } else {
                me.counts.rst_without_ack += 1;
            }
            self.first_rst.get_or_insert(side);
        }
        retransmit
    }

    /// What the segment says of the peer's data and of the sender's
    /// window: a zero window, the acknowledgment (how much of the peer's
    /// payload it covers), a challenge ACK it makes due (RFC 5961), and
    /// the sender's highest sequence number.
    fn take_acknowledgment(&mut self, seg: &Segment, side: Side, notes: &mut Vec<SegmentNote>) {
        let f = seg.flags;
        let peer = side.peer();
        let me = &mut self.dirs[side];
        if seg.window == 0 && !f.rst() {
            notes.push(SegmentNote::ZeroWindow);
        }
        me.window_zero = seg.window == 0 && !f.rst();
        if f.ack() && !f.rst() {
            me.last_ack_sent = Some(seg.ack);
        }
        // RFC 5961: once synchronized, a SYN, or a RST whose sequence number
        // is not the receiver's next expected one, is answered with an ACK.
        if self.handshake_acked {
            let expected = self.dirs[peer].last_ack_sent;
            if (f.syn() && !f.ack()) || (f.rst() && expected != Some(seg.seq)) {
                self.dirs[peer].challenge_due = true;
            }
        }
        let me = &mut self.dirs[side];
        let end = seg.seq + seg.seq_len();
        if seg.seq_len() > 0 && me.snd_max.is_none_or(|m| end > m) {
            me.snd_max = Some(end);
        }
        if !f.ack() || f.rst() {
            return;
        }
        let theirs = &mut self.dirs[peer];
        if theirs.acked_by_peer.is_none_or(|a| seg.ack > a) {
            theirs.acked_by_peer = Some(seg.ack);
        }
        // What this side acknowledges of the peer's payload. A peer not
        // seen yet is numbered from this acknowledgment.
        theirs.base.get_or_insert(seg.ack);
        if let Some(rel) = theirs.offset(seg.ack).and_then(|r| u64::try_from(r).ok()) {
            let extent = theirs.extent();
            if rel <= extent + 1 {
                theirs.acked = theirs.acked.max(rel.min(extent));
            }
            // An acknowledgment ahead of the data seen (by less than
            // half the sequence space: not one from behind it).
            if rel < theirs.top + (1 << 31) {
                theirs.acked_any = theirs.acked_any.max(rel);
            }
        }
    }

    /// The handshake: a SYN-ACK sent, the client's ACK of it; and Zeek's
    /// state machine, which may take the other end for the originator.
    fn track_handshake(&mut self, seg: &Segment, side: Side) -> Roles {
        let f = seg.flags;
        if f.syn() && f.ack() {
            self.dirs[side].sent_syn_ack = true;
        }
        if side == Side::Client && f.ack() && !f.syn() && self.dirs.server.sent_syn_ack {
            self.handshake_acked = true;
        }
        self.zeek.push(side == Side::Client, seg)
    }

    /// The segment's token in the trace (up to [`TRACE_TOKENS`] of them).
    fn append_trace(&mut self, seg: &Segment, side: Side) {
        if self.traces == Traces::Kept && self.trace_tokens < TRACE_TOKENS {
            if self.trace.is_empty() {
                // Room for a short connection's dozen tokens at once.
                self.trace.reserve(64);
            } else {
                self.trace.push(b' ');
            }
            push_trace_token(&mut self.trace, side, seg.flags, seg.len);
        }
        self.trace_tokens += 1;
        self.pushed += 1;
    }

    /// The segment as a packet record, with sequence numbers relative to
    /// each side's ISN, when records are kept.
    fn keep_packet(&mut self, seg: &Segment, side: Side, notes: Vec<SegmentNote>) {
        if !self.keep_packets {
            return;
        }
        // Relative to one before offset 0: the ISN, when it was seen.
        let relative = |d: &Dir, n: SeqNum| d.offset(n).map_or(0, |o| (o + 1) as u32);
        let f = seg.flags;
        self.packets.push(PacketRecord {
            t_ms: (seg.ts_us - self.t0_us) as f64 / 1e3,
            from: side,
            flags: f,
            seq: relative(&self.dirs[side], seg.seq),
            ack: f.ack().then(|| relative(&self.dirs[side.peer()], seg.ack)),
            len: seg.len,
            win: seg.window,
            notes,
            dropped_by: None,
        });
    }

    /// Zeek took the other end for the originator: everything kept by
    /// side changes places. (It happens only early: a SYN-ACK, or a SYN
    /// after its SYN-ACK, is all the connection has shown.)
    fn swap_roles(&mut self) {
        self.ends = PerSide::new(self.ends.server, self.ends.client);
        std::mem::swap(&mut self.dirs.client, &mut self.dirs.server);
        self.first_rst = self.first_rst.map(Side::peer);
        for p in &mut self.packets {
            p.from = p.from.peer();
        }
        for i in 0..self.trace.len() {
            if i == 0 || self.trace[i - 1] == b' ' {
                self.trace[i] = match self.trace[i] {
                    b'c' => b's',
                    b's' => b'c',
                    other => other,
                };
            }
        }
    }

    /// Gives back the spare capacity of what grew while the connection was
    /// open: an ended connection waits in a capture's flow table for late
    /// segments, thousands of them at a time.
    pub fn shrink(&mut self) {
        self.trace.shrink_to_fit();
        for side in Side::BOTH {
            let d = &mut self.dirs[side];
            d.covered.shrink();
            d.later_fins.shrink_to_fit();
        }
    }

    /// Whether the close is complete on the wire: both sides sent a FIN
    /// and the peer acknowledged it, or a RST ended the connection.
    pub(crate) fn closed_on_wire(&self) -> bool {
        self.first_rst.is_some() || self.fins_acked()
    }

    /// Whether both FINs are acknowledged.
    pub(crate) fn fins_acked(&self) -> bool {
        self.dirs.client.fin_acked() && self.dirs.server.fin_acked()
    }

    /// Whether some side has sequence space on the wire that its peer has
    /// not acknowledged (and no RST ended the connection): what the
    /// transient TCP states mean, seen from the wire.
    pub fn in_flight(&self) -> bool {
        self.first_rst.is_none() && !(self.dirs.client.all_acked() && self.dirs.server.all_acked())
    }

    /// Payload bytes of `side` that its peer acknowledged so far.
    pub fn acked(&self, side: Side) -> u64 {
        self.dirs[side].acked
    }

    /// Whether a RST ended the connection.
    pub fn reset(&self) -> bool {
        self.first_rst.is_some()
    }

    /// The facts of everything pushed so far.
    pub fn finish(mut self) -> ConnectionFacts {
        self.take_facts()
    }

    /// [`Connection::finish`] where the connection lies (no copy of it):
    /// its trace and packet records are taken, so nothing more may be
    /// pushed.
    pub(crate) fn take_facts(&mut self) -> ConnectionFacts {
        let first_fin = first_fin(&self.dirs);
        let conn_state = self.zeek.conn_state().to_string();
        let time_wait_side = if self.first_rst.is_some() {
            Some(crate::tcp::TimeWaitSide::None)
        } else if self.dirs.client.fin_acked() && self.dirs.server.fin_acked() {
            first_fin.map(|f| match f {
                FirstFin::Client => crate::tcp::TimeWaitSide::Client,
                FirstFin::Server => crate::tcp::TimeWaitSide::Server,
                FirstFin::Both => crate::tcp::TimeWaitSide::Both,
            })
        } else {
            None
        };
        ConnectionFacts {
            wire: WireFacts {
                sides: PerSide::new(self.dirs.client.counts, self.dirs.server.counts),
                time_wait_side,
                first_fin,
                first_rst: self.first_rst,
                conn_state,
                history: self.zeek.history().to_string(),
                close_segments: self.close_segments,
                trace: {
                    let mut trace =
                        String::from_utf8(std::mem::take(&mut self.trace)).unwrap_or_default();
                    if self.traces == Traces::Kept && self.trace_tokens > TRACE_TOKENS {
                        trace += &format!(" ...+{}", self.trace_tokens - TRACE_TOKENS);
                    }
                    trace
                },
            },
            packets: std::mem::take(&mut self.packets),
            acked: PerSide::new(self.dirs.client.acked, self.dirs.server.acked),
            missed: PerSide::new(self.dirs.client.missed(), self.dirs.server.missed()),
        }
    }
}

/// Appends one token of a trace (`c:FP.100`), put together on the stack
/// and appended at once: this runs for every segment of a capture, and the
/// formatting machinery would cost more than the rest of the segment's
/// analysis. Only ASCII is written.
fn push_trace_token(trace: &mut Vec<u8>, side: Side, flags: Flags, payload: u32) {
    // "c:" + 8 flag letters (or "none") + 10 digits.
    let mut token = [0u8; 20];
    token[..2].copy_from_slice(if side == Side::Client { b"c:" } else { b"s:" });
    let mut n = 2;
    if flags.is_empty() {
        token[n..n + 4].copy_from_slice(b"none");
        n += 4;
    }
    for letter in flags.letters() {
        token[n] = letter as u8;
        n += 1;
    }
    let mut digits = [0u8; 10];
    let mut d = digits.len();
    let mut rest = payload;
    while rest > 0 {
        d -= 1;
        digits[d] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let digits = &digits[d..];
    token[n..n + digits.len()].copy_from_slice(digits);
    n += digits.len();
    trace.extend_from_slice(&token[..n]);
}

fn first_fin(dirs: &PerSide<Dir>) -> Option<FirstFin> {
    match (dirs.client.first_fin, dirs.server.first_fin) {
        (None, None) => None,
        (Some(_), None) => Some(FirstFin::Client),
        (None, Some(_)) => Some(FirstFin::Server),
        (Some(c), Some(s)) => {
            let (early, early_fin, late_fin) = if c.index < s.index {
                (Side::Client, c, s)
            } else {
                (Side::Server, s, c)
            };
            // Did the later FIN acknowledge the earlier one? If not, its
            // sender had not processed the peer's FIN: a simultaneous close.
            let acks_it = late_fin.ack.is_some_and(|ack| ack > early_fin.seq);
            Some(if acks_it {
                early.into()
            } else {
                FirstFin::Both
            })
        }
    }
}

/// The connection under test, as found in a case's capture.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub wire: WireFacts,
    pub packets: Vec<PacketRecord>,
    /// Payload bytes of each side that the peer acknowledged.
    pub acked: PerSide<u64>,
    /// The client and server addresses used (from the driver, or the
    /// first SYN).
    pub ends: Option<PerSide<SocketAddr>>,
    /// Segments that belong to no side of the connection under test.
    pub foreign_segments: usize,
}

/// The client's address as the wire shows it. After a failed connect a
/// stack may report its local address as `0.0.0.0:port` (`[::]:port`):
/// the address is then the source of the first segment sent from that port
/// to the server.
pub(crate) fn resolve_ends<'a>(
    ends: PerSide<SocketAddr>,
    segments: impl IntoIterator<Item = &'a Segment>,
) -> Option<PerSide<SocketAddr>> {
    if !ends.client.ip().is_unspecified() {
        return Some(ends);
    }
    segments
        .into_iter()
        .find(|s| s.dst == ends.server && s.src.port() == ends.client.port())
        .map(|s| PerSide::new(s.src, ends.server))
}

/// Analyzes the connection between `ends` in `segments` (when the driver
/// knows them; otherwise the first SYN without ACK names the client).
pub fn analyze(segments: &[Segment], ends: Option<PerSide<SocketAddr>>, t0_us: i64) -> Analysis {
    let ends = ends
        .map(|e| resolve_ends(e, segments).unwrap_or(e))
        .or_else(|| {
            segments
                .iter()
                .find(|s| s.flags.syn() && !s.flags.ack())
                .or(segments.first())
                .map(|s| PerSide::new(s.src, s.dst))
        });
    let placeholder: SocketAddr = ([0, 0, 0, 0], 0).into();
    let mut conn = Connection::new(ends.unwrap_or(PerSide::both(placeholder)), t0_us, true);
    let mut foreign = 0;
    for seg in segments {
        match ends.and(conn.side_of(seg)) {
            Some(side) => conn.push(seg, side),
            None => foreign += 1,
        }
    }
    let facts = conn.finish();
    Analysis {
        wire: facts.wire,
        packets: facts.packets,
        acked: facts.acked,
        ends,
        foreign_segments: foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "127.0.0.1:40000";
    const S: &str = "127.0.0.1:9000";

    /// A tiny builder for segment sequences: `seg(from_client, flags, seq, ack, len)`.
    fn seg(i: usize, client: bool, flags: &str, seq: u32, ack: u32, len: u32) -> Segment {
        let (src, dst) = if client { (C, S) } else { (S, C) };
        Segment {
            index: i,
            ..Segment::example(i as i64 * 1000, src, dst, flags, seq, ack, len)
        }
    }

    fn run(spec: &[(bool, &str, u32, u32, u32)]) -> Analysis {
        let segs: Vec<Segment> = spec
            .iter()
            .enumerate()
            .map(|(i, &(c, f, s, a, l))| seg(i, c, f, s, a, l))
            .collect();
        analyze(&segs, None, 0)
    }

    /// Handshake: client ISN 100, server ISN 500.
    const HS: [(bool, &str, u32, u32, u32); 3] = [
        (true, "S", 100, 0, 0),
        (false, "S.", 500, 101, 0),
        (true, ".", 101, 501, 0),
    ];

    /// The teardown facts: data after a peer's FIN, a RST answering data
    /// that came after close, a RST with data in flight, a shut window at
    /// close, and who should hold TIME-WAIT.
    #[test]
    fn teardown_facts_from_the_wire() {
        // Half-close: the client's FIN, then 9 bytes from the server, then
        // its FIN; the client sent the first FIN, so TIME-WAIT is its.
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "F.", 101, 501, 0),
            (false, ".", 501, 102, 0),
            (false, "P.", 501, 102, 9),
            (true, ".", 102, 510, 0),
            (false, "F.", 510, 102, 0),
            (true, ".", 102, 511, 0),
        ]);
        let w = run(&spec).wire;
        assert_eq!(w.sides.server.data_after_peer_fin, 9);
        assert_eq!(w.sides.client.data_after_peer_fin, 0);
        assert_eq!(w.time_wait_side, Some(crate::tcp::TimeWaitSide::Client));
        assert!(!w.sides.server.rst_for_data_after_close);

        // Close instead of shutdown: the server's FIN, the client's late 9
        // bytes, the server's RST: a closed socket answering data.
        let mut spec = HS.to_vec();
        spec.extend([
            (false, "F.", 501, 101, 0),
            (true, ".", 101, 502, 0),
            (true, "P.", 101, 502, 9),
            (false, "R", 502, 0, 0),
        ]);
        let w = run(&spec).wire;
        assert!(w.sides.server.rst_for_data_after_close);
        assert!(!w.sides.server.rst_with_unacked_data, "its FIN was acked");
        assert_eq!(w.time_wait_side, Some(crate::tcp::TimeWaitSide::None));

        // SO_LINGER {1, 0} with 100 bytes unacknowledged, the reader's
        // window shut: a RST that discards data in flight.
        let mut segs: Vec<Segment> = HS
            .iter()
            .enumerate()
            .map(|(i, &(c, f, s, a, l))| seg(i, c, f, s, a, l))
            .collect();
        segs.push(seg(3, true, "P.", 101, 501, 100));
        let mut shut = seg(4, false, ".", 501, 101, 0);
        shut.window = 0;
        segs.push(shut);
        segs.push(seg(5, true, "R.", 201, 501, 0));
        let w = analyze(&segs, None, 0).wire;
        assert!(w.sides.client.rst_with_unacked_data);
        assert!(!w.sides.client.rst_for_data_after_close);
        assert!(w.sides.server.zero_window_at_close);
        assert!(!w.sides.client.zero_window_at_close);

        // Crossed FINs: both hold TIME-WAIT. An unfinished close: unknown.
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "F.", 101, 501, 0),
            (false, "F.", 501, 101, 0),
            (true, ".", 102, 502, 0),
            (false, ".", 502, 102, 0),
        ]);
        assert_eq!(
            run(&spec).wire.time_wait_side,
            Some(crate::tcp::TimeWaitSide::Both)
        );
        let mut spec = HS.to_vec();
        spec.push((true, "F.", 101, 501, 0));
        assert_eq!(run(&spec).wire.time_wait_side, None);
    }

    #[test]
    fn test_established_three_segment_close() {
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "P.", 101, 501, 10),
            (false, ".", 501, 111, 0),
            (true, "F.", 111, 501, 0),
            (false, "F.", 501, 112, 0),
            (true, ".", 112, 502, 0),
        ]);
        let a = run(&spec);
        let w = &a.wire;
        assert_eq!(
            w.sides.client,
            SideCounts {
                syn: 1,
                fin: 1,
                distinct_fins: 1,
                rst: 0,
                data_bytes: 10,
                retransmits: 0,
                ..SideCounts::default()
            }
        );
        assert_eq!(w.sides.server.fin, 1);
        assert_eq!(w.first_fin, Some(FirstFin::Client));
        assert_eq!(w.first_rst, None);
        assert_eq!(w.conn_state, "SF");
        assert_eq!(w.history, "ShADaFf", "each letter once per direction");
        assert_eq!(w.close_segments, 3, "FIN, FIN+ACK, ACK");
        assert_eq!(a.acked, PerSide::new(10, 0));
        assert_eq!(
            a.packets[3].seq, 1,
            "relative sequence numbers start after the SYN"
        );
        assert_eq!(a.packets[4].ack, Some(11));
    }

    /// The wire's view of "done": what `wait wire closed` and the settle
    /// of a stack without orphan visibility wait for.
    #[test]
    fn test_fin_wait_the_wire_shows_when_nothing_is_in_flight() {
        let ends = PerSide::new(C.parse().unwrap(), S.parse().unwrap());
        let mut conn = Connection::new(ends, 0, false);
        let steps = [
            (true, "S", 100, 0, 0, true, false),
            (false, "S.", 500, 101, 0, true, false),
            (true, ".", 101, 501, 0, false, false),
            (true, "P.", 101, 501, 10, true, false),
            (false, ".", 501, 111, 0, false, false),
            (true, "F.", 111, 501, 0, true, false),
            (false, "F.", 501, 112, 0, true, false),
            (true, ".", 112, 502, 0, false, true),
        ];
        for (i, (c, f, s, a, l, in_flight, closed)) in steps.into_iter().enumerate() {
            let seg = seg(i, c, f, s, a, l);
            let side = conn.side_of(&seg).unwrap();
            conn.push(&seg, side);
            assert_eq!(conn.in_flight(), in_flight, "after {f} #{i}");
            assert_eq!(conn.closed_on_wire(), closed, "after {f} #{i}");
        }
        let mut rst = Connection::new(ends, 0, false);
        rst.push(&seg(0, true, "R", 100, 0, 0), Side::Client);
        assert!(rst.closed_on_wire() && !rst.in_flight());
    }

    #[test]
    fn trace_tokens_spell_flags_as_tcpdump_does() {
        for bits in 0..=u8::MAX {
            let flags = Flags::from_bits(bits);
            for (side, letter) in [(Side::Client, 'c'), (Side::Server, 's')] {
                for len in [0, 1, 9, 10, 1460, 65_535, u32::MAX] {
                    let want = if len == 0 {
                        format!("{letter}:{flags}")
                    } else {
                        format!("{letter}:{flags}{len}")
                    };
                    let mut trace = Vec::new();
                    push_trace_token(&mut trace, side, flags, len);
                    assert_eq!(String::from_utf8(trace).unwrap(), want);
                }
            }
        }
    }

    #[test]
    fn test_established_the_trace_has_a_token_per_segment() {
        let mut spec = HS.to_vec();
        spec.extend([(true, "FP.", 101, 501, 100), (false, "F.", 501, 202, 0)]);
        let a = run(&spec);
        assert_eq!(a.wire.trace, "c:S s:S. c:. c:FP.100 s:F.");
        assert_eq!(a.wire.sides.client.fins_with_data, 1);
        assert_eq!(a.wire.sides.server.fins_with_data, 0);
    }

    /// Linux probes a zero window with an empty segment one below the next
    /// sequence number, gVisor with one old byte there: both are window
    /// probes, neither a retransmission; with the window open, keepalives.
    #[test]
    fn test_established_window_probes_and_keepalives() {
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "P.", 101, 501, 100),
            (false, ".", 501, 201, 0), // window 100 in `seg`: set to 0 below
            (true, ".", 200, 501, 0),  // Linux's probe
            (true, ".", 200, 501, 1),  // gVisor's probe
            (false, ".", 501, 201, 0), // the window opens again
            (true, ".", 200, 501, 0),  // now a keepalive
        ]);
        let mut segs: Vec<Segment> = spec
            .iter()
            .enumerate()
            .map(|(i, &(c, f, s, a, l))| seg(i, c, f, s, a, l))
            .collect();
        segs[4].window = 0;
        let a = analyze(&segs, None, 0);
        let c = a.wire.sides.client;
        assert_eq!((c.window_probes, c.keepalives, c.retransmits), (2, 1, 0));
        assert_eq!(c.data_bytes, 100);
        assert_eq!(a.packets[5].notes, [SegmentNote::WindowProbe]);
        assert_eq!(a.packets[4].notes, [SegmentNote::ZeroWindow]);
        assert_eq!(a.packets[8].notes, [SegmentNote::Keepalive]);
    }

    /// RFC 5961: a SYN on an established connection, or a RST at a sequence
    /// number other than the expected one, draws a challenge ACK.
    #[test]
    fn test_established_challenge_acks() {
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "S", 9000, 0, 0),   // a new SYN on the 4-tuple
            (false, ".", 501, 101, 0), // the challenge ACK
            (true, "R", 9000, 0, 0),   // the client resets it: not expected
            (false, ".", 501, 101, 0), // another challenge ACK
            (true, "R", 101, 0, 0),    // the expected RST: no challenge
            (false, "R", 501, 0, 0),
        ]);
        let a = run(&spec);
        assert_eq!(a.wire.sides.server.challenge_acks, 2);
        assert_eq!(a.packets[4].notes, [SegmentNote::ChallengeAck]);
        assert_eq!(a.wire.sides.client.rst_without_ack, 2);
        assert_eq!(a.wire.sides.server.rst_with_ack, 0);
    }

    #[test]
    fn test_established_abort_by_client_is_rsto() {
        let mut spec = HS.to_vec();
        spec.extend([(true, "P.", 101, 501, 1000), (true, "R.", 1101, 501, 0)]);
        let a = run(&spec);
        assert_eq!(a.wire.first_rst, Some(Side::Client));
        assert_eq!(a.wire.first_fin, None);
        assert_eq!(a.wire.conn_state, "RSTO");
        assert_eq!(a.acked, PerSide::new(0, 0), "nothing was acknowledged");
    }

    #[test]
    fn test_syn_sent_rejected_is_rej() {
        let a = run(&[(true, "S", 100, 0, 0), (false, "R.", 0, 101, 0)]);
        assert_eq!(a.wire.conn_state, "REJ");
        assert_eq!(a.wire.first_rst, Some(Side::Server));
    }

    #[test]
    fn test_syn_sent_abort_without_reply_is_rstos0() {
        let a = run(&[(true, "S", 100, 0, 0), (true, "R", 101, 0, 0)]);
        assert_eq!(a.wire.conn_state, "RSTOS0");
    }

    #[test]
    fn test_syn_sent_no_reply_is_s0() {
        let a = run(&[(true, "S", 100, 0, 0), (true, "S", 100, 0, 0)]);
        assert_eq!(a.wire.conn_state, "S0");
        assert_eq!(a.wire.sides.client.syn, 2);
        assert_eq!(a.wire.sides.client.retransmits, 1);
    }

    #[test]
    fn test_fin_wait_simultaneous_close_is_both() {
        let mut spec = HS.to_vec();
        // Each FIN acknowledges only the peer's SYN, not its FIN.
        spec.extend([
            (true, "F.", 101, 501, 0),
            (false, "F.", 501, 101, 0),
            (true, ".", 102, 502, 0),
            (false, ".", 502, 102, 0),
        ]);
        assert_eq!(run(&spec).wire.first_fin, Some(FirstFin::Both));
    }

    #[test]
    fn test_close_wait_server_closes_first() {
        let mut spec = HS.to_vec();
        spec.extend([
            (false, "F.", 501, 101, 0),
            (true, "F.", 101, 502, 0),
            (false, ".", 502, 102, 0),
        ]);
        let a = run(&spec);
        assert_eq!(a.wire.first_fin, Some(FirstFin::Server));
        assert_eq!(a.wire.conn_state, "SF");
    }

    #[test]
    fn test_established_retransmitted_data_counts_once() {
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "P.", 101, 501, 100),
            (true, "P.", 101, 501, 100),
            (true, "P.", 151, 501, 100),
            (false, ".", 501, 251, 0),
        ]);
        let a = run(&spec);
        assert_eq!(a.wire.sides.client.data_bytes, 150);
        assert_eq!(
            a.wire.sides.client.retransmits, 1,
            "a partial overlap carries new bytes"
        );
        assert_eq!(a.acked.client, 150);
        assert!(a.wire.history.contains('T'));
    }

    #[test]
    fn test_established_out_of_order_data_is_merged() {
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "P.", 151, 501, 50),
            (true, "P.", 101, 501, 50),
            (true, "P.", 121, 501, 10),
        ]);
        let a = run(&spec);
        assert_eq!(a.wire.sides.client.data_bytes, 100);
        assert_eq!(a.wire.sides.client.retransmits, 1);
    }

    #[test]
    fn test_fin_wait_1_fin_retransmission() {
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "F.", 101, 501, 0),
            (true, "F.", 101, 501, 0),
            (false, ".", 501, 102, 0),
        ]);
        let a = run(&spec);
        assert_eq!(a.wire.sides.client.fin, 2);
        assert_eq!(a.wire.sides.client.distinct_fins, 1);
        assert_eq!(a.wire.sides.client.retransmits, 1);
        assert_eq!(a.wire.conn_state, "S2");
    }

    #[test]
    fn test_tail_loss_probe_repeats_the_last_data_with_its_fin() {
        // Seen on loopback when the reader is slow to open its window: the
        // probe resends the last segment, FIN included, and the late ACK
        // then covers both. One FIN, sent twice.
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "FP.", 101, 501, 100),
            (true, "FP.", 101, 501, 100),
            (false, ".", 501, 202, 0),
        ]);
        let a = run(&spec);
        assert_eq!(a.wire.sides.client.fin, 2);
        assert_eq!(a.wire.sides.client.distinct_fins, 1);
        assert_eq!(a.wire.sides.client.retransmits, 1);
        assert_eq!(a.wire.sides.client.data_bytes, 100);
    }

    #[test]
    fn test_distinct_fins_count_each_sequence_number_once() {
        // Not valid TCP (a FIN is the last sequence number), but a capture
        // can hold anything: F at 101, F at 111 (after data), F at 111 again.
        let mut spec = HS.to_vec();
        spec.extend([
            (true, "F.", 101, 501, 0),
            (true, "FP.", 101, 501, 10),
            (true, "F.", 111, 501, 0),
        ]);
        let a = run(&spec);
        assert_eq!(a.wire.sides.client.fin, 3);
        assert_eq!(a.wire.sides.client.distinct_fins, 2);
    }

    #[test]
    fn test_sequence_wraparound() {
        let isn = u32::MAX - 5;
        let a = run(&[
            (true, "S", isn, 0, 0),
            (false, "S.", 7, isn.wrapping_add(1), 0),
            (true, ".", isn.wrapping_add(1), 8, 0),
            (true, "P.", isn.wrapping_add(1), 8, 20),
            (false, ".", 8, isn.wrapping_add(21), 0),
        ]);
        assert_eq!(a.wire.sides.client.data_bytes, 20);
        assert_eq!(a.acked.client, 20);
    }

    #[test]
    fn test_midstream_only_is_oth() {
        let a = run(&[(true, "P.", 5, 9, 10), (false, ".", 9, 15, 0)]);
        assert_eq!(a.wire.conn_state, "OTH");
    }

    /// Regression: a refused connect left the client at 0.0.0.0:port, and
    /// its SYN and the RST "belonged to no side".
    #[test]
    fn an_unspecified_client_address_is_resolved_from_the_wire() {
        let segs = vec![seg(0, true, "S", 100, 0, 0), seg(1, false, "R.", 0, 101, 0)];
        let ends = PerSide::new("0.0.0.0:40000".parse().unwrap(), S.parse().unwrap());
        let a = analyze(&segs, Some(ends), 0);
        assert_eq!(a.foreign_segments, 0);
        assert_eq!(a.ends.unwrap().client, C.parse().unwrap());
        assert_eq!((a.wire.sides.client.syn, a.wire.sides.server.rst), (1, 1));
        assert_eq!(a.wire.conn_state, "REJ");
    }

    #[test]
    fn foreign_segments_are_counted_not_analyzed() {
        let mut segs: Vec<Segment> = HS
            .iter()
            .enumerate()
            .map(|(i, &(c, f, s, a, l))| seg(i, c, f, s, a, l))
            .collect();
        let mut other = seg(3, true, "S", 1, 0, 0);
        other.src = "127.0.0.1:40001".parse().unwrap();
        segs.push(other);
        let a = analyze(&segs, None, 0);
        assert_eq!(a.foreign_segments, 1);
        assert_eq!(a.wire.sides.client.syn, 1);
    }
}
