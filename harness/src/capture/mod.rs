//! Packet capture on the case namespace's loopback, and pcap files.
//!
//! A capture is opened, filtered and active before the case creates its
//! first socket, and drained non-blockingly after every step and once more
//! at the end, so no packet is missed or lost in a half-filled buffer. Two
//! backends, chosen per stack (see `stack`):
//!
//! - [`CaptureBackend::Libpcap`]: libpcap in immediate mode on an mmap'd
//!   ring (Linux's default, as the design card asks);
//! - [`CaptureBackend::RawSocket`]: a plain `AF_PACKET` socket read with
//!   `recvmsg`, for stacks without `PACKET_RX_RING` (gVisor), and cheaper
//!   to set up on Linux.
//!
//! Both keep the same frames (one copy of each segment on `lo`, cut to
//! [`SNAPLEN`]) and write the same pcap files. This module stores packets;
//! it never interprets them.

mod file;
#[cfg(target_os = "linux")]
mod libpcap;
#[cfg(target_os = "linux")]
mod raw;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use file::{FilePacket, PcapReader, read_pcap, write_pcap};

use crate::sandbox::Namespace;

/// pcap link types (LINKTYPE_*) the harness reads.
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const PPP: i32 = 9;
    pub const RAW_BSD: i32 = 12;
    pub const RAW_OPENBSD: i32 = 14;
    pub const RAW: i32 = 101;
    pub const C_HDLC: i32 = 104;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// A captured frame: timestamp, original length and the captured bytes,
/// owned (`RawPacket`) or borrowed from a reader's buffer
/// (`RawPacket<&[u8]>`, what [`PcapReader`] hands out: a capture is read
/// without a copy per packet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPacket<D = Vec<u8>> {
    /// Microseconds since the Unix epoch (the kernel's packet timestamp).
    pub ts_us: i64,
    pub orig_len: u32,
    pub data: D,
}

impl RawPacket<&[u8]> {
    /// An owned copy.
    pub fn to_owned(&self) -> RawPacket {
        RawPacket {
            ts_us: self.ts_us,
            orig_len: self.orig_len,
            data: self.data.to_vec(),
        }
    }
}

/// Everything captured for one case, or read from a pcap file.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// The pcap link type (DLT), e.g. 1 = Ethernet, which Linux uses on lo.
    pub linktype: i32,
    pub packets: Vec<RawPacket>,
    /// Packets the kernel dropped because the buffer was full; None where
    /// the backend cannot tell (gVisor has no PACKET_STATISTICS).
    pub dropped: Option<u64>,
}

/// How packets are captured on a stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureBackend {
    /// libpcap, immediate mode, mmap'd ring.
    Libpcap,
    /// An `AF_PACKET` socket read with `recvmsg`.
    RawSocket,
}

impl CaptureBackend {
    pub fn name(self) -> &'static str {
        match self {
            CaptureBackend::Libpcap => "libpcap",
            CaptureBackend::RawSocket => "raw-socket",
        }
    }
}

impl std::str::FromStr for CaptureBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "libpcap" | "pcap" => Ok(CaptureBackend::Libpcap),
            "raw-socket" | "raw" => Ok(CaptureBackend::RawSocket),
            other => Err(format!(
                "unknown capture backend {other:?}; expected libpcap or raw-socket"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture: {0}")]
    Open(String),
    #[error("capture: {0} (needs root or CAP_NET_RAW)")]
    NotPermitted(String),
    #[error("capture read: {0}")]
    Read(String),
    #[error("{}: {message}", path.display())]
    File {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Bytes kept per packet: enough for Ethernet + IPv6 + TCP with options and
/// the start of the payload. Payload integrity is checked by the reading
/// application, so the capture needs headers only; a small snaplen lets the
/// buffer hold thousands of packets.
pub const SNAPLEN: u32 = 256;

enum Live {
    #[cfg(target_os = "linux")]
    Libpcap(libpcap::LibpcapCapture),
    #[cfg(target_os = "linux")]
    Raw(raw::RawCapture),
}

/// A running capture.
pub struct Capture {
    live: Live,
    linktype: i32,
    packets: Vec<RawPacket>,
}

/// Where a capture is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The case namespace's `lo`: one copy of every segment.
    Loopback,
    /// The bench's router (see `sandbox::bench`): every packet as it
    /// arrives from either link (before the forward path's fault rules, so
    /// a dropped segment is still seen, as on loopback), and the packets
    /// the router itself sends (a `reject` rule's RST), which it sends with
    /// a hop limit of [`ROUTER_HOP_LIMIT`] where a forwarded packet always
    /// has less. One clock for both directions.
    Router,
}

/// The TTL / hop limit of packets the bench's router originates; a packet
/// it forwards has lost at least one hop, so this marks the router's own.
pub const ROUTER_HOP_LIMIT: u8 = 255;

impl Point {
    fn device(self) -> &'static str {
        match self {
            Point::Loopback => "lo",
            Point::Router => "any",
        }
    }

    /// The libpcap filter that keeps what the point must see, once.
    fn filter(self) -> String {
        match self {
            Point::Loopback => "tcp".into(),
            Point::Router => format!(
                "tcp and (inbound or (ip and ip[8] = {ROUTER_HOP_LIMIT}) or (ip6 and ip6[7] = {ROUTER_HOP_LIMIT}))"
            ),
        }
    }
}

/// The kernel buffer a capture asks for, given how many connections the
/// case may open: 1 MiB, and 8 KiB more per connection, so a case whose
/// thousands of connections all close at once drops nothing before the
/// driver drains it (a close is 4 to 10 segments of at most 256 captured
/// bytes each, plus the ring's per-frame header).
pub fn buffer_for(connections: u32) -> usize {
    (1 << 20) + 8 * 1024 * connections as usize
}

impl Capture {
    /// Opens `point` in the calling thread's namespace, filtered to TCP,
    /// with a kernel buffer of `buffer` bytes (see [`buffer_for`]).
    pub fn start(
        ns: &Namespace,
        backend: CaptureBackend,
        point: Point,
        buffer: usize,
    ) -> Result<Capture, CaptureError> {
        let live = match backend {
            #[cfg(target_os = "linux")]
            CaptureBackend::Libpcap => {
                Live::Libpcap(libpcap::LibpcapCapture::start(ns, point, buffer)?)
            }
            #[cfg(target_os = "linux")]
            CaptureBackend::RawSocket => Live::Raw(raw::RawCapture::start(ns, point, buffer)?),
        };
        let linktype = match &live {
            #[cfg(target_os = "linux")]
            Live::Libpcap(c) => c.linktype(),
            #[cfg(target_os = "linux")]
            Live::Raw(_) => linktype::ETHERNET,
        };
        Ok(Capture {
            live,
            linktype,
            packets: Vec::new(),
        })
    }

    /// Reads every packet the kernel has delivered so far; never blocks.
    pub fn drain(&mut self) -> Result<usize, CaptureError> {
        let before = self.packets.len();
        match &mut self.live {
            #[cfg(target_os = "linux")]
            Live::Libpcap(c) => c.drain(&mut self.packets)?,
            #[cfg(target_os = "linux")]
            Live::Raw(c) => c.drain(&mut self.packets)?,
        }
        Ok(self.packets.len() - before)
    }

    /// The link type of the captured frames.
    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Packets captured so far.
    pub fn packets(&self) -> &[RawPacket] {
        &self.packets
    }

    /// Drains what is left and hands the handle to `reaper` to close.
    pub fn finish(mut self, reaper: &Reaper) -> Result<Captured, CaptureError> {
        let drained = self.drain();
        let dropped = match &mut self.live {
            #[cfg(target_os = "linux")]
            Live::Libpcap(c) => c.dropped(),
            #[cfg(target_os = "linux")]
            Live::Raw(c) => c.dropped(),
        };
        let Capture {
            live,
            linktype,
            packets,
        } = self;
        reaper.close(live);
        drained?;
        Ok(Captured {
            linktype,
            packets,
            dropped,
        })
    }
}

/// Closes capture handles off the case's critical path.
///
/// Closing an AF_PACKET socket that has a ring waits for RCU grace periods
/// in the kernel (`packet_release` -> `synchronize_net`, twice): about 20 ms
/// measured here, all of it idle waiting. The reaper does that on its own
/// threads; `wait` (also run on drop) joins them, so nothing outlives a run.
#[derive(Default)]
pub struct Reaper {
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Reaper {
    fn close(&self, live: Live) {
        // If no thread can be spawned, the closure (and the handle) is
        // dropped right here, synchronously: slower, never leaked.
        if let Ok(t) = std::thread::Builder::new()
            .name("capture-close".into())
            .spawn(move || drop(live))
        {
            self.threads.lock().expect("reaper").push(t);
        }
    }

    /// Waits until every handed-over handle is closed.
    pub fn wait(&self) {
        let threads = std::mem::take(&mut *self.threads.lock().expect("reaper"));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.wait();
    }
}
