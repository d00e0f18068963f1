//! pcap files: writing a case's capture atomically, and reading captures
//! back (pcap or pcapng, any link type libpcap knows) one packet at a time.
//!
//! Reading is careful with what users hand it: only a regular file is
//! opened (a FIFO or a device is an error, not a hang), and a truncated or
//! damaged file is an error naming the file and how far it could be read.

use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};

use pcap::{Capture as PcapCapture, Linktype, Offline};

use super::{CaptureError, Captured, RawPacket};
use crate::files;

/// Writes a pcap file atomically: a temporary file in the same directory,
/// renamed into place, so a crash or a full disk never leaves half a
/// capture (or a stray temporary file).
pub fn write_pcap(path: &Path, captured: &Captured) -> Result<(), CaptureError> {
    files::write_atomic_path(path, |tmp| {
        let dead = PcapCapture::dead(Linktype(captured.linktype)).map_err(std::io::Error::other)?;
        let mut save = dead.savefile(tmp).map_err(std::io::Error::other)?;
        for p in &captured.packets {
            let header = pcap::PacketHeader {
                ts: libc::timeval {
                    tv_sec: p.ts_us.div_euclid(1_000_000),
                    tv_usec: p.ts_us.rem_euclid(1_000_000),
                },
                caplen: u32::try_from(p.data.len()).unwrap_or(u32::MAX),
                len: p.orig_len,
            };
            save.write(&pcap::Packet::new(&header, &p.data));
        }
        save.flush().map_err(std::io::Error::other)
    })
    .map_err(|e| CaptureError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// A capture file read one packet at a time.
pub struct PcapReader {
    cap: PcapCapture<Offline>,
    path: PathBuf,
    linktype: i32,
    /// Packets read so far.
    pub count: u64,
    /// Whether the file is classic pcap (whose byte offsets are known).
    classic: bool,
    /// Byte offset after the last packet read (classic pcap only).
    offset: u64,
}

impl PcapReader {
    /// Opens a capture file (pcap or pcapng).
    pub fn open(path: &Path) -> Result<PcapReader, CaptureError> {
        let err = |message: String| CaptureError::File {
            path: path.to_path_buf(),
            message,
        };
        let file = files::open_input(path, u64::MAX, "capture").map_err(|e| err(e.to_string()))?;
        let mut magic = [0u8; 4];
        let classic = std::os::unix::fs::FileExt::read_exact_at(&file, &mut magic, 0).is_ok()
            && matches!(
                u32::from_le_bytes(magic),
                0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1
            );
        // SAFETY: the descriptor is a regular file we just opened, and
        // libpcap takes ownership of it.
        let cap = unsafe { PcapCapture::from_raw_fd(file.into_raw_fd()) }
            .map_err(|e| err(format!("not a readable pcap or pcapng file: {e}")))?;
        let linktype = cap.get_datalink().0;
        Ok(PcapReader {
            cap,
            path: path.to_path_buf(),
            linktype,
            count: 0,
            classic,
            offset: 24,
        })
    }

    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Where reading stopped, for error messages.
    pub fn position(&self) -> String {
        position(self.classic, self.count, self.offset)
    }

    /// The next packet, None at the end, or an error naming where the file
    /// broke off.
    pub fn next_packet(&mut self) -> Option<Result<RawPacket<&[u8]>, CaptureError>> {
        match self.cap.next_packet() {
            Ok(p) => {
                self.count += 1;
                self.offset += 16 + u64::from(p.header.caplen);
                Some(Ok(RawPacket {
                    ts_us: p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec,
                    orig_len: p.header.len,
                    data: p.data,
                }))
            }
            Err(pcap::Error::NoMorePackets) => None,
            Err(e) => Some(Err(CaptureError::File {
                path: self.path.clone(),
                // Fields, not `self.position()`: the packet above borrows
                // the reader.
                message: format!(
                    "damaged or truncated {}: {e}; the packets before it were read",
                    position(self.classic, self.count, self.offset)
                ),
            })),
        }
    }
}

/// `after packet 12 (byte offset 3456)`; a pcapng file has no offset to name.
fn position(classic: bool, count: u64, offset: u64) -> String {
    if classic {
        format!("after packet {count} (byte offset {offset})")
    } else {
        format!("after packet {count}")
    }
}

/// Reads a whole pcap file. A truncated or damaged file is an error naming
/// the file and how far it could be read.
pub fn read_pcap(path: &Path) -> Result<Captured, CaptureError> {
    let mut r = PcapReader::open(path)?;
    let mut packets = Vec::new();
    while let Some(p) = r.next_packet() {
        packets.push(p?.to_owned());
    }
    Ok(Captured {
        linktype: r.linktype,
        packets,
        dropped: None,
    })
}
