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
mod live;
#[cfg(target_os = "linux")]
mod raw;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
pub use file::write_pcap;
pub use file::{FilePacket, PcapReader, read_pcap};
#[cfg(target_os = "linux")]
pub use live::{Capture, Point, ROUTER_HOP_LIMIT, Reaper, buffer_for};

/// pcap link types (LINKTYPE_*) the harness reads.
pub mod linktype {
    pub(crate) const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub(crate) const PPP: i32 = 9;
    pub(crate) const FDDI: i32 = 10;
    pub(crate) const RAW_BSD: i32 = 12;
    pub(crate) const RAW_OPENBSD: i32 = 14;
    pub(crate) const RAW: i32 = 101;
    pub(crate) const C_HDLC: i32 = 104;
    pub(crate) const LOOP: i32 = 108;
    pub(crate) const IEEE802_11: i32 = 105;
    pub(crate) const LINUX_SLL: i32 = 113;
    pub(crate) const IEEE802_11_RADIOTAP: i32 = 127;
    pub(crate) const NFLOG: i32 = 239;
    pub(crate) const IPV4: i32 = 228;
    pub(crate) const IPV6: i32 = 229;
    pub(crate) const LINUX_SLL2: i32 = 276;
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
    pub(crate) fn to_owned(&self) -> RawPacket {
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
    /// The file could not be opened as an input (its message names it).
    #[error(transparent)]
    Input(#[from] crate::files::InputError),
}

/// Bytes kept per packet: enough for Ethernet + IPv6 + TCP with options and
/// the start of the payload. Payload integrity is checked by the reading
/// application, so the capture needs headers only; a small snaplen lets the
/// buffer hold thousands of packets.
pub const SNAPLEN: u32 = 256;
