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

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Connection, WireFacts};
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
    /// it (Zeek's `missed_bytes` is the sum). Null for a side whose SYN was
    /// not captured: there is no sequence base to count from.
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
        let (a, b) = (End::of(seg.src), End::of(seg.dst));
        Key(if a <= b { [a, b] } else { [b, a] })
    }
}

struct Flow {
    index: usize,
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
    /// RSTs seen so far.
    rsts: u64,
    /// Once the client's SYN came again after a RST: how many RSTs that
    /// was. Only a later RST, or both FINs acknowledged, ends it then.
    revived_after: Option<u64>,
}

impl Flow {
    fn new(index: usize, seg: &Segment) -> Flow {
        let f = seg.flags;
        // A SYN-ACK's sender is the responder; otherwise the first
        // segment's sender is taken for the originator, as Zeek does.
        let ends = if f.syn() && f.ack() {
            PerSide::new(seg.dst, seg.src)
        } else {
            PerSide::new(seg.src, seg.dst)
        };
        Flow {
            index,
            conn: Connection::new(ends, 0, false),
            first_us: seg.ts_us,
            last_us: seg.ts_us,
            began_before_capture: !f.syn() || f.ack(),
            packets: PerSide::default(),
            ip_bytes: PerSide::default(),
            ended_us: None,
            client_isn: (f.syn() && !f.ack()).then_some(seg.seq),
            rsts: 0,
            revived_after: None,
        }
    }

    /// Whether `seg`, a SYN without ACK, opens a new connection on this
    /// 4-tuple: only once this one is over, and not when it repeats this
    /// connection's own SYN (a retransmission after a RST that answered
    /// something else, as a half-open peer's challenge ACK draws).
    fn replaced_by(&self, seg: &Segment) -> bool {
        self.ended_us.is_some()
            && !(seg.src == self.conn.ends().client && Some(seg.seq) == self.client_isn)
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
        self.conn.push(seg, side);
        self.packets[side] += 1;
        self.ip_bytes[side] += u64::from(seg.ip_len);
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

    fn finish(self) -> FlowFacts {
        let open_at_end = self.ended_us.is_none();
        let ends = self.conn.ends();
        let facts = self.conn.finish();
        FlowFacts {
            index: self.index,
            client: ends.client,
            server: ends.server,
            start_us: self.first_us,
            duration_us: self.last_us - self.first_us,
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

/// The connections of a capture, folded in segment by segment.
#[derive(Default)]
pub struct FlowTable {
    /// Boxed: a flow is large, and the table moves its values when it
    /// grows (and keeps empty slots of their size). foldhash, not SipHash:
    /// this is looked up for every packet, and its seed is random per
    /// process all the same, so a crafted capture cannot aim collisions.
    active: HashMap<Key, Box<Flow>, foldhash::fast::RandomState>,
    /// Connections over on the wire, in the order they ended: the oldest
    /// are handed out first once they have lingered long enough.
    ended: VecDeque<(i64, Key, usize)>,
    next_index: usize,
    /// The latest capture time seen.
    now_us: i64,
}

impl FlowTable {
    /// How long a connection that is over on the wire stays in the table
    /// for late segments: 60 s of capture time, Linux's TIME-WAIT.
    pub const LINGER_US: i64 = 60_000_000;

    pub fn new() -> FlowTable {
        FlowTable::default()
    }

    /// Connections in the table now (for memory accounting).
    pub fn len(&self) -> usize {
        self.active.len()
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Folds in one segment. Connections it finished (a reused 4-tuple's
    /// earlier connection, or ones that ended long enough ago) go to `out`.
    pub fn push(&mut self, seg: &Segment, out: &mut impl FnMut(FlowFacts)) {
        self.now_us = self.now_us.max(seg.ts_us);
        let key = Key::of(seg);
        let syn_only = seg.flags.syn() && !seg.flags.ack();
        let reused = syn_only && self.active.get(&key).is_some_and(|f| f.replaced_by(seg));
        if reused {
            let old = self.active.remove(&key).expect("checked above");
            out(old.finish());
        }
        let next = &mut self.next_index;
        let flow = self.active.entry(key).or_insert_with(|| {
            let f = Flow::new(*next, seg);
            *next += 1;
            Box::new(f)
        });
        let was_over = flow.ended_us.is_some();
        flow.push(seg);
        if !was_over {
            if let Some(t) = flow.ended_us {
                self.ended.push_back((t, key, flow.index));
            }
        }
        self.expire(out);
    }

    /// Hands out connections that ended more than [`Self::LINGER_US`] ago.
    fn expire(&mut self, out: &mut impl FnMut(FlowFacts)) {
        while let Some(&(t, key, index)) = self.ended.front() {
            if self.now_us - t < Self::LINGER_US {
                break;
            }
            self.ended.pop_front();
            // The 4-tuple may hold a newer connection by now, or this one
            // may have come back (its own SYN again) and not be over.
            if self
                .active
                .get(&key)
                .is_some_and(|f| f.index == index && f.ended_us == Some(t))
            {
                out(self.active.remove(&key).expect("present").finish());
            }
        }
    }

    /// Every connection still in the table, in capture order.
    pub fn finish(self, out: &mut impl FnMut(FlowFacts)) {
        // Sorted by index read once per flow, not once per comparison:
        // each read would be a cache miss into a boxed flow.
        let mut rest: Vec<(usize, Box<Flow>)> =
            self.active.into_values().map(|f| (f.index, f)).collect();
        rest.sort_unstable_by_key(|(index, _)| *index);
        for (_, f) in rest {
            out(f.finish());
        }
    }
}

/// All connections of `segments`, in capture order.
pub fn split(segments: &[Segment]) -> Vec<FlowFacts> {
    let mut table = FlowTable::new();
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
        // No SYN, no sequence base: not counted.
        let mid = split(&[seg(0, C, S, "P.", 5, 7, 10)]);
        assert_eq!(mid[0].missed, PerSide::new(None, None));
    }
}
