//! pcap files: writing a case's capture atomically, and reading captures
//! back (pcap or pcapng, any link type) one packet at a time.
//!
//! Reading is careful with what users hand it: only a regular file is
//! opened (a FIFO or a device is an error, not a hang), and a truncated or
//! damaged file is an error naming the file and how far it could be read.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[cfg(target_os = "linux")]
use pcap::{Capture as PcapCapture, Linktype};
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};

use super::{CaptureError, Captured, RawPacket};
use crate::files;

/// Writes a pcap file atomically (the harness's captures: Linux's): a
/// temporary file in the same directory,
/// renamed into place, so a crash or a full disk never leaves half a
/// capture (or a stray temporary file).
#[cfg(target_os = "linux")]
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

/// A capture file read one packet at a time, with pcap-parser: classic
/// pcap (micro- or nanosecond) and pcapng, whose sections may hold many
/// interfaces of different link types, snapshot lengths and timestamp
/// resolutions (libpcap's reader refuses such files). Packets are handed
/// out borrowed from the reader's buffer, without a copy.
pub struct PcapReader {
    inner: Box<dyn PcapReaderIterator + Send>,
    path: PathBuf,
    /// The link type of the first interface (pcapng) or of the file.
    linktype: i32,
    /// The current section's interfaces, by their number (pcapng).
    interfaces: Vec<Interface>,
    /// Classic pcap: its link type, and whether timestamps are in ns.
    legacy: Option<(i32, bool)>,
    /// The current pcapng section is big-endian.
    big_endian: bool,
    /// Why the compressed stream broke off, if it did (see [`UntilBroken`]).
    broken: Arc<Mutex<Option<String>>>,
    /// Bytes of the block handed out last, consumed at the next call.
    pending: usize,
    /// Packets read so far.
    pub count: u64,
    /// Bytes of the file consumed so far.
    offset: u64,
}

/// What a packet of a pcapng interface needs to be read.
#[derive(Clone, Copy, Debug)]
struct Interface {
    linktype: i32,
    /// Timestamp units per second, and seconds to add.
    resolution: u64,
    offset_s: i64,
}

/// A packet and the link type of the interface it was captured on.
pub struct FilePacket<'a> {
    pub linktype: i32,
    pub packet: RawPacket<&'a [u8]>,
}

/// Room the reader's buffer starts with; it grows for a larger block.
const READ_BUFFER: usize = 1 << 20;
/// The largest block a file may hold (pcapng's maximum snapshot length
/// is 256 KiB; a block larger than this is damage, not data).
const MAX_BLOCK: usize = 64 << 20;

impl PcapReader {
    /// Opens a capture file (pcap or pcapng) and reads its headers, up to
    /// the first interface's link type.
    pub fn open(path: &Path) -> Result<PcapReader, CaptureError> {
        let err = |message: String| CaptureError::File {
            path: path.to_path_buf(),
            message,
        };
        let mut file = files::open_input(path, u64::MAX, "capture")?;
        // A gzip-compressed capture (`.pcap.gz`, as Wireshark writes and
        // reads them) is read through its decompressor.
        let mut magic = [0u8; 2];
        let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
        file.rewind()
            .map_err(|e| err(format!("cannot read it from the start: {e}")))?;
        let broken = Arc::new(Mutex::new(None));
        let input: Box<dyn Read + Send> = if gzip {
            Box::new(UntilBroken {
                inner: flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)),
                broken: Arc::clone(&broken),
            })
        } else {
            Box::new(file)
        };
        let inner = match pcap_parser::create_reader(READ_BUFFER, input) {
            Ok(r) => r,
            Err(PcapError::Eof) => {
                return Err(err(match broken.lock().map(|b| b.clone()) {
                    Ok(Some(why)) => format!("compressed, but it does not decompress ({why})"),
                    _ => "an empty file, not a pcap or pcapng file".into(),
                }));
            }
            Err(PcapError::HeaderNotRecognized) => {
                return Err(err(
                    "not a pcap or pcapng file (its first bytes are neither header)".into(),
                ));
            }
            Err(e) => return Err(err(format!("not a readable pcap or pcapng file: {e:?}"))),
        };
        let mut r = PcapReader {
            inner,
            path: path.to_path_buf(),
            linktype: -1,
            interfaces: Vec::new(),
            legacy: None,
            big_endian: false,
            broken,
            pending: 0,
            count: 0,
            offset: 0,
        };
        // The headers before the first packet give the link type.
        while r.linktype < 0 {
            match r.block().map_err(&err)? {
                Some(Seen::Header) => {}
                Some(Seen::Packet { .. }) => {
                    return Err(err(
                        "a packet before any interface was described: damaged pcapng".into(),
                    ));
                }
                None => return Err(err("no packets and no interface: an empty capture".into())),
            }
        }
        Ok(r)
    }

    /// The link type of the first interface.
    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Where reading stopped, for error messages.
    pub fn position(&self) -> String {
        position(self.count, self.offset)
    }

    /// Reads the next block: a header (whose facts are kept) or a packet,
    /// which stays in the buffer until the next call.
    fn block(&mut self) -> Result<Option<Seen>, String> {
        self.inner.consume(self.pending);
        self.pending = 0;
        loop {
            // Where the unread data starts: a packet's bytes are found again
            // by their place in it, not by parsing the block twice.
            let base = self.inner.data().as_ptr() as usize;
            match self.inner.next() {
                Ok((len, block)) => {
                    let at = |data: &[u8]| data.as_ptr() as usize - base;
                    self.offset += len as u64;
                    let seen = match block {
                        PcapBlockOwned::LegacyHeader(h) => {
                            // The link type is the field's low 16 bits, as
                            // libpcap and Wireshark read it: the high 16 may
                            // say how long a frame check sequence ends each
                            // frame (after the IP packet, it is read as
                            // padding is), or hold junk.
                            let linktype = h.network.0 & 0xffff;
                            self.legacy = Some((linktype, h.is_nanosecond_precision()));
                            self.linktype = linktype;
                            Seen::Header
                        }
                        PcapBlockOwned::Legacy(b) => Seen::Packet {
                            linktype: self.legacy.map_or(self.linktype, |l| l.0),
                            ts_us: i64::from(b.ts_sec) * 1_000_000
                                + if self.legacy.is_some_and(|l| l.1) {
                                    i64::from(b.ts_usec) / 1000
                                } else {
                                    i64::from(b.ts_usec)
                                },
                            orig_len: b.origlen,
                            at: at(b.data),
                            caplen: b.caplen.min(b.data.len() as u32),
                        },
                        PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                            // Interfaces are numbered afresh in each section.
                            self.interfaces.clear();
                            self.big_endian = shb.big_endian();
                            Seen::Header
                        }
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            let i = Interface {
                                linktype: idb.linktype.0,
                                resolution: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                                offset_s: idb.ts_offset(),
                            };
                            if self.linktype < 0 {
                                self.linktype = i.linktype;
                            }
                            self.interfaces.push(i);
                            Seen::Header
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            let Some(i) = self.interfaces.get(epb.if_id as usize).copied() else {
                                return Err(format!(
                                    "damaged pcapng {}: a packet of interface {} that was never described",
                                    position(self.count, self.offset),
                                    epb.if_id
                                ));
                            };
                            let ts = (u128::from(epb.ts_high) << 32) | u128::from(epb.ts_low);
                            let us = ts * 1_000_000 / u128::from(i.resolution);
                            Seen::Packet {
                                linktype: i.linktype,
                                ts_us: i64::try_from(us).unwrap_or(i64::MAX)
                                    + i.offset_s.saturating_mul(1_000_000),
                                orig_len: epb.origlen,
                                at: at(epb.data),
                                caplen: epb.caplen.min(epb.data.len() as u32),
                            }
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                            let Some(i) = self.interfaces.first().copied() else {
                                return Err(format!(
                                    "damaged pcapng {}: a simple packet before any interface",
                                    position(self.count, self.offset)
                                ));
                            };
                            Seen::Packet {
                                linktype: i.linktype,
                                // A simple packet has no timestamp.
                                ts_us: 0,
                                orig_len: spb.origlen,
                                at: at(spb.data),
                                caplen: spb.origlen.min(spb.data.len() as u32),
                            }
                        }
                        // The obsolete Packet Block (type 2) of older
                        // writers: interface (2 bytes), drops (2), time
                        // (8), captured and original lengths (4 each).
                        PcapBlockOwned::NG(Block::Unknown(b))
                            if b.block_type == 2 || b.block_type == 2u32.swap_bytes() =>
                        {
                            let u32_at = |d: &[u8], at: usize| {
                                let v = [d[at], d[at + 1], d[at + 2], d[at + 3]];
                                if self.big_endian {
                                    u32::from_be_bytes(v)
                                } else {
                                    u32::from_le_bytes(v)
                                }
                            };
                            let d = b.data;
                            let damaged = || {
                                format!(
                                    "damaged pcapng {}: a packet block shorter than its header",
                                    position(self.count, self.offset)
                                )
                            };
                            if d.len() < 20 {
                                return Err(damaged());
                            }
                            let if_id = usize::from(if self.big_endian {
                                u16::from_be_bytes([d[0], d[1]])
                            } else {
                                u16::from_le_bytes([d[0], d[1]])
                            });
                            let Some(i) = self.interfaces.get(if_id).copied() else {
                                return Err(format!(
                                    "damaged pcapng {}: a packet of interface {if_id} that was never described",
                                    position(self.count, self.offset)
                                ));
                            };
                            let ts = (u128::from(u32_at(d, 4)) << 32) | u128::from(u32_at(d, 8));
                            let us = ts * 1_000_000 / u128::from(i.resolution);
                            let data = &d[20..];
                            Seen::Packet {
                                linktype: i.linktype,
                                ts_us: i64::try_from(us).unwrap_or(i64::MAX)
                                    + i.offset_s.saturating_mul(1_000_000),
                                orig_len: u32_at(d, 16),
                                at: at(data),
                                caplen: u32_at(d, 12).min(data.len() as u32),
                            }
                        }
                        // Statistics, name resolution, comments, ...
                        PcapBlockOwned::NG(_) => Seen::Header,
                    };
                    match seen {
                        Seen::Header => {
                            self.inner.consume(len);
                            return Ok(Some(Seen::Header));
                        }
                        packet => {
                            self.pending = len;
                            return Ok(Some(packet));
                        }
                    }
                }
                Err(PcapError::Eof) => {
                    return match self.broken.lock().map(|b| b.clone()) {
                        Ok(Some(why)) => Err(format!(
                            "the compressed file breaks off after {}: {why}; the packets before it were read",
                            position(self.count, self.offset)
                        )),
                        _ => Ok(None),
                    };
                }
                Err(PcapError::Incomplete(_)) => {
                    if let Ok(Some(why)) = self.broken.lock().map(|b| b.clone()) {
                        return Err(format!(
                            "the compressed file breaks off inside a block {}: {why}; the packets before it were read",
                            position(self.count, self.offset)
                        ));
                    }
                    if self.inner.reader_exhausted() {
                        return Err(format!(
                            "truncated {}: the file ends inside a block; the packets before it were read",
                            position(self.count, self.offset)
                        ));
                    }
                    if self.inner.position() == 0 && self.inner.data().len() >= READ_BUFFER {
                        // A block larger than the buffer: room for it, to a bound.
                        let size = self.inner.data().len() * 2;
                        if size > MAX_BLOCK || !self.inner.grow(size) {
                            return Err(format!(
                                "damaged {}: a block larger than {} MiB",
                                position(self.count, self.offset),
                                MAX_BLOCK >> 20
                            ));
                        }
                    }
                    if let Err(e) = self.inner.refill() {
                        return Err(format!(
                            "cannot read on {}: {e:?}",
                            position(self.count, self.offset)
                        ));
                    }
                }
                Err(PcapError::UnexpectedEof) => {
                    return Err(format!(
                        "truncated {}: the file ends inside a block; the packets before it were read",
                        position(self.count, self.offset)
                    ));
                }
                Err(e) => {
                    return Err(format!(
                        "damaged {}: {}; the packets before it were read",
                        position(self.count, self.offset),
                        describe(&e)
                    ));
                }
            }
        }
    }

    /// The next packet, None at the end, or an error naming where the file
    /// broke off.
    pub(crate) fn next_packet(&mut self) -> Option<Result<FilePacket<'_>, CaptureError>> {
        let seen = loop {
            match self.block() {
                Ok(Some(Seen::Header)) => continue,
                Ok(Some(p)) => break p,
                Ok(None) => return None,
                Err(message) => {
                    return Some(Err(CaptureError::File {
                        path: self.path.clone(),
                        message,
                    }));
                }
            }
        };
        let Seen::Packet {
            linktype,
            ts_us,
            orig_len,
            at,
            caplen,
        } = seen
        else {
            unreachable!("headers are skipped above")
        };
        self.count += 1;
        // The block is still in the buffer, not yet consumed.
        let data = self
            .inner
            .data()
            .get(at..at + caplen as usize)
            .unwrap_or_default();
        Some(Ok(FilePacket {
            linktype,
            packet: RawPacket {
                ts_us,
                orig_len,
                data,
            },
        }))
    }
}

/// A block as [`PcapReader::block`] found it.
enum Seen {
    Header,
    Packet {
        linktype: i32,
        ts_us: i64,
        orig_len: u32,
        /// Where its bytes start in the reader's unread data.
        at: usize,
        caplen: u32,
    },
}

/// A parse error in words.
fn describe(e: &PcapError<&[u8]>) -> String {
    match e {
        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
            format!("a block does not parse ({kind:?})")
        }
        PcapError::BufferTooSmall => "a block larger than the read buffer".into(),
        PcapError::ReadError => "a read error".into(),
        other => format!("{other:?}"),
    }
}

/// `after packet 12 (byte offset 3456)`.
fn position(count: u64, offset: u64) -> String {
    format!("after packet {count} (byte offset {offset})")
}

/// A decompressor whose error ends the stream as the end of a file would,
/// so the packets before a break are read as those of a truncated file;
/// the error is kept to say why.
struct UntilBroken<R> {
    inner: R,
    broken: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for UntilBroken<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => {
                if let Ok(mut b) = self.broken.lock() {
                    b.get_or_insert_with(|| format!("gzip: {e}"));
                }
                Ok(0)
            }
            other => other,
        }
    }
}

/// Reads a whole pcap file. A truncated or damaged file is an error naming
/// the file and how far it could be read.
pub fn read_pcap(path: &Path) -> Result<Captured, CaptureError> {
    let mut r = PcapReader::open(path)?;
    let linktype = r.linktype;
    let mut packets = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p?;
        if p.linktype != linktype {
            return Err(CaptureError::File {
                path: path.to_path_buf(),
                message: format!(
                    "packets of link types {linktype} and {} in one file; `teardown analyze` reads such files",
                    p.linktype
                ),
            });
        }
        packets.push(p.packet.to_owned());
    }
    Ok(Captured {
        linktype,
        packets,
        dropped: None,
    })
}
