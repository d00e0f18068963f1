//! Live capture (Linux): a capture on the case's loopback or the bench's
//! router, through one of the two backends (see the module above).

use super::{CaptureBackend, CaptureError, Captured, RawPacket, libpcap, linktype, raw};
use crate::sandbox::Namespace;

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
    pub(super) fn device(self) -> &'static str {
        match self {
            Point::Loopback => "lo",
            Point::Router => "any",
        }
    }

    /// The libpcap filter that keeps what the point must see, once.
    pub(super) fn filter(self) -> String {
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
