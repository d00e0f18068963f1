//! Every connection of a capture, one segment at a time.
//!
//! A [`FlowTable`] keys connections by their 4-tuple and folds each segment
//! into its [`Connection`]. A SYN without ACK on the 4-tuple of a connection
//! that is over on the wire (both FINs acknowledged, or a RST) starts a new
//! connection: the port was reused. Anything else on that 4-tuple, however
//! late, belongs to the connection already there (a retransmitted FIN in
//! TIME-WAIT, a challenge ACK and the RST that answers it).
//!
//! Memory is bounded by the connections in the table: open ones, and those
//! that ended less than [`FlowTable::LINGER_US`] of capture time ago (late
//! segments of a closed connection still arrive: a FIN retransmitted into
//! TIME-WAIT). Older closed connections are handed out and forgotten, so a
//! capture of any length streams through.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use hashbrown::HashTable;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::slab::{Slab, Slot};
use super::{Connection, Traces, WireFacts};
use crate::tcp::{PerSide, Side};
use crate::wire::{Segment, SeqNum};

/// One connection of a capture, with its wire facts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FlowFacts {
    /// Order of the connection's first segment in the capture, from 0.
    pub index: usize,
    /// The originator (Zeek's `orig`): the sender of the first SYN, or of
    /// the first segment if the handshake was not captured.
    pub client: SocketAddr,
    /// The responder.
    pub server: SocketAddr,
    /// Capture time of the first segment, microseconds since the epoch.
    pub start_us: i64,
    /// From the first segment to the last.
    pub duration_us: i64,
    /// The connection's first segment was not a SYN: it was open when the
    /// capture began, and its facts cover only what was captured.
    pub began_before_capture: bool,
    /// No FIN exchange completed and no RST was seen by the end of the
    /// capture.
    pub open_at_end: bool,
    /// Segments each side sent.
    pub packets: PerSide<u64>,
    /// IP bytes each side sent, headers included (Zeek's `ip_bytes`).
    pub ip_bytes: PerSide<u64>,
    pub wire: WireFacts,
    /// Payload bytes of each side that the peer acknowledged.
    pub acked: PerSide<u64>,
    /// Payload each side sent that the peer acknowledged but the capture
    /// did not see: gaps in the captured data, and data acknowledged beyond
    /// it (conn.log's `missed_bytes` sums it over the sides the capture has
    /// a packet of, as Zeek counts). Without the side's SYN it is
    /// counted from the first sequence number seen of it (or acknowledged);
    /// null for a side the capture shows nothing of.
    #[serde(default)]
    pub missed: PerSide<Option<u64>>,
}

/// A 4-tuple, the same whichever way a segment goes: the two ends in
/// order, each its address and port as plain integers (48 bytes where two
/// `SocketAddr`s take 64), quick to order and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key([End; 2]);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct End {
    /// The address's 128 bits (an IPv4 address in the low 32).
    ip: [u64; 2],
    /// The port, and bit 16 set for IPv6 (so `::a.b.c.d` is not IPv4).
    port_family: u32,
}

impl End {
    fn of(a: SocketAddr) -> End {
        let (ip, v6) = match a.ip() {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()), 0),
            IpAddr::V6(v6) => (v6.to_bits(), 1 << 16),
        };
        End {
            ip: [(ip >> 64) as u64, ip as u64],
            port_family: u32::from(a.port()) | v6,
        }
    }
}

impl Key {
    fn of(seg: &Segment) -> Key {
        Key::of_ends(seg.src, seg.dst)
    }

    fn of_ends(one: SocketAddr, other: SocketAddr) -> Key {
        let (a, b) = (End::of(one), End::of(other));
        Key(if a <= b { [a, b] } else { [b, a] })
    }
}

struct Flow {
    index: usize,
    /// Its 4-tuple's hash in the table.
    hash: u64,
    conn: Connection,
    first_us: i64,
    last_us: i64,
    began_before_capture: bool,
    packets: PerSide<u64>,
    ip_bytes: PerSide<u64>,
    /// When the connection was over on the wire, if it is.
    ended_us: Option<i64>,
    /// The sequence number of the client's SYN, if the capture saw one.
    client_isn: Option<SeqNum>,
    /// The server answered that SYN with a RST (the connection was
    /// refused): the same SYN again is a new attempt.
    rejected: bool,
    /// RSTs seen so far.
    rsts: u64,
    /// Once the client's SYN came again after a RST: how many RSTs that
    /// was. Only a later RST, or both FINs acknowledged, ends it then.
    revived_after: Option<u64>,
    /// Each side sent its first FIN or RST (Zeek's `did_close`).
    closed: PerSide<bool>,
    /// When Zeek would forget the connection (its close or reset delay
    /// after the close it counts as complete); see [`Timeouts::Zeek`].
    zeek_forget_us: Option<i64>,
    /// The last segment that came before both sides had closed: where
    /// Zeek's duration ends.
    zeek_last_us: i64,
}

impl Flow {
    fn new(index: usize, hash: u64, seg: &Segment, traces: Traces) -> Flow {
        let f = seg.flags;
        // The first segment's sender is the originator, unless (Zeek's
        // rule) the connection starts without a SYN and its source port is
        // one servers listen on.
        let swapped = super::zeek::swap_at_start(seg);
        let ends = if swapped {
            PerSide::new(seg.dst, seg.src)
        } else {
            PerSide::new(seg.src, seg.dst)
        };
        Flow {
            index,
            hash,
            conn: Connection::found(ends, swapped, traces),
            first_us: seg.ts_us,
            last_us: seg.ts_us,
            began_before_capture: !f.syn() || f.ack(),
            packets: PerSide::default(),
            ip_bytes: PerSide::default(),
            ended_us: None,
            client_isn: (f.syn() && !f.ack()).then_some(seg.seq),
            rejected: false,
            rsts: 0,
            revived_after: None,
            closed: PerSide::default(),
            zeek_forget_us: None,
            zeek_last_us: seg.ts_us,
        }
    }

    /// Zeek's timers at a close (TCPSessionAdapter's ConnectionClosed):
    /// a side's first FIN or RST completes the close when it is a RST,
    /// when the peer has closed already, or when the peer has sent nothing
    /// at all; the connection is then forgotten `tcp_close_delay` after
    /// that segment, whatever comes later. A RST after the side's own FIN,
    /// the peer still open, forgets it `tcp_reset_delay` after the RST.
    fn zeek_close(&mut self, side: Side, seg: &Segment) {
        let (fin, rst) = (seg.flags.fin(), seg.flags.rst());
        if !(fin || rst) {
            return;
        }
        let peer = side.peer();
        let at = seg.ts_us + Timeouts::ZEEK_DELAY_US;
        let forget = if !self.closed[side] {
            self.closed[side] = true;
            rst || self.closed[peer] || self.packets[peer] == 0
        } else {
            rst && !self.closed[peer]
        };
        if forget {
            self.zeek_forget_us = Some(self.zeek_forget_us.map_or(at, |t| t.min(at)));
        }
    }

    /// Whether `seg`, a SYN without ACK, opens a new connection on this
    /// 4-tuple: only once this one is over, and not when it repeats this
    /// connection's own SYN (a retransmission after a RST that answered
    /// something else, as a half-open peer's challenge ACK draws), unless
    /// a RST refused that very SYN (a client that tries again with the same
    /// ISN, as Windows does, makes a new attempt each time).
    fn replaced_by(&self, seg: &Segment) -> bool {
        self.ended_us.is_some()
            && (self.rejected
                || !(seg.src == self.conn.ends().client && Some(seg.seq) == self.client_isn))
    }

    /// The connection's 4-tuple (its ends, in whichever roles).
    fn key(&self) -> Key {
        let ends = self.conn.ends();
        Key::of_ends(ends.client, ends.server)
    }

    /// Whether this is the connection on `key`, whose hash is `hash` (the
    /// hash first: it rules out almost every other one cheaply).
    fn is_on(&self, hash: u64, key: &Key) -> bool {
        self.hash == hash && self.key() == *key
    }

    fn push(&mut self, seg: &Segment) {
        let side = if seg.src == self.conn.ends().client {
            Side::Client
        } else {
            Side::Server
        };
        if self.ended_us.is_some() && seg.flags.syn() && !seg.flags.ack() {
            // Its own SYN again (see `replaced_by`): not over after all.
            self.ended_us = None;
            self.revived_after = Some(self.rsts);
        }
        if side == Side::Server && seg.flags.rst() && seg.flags.ack() {
            self.rejected |= self.client_isn.is_some_and(|isn| seg.ack == isn + 1);
        }
        if !(self.closed.client && self.closed.server) {
            self.zeek_last_us = self.zeek_last_us.max(seg.ts_us);
        }
        self.zeek_close(side, seg);
        self.packets[side] += 1;
        self.ip_bytes[side] += u64::from(seg.ip_len);
        let client = self.conn.ends().client;
        self.conn.push(seg, side);
        if self.conn.ends().client != client {
            // The roles swapped (a connection first seen at its SYN-ACK):
            // what was counted for one end is the other's now.
            self.packets.swap();
            self.ip_bytes.swap();
            self.closed.swap();
        }
        self.last_us = self.last_us.max(seg.ts_us);
        self.rsts += u64::from(seg.flags.rst());
        let over = match self.revived_after {
            None => self.conn.closed_on_wire(),
            Some(n) => self.rsts > n || self.conn.fins_acked(),
        };
        if self.ended_us.is_none() && over {
            self.ended_us = Some(seg.ts_us);
            self.conn.shrink();
        }
    }

    /// The connection's facts, taken where it lies (see
    /// [`Connection::take_facts`]): nothing more may be pushed.
    fn take_facts(&mut self, timeouts: Timeouts) -> FlowFacts {
        let open_at_end = self.ended_us.is_none();
        let ends = self.conn.ends();
        let facts = self.conn.take_facts();
        let last_us = match timeouts {
            Timeouts::Teardown => self.last_us,
            Timeouts::Zeek => self.zeek_last_us,
        };
        FlowFacts {
            index: self.index,
            client: ends.client,
            server: ends.server,
            start_us: self.first_us,
            duration_us: last_us - self.first_us,
            began_before_capture: self.began_before_capture,
            open_at_end,
            packets: self.packets,
            ip_bytes: self.ip_bytes,
            wire: facts.wire,
            acked: facts.acked,
            missed: facts.missed,
        }
    }
}

/// How long a connection of a capture waits for more segments before a
/// segment on its 4-tuple starts a new one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Timeouts {
    /// teardown's: a connection lasts until a SYN starts a new one on its
    /// 4-tuple; over on the wire, it waits [`FlowTable::LINGER_US`] for
    /// late segments (a FIN retransmitted into TIME-WAIT).
    #[default]
    Teardown,
    /// Zeek's defaults, so conn.log lines up with Zeek's own: an
    /// unanswered attempt ends 5 s after its first segment
    /// (`tcp_attempt_delay`); a closed connection 5 s after the segment
    /// that completed its close (`tcp_close_delay`, `tcp_reset_delay`;
    /// for Zeek a FIN completes it when the peer has closed or has sent
    /// nothing yet, a RST always), later segments notwithstanding; any
    /// connection after 5 min without a segment (`tcp_inactivity_timeout`).
    /// Its duration ends, as Zeek's does, at the last segment that came
    /// before both sides had sent a FIN or a RST (the final ACK, or a FIN
    /// retransmitted after, does not lengthen it).
    Zeek,
}

impl Timeouts {
    const ZEEK_DELAY_US: i64 = 5_000_000;
    const ZEEK_INACTIVITY_US: i64 = 300_000_000;

    /// How long a connection over on the wire stays for late segments.
    fn linger_us(self) -> i64 {
        match self {
            Timeouts::Teardown => FlowTable::LINGER_US,
            Timeouts::Zeek => Timeouts::ZEEK_DELAY_US,
        }
    }

    /// Whether `flow` is over by the time a segment comes at `t_us`.
    fn expired(self, flow: &Flow, t_us: i64) -> bool {
        if self == Timeouts::Teardown {
            return false;
        }
        let idle = t_us - flow.last_us;
        let attempt = flow.packets.server == 0 && !flow.began_before_capture;
        idle > Timeouts::ZEEK_INACTIVITY_US
            || flow.zeek_forget_us.is_some_and(|t| t_us > t)
            || (attempt && t_us - flow.first_us > Timeouts::ZEEK_DELAY_US)
    }
}

/// Where [`FlowTable::prefetch`] found a segment's connection, to be
/// handed to [`FlowTable::push_hinted`] with it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Hint {
    /// The hash of the segment's 4-tuple.
    hash: u64,
    /// The slot of the connection on it then, if any.
    slot: Option<Slot>,
}

/// How a capture's connections are read: when each ends, and whether its
/// trace is spelled out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reading {
    pub timeouts: Timeouts,
    pub traces: Traces,
}

/// The connections of a capture, folded in segment by segment.
#[derive(Default)]
pub(crate) struct FlowTable {
    timeouts: Timeouts,
    traces: Traces,
    flows: Slab<Flow>,
    /// Where each 4-tuple's connection sits in `flows`, by its hash: 4
    /// bytes a connection (and hashbrown's byte of the hash), so the index
    /// of thousands of connections stays in the CPU's cache, where a map
    /// holding the keys would not. The hash and the key are compared in
    /// the flow, which is fetched next all the same.
    slots: HashTable<Slot>,
    /// foldhash, not SipHash: this is hashed for every packet, and its seed
    /// is random per process all the same, so a crafted capture cannot aim
    /// collisions.
    hasher: foldhash::fast::RandomState,
    /// Connections over on the wire, in the order they ended: the oldest
    /// are handed out first once they have lingered long enough. Each with
    /// its slot and index (the slot may hold a newer connection by then).
    ended: VecDeque<(i64, Slot, usize)>,
    next_index: usize,
    /// The latest capture time seen.
    now_us: i64,
}

impl FlowTable {
    /// How long a connection that is over on the wire stays in the table
    /// for late segments: 60 s of capture time, Linux's TIME-WAIT.
    pub(crate) const LINGER_US: i64 = 60_000_000;

    #[cfg(test)]
    pub fn new() -> FlowTable {
        FlowTable::default()
    }

    /// A table that reads connections as `reading` says.
    pub fn with(reading: Reading) -> FlowTable {
        FlowTable {
            timeouts: reading.timeouts,
            traces: reading.traces,
            ..FlowTable::default()
        }
    }

    /// Connections in the table now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The slot of the connection on `key`, if there is one.
    fn find(&self, key: &Key, hash: u64) -> Option<Slot> {
        let flows = &self.flows;
        self.slots
            .find(hash, |&slot| flows.get(slot).is_on(hash, key))
            .copied()
    }

    /// A new connection, its first segment `seg` (whose 4-tuple's hash is
    /// `hash`).
    fn open(&mut self, hash: u64, seg: &Segment) -> Slot {
        let slot = self
            .flows
            .insert(Flow::new(self.next_index, hash, seg, self.traces));
        self.next_index += 1;
        let flows = &self.flows;
        self.slots.insert_unique(hash, slot, |&s| flows.get(s).hash);
        slot
    }

    /// Takes the connection in `slot` out of the table, and its facts.
    fn close(&mut self, slot: Slot) -> FlowFacts {
        let timeouts = self.timeouts;
        let (hash, facts) = self
            .flows
            .remove_with(slot, |f| (f.hash, f.take_facts(timeouts)));
        if let Ok(entry) = self.slots.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        facts
    }

    /// A hint that `seg` comes soon: its connection's memory is fetched
    /// now, so that folding it in later waits less, and where it was found
    /// is handed back for [`FlowTable::push_hinted`]. Nothing else changes.
    pub fn prefetch(&self, seg: &Segment) -> Hint {
        let hash = self.hasher.hash_one(Key::of(seg));
        // Every slot whose byte of the hash matches (almost always one) is
        // fetched, without comparing anything in it: that would wait for
        // the very memory this fetches. The first is the guess; a wrong one
        // costs only time.
        let mut slot = None;
        self.slots.find(hash, |&s| {
            self.flows.prefetch(s);
            slot.get_or_insert(s);
            false
        });
        Hint { hash, slot }
    }

    /// Folds in one segment. Connections it finished (a reused 4-tuple's
    /// earlier connection, or ones that ended long enough ago) go to `out`.
    pub fn push(&mut self, seg: &Segment, out: &mut impl FnMut(FlowFacts)) {
        let hint = Hint {
            hash: self.hasher.hash_one(Key::of(seg)),
            slot: None,
        };
        self.push_hinted(seg, hint, out);
    }

    /// [`FlowTable::push`], with what [`FlowTable::prefetch`] said of `seg`
    /// some segments before. The table may have changed since, so the slot
    /// is only a guess, taken if the connection there is on `seg`'s
    /// 4-tuple: the table holds one connection per 4-tuple, so that one is
    /// the index's answer, found without asking the index again.
    pub fn push_hinted(&mut self, seg: &Segment, hint: Hint, out: &mut impl FnMut(FlowFacts)) {
        self.now_us = self.now_us.max(seg.ts_us);
        let key = Key::of(seg);
        let hash = hint.hash;
        let syn_only = seg.flags.syn() && !seg.flags.ack();
        let timeouts = self.timeouts;
        let guessed = hint.slot.filter(|&slot| {
            self.flows
                .try_get(slot)
                .is_some_and(|f| f.is_on(hash, &key))
        });
        let slot = match guessed.or_else(|| self.find(&key, hash)) {
            Some(slot) => {
                let f = self.flows.get(slot);
                if (syn_only && f.replaced_by(seg)) || timeouts.expired(f, seg.ts_us) {
                    out(self.close(slot));
                    self.open(hash, seg)
                } else {
                    slot
                }
            }
            None => self.open(hash, seg),
        };
        let flow = self.flows.get_mut(slot);
        let was_over = flow.ended_us.is_some();
        flow.push(seg);
        if !was_over {
            if let Some(t) = flow.ended_us {
                self.ended.push_back((t, slot, flow.index));
            }
        }
        self.expire(out);
    }

    /// Hands out connections that ended more than [`Self::LINGER_US`] ago.
    fn expire(&mut self, out: &mut impl FnMut(FlowFacts)) {
        while let Some(&(t, slot, index)) = self.ended.front() {
            if self.now_us - t < self.timeouts.linger_us() {
                break;
            }
            self.ended.pop_front();
            // The slot may hold a newer connection by now, or none, or this
            // one may have come back (its own SYN again) and not be over.
            if self
                .flows
                .try_get(slot)
                .is_some_and(|f| f.index == index && f.ended_us == Some(t))
            {
                out(self.close(slot));
            }
        }
    }

    /// Every connection still in the table, in capture order.
    pub fn finish(mut self, out: &mut impl FnMut(FlowFacts)) {
        let mut rest: Vec<(usize, Slot)> = self.flows.iter().map(|(s, f)| (f.index, s)).collect();
        rest.sort_unstable_by_key(|(index, _)| *index);
        let timeouts = self.timeouts;
        for (_, slot) in rest {
            out(self.flows.remove_with(slot, |f| f.take_facts(timeouts)));
        }
    }
}

/// All connections of `segments`, in capture order.
pub fn split(segments: &[Segment]) -> Vec<FlowFacts> {
    split_with(segments, Timeouts::Teardown)
}

/// [`split`], connections ended by `timeouts`.
pub(crate) fn split_with(segments: &[Segment], timeouts: Timeouts) -> Vec<FlowFacts> {
    let mut table = FlowTable::with(Reading {
        timeouts,
        ..Reading::default()
    });
    let mut flows = Vec::new();
    for s in segments {
        table.push(s, &mut |f| flows.push(f));
    }
    table.finish(&mut |f| flows.push(f));
    flows.sort_by_key(|f| f.index);
    flows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TimeWaitSide;
    use proptest::prelude::*;

    fn seg(t: i64, from: &str, to: &str, flags: &str, seq: u32, ack: u32, len: u32) -> Segment {
        Segment::example(t, from, to, flags, seq, ack, len)
    }

    const C: &str = "10.0.0.1:40000";
    const S: &str = "10.0.0.2:80";

    /// A whole connection: handshake, 10 bytes, client-first close.
    fn conn(t: i64, isn: u32) -> Vec<Segment> {
        vec![
            seg(t, C, S, "S", isn, 0, 0),
            seg(t + 1, S, C, "S.", 900, isn + 1, 0),
            seg(t + 2, C, S, ".", isn + 1, 901, 0),
            seg(t + 3, C, S, "P.", isn + 1, 901, 10),
            seg(t + 4, C, S, "F.", isn + 11, 901, 0),
            seg(t + 5, S, C, "F.", 901, isn + 12, 0),
            seg(t + 6, C, S, ".", isn + 12, 902, 0),
        ]
    }

    #[test]
    fn a_new_syn_after_the_close_is_a_new_connection() {
        let mut segs = conn(0, 100);
        // A FIN retransmitted into TIME-WAIT still belongs to the first.
        segs.push(seg(7, S, C, "F.", 901, 112, 0));
        segs.extend(conn(1_000, 5_000));
        let flows = split(&segs);
        assert_eq!(flows.len(), 2, "{flows:#?}");
        assert_eq!(flows[0].wire.sides.server.fin, 2);
        assert_eq!(flows[0].packets, PerSide::new(5, 3));
        assert_eq!(flows[1].wire.sides.client.syn, 1);
        assert_eq!(flows[1].start_us, 1_000);
        for f in &flows {
            assert!(!f.open_at_end && !f.began_before_capture);
            assert_eq!(f.wire.conn_state, "SF");
            assert_eq!(f.wire.time_wait_side, Some(TimeWaitSide::Client));
            assert_eq!(f.client, C.parse().unwrap());
        }
    }

    #[test]
    fn a_retransmitted_syn_after_a_reset_stays_with_its_connection() {
        // The half-open case: an old connection, its RST lost; the new SYN
        // draws a challenge ACK, the client answers it with a RST in the
        // old sequence space, then resends the same SYN and connects.
        let mut segs = conn(0, 100)[..3].to_vec();
        segs.push(seg(3, C, S, "R.", 101, 901, 0));
        segs.push(seg(10, C, S, "S", 5_000, 0, 0));
        segs.push(seg(11, S, C, ".", 901, 101, 0));
        segs.push(seg(12, C, S, "R", 101, 0, 0));
        segs.push(seg(20, C, S, "S", 5_000, 0, 0));
        segs.push(seg(21, S, C, "S.", 3_000, 5_001, 0));
        segs.push(seg(22, C, S, ".", 5_001, 3_001, 0));
        let flows = split(&segs);
        assert_eq!(flows.len(), 2, "{flows:#?}");
        assert_eq!(flows[1].wire.sides.client.syn, 2);
        assert!(flows[1].open_at_end);
    }

    #[test]
    fn a_syn_on_an_open_connection_is_not_a_new_one() {
        // A retransmitted SYN, and a SYN on an established 4-tuple (a
        // half-open peer reconnecting): both stay with the connection.
        let mut segs = conn(0, 100)[..4].to_vec();
        segs.push(seg(10, C, S, "S", 7_000, 0, 0));
        let flows = split(&segs);
        assert_eq!(flows.len(), 1);
        assert!(flows[0].open_at_end);
        assert_eq!(flows[0].wire.sides.client.syn, 2);
    }

    #[test]
    fn connections_seen_mid_way_are_marked_and_oriented() {
        // Only a SYN-ACK: its sender is the responder.
        let a = seg(0, S, C, "S.", 900, 101, 0);
        // Data of a connection open before the capture started.
        let b = seg(1, "10.0.0.3:5000", "10.0.0.4:443", "P.", 1, 1, 100);
        let flows = split(&[a, b]);
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].client, C.parse().unwrap());
        assert!(flows[0].began_before_capture);
        assert!(flows[1].began_before_capture && flows[1].open_at_end);
        assert_eq!(flows[1].client, "10.0.0.3:5000".parse().unwrap());
        assert_eq!(flows[1].ip_bytes.client, 152);
    }

    #[test]
    fn ended_connections_are_handed_out_once_they_have_lingered() {
        let mut table = FlowTable::new();
        let mut out = Vec::new();
        for s in conn(0, 100) {
            table.push(&s, &mut |f| out.push(f));
        }
        assert!(out.is_empty(), "it may still get late segments");
        assert_eq!(table.len(), 1);
        // Another connection, a minute later: the first is handed out.
        let later = seg(FlowTable::LINGER_US + 10, "10.0.0.9:1", S, "S", 1, 0, 0);
        table.push(&later, &mut |f| out.push(f));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].index, 0);
        assert_eq!(table.len(), 1);
        table.finish(&mut |f| out.push(f));
        assert_eq!(out.len(), 2);
        assert!(out[1].open_at_end);
    }

    #[test]
    fn acknowledged_data_the_capture_missed_is_counted_per_side() {
        let full = split(&conn(0, 100));
        assert_eq!(full[0].missed, PerSide::new(Some(0), Some(0)));
        // Bytes 10..20 and 30..40 of the client's 40 were not captured; the
        // server acknowledged all 40 and the FIN (which is not payload).
        let gappy = split(&[
            seg(0, C, S, "S", 100, 0, 0),
            seg(1, S, C, "S.", 900, 101, 0),
            seg(2, C, S, ".", 101, 901, 0),
            seg(3, C, S, "P.", 101, 901, 10),
            seg(4, C, S, "P.", 121, 901, 10),
            seg(5, S, C, ".", 901, 141, 0),
            seg(6, C, S, "F.", 141, 901, 0),
            seg(7, S, C, "F.", 901, 142, 0),
            seg(8, C, S, ".", 142, 902, 0),
        ]);
        assert_eq!(gappy[0].missed, PerSide::new(Some(20), Some(0)));
        // No SYN: counted from the first sequence number seen (a gap of 10
        // after it), and for the server from the client's acknowledgment.
        let mid = split(&[
            seg(0, C, S, "P.", 5, 7, 10),
            seg(1, C, S, "P.", 25, 7, 10),
            seg(2, S, C, ".", 7, 35, 0),
        ]);
        assert_eq!(mid[0].missed, PerSide::new(Some(10), Some(0)));
        // A side never seen, nor acknowledged: nothing to count from.
        let one = split(&[seg(0, C, S, "P", 5, 0, 10)]);
        assert_eq!(one[0].missed.server, None);
    }

    /// The capture began after the handshake: sequence numbers count from
    /// the first one seen, so data is counted once, acknowledgments count,
    /// and nothing is a retransmission.
    #[test]
    fn a_connection_seen_mid_stream_counts_its_data() {
        let isn = 4_000_000_000u32; // and the client's numbers wrap
        let mut segs = Vec::new();
        let mut seq = isn;
        for t in 0..100 {
            segs.push(seg(2 * t, C, S, "P.", seq, 900, 1000));
            seq = seq.wrapping_add(1000);
            segs.push(seg(2 * t + 1, S, C, ".", 900, seq, 0));
        }
        segs.push(seg(300, C, S, "F.", seq, 900, 0));
        segs.push(seg(301, S, C, "F.", 900, seq.wrapping_add(1), 0));
        segs.push(seg(302, C, S, ".", seq.wrapping_add(1), 901, 0));
        let f = &split(&segs)[0];
        let c = &f.wire.sides.client;
        assert_eq!(c.data_bytes, 100_000);
        assert_eq!(c.retransmits, 0);
        assert_eq!(f.acked.client, 100_000);
        assert_eq!(f.wire.history, "DaFfA");
        assert_eq!(f.wire.conn_state, "SF");
        assert!(f.began_before_capture);
    }

    /// More than 4 GiB on one connection: past the 32-bit wrap, new data
    /// is new, not a retransmission.
    #[test]
    fn sequence_numbers_unwrap_past_four_gib() {
        let gib = 1u32 << 30;
        let mut segs = vec![
            seg(0, C, S, "S", 100, 0, 0),
            seg(1, S, C, "S.", 900, 101, 0),
            seg(2, C, S, ".", 101, 901, 0),
        ];
        let mut seq = 101u32;
        for t in 0..5 {
            segs.push(seg(3 + 2 * t, C, S, ".", seq, 901, gib));
            seq = seq.wrapping_add(gib);
            segs.push(seg(4 + 2 * t, S, C, ".", 901, seq, 0));
        }
        let f = &split(&segs)[0];
        assert_eq!(f.wire.sides.client.data_bytes, 5 << 30);
        assert_eq!(f.wire.sides.client.retransmits, 0);
        assert_eq!(f.acked.client, 5 << 30);
        assert!(!f.wire.history.contains('T'), "{}", f.wire.history);
    }

    /// Zeek keeps SF when a RST follows both FINs (its analyzer ignores
    /// a RST for the state once the FIN exchange is done).
    #[test]
    fn a_reset_after_both_fins_stays_sf() {
        let mut segs = conn(0, 100)[..6].to_vec();
        segs.push(seg(6, C, S, "R", 112, 0, 0));
        let f = &split(&segs)[0];
        assert_eq!(f.wire.conn_state, "SF");
        assert_eq!(f.wire.history, "ShADFfR");
        // A RST before the peer's FIN is still a reset.
        let mut early = conn(0, 100)[..5].to_vec();
        early.push(seg(5, S, C, "R.", 901, 112, 0));
        assert_eq!(split(&early)[0].wire.conn_state, "RSTR");
    }

    /// A SYN-ACK without its SYN, from a port servers use, then the
    /// handshake's ACK: Zeek's S1, the roles swapped at the start (`^`).
    /// From a port that is no server's, the SYN-ACK's sender is first the
    /// originator, and the ACK swaps the roles.
    #[test]
    fn a_syn_ack_without_its_syn_is_established() {
        // (conn_state, history, originator, packets each way)
        let seen = |segs: &[Segment]| {
            let f = split(segs).remove(0);
            (
                f.wire.conn_state,
                f.wire.history,
                f.client.to_string(),
                f.packets,
            )
        };
        let (a, b) = ("10.0.0.1:40000", "10.0.0.2:40001");
        let cases: [(&[Segment], _); 3] = [
            (
                &[
                    seg(0, S, C, "S.", 900, 101, 0),
                    seg(1, C, S, ".", 101, 901, 0),
                    seg(2, C, S, "P.", 101, 901, 5),
                ],
                ("S1", "^hAD", C, (2, 1)),
            ),
            // No server's port: the ACK's sender becomes the originator.
            (
                &[
                    seg(0, b, a, "S.", 900, 101, 0),
                    seg(1, a, b, ".", 101, 901, 0),
                ],
                ("OTH", "^hA", a, (1, 1)),
            ),
            // Only the SYN-ACK's sender in the capture (one direction of
            // an asymmetric route): what it sent stays its own when the
            // roles swap (Zeek's tcp/one-sided-2745.pcap: SHR, ^haf, 0, 3).
            (
                &[
                    seg(0, b, a, "S.", 900, 101, 0),
                    seg(1, b, a, ".", 901, 101, 0),
                    seg(2, b, a, "F.", 901, 101, 0),
                ],
                ("SHR", "^haf", a, (0, 3)),
            ),
        ];
        for (segs, (state, history, orig, (c, s))) in cases {
            let want = (
                state.into(),
                history.into(),
                orig.into(),
                PerSide::new(c, s),
            );
            assert_eq!(seen(segs), want);
        }
    }

    /// Zeek's retransmission: a data segment that ends at or below the
    /// highest sequence number sent, gap fills included; teardown's own
    /// `retransmits` counts only bytes seen before.
    #[test]
    fn history_marks_zeeks_retransmissions() {
        let mut segs = conn(0, 100)[..3].to_vec();
        segs.push(seg(3, C, S, "P.", 111, 901, 10));
        segs.push(seg(4, C, S, "P.", 101, 901, 10)); // fills the gap
        let f = &split(&segs)[0];
        assert!(f.wire.history.contains('T'), "{}", f.wire.history);
        assert_eq!(f.wire.sides.client.retransmits, 0);
        assert_eq!(f.wire.sides.client.data_bytes, 20);
    }

    /// A client that retries with the same ISN after being refused (as
    /// Windows does) makes one REJ per attempt, as Zeek logs them.
    #[test]
    fn each_refused_attempt_is_its_own_connection() {
        let mut segs = Vec::new();
        for t in [0, 1_000_000, 2_000_000] {
            segs.push(seg(t, C, S, "S", 100, 0, 0));
            segs.push(seg(t + 1, S, C, "R.", 0, 101, 0));
        }
        let flows = split(&segs);
        assert_eq!(flows.len(), 3, "{flows:#?}");
        for f in &flows {
            assert_eq!(f.wire.conn_state, "REJ");
            assert_eq!(f.wire.history, "Sr");
        }
    }

    /// Zeek's timeouts: SYNs unanswered for more than 5 s, and segments 5 s
    /// after a reset, start new connections; teardown's own keep them.
    #[test]
    fn zeeks_timeouts_split_where_zeek_splits() {
        let s = 1_000_000;
        let mut segs = vec![
            seg(0, C, S, "S", 100, 0, 0),
            seg(s, C, S, "S", 100, 0, 0),
            seg(3 * s, C, S, "S", 100, 0, 0),
            seg(7 * s, C, S, "S", 100, 0, 0),
        ];
        let ours = split(&segs);
        assert_eq!(ours.len(), 1);
        let zeek = split_with(&segs, Timeouts::Zeek);
        assert_eq!(zeek.len(), 2, "{zeek:#?}");
        assert_eq!(zeek[0].packets.client, 3);
        assert!(zeek.iter().all(|f| f.wire.conn_state == "S0"));
        // A late ACK 10 s after a reset.
        segs = conn(0, 100)[..4].to_vec();
        segs.push(seg(5, S, C, "R.", 901, 111, 0));
        segs.push(seg(10 * s, C, S, ".", 111, 901, 0));
        assert_eq!(split(&segs).len(), 1);
        assert_eq!(split_with(&segs, Timeouts::Zeek).len(), 2);
    }

    /// The first packet a FIN from port 80: port 80 is the responder's.
    #[test]
    fn without_a_syn_a_server_port_is_the_responders() {
        let f = &split(&[
            seg(0, S, C, "F.", 900, 101, 0),
            seg(1, C, S, ".", 101, 901, 0),
        ])[0];
        assert_eq!(f.client, C.parse().unwrap());
        assert_eq!(f.server, S.parse().unwrap());
        assert!(f.wire.history.starts_with('^'), "{}", f.wire.history);
        // Neither port a server's: the first sender is the originator.
        let g = &split(&[seg(0, "10.0.0.1:5000", "10.0.0.2:6000", "F.", 1, 1, 0)])[0];
        assert_eq!(g.client, "10.0.0.1:5000".parse().unwrap());
    }

    /// Zeek's duration ends at the segment that closed the second side
    /// (the last FIN); the final ACK and a FIN retransmitted after it do
    /// not lengthen it. teardown's own runs to the last segment.
    #[test]
    fn zeek_duration_ends_when_both_sides_have_closed() {
        let mut segs = conn(0, 100);
        segs.push(seg(9, S, C, "F.", 901, 112, 0));
        assert_eq!(split_with(&segs, Timeouts::Zeek)[0].duration_us, 5);
        assert_eq!(split(&segs)[0].duration_us, 9);
    }

    /// Zeek forgets a connection 5 s after the segment that completed its
    /// close, and a FIN completes it when the peer has sent nothing yet
    /// (the capture began late): a RST 10 s on is a connection of its own,
    /// and so is the peer's RST 16 s after that (Teredo.pcap, in Zeek's
    /// test traces, has this shape; its conn.log has these three lines).
    #[test]
    fn zeek_forgets_a_connection_after_the_close_it_saw() {
        let segs = [
            seg(0, S, C, "F.", 900, 100, 0),
            seg(300, C, S, ".", 100, 901, 0),
            seg(10_270_000, C, S, "R.", 100, 901, 0),
            seg(26_320_000, S, C, "R.", 901, 100, 0),
        ];
        let zeek: Vec<_> = split_with(&segs, Timeouts::Zeek)
            .iter()
            .map(|f| format!("{} {}", f.wire.conn_state, f.wire.history))
            .collect();
        assert_eq!(zeek, ["SHR ^fA", "OTH R", "RSTRH ^r"]);
        // teardown's own rule keeps them one connection.
        assert_eq!(split(&segs).len(), 1);
        // The same close with the peer heard from first: Zeek waits for the
        // peer's FIN (or a RST), so the late RST still belongs to it.
        let mut answered = vec![seg(0, C, S, ".", 100, 900, 0)];
        answered.extend_from_slice(&segs[..3]);
        assert_eq!(split_with(&answered, Timeouts::Zeek).len(), 1);
    }

    /// Thousands of connections left at the end, their slots in the order
    /// they came: all are handed out, in capture order, each with the
    /// facts it has when analyzed alone.
    #[test]
    fn many_connections_left_at_the_end_come_out_in_order_and_whole() {
        let n = 5_000;
        let one = |i: usize| {
            let client = format!("10.0.{}.{}:40000", i / 250, i % 250 + 1);
            let t = i as i64 * 10;
            // Every third refused, the rest connected and sending.
            if i % 3 == 0 {
                vec![
                    seg(t, &client, S, "S", 100, 0, 0),
                    seg(t + 1, S, &client, "R.", 0, 101, 0),
                ]
            } else {
                vec![
                    seg(t, &client, S, "S", 100, 0, 0),
                    seg(t + 1, S, &client, "S.", 900, 101, 0),
                    seg(t + 2, &client, S, "P.", 101, 901, i as u32 % 50),
                ]
            }
        };
        let mut table = FlowTable::new();
        let mut out = Vec::new();
        for i in 0..n {
            for s in one(i) {
                table.push(&s, &mut |f| out.push(f));
            }
        }
        assert!(out.is_empty(), "all still lingering");
        table.finish(&mut |f| out.push(f));
        assert_eq!(out.len(), n);
        for (i, f) in out.iter().enumerate() {
            let mut alone = split(&one(i)).remove(0);
            alone.index = i;
            assert_eq!(*f, alone, "connection {i}");
        }
    }

    /// Segments on a few 4-tuples with any flags and numbers, some far
    /// apart in time (past the linger and Zeek's delays): connections end,
    /// 4-tuples are reused, slots are freed and filled again.
    fn arb_segments() -> impl Strategy<Value = Vec<Segment>> {
        let one = (
            prop_oneof![4 => 0i64..3, 1 => Just(FlowTable::LINGER_US + 1)],
            0usize..3,
            any::<bool>(),
            prop::sample::select(vec!["S", "S.", ".", "P.", "F.", "R", "R."]),
            0u32..300,
            0u32..300,
            prop_oneof![0u32..1, 1u32..50],
        );
        prop::collection::vec(one, 0..80).prop_map(|steps| {
            let mut t = 0;
            steps
                .into_iter()
                .map(|(gap, port, to_server, flags, seq, ack, len)| {
                    t += gap;
                    let client = format!("10.0.0.1:{}", 40_000 + port);
                    let (from, to) = if to_server {
                        (client.as_str(), S)
                    } else {
                        (S, client.as_str())
                    };
                    seg(t, from, to, flags, seq, ack, len)
                })
                .collect()
        })
    }

    proptest! {
        /// Folding segments in with what `prefetch` said some segments
        /// before (slots since freed, or holding another connection) gives
        /// the connections folding them in without; skipping traces
        /// changes nothing but the traces.
        #[test]
        fn hints_and_skipped_traces_change_no_connection(
            segs in arb_segments(),
            ahead in 1usize..24,
            zeek in any::<bool>(),
            skip in any::<bool>(),
        ) {
            let timeouts = if zeek { Timeouts::Zeek } else { Timeouts::Teardown };
            let traces = if skip { Traces::Skipped } else { Traces::Kept };
            let mut want = split_with(&segs, timeouts);
            let mut table = FlowTable::with(Reading { timeouts, traces });
            let mut got = Vec::new();
            let mut hints: VecDeque<Hint> = segs.iter().take(ahead).map(|s| table.prefetch(s)).collect();
            for (i, s) in segs.iter().enumerate() {
                let hint = hints.pop_front().expect("one per segment");
                if let Some(later) = segs.get(i + ahead) {
                    hints.push_back(table.prefetch(later));
                }
                table.push_hinted(s, hint, &mut |f| got.push(f));
            }
            table.finish(&mut |f| got.push(f));
            got.sort_by_key(|f| f.index);
            if skip {
                for (w, g) in want.iter_mut().zip(&got) {
                    prop_assert_eq!(&g.wire.trace, "");
                    w.wire.trace.clear();
                }
            }
            prop_assert_eq!(want, got);
        }
    }
}
