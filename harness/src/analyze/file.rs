//! A capture file, one connection at a time: packets are decoded and folded
//! into a [`FlowTable`] as they are read, and each connection is handed out
//! once it is over, so memory grows with the connections open at once, not
//! with the file.
//!
//! Reading and decoding run on a thread of their own, a batch of frames
//! ahead of the flow table: they take about a third of the CPU time, and on
//! two cores they overlap with the rest. At most a few batches are in
//! flight, so memory stays bounded all the same.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;

use serde::{Serialize, Serializer};

use super::PacketRecord;
use super::flows::{FlowFacts, FlowTable, Hint, Reading};
use crate::capture::{CaptureError, PcapReader};
use crate::tcp::PerSide;
use crate::wire::{self, Frame, Skipped};

/// `skipped` as a JSON object: why, in words, to how many packets.
fn by_name<S: Serializer>(m: &BTreeMap<Skipped, u64>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k.to_string(), v)))
}

impl FileStats {
    /// Packets skipped in layers teardown does not decode (where TCP may
    /// hide), and packets of other protocols, each as `N what` parts.
    pub(crate) fn skipped_text(&self) -> (Vec<String>, Vec<String>) {
        let (mut undecoded, mut other) = (Vec::new(), Vec::new());
        for (why, n) in &self.skipped {
            let part = format!("{n} {why}");
            if why.is_other_protocol() {
                other.push(part);
            } else {
                undecoded.push(part);
            }
        }
        (undecoded, other)
    }
}

/// What reading the file found, besides its connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FileStats {
    /// Packets read.
    pub packets: u64,
    /// Of those, TCP segments.
    pub segments: u64,
    /// Of those, packets that carry no TCP segment teardown reads: other
    /// protocols (ARP, UDP, ICMP, ...) and layers it does not decode.
    pub other: u64,
    /// The same packets by why they were skipped.
    #[serde(serialize_with = "by_name")]
    pub skipped: BTreeMap<Skipped, u64>,
    /// Connections handed out.
    pub connections: u64,
    /// Packets that could not be decoded, each with why (the first 100).
    pub findings: Vec<String>,
    /// Malformed packets in all.
    pub malformed: u64,
    /// Where reading stopped early, for a truncated or damaged file: the
    /// connections before it were analyzed, the rest of the file was not.
    pub stopped: Option<String>,
}

impl FileStats {
    /// `n` of the fragments counted as held were never read: their
    /// datagram was not whole (a fragment missing, cut by the snapshot
    /// length, or too late), so any TCP in them is missing too.
    fn fragments_lost(&mut self, n: u64) {
        if let Some(held) = self.skipped.get_mut(&Skipped::Fragment) {
            *held = held.saturating_sub(n);
            if *held == 0 {
                self.skipped.remove(&Skipped::Fragment);
            }
        }
        *self
            .skipped
            .entry(Skipped::Layer(FRAGMENTS_LOST))
            .or_default() += n;
    }
}

const FRAGMENTS_LOST: &str =
    "IP fragments never reassembled (one missing, cut by the snapshot length, or 30 s late)";

/// Findings kept in [`FileStats::findings`]; the rest are only counted.
const MAX_FINDINGS: usize = 100;

/// Frames decoded per batch, and batches the reader may run ahead.
const BATCH: usize = 1024;
const BATCHES_AHEAD: usize = 4;

/// What the reading thread hands on.
enum Read {
    /// Frames, each with the index of the packet it came from (a packet
    /// may hold several, or complete a fragmented datagram).
    Frames(Vec<(usize, Frame)>),
    /// At the end: IP fragments whose datagram was never whole.
    FragmentsLost(u64),
    /// The file broke off here; the frames before were sent.
    Stopped(String),
}

/// Reads `path` (pcap or pcapng) and calls `on` with every connection, in
/// the order they end (or, for those still open, at the end of the file).
/// A file that cannot be opened, or whose link type cannot be decoded, is
/// an error; a file that breaks off part-way is read up to the break, which
/// [`FileStats::stopped`] names.
pub fn each_connection(path: &Path, on: impl FnMut(FlowFacts)) -> Result<FileStats, CaptureError> {
    each_connection_with(path, Reading::default(), on)
}

/// [`each_connection`], connections read as `reading` says.
pub(crate) fn each_connection_with(
    path: &Path,
    reading: Reading,
    mut on: impl FnMut(FlowFacts),
) -> Result<FileStats, CaptureError> {
    let reader = PcapReader::open(path)?;
    let linktype = reader.linktype();
    if let Some(message) = wire::undecodable_linktype(linktype) {
        return Err(CaptureError::File {
            path: path.to_path_buf(),
            message,
        });
    }
    let mut stats = FileStats::default();
    let mut table = FlowTable::with(reading);
    let mut handed = 0u64;
    let mut hand_out = |f: FlowFacts| {
        handed += 1;
        on(f);
    };
    let mut last_packet = None;
    let (frames, read) = mpsc::sync_channel(BATCHES_AHEAD);
    let (spare, spares) = mpsc::channel();
    let started = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("pcap-reader".into())
            .spawn_scoped(scope, move || read_frames(reader, frames, spares))?;
        for batch in read {
            let mut batch = match batch {
                Read::Frames(batch) => batch,
                Read::FragmentsLost(n) => {
                    stats.fragments_lost(n);
                    continue;
                }
                Read::Stopped(why) => {
                    stats.stopped = Some(why);
                    break;
                }
            };
            // Each connection's memory is fetched a few segments ahead:
            // a capture of many connections at once touches a different
            // one with almost every segment. The hint for segment i waits
            // in `hints[i % AHEAD]`.
            const AHEAD: usize = 8;
            let mut hints = [Hint::default(); AHEAD];
            for (i, (_, frame)) in batch.iter().enumerate().take(AHEAD) {
                if let Frame::Tcp(seg) = frame {
                    hints[i] = table.prefetch(seg);
                }
            }
            for i in 0..batch.len() {
                let hint = hints[i % AHEAD];
                if let Some((_, Frame::Tcp(seg))) = batch.get(i + AHEAD) {
                    hints[i % AHEAD] = table.prefetch(seg);
                }
                let (index, frame) = &batch[i];
                let index = *index;
                if last_packet != Some(index) {
                    stats.packets += 1;
                    last_packet = Some(index);
                }
                match frame {
                    Frame::Tcp(seg) => {
                        stats.segments += 1;
                        table.push_hinted(seg, hint, &mut hand_out);
                    }
                    Frame::Other(why) => {
                        stats.other += 1;
                        *stats.skipped.entry(*why).or_default() += 1;
                    }
                    Frame::Malformed(why) => {
                        stats.malformed += 1;
                        if stats.findings.len() < MAX_FINDINGS {
                            stats.findings.push(format!("packet {}: {why}", index + 1));
                        }
                    }
                }
            }
            batch.clear();
            // Back to the reader to fill again (it may have ended).
            let _ = spare.send(batch);
        }
        Ok::<(), std::io::Error>(())
    });
    if let Err(e) = started {
        return Err(CaptureError::File {
            path: path.to_path_buf(),
            message: format!("cannot start a thread to read it: {e}"),
        });
    }
    table.finish(&mut hand_out);
    stats.connections = handed;
    Ok(stats)
}

/// Reads and decodes every packet of `reader`, in batches, until the end of
/// the file, a break in it, or the analysis no longer listening.
fn read_frames(
    mut reader: PcapReader,
    out: mpsc::SyncSender<Read>,
    spares: mpsc::Receiver<Vec<(usize, Frame)>>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut decoder = wire::Decoder::default();
    let mut index = 0;
    let stopped = loop {
        match reader.next_packet() {
            None => break None,
            Some(Err(e)) => break Some(e.to_string()),
            Some(Ok(p)) => {
                decoder.decode(p.linktype, index, &p.packet, &mut |f| {
                    batch.push((index, f))
                });
                index += 1;
            }
        }
        if batch.len() >= BATCH {
            let next = spares
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(BATCH));
            if out
                .send(Read::Frames(std::mem::replace(&mut batch, next)))
                .is_err()
            {
                return;
            }
        }
    };
    if !batch.is_empty() && out.send(Read::Frames(batch)).is_err() {
        return;
    }
    let lost = decoder.fragments_lost();
    if lost > 0 && out.send(Read::FragmentsLost(lost)).is_err() {
        return;
    }
    if let Some(why) = stopped {
        let _ = out.send(Read::Stopped(why));
    }
}

/// One connection's segments, read again from `path`, as a case report
/// lists them: the segments of its 4-tuple from its first to its last.
pub(crate) fn connection_packets(
    path: &Path,
    flow: &FlowFacts,
) -> Result<Vec<PacketRecord>, CaptureError> {
    let mut reader = PcapReader::open(path)?;
    let ends = PerSide::new(flow.client, flow.server);
    let last = flow.start_us + flow.duration_us;
    let mut segments = Vec::new();
    let mut decoder = wire::Decoder::default();
    let mut n = 0usize;
    while let Some(packet) = reader.next_packet() {
        let Ok(p) = packet else { break };
        n += 1;
        decoder.decode(p.linktype, n - 1, &p.packet, &mut |frame| {
            if let Frame::Tcp(seg) = frame {
                let ours = (seg.src == flow.client && seg.dst == flow.server)
                    || (seg.src == flow.server && seg.dst == flow.client);
                if ours && (flow.start_us..=last).contains(&seg.ts_us) {
                    segments.push(seg);
                }
            }
        });
    }
    Ok(super::analyze(&segments, Some(ends), flow.start_us).packets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Captured, RawPacket, linktype, write_pcap};
    use etherparse::PacketBuilder;

    /// `n` graceful connections one after the other on distinct client
    /// ports, 7 packets each, as an Ethernet capture.
    fn graceful_capture(n: u16) -> Captured {
        let mut packets = Vec::new();
        let mut t = 0;
        for i in 0..n {
            let port = 10_000 + i;
            // (from the client, flags, seq, ack, payload)
            let steps: [(bool, &str, u32, u32, &[u8]); 7] = [
                (true, "S", 100, 0, b""),
                (false, "SA", 500, 101, b""),
                (true, "A", 101, 501, b""),
                (true, "PA", 101, 501, b"hello"),
                (true, "FA", 106, 501, b""),
                (false, "FA", 501, 107, b""),
                (true, "A", 107, 502, b""),
            ];
            for (from_client, flags, seq, ack, payload) in steps {
                let (src, dst) = if from_client { (port, 80) } else { (80, port) };
                let mut tcp = PacketBuilder::ethernet2([0; 6], [0; 6])
                    .ipv4([10, 0, 0, 1], [10, 0, 0, 1], 64)
                    .tcp(src, dst, seq, 1000);
                for f in flags.chars() {
                    tcp = match f {
                        'S' => tcp.syn(),
                        'A' => tcp.ack(ack),
                        'P' => tcp.psh(),
                        'F' => tcp.fin(),
                        _ => unreachable!("the steps above"),
                    };
                }
                let mut data = Vec::new();
                tcp.write(&mut data, payload).unwrap();
                t += 10;
                packets.push(RawPacket {
                    ts_us: t,
                    orig_len: data.len() as u32,
                    data,
                });
            }
        }
        Captured {
            linktype: linktype::ETHERNET,
            packets,
            dropped: None,
        }
    }

    /// A scratch file whose name ends in `name`, removed when dropped.
    fn temp(name: &str) -> tempfile::TempPath {
        tempfile::Builder::new()
            .prefix("teardown-file-")
            .suffix(&format!("-{name}"))
            .tempfile()
            .unwrap()
            .into_temp_path()
    }

    /// Many batches' worth of packets: every one is read, in order, and a
    /// file cut inside its last packet still gives the ones before it.
    #[test]
    fn every_packet_is_read_across_batches_and_up_to_a_break() {
        let n = 1_000; // 7,000 packets: several batches
        let path = temp("many.pcap");
        write_pcap(&path, &graceful_capture(n)).unwrap();
        let mut flows = Vec::new();
        let stats = each_connection(&path, |f| flows.push(f)).unwrap();
        assert_eq!((stats.packets, stats.segments), (7_000, 7_000));
        assert_eq!(stats.connections, u64::from(n));
        assert_eq!(stats.stopped, None);
        flows.sort_by_key(|f| f.index);
        for (i, f) in flows.iter().enumerate() {
            assert_eq!(f.client.port(), 10_000 + i as u16, "in capture order");
            assert_eq!(f.wire.conn_state, "SF");
            assert_eq!(f.wire.sides.client.data_bytes, 5);
        }

        let whole = std::fs::read(&path).unwrap();
        let cut = temp("cut.pcap");
        std::fs::write(&cut, &whole[..whole.len() - 3]).unwrap();
        let mut flows = Vec::new();
        let stats = each_connection(&cut, |f| flows.push(f)).unwrap();
        assert_eq!(stats.packets, 6_999);
        assert!(
            stats
                .stopped
                .as_ref()
                .is_some_and(|s| s.contains("after packet 6999")),
            "{:?}",
            stats.stopped
        );
        assert_eq!(flows.len(), usize::from(n));
        let last = flows.iter().max_by_key(|f| f.index).unwrap();
        assert_eq!(
            last.wire.conn_state, "SF",
            "the last connection lost only its final ACK"
        );
        assert!(last.open_at_end, "its server's FIN was never acknowledged");
        let _ = std::fs::remove_file(&cut);
    }
}
