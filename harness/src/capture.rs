//! Packet capture with libpcap on the case namespace's loopback.
//!
//! The handle is opened in immediate mode, filtered and active before the
//! case creates its first socket, and drained non-blockingly after every
//! step and once more at the end, so no packet is missed or lost in a
//! half-filled buffer. On Linux each packet on `lo` is seen once.
//! This module stores packets; it never interprets them.

use std::path::{Path, PathBuf};

use pcap::{Active, Capture as PcapCapture, Linktype};

use crate::sandbox::Namespace;

/// A captured frame: timestamp, original length and the captured bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPacket {
    /// Microseconds since the Unix epoch (the kernel's packet timestamp).
    pub ts_us: i64,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Everything captured for one case, or read from a pcap file.
#[derive(Clone, Debug, Default)]
pub struct Captured {
    /// The pcap link type (DLT), e.g. 1 = Ethernet, which Linux uses on lo.
    pub linktype: i32,
    pub packets: Vec<RawPacket>,
    /// Packets the kernel dropped because the buffer was full (0 expected).
    pub dropped: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("libpcap on lo: {0} (needs root or CAP_NET_RAW)")]
    Open(String),
    #[error("libpcap read: {0}")]
    Read(String),
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
}

/// Bytes kept per packet: enough for Ethernet + IPv6 + TCP with options and
/// the start of the payload. Payload integrity is checked by the reading
/// application, so the capture needs headers only; a small snaplen lets the
/// ring hold thousands of packets.
pub const SNAPLEN: i32 = 256;

/// A running capture.
pub struct Capture {
    handle: PcapCapture<Active>,
    linktype: i32,
    packets: Vec<RawPacket>,
}

impl Capture {
    /// Opens `lo` in the calling thread's namespace, filtered to TCP.
    ///
    /// Takes 10-25 ms here, nearly all of it idle: setting up the packet
    /// ring (`PACKET_RX_RING`) waits for an RCU grace period in the kernel
    /// (`packet_set_ring` -> `synchronize_net`), whatever the buffer size.
    pub fn start(_ns: &Namespace) -> Result<Capture, CaptureError> {
        let open = |e: pcap::Error| CaptureError::Open(e.to_string());
        let mut handle = PcapCapture::from_device("lo")
            .map_err(open)?
            .immediate_mode(true)
            .snaplen(SNAPLEN)
            .buffer_size(1 << 20)
            .open()
            .map_err(open)?;
        handle.filter("tcp", true).map_err(open)?;
        let handle = handle.setnonblock().map_err(open)?;
        let linktype = handle.get_datalink().0;
        Ok(Capture {
            handle,
            linktype,
            packets: Vec::new(),
        })
    }

    /// Reads every packet the kernel has delivered so far; never blocks.
    pub fn drain(&mut self) -> Result<usize, CaptureError> {
        let before = self.packets.len();
        loop {
            match self.handle.next_packet() {
                Ok(p) => self.packets.push(RawPacket {
                    ts_us: p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec,
                    orig_len: p.header.len,
                    data: p.data.to_vec(),
                }),
                Err(pcap::Error::TimeoutExpired) | Err(pcap::Error::NoMorePackets) => break,
                Err(e) => return Err(CaptureError::Read(e.to_string())),
            }
        }
        Ok(self.packets.len() - before)
    }

    /// Packets captured so far.
    pub fn packets(&self) -> &[RawPacket] {
        &self.packets
    }

    /// Drains what is left and hands the handle to `reaper` to close.
    pub fn finish(mut self, reaper: &Reaper) -> Result<Captured, CaptureError> {
        let drained = self.drain();
        let dropped = self
            .handle
            .stats()
            .map(|s| s.dropped + s.if_dropped)
            .unwrap_or(0);
        let Capture {
            handle,
            linktype,
            packets,
        } = self;
        reaper.close(handle);
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
    fn close(&self, handle: PcapCapture<Active>) {
        // If no thread can be spawned, the closure (and the handle) is
        // dropped right here, synchronously: slower, never leaked.
        if let Ok(t) = std::thread::Builder::new()
            .name("pcap-close".into())
            .spawn(move || drop(handle))
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

/// Writes a pcap file atomically: a temporary file in the same directory,
/// renamed into place, so a crash never leaves half a capture.
pub fn write_pcap(path: &Path, captured: &Captured) -> Result<(), CaptureError> {
    let err = |message: String| CaptureError::File {
        path: path.to_path_buf(),
        message,
    };
    let tmp = crate::report::temp_path_for(path);
    {
        let dead =
            PcapCapture::dead(Linktype(captured.linktype)).map_err(|e| err(e.to_string()))?;
        let mut save = dead.savefile(&tmp).map_err(|e| err(e.to_string()))?;
        for p in &captured.packets {
            let header = pcap::PacketHeader {
                ts: libc::timeval {
                    tv_sec: p.ts_us.div_euclid(1_000_000),
                    tv_usec: p.ts_us.rem_euclid(1_000_000),
                },
                caplen: p.data.len() as u32,
                len: p.orig_len,
            };
            save.write(&pcap::Packet::new(&header, &p.data));
        }
        save.flush().map_err(|e| err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("rename into place: {e}"))
    })
}

/// Reads a pcap file. A truncated or damaged file is an error naming the
/// file and how far it could be read.
pub fn read_pcap(path: &Path) -> Result<Captured, CaptureError> {
    let err = |message: String| CaptureError::File {
        path: path.to_path_buf(),
        message,
    };
    let mut cap =
        PcapCapture::from_file(path).map_err(|e| err(format!("not a readable pcap file: {e}")))?;
    let linktype = cap.get_datalink().0;
    let mut packets = Vec::new();
    loop {
        match cap.next_packet() {
            Ok(p) => packets.push(RawPacket {
                ts_us: p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec,
                orig_len: p.header.len,
                data: p.data.to_vec(),
            }),
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => {
                return Err(err(format!(
                    "damaged after {} packets: {e}; re-capture the case",
                    packets.len()
                )));
            }
        }
    }
    Ok(Captured {
        linktype,
        packets,
        dropped: 0,
    })
}
