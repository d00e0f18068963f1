//! Connection facts from the segments on the wire.
//!
//! Given the segments of a capture and (if known) which address is the
//! client, this works out per side: SYN/FIN/RST counts, distinct payload
//! bytes in sequence space, retransmissions, how much the peer acknowledged;
//! and for the connection: whose FIN came first (and whether the close was
//! simultaneous), whose RST came first, and Zeek's `conn_state` and
//! `history`. It assumes nothing about how a close should look (three or
//! four segments, FIN or RST) and knows nothing of any scenario.

use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::tcp::Side;
use crate::wire::{Segment, SeqNum};

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
    /// Segments that only repeated sequence space already sent (SYN, data or FIN).
    pub retransmits: u32,
}

/// Whose FIN appeared first on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// The `wire` object of a case report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WireFacts {
    pub client: SideCounts,
    pub server: SideCounts,
    pub first_fin: Option<FirstFin>,
    pub first_rst: Option<Side>,
    /// Zeek `conn_state`, the client being the originator.
    pub conn_state: String,
    /// Zeek `history` (uppercase: client, lowercase: server).
    pub history: String,
    /// Segments of either side from the first FIN or RST to the end of the
    /// capture: how many segments the close really took.
    pub close_segments: u32,
}

/// One segment of the connection, for reading a case without Wireshark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PacketRecord {
    /// Milliseconds since the case started.
    pub t_ms: f64,
    pub from: Side,
    /// tcpdump-style flags: `S`, `S.`, `.`, `P.`, `F.`, `R.`.
    pub flags: String,
    /// Sequence number relative to the sender's ISN (the SYN is 0).
    pub seq: u32,
    /// Acknowledgment relative to the receiver's ISN; null without ACK.
    pub ack: Option<u32>,
    pub len: u32,
    pub win: u16,
}

/// Everything the analyzer found.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub wire: WireFacts,
    pub packets: Vec<PacketRecord>,
    /// Payload bytes of each side that the peer acknowledged: [client, server].
    pub acked: [u64; 2],
    /// The client and server addresses used (from `ends`, or the first SYN).
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// Segments that belong to no side of the connection under test.
    pub foreign_segments: usize,
}

/// Per-direction bookkeeping while walking the segments.
#[derive(Default)]
struct Dir {
    isn: Option<SeqNum>,
    /// Covered payload ranges, relative to ISN+1, merged and sorted.
    covered: Vec<(u64, u64)>,
    /// Sequence numbers of the FINs sent, first one first.
    fin_seqs: Vec<SeqNum>,
    syn_seen: bool,
    counts: SideCounts,
    /// Highest payload offset the peer acknowledged.
    acked: u64,
    first_fin_index: Option<usize>,
    first_fin_ack: Option<SeqNum>,
    state: Endpoint,
    history: Vec<char>,
}

/// Zeek's per-endpoint state, as far as it matters for `conn_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Endpoint {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

impl Dir {
    fn base(&self, seg: &Segment) -> SeqNum {
        self.isn.map_or(seg.seq, |i| i + 1)
    }

    /// Adds [start, end) to the covered set; returns how many bytes were new.
    fn cover(&mut self, start: u64, end: u64) -> u64 {
        let before: u64 = self.covered.iter().map(|(a, b)| b - a).sum();
        self.covered.push((start, end));
        self.covered.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.covered.len());
        for &(a, b) in &self.covered {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.covered = merged;
        let after: u64 = self.covered.iter().map(|(a, b)| b - a).sum();
        after - before
    }

    /// Records a Zeek history letter the first time this direction shows it;
    /// `out` is the connection's history, interleaved in time order.
    fn mark(&mut self, c: char, originator: bool, out: &mut String) {
        if !self.history.contains(&c) {
            self.history.push(c);
            out.push(if originator {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
    }
}

/// Analyzes `segments`. `ends` = (client, server) when the driver knows them;
/// otherwise the first SYN without ACK names the client.
pub fn analyze(
    segments: &[Segment],
    ends: Option<(SocketAddr, SocketAddr)>,
    t0_us: i64,
) -> Analysis {
    let ends = ends.or_else(|| {
        segments
            .iter()
            .find(|s| s.flags.syn && !s.flags.ack)
            .or(segments.first())
            .map(|s| (s.src, s.dst))
    });
    let mut dirs = [Dir::default(), Dir::default()];
    let mut packets = Vec::new();
    let mut history = String::new();
    let mut first_rst = None;
    let mut foreign = 0;
    let mut handshake_acked = false;
    let mut close_segments = 0u32;

    for seg in segments {
        let side = match ends {
            Some((c, s)) if seg.src == c && seg.dst == s => Side::Client,
            Some((c, s)) if seg.src == s && seg.dst == c => Side::Server,
            _ => {
                foreign += 1;
                continue;
            }
        };
        let (me, peer) = match side {
            Side::Client => (0, 1),
            Side::Server => (1, 0),
        };
        let f = seg.flags;
        let mut retransmit = false;
        if close_segments > 0 || f.fin || f.rst {
            close_segments += 1;
        }

        // Sequence space: SYN, payload, FIN.
        if f.syn {
            dirs[me].counts.syn += 1;
            if dirs[me].syn_seen && dirs[me].isn == Some(seg.seq) {
                retransmit = true;
            }
            dirs[me].syn_seen = true;
            dirs[me].isn.get_or_insert(seg.seq);
        }
        let base = dirs[me].base(seg);
        let data_start = (seg.seq + u32::from(f.syn)).since(base) as u64;
        if seg.len > 0 {
            let new = dirs[me].cover(data_start, data_start + u64::from(seg.len));
            dirs[me].counts.data_bytes += new;
            if new == 0 {
                retransmit = true;
            }
        }
        if f.fin {
            let d = &mut dirs[me];
            d.counts.fin += 1;
            let fin_seq = seg.seq + (u32::from(f.syn) + seg.len);
            if d.fin_seqs.contains(&fin_seq) {
                retransmit |= seg.len == 0;
            } else {
                if d.fin_seqs.is_empty() {
                    d.first_fin_index = Some(seg.index);
                    d.first_fin_ack = f.ack.then_some(seg.ack);
                }
                d.fin_seqs.push(fin_seq);
                d.counts.distinct_fins += 1;
            }
        }
        if f.rst {
            dirs[me].counts.rst += 1;
            first_rst.get_or_insert(side);
        }
        if retransmit {
            dirs[me].counts.retransmits += 1;
        }

        // What this side acknowledges of the peer's payload.
        if f.ack && !f.rst {
            if let Some(peer_isn) = dirs[peer].isn {
                let rel = seg.ack.since(peer_isn + 1) as u64;
                let extent = dirs[peer].covered.last().map_or(0, |r| r.1);
                if rel <= extent + 1 {
                    dirs[peer].acked = dirs[peer].acked.max(rel.min(extent));
                }
            }
        }

        // Zeek endpoint states and history letters.
        let orig = side == Side::Client;
        let d = &mut dirs[me];
        if f.syn && !f.ack {
            d.mark('s', orig, &mut history);
            if d.state == Endpoint::Inactive {
                d.state = Endpoint::SynSent;
            }
        } else if f.syn && f.ack {
            d.mark('h', orig, &mut history);
            if d.state == Endpoint::Inactive {
                d.state = Endpoint::SynAckSent;
            }
        }
        if seg.len > 0 {
            d.mark(if retransmit { 't' } else { 'd' }, orig, &mut history);
        }
        if f.ack && !f.syn && !f.fin && !f.rst && seg.len == 0 {
            d.mark('a', orig, &mut history);
        }
        if f.fin {
            d.mark('f', orig, &mut history);
        }
        if f.rst {
            d.mark('r', orig, &mut history);
        }
        if seg.window == 0 && !f.rst {
            d.mark('w', orig, &mut history);
        }
        if !f.syn && d.state == Endpoint::Inactive {
            d.state = Endpoint::Partial;
        }
        if side == Side::Client && f.ack && !f.syn && dirs[1].state == Endpoint::SynAckSent {
            handshake_acked = true;
        }
        if handshake_acked {
            for d in &mut dirs {
                if matches!(d.state, Endpoint::SynSent | Endpoint::SynAckSent) {
                    d.state = Endpoint::Established;
                }
            }
        }
        let d = &mut dirs[me];
        if f.fin && d.state != Endpoint::Reset {
            d.state = Endpoint::Closed;
        }
        if f.rst {
            d.state = Endpoint::Reset;
        }

        packets.push(PacketRecord {
            t_ms: (seg.ts_us - t0_us) as f64 / 1e3,
            from: side,
            flags: f.to_string(),
            seq: dirs[me].isn.map_or(0, |i| seg.seq.since(i)),
            ack: f
                .ack
                .then(|| dirs[peer].isn.map_or(0, |i| seg.ack.since(i))),
            len: seg.len,
            win: seg.window,
        });
    }

    let first_fin = first_fin(&dirs);
    let conn_state = conn_state(&dirs[0], &dirs[1]).to_string();
    Analysis {
        wire: WireFacts {
            client: dirs[0].counts,
            server: dirs[1].counts,
            first_fin,
            first_rst,
            conn_state,
            history,
            close_segments,
        },
        packets,
        acked: [dirs[0].acked, dirs[1].acked],
        client: ends.map(|e| e.0),
        server: ends.map(|e| e.1),
        foreign_segments: foreign,
    }
}

fn first_fin(dirs: &[Dir; 2]) -> Option<FirstFin> {
    let side = |i: usize| {
        if i == 0 {
            FirstFin::Client
        } else {
            FirstFin::Server
        }
    };
    match (dirs[0].first_fin_index, dirs[1].first_fin_index) {
        (None, None) => None,
        (Some(_), None) => Some(FirstFin::Client),
        (None, Some(_)) => Some(FirstFin::Server),
        (Some(a), Some(b)) => {
            let (early, late) = if a < b { (0, 1) } else { (1, 0) };
            let early_fin = dirs[early].fin_seqs[0]; // it has a first FIN
            // Did the later FIN acknowledge the earlier one? If not, its sender
            // had not processed the peer's FIN: a simultaneous close.
            let acks_it = dirs[late]
                .first_fin_ack
                .is_some_and(|ack| ack.since(early_fin + 1) < (1 << 31));
            Some(if acks_it { side(early) } else { FirstFin::Both })
        }
    }
}

/// Zeek's `conn_state` (base/protocols/conn/main.zeek), originator = client.
fn conn_state(orig: &Dir, resp: &Dir) -> &'static str {
    use Endpoint::*;
    let (os, rs) = (orig.state, resp.state);
    let o_inactive = matches!(os, Inactive | Partial);
    let r_inactive = matches!(rs, Inactive | Partial);
    if rs == Reset {
        if matches!(os, SynSent | SynAckSent)
            || (os == Reset && orig.counts.data_bytes == 0 && resp.counts.data_bytes == 0)
        {
            "REJ"
        } else if o_inactive {
            "RSTRH"
        } else {
            "RSTR"
        }
    } else if os == Reset {
        // Zeek: history matches /^?S[^HAFGIQ]*R.*/ (originator letters).
        let mut before_rst = orig.history.iter().take_while(|c| **c != 'r');
        if r_inactive
            && orig.history.first() == Some(&'s')
            && before_rst.all(|c| !"hafgiq".contains(*c))
        {
            "RSTOS0"
        } else {
            "RSTO"
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Flags;

    const C: &str = "127.0.0.1:40000";
    const S: &str = "127.0.0.1:9000";

    /// A tiny builder for segment sequences: `seg(from_client, flags, seq, ack, len)`.
    fn seg(i: usize, client: bool, flags: &str, seq: u32, ack: u32, len: u32) -> Segment {
        let (src, dst) = if client { (C, S) } else { (S, C) };
        Segment {
            index: i,
            ts_us: i as i64 * 1000,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            seq: SeqNum(seq),
            ack: SeqNum(ack),
            flags: Flags {
                syn: flags.contains('S'),
                ack: flags.contains('.'),
                fin: flags.contains('F'),
                rst: flags.contains('R'),
                psh: flags.contains('P'),
            },
            window: 100,
            len,
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
            w.client,
            SideCounts {
                syn: 1,
                fin: 1,
                distinct_fins: 1,
                rst: 0,
                data_bytes: 10,
                retransmits: 0
            }
        );
        assert_eq!(w.server.fin, 1);
        assert_eq!(w.first_fin, Some(FirstFin::Client));
        assert_eq!(w.first_rst, None);
        assert_eq!(w.conn_state, "SF");
        assert_eq!(w.history, "ShADaFf", "each letter once per direction");
        assert_eq!(w.close_segments, 3, "FIN, FIN+ACK, ACK");
        assert_eq!(a.acked, [10, 0]);
        assert_eq!(
            a.packets[3].seq, 1,
            "relative sequence numbers start after the SYN"
        );
        assert_eq!(a.packets[4].ack, Some(11));
    }

    #[test]
    fn test_established_abort_by_client_is_rsto() {
        let mut spec = HS.to_vec();
        spec.extend([(true, "P.", 101, 501, 1000), (true, "R.", 1101, 501, 0)]);
        let a = run(&spec);
        assert_eq!(a.wire.first_rst, Some(Side::Client));
        assert_eq!(a.wire.first_fin, None);
        assert_eq!(a.wire.conn_state, "RSTO");
        assert_eq!(a.acked, [0, 0], "nothing was acknowledged");
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
        assert_eq!(a.wire.client.syn, 2);
        assert_eq!(a.wire.client.retransmits, 1);
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
        assert_eq!(a.wire.client.data_bytes, 150);
        assert_eq!(
            a.wire.client.retransmits, 1,
            "a partial overlap carries new bytes"
        );
        assert_eq!(a.acked[0], 150);
        assert!(a.wire.history.contains('T'));
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
        assert_eq!(a.wire.client.fin, 2);
        assert_eq!(a.wire.client.distinct_fins, 1);
        assert_eq!(a.wire.client.retransmits, 1);
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
        assert_eq!(a.wire.client.fin, 2);
        assert_eq!(a.wire.client.distinct_fins, 1);
        assert_eq!(a.wire.client.retransmits, 1);
        assert_eq!(a.wire.client.data_bytes, 100);
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
        assert_eq!(a.wire.client.fin, 3);
        assert_eq!(a.wire.client.distinct_fins, 2);
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
        assert_eq!(a.wire.client.data_bytes, 20);
        assert_eq!(a.acked[0], 20);
    }

    #[test]
    fn test_midstream_only_is_oth() {
        let a = run(&[(true, "P.", 5, 9, 10), (false, ".", 9, 15, 0)]);
        assert_eq!(a.wire.conn_state, "OTH");
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
        assert_eq!(a.wire.client.syn, 1);
    }
}
