//! A capture file, one connection at a time: packets are decoded and folded
//! into a [`FlowTable`] as they are read, and each connection is handed out
//! once it is over, so memory grows with the connections open at once, not
//! with the file.

use std::path::Path;

use serde::Serialize;

use super::PacketRecord;
use super::flows::{FlowFacts, FlowTable};
use crate::capture::{CaptureError, PcapReader};
use crate::tcp::PerSide;
use crate::wire::{self, Frame};

/// What reading the file found, besides its connections.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FileStats {
    /// Packets read.
    pub packets: u64,
    /// Of those, TCP segments.
    pub segments: u64,
    /// Of those, packets of other protocols (ARP, UDP, ICMP, ...).
    pub other: u64,
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

/// Findings kept in [`FileStats::findings`]; the rest are only counted.
const MAX_FINDINGS: usize = 100;

/// Reads `path` (pcap or pcapng) and calls `on` with every connection, in
/// the order they end (or, for those still open, at the end of the file).
/// A file that cannot be opened, or whose link type cannot be decoded, is
/// an error; a file that breaks off part-way is read up to the break, which
/// [`FileStats::stopped`] names.
pub fn each_connection(
    path: &Path,
    mut on: impl FnMut(FlowFacts),
) -> Result<FileStats, CaptureError> {
    let mut reader = PcapReader::open(path)?;
    let linktype = reader.linktype();
    if let Some(message) = wire::undecodable_linktype(linktype) {
        return Err(CaptureError::File {
            path: path.to_path_buf(),
            message,
        });
    }
    let mut stats = FileStats::default();
    let mut table = FlowTable::new();
    let mut handed = 0u64;
    let mut hand_out = |f: FlowFacts| {
        handed += 1;
        on(f);
    };
    while let Some(packet) = reader.next_packet() {
        let packet = match packet {
            Ok(p) => p,
            Err(e) => {
                stats.stopped = Some(e.to_string());
                break;
            }
        };
        stats.packets += 1;
        match wire::parse_frame(linktype, (stats.packets - 1) as usize, &packet) {
            Frame::Tcp(seg) => {
                stats.segments += 1;
                table.push(&seg, &mut hand_out);
            }
            Frame::Other => stats.other += 1,
            Frame::Malformed(why) => {
                stats.malformed += 1;
                if stats.findings.len() < MAX_FINDINGS {
                    stats
                        .findings
                        .push(format!("packet {}: {why}", stats.packets));
                }
            }
        }
    }
    table.finish(&mut hand_out);
    stats.connections = handed;
    Ok(stats)
}

/// One connection's segments, read again from `path`, as a case report
/// lists them: the segments of its 4-tuple from its first to its last.
pub fn connection_packets(
    path: &Path,
    flow: &FlowFacts,
) -> Result<Vec<PacketRecord>, CaptureError> {
    let mut reader = PcapReader::open(path)?;
    let linktype = reader.linktype();
    let ends = PerSide::new(flow.client, flow.server);
    let last = flow.start_us + flow.duration_us;
    let mut segments = Vec::new();
    let mut n = 0usize;
    while let Some(packet) = reader.next_packet() {
        let Ok(packet) = packet else { break };
        n += 1;
        if let Frame::Tcp(seg) = wire::parse_frame(linktype, n - 1, &packet) {
            let ours = (seg.src == flow.client && seg.dst == flow.server)
                || (seg.src == flow.server && seg.dst == flow.client);
            if ours && (flow.start_us..=last).contains(&seg.ts_us) {
                segments.push(seg);
            }
        }
    }
    Ok(super::analyze(&segments, Some(ends), flow.start_us).packets)
}
