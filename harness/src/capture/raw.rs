//! Live capture with a plain `AF_PACKET` socket, read with `recvmsg`.
//!
//! What libpcap does on Linux, minus the mmap'd ring that gVisor lacks: a
//! packet socket bound to `lo`, frames cut to the snaplen with their
//! original length (`MSG_TRUNC`), the kernel's receive timestamp
//! (`SO_TIMESTAMPNS`, or `SO_TIMESTAMP`), and each segment kept once (a loopback frame is seen
//! leaving and arriving; the outgoing copy is skipped, as libpcap does).
//! Only TCP over IPv4 and IPv6 is kept, like libpcap's `tcp` filter.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{CaptureError, Point, ROUTER_HOP_LIMIT, RawPacket, SNAPLEN};
use crate::sandbox::Namespace;

/// The socket's receive buffer: large enough that a case's packets wait
/// for the next drain without loss (drops are counted where the stack can).
const RCVBUF: libc::c_int = 8 << 20;

pub(crate) struct RawCapture {
    point: Point,
    fd: OwnedFd,
    /// Whether the stack counts drops (`PACKET_STATISTICS`).
    counts_drops: bool,
    dropped: u64,
    buf: Vec<u8>,
}

impl RawCapture {
    /// Opens a packet socket on `lo` in the calling thread's namespace.
    pub fn start(_ns: &Namespace, point: Point, buffer: usize) -> Result<RawCapture, CaptureError> {
        let os_err = |what: &str| {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => {
                    CaptureError::NotPermitted(format!("{what}: {e}"))
                }
                _ => CaptureError::Open(format!("{what}: {e}")),
            }
        };
        // Protocol 0: nothing is received until bound to lo below.
        // SAFETY: plain socket(2).
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(os_err("packet socket"));
        }
        // SAFETY: fd is a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        let set = |level, name, v: libc::c_int| {
            // SAFETY: pointer and length of a c_int.
            unsafe {
                libc::setsockopt(
                    raw,
                    level,
                    name,
                    (&raw const v).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        // Beyond rmem_max needs CAP_NET_ADMIN; fall back to what is allowed.
        // The kernel counts each queued frame at its full allocation (about
        // 2 KiB for a small loopback segment), so ask for more than a ring.
        let rcvbuf = libc::c_int::try_from(buffer.saturating_mul(4).max(RCVBUF as usize))
            .unwrap_or(libc::c_int::MAX);
        if set(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcvbuf) != 0 {
            set(libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf);
        }
        // Microseconds everywhere; nanoseconds where the stack has them
        // (Linux: the same clock libpcap's ring reads). gVisor accepts
        // SO_TIMESTAMPNS but delivers only SO_TIMESTAMP's timeval, so both
        // are asked for and either is read.
        if set(libc::SOL_SOCKET, libc::SO_TIMESTAMP, 1) != 0 {
            return Err(os_err("SO_TIMESTAMP"));
        }
        let _ = set(libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1);
        await_arrival_timestamps();
        // Interface 0: every interface of the namespace (the router's links).
        let ifindex = match point {
            // SAFETY: a NUL-terminated interface name.
            Point::Loopback => match unsafe { libc::if_nametoindex(c"lo".as_ptr()) } {
                0 => return Err(os_err("if_nametoindex(lo)")),
                i => i,
            },
            Point::Router => 0,
        };
        // SAFETY: sockaddr_ll is plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = libc::c_int::try_from(ifindex)
            .map_err(|_| CaptureError::Open(format!("lo has interface index {ifindex}")))?;
        // SAFETY: pointer and length of a sockaddr_ll.
        let r = unsafe {
            libc::bind(
                raw,
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(os_err(&format!("bind to {}", point_name(point))));
        }
        let mut c = RawCapture {
            point,
            fd,
            counts_drops: true,
            dropped: 0,
            buf: vec![0; SNAPLEN as usize],
        };
        // Reading the statistics also resets them: start from zero.
        c.counts_drops = c.read_drops().is_some();
        Ok(c)
    }

    /// Appends every TCP frame received so far; never blocks.
    pub fn drain(&mut self, out: &mut Vec<RawPacket>) -> Result<(), CaptureError> {
        let fd = self.fd.as_raw_fd();
        loop {
            // SAFETY: sockaddr_ll is plain old data.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            // Room for an SCM_TIMESTAMP(NS) control message.
            let mut control = [0u64; 8];
            let mut iov = libc::iovec {
                iov_base: self.buf.as_mut_ptr().cast(),
                iov_len: self.buf.len(),
            };
            // SAFETY: msghdr is plain old data; every pointer set below is
            // valid for the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&raw mut from).cast();
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control);
            // SAFETY: msg describes valid buffers.
            let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC | libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(()),
                    Some(libc::EINTR) => continue,
                    _ => Err(CaptureError::Read(format!("recvmsg: {e}"))),
                };
            }
            let orig_len = n.unsigned_abs();
            let caplen = orig_len.min(self.buf.len());
            let frame = &self.buf[..caplen];
            if !is_tcp(frame) {
                continue;
            }
            // On lo a frame is seen leaving and arriving: keep one copy. On
            // the router, a forwarded packet is seen arriving and leaving:
            // keep the arrival, and what the router itself sent.
            if from.sll_pkttype == libc::PACKET_OUTGOING
                && !(self.point == Point::Router && hop_limit(frame) == Some(ROUTER_HOP_LIMIT))
            {
                continue;
            }
            // A timestamp taken here would be the drain's time, not the
            // packet's: without the kernel's, the capture fails.
            let ts_us = timestamp_us(&msg).ok_or_else(|| {
                CaptureError::Read(
                    "a packet came without its receive timestamp (SO_TIMESTAMP)".into(),
                )
            })?;
            out.push(RawPacket {
                ts_us,
                orig_len: u32::try_from(orig_len).unwrap_or(u32::MAX),
                data: frame.to_vec(),
            });
        }
    }

    /// Packets the kernel dropped since the capture started, where the
    /// stack counts them.
    pub fn dropped(&mut self) -> Option<u64> {
        if !self.counts_drops {
            return None;
        }
        let d = self.read_drops()?;
        self.dropped += d;
        Some(self.dropped)
    }

    /// `PACKET_STATISTICS`: drops since the last read (the kernel resets
    /// the counters on read); None if the stack does not have it.
    fn read_drops(&self) -> Option<u64> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: pointer and length of a tpacket_stats.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut st).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(u64::from(st.tp_drops))
    }
}

/// An Ethernet frame carrying TCP over IPv4 or IPv6 (no extension headers:
/// the same as libpcap's `tcp` filter).
fn is_tcp(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.get(14 + 9) == Some(&6),
        Some([0x86, 0xdd]) => frame.get(14 + 6) == Some(&6),
        _ => false,
    }
}

/// The TTL or hop limit of an Ethernet frame carrying IPv4 or IPv6.
fn hop_limit(frame: &[u8]) -> Option<u8> {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame.get(14 + 8).copied(),
        Some([0x86, 0xdd]) => frame.get(14 + 7).copied(),
        _ => None,
    }
}

fn point_name(point: Point) -> &'static str {
    match point {
        Point::Loopback => "lo",
        Point::Router => "every interface",
    }
}

/// Waits, once per process, until the stack stamps packets as they arrive.
///
/// Linux turns receive timestamps on for everyone lazily: the first socket
/// that asks flips a static key from a work queue, and a packet that
/// arrives before that is stamped when it is *read* (seen: a capture's
/// first SYN 100 ms late, the drain's time). A UDP socket that asks for
/// timestamps is kept open for the life of the process, so the key stays
/// on, and a datagram to itself, read 2 ms after it was sent, shows when
/// the key is in effect: its stamp is then the sending time, not the
/// reading time. Bounded at 100 tries (about 0.3 s); if the stack never
/// stamps on arrival, captures carry read times, as before.
fn await_arrival_timestamps() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(keeper) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            return;
        };
        let Ok(me) = keeper.local_addr() else { return };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&keeper);
        let on: libc::c_int = 1;
        // SAFETY: pointer and length of a c_int.
        let set = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMP,
                (&raw const on).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return;
        }
        let now_us = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        };
        for _ in 0..100 {
            if keeper.send_to(b"t", me).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            let mut byte = [0u8; 8];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: byte.len(),
            };
            let mut control = [0u64; 8];
            // SAFETY: msghdr is plain old data; its buffers outlive the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control) as _;
            // SAFETY: a valid descriptor and msghdr; does not block long (the datagram is queued).
            if unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_DONTWAIT) } < 0 {
                continue;
            }
            if timestamp_us(&msg).is_some_and(|ts| now_us() - ts >= 1_000) {
                break;
            }
        }
        // The key stays on while a socket wants timestamps.
        std::mem::forget(keeper);
    });
}

/// The kernel's receive timestamp from an SCM_TIMESTAMPNS control message
/// (nanoseconds, cut to microseconds the way libpcap cuts them) or an
/// SCM_TIMESTAMP one.
fn timestamp_us(msg: &libc::msghdr) -> Option<i64> {
    // SAFETY: msg was filled by recvmsg; the CMSG macros walk its buffer.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(ts.tv_sec * 1_000_000 + ts.tv_nsec / 1000);
            }
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMP {
                let tv: libc::timeval = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(tv.tv_sec * 1_000_000 + tv.tv_usec);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tcp_frames_are_kept() {
        let mut v4 = vec![0u8; 40];
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        v4[23] = 6;
        assert!(is_tcp(&v4));
        v4[23] = 17;
        assert!(!is_tcp(&v4), "UDP");
        let mut v6 = vec![0u8; 60];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[20] = 6;
        assert!(is_tcp(&v6));
        assert!(!is_tcp(&v6[..13]), "truncated");
    }
}
