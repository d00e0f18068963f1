//! Linux: NETLINK_SOCK_DIAG `inet_diag` dumps.
//!
//! The netlink socket must be opened by a thread inside the case namespace:
//! it then sees exactly that namespace's sockets, with or without a
//! descriptor (orphans, TIME-WAIT), and their timers.

use std::net::SocketAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{
    ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, Timer,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NlAddr};

use super::tcpinfo::linux_state;
use super::{ObserveError, SockEntry, TimerKind};
use crate::sandbox::Namespace;
use crate::scenario::Family;

/// Offset of `idiag_expires` in a message: 16-byte nlmsghdr, then
/// `inet_diag_msg` {family, state, timer, retrans: u8; id: 48 bytes}.
/// netlink-packet-sock-diag 0.5 drops the expiry of TIME-WAIT timers, which
/// is exactly the one we report, so it is read from the raw bytes.
const EXPIRES_OFFSET: usize = 16 + 4 + 48;

/// A sock_diag socket bound to the case namespace.
pub(crate) struct SockDiag {
    socket: Socket,
    buf: Vec<u8>,
    /// One dump request per family asked for.
    requests: Vec<Vec<u8>>,
}

impl SockDiag {
    /// Opens the netlink socket; call on the case thread, inside the
    /// namespace. With `both`, snapshots hold the other family's sockets
    /// too (a program listening on IPv6 for both families).
    pub fn open(_ns: &Namespace, family: Family, both: bool) -> Result<SockDiag, ObserveError> {
        let mut s = SockDiag::open_here(family)?;
        if both {
            let other = match family {
                Family::Ipv4 => Family::Ipv6,
                Family::Ipv6 => Family::Ipv4,
            };
            s.requests.push(request(other));
        }
        Ok(s)
    }

    /// Opens the netlink socket in the calling thread's namespace, whatever
    /// it is: for an agent, which reads (never changes) its own stack's
    /// socket table.
    pub(crate) fn open_here(family: Family) -> Result<SockDiag, ObserveError> {
        let err = |what: &str, e: std::io::Error| {
            ObserveError::SockDiag(format!("{what}: {}", crate::sandbox::describe(&e)))
        };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
        socket.bind_auto().map_err(|e| err("bind", e))?;
        socket
            .connect(&NlAddr::new(0, 0))
            .map_err(|e| err("connect", e))?;

        Ok(SockDiag {
            socket,
            buf: vec![0; 64 * 1024],
            requests: vec![request(family)],
        })
    }

    /// Every TCP socket of the case's family (or families) in the
    /// namespace, right now.
    pub fn snapshot(&mut self) -> Result<Vec<SockEntry>, ObserveError> {
        let mut out = Vec::new();
        for i in 0..self.requests.len() {
            self.dump(i, &mut out)?;
        }
        Ok(out)
    }

    fn dump(&mut self, request: usize, out: &mut Vec<SockEntry>) -> Result<(), ObserveError> {
        self.socket
            .send(&self.requests[request], 0)
            .map_err(|e| ObserveError::SockDiag(format!("send: {e}")))?;
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|e| ObserveError::SockDiag(format!("recv: {e}")))?;
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
                    .map_err(|e| ObserveError::SockDiag(format!("malformed reply: {e}")))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return Err(ObserveError::SockDiag(format!("kernel error: {e:?}")));
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        out.extend(entry(bytes, &r));
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

/// A dump request for every TCP socket of `family`.
fn request(family: Family) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let (af, id) = match family {
        Family::Ipv4 => (AF_INET, SocketId::new_v4()),
        Family::Ipv6 => (AF_INET6, SocketId::new_v6()),
    };
    let mut msg = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family: af,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: id,
        })
        .into(),
    );
    msg.finalize();
    let mut request = vec![0; msg.buffer_len()];
    msg.serialize(&mut request);
    request
}

/// One socket of an `inet_diag` message, as a table entry; None for a
/// state that is not TCP's. `bytes` are the message's own, for the expiry
/// the parser drops.
fn entry(bytes: &[u8], r: &InetResponse) -> Option<SockEntry> {
    let h = &r.header;
    let raw_expires = bytes
        .get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)
        .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let (timer, timer_ms) = match &h.timer {
        Some(Timer::Retransmit(d, _)) => (Some(TimerKind::Retransmit), millis(*d)),
        Some(Timer::KeepAlive(d)) => (Some(TimerKind::KeepAlive), millis(*d)),
        Some(Timer::TimeWait) => (Some(TimerKind::TimeWait), raw_expires),
        Some(Timer::Probe(d)) => (Some(TimerKind::ZeroWindowProbe), millis(*d)),
        None => (None, 0),
    };
    let id = &h.socket_id;
    Some(SockEntry {
        host: None,
        state: linux_state(h.state)?,
        // An IPv6 socket serving IPv4 shows IPv4-mapped addresses: the
        // same ends as the IPv4 side sees them.
        local: SocketAddr::new(id.source_address.to_canonical(), id.source_port),
        remote: SocketAddr::new(id.destination_address.to_canonical(), id.destination_port),
        timer,
        timer_ms: timer.map(|_| timer_ms),
        recv_queue: h.recv_queue,
        send_queue: h.send_queue,
        fd: None,
        cookie: Some(u64::from_ne_bytes(id.cookie)),
    })
}

/// The sock_diag multicast groups that announce a TCP socket's destruction
/// (`SKNLGRP_INET_TCP_DESTROY`, `SKNLGRP_INET6_TCP_DESTROY`).
const TCP_DESTROY_GROUPS: [u32; 2] = [1, 3];

/// Notices of TCP sockets destroyed in the case namespace, as the kernel
/// broadcasts them: each socket's last entry, taken as its memory is freed.
/// A socket closed with bytes never read has them still counted in its
/// receive queue (`rcv_nxt - copied_seq`): the bytes its application left
/// unread, the cause of a reset on close.
pub(crate) struct DestroyWatch {
    socket: Socket,
    buf: Vec<u8>,
}

impl DestroyWatch {
    /// Subscribes; call on a thread inside the case namespace.
    pub fn open() -> Result<DestroyWatch, ObserveError> {
        let err = |what: &str, e: std::io::Error| {
            ObserveError::SockDiag(format!(
                "destroy notices: {what}: {}",
                crate::sandbox::describe(&e)
            ))
        };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
        socket.bind_auto().map_err(|e| err("bind", e))?;
        for group in TCP_DESTROY_GROUPS {
            socket
                .add_membership(group)
                .map_err(|e| err("join group", e))?;
        }
        // Room for the notices of a case with many connections between
        // two drains; a full buffer is reported, not ignored.
        socket
            .set_rx_buf_sz(4 << 20)
            .map_err(|e| err("receive buffer", e))?;
        socket
            .set_non_blocking(true)
            .map_err(|e| err("non-blocking", e))?;
        Ok(DestroyWatch {
            socket,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The notices that arrived since the last drain. A full receive
    /// buffer (ENOBUFS: some notices were lost) is an error.
    pub fn drain(&mut self) -> Result<Vec<SockEntry>, ObserveError> {
        let mut out = Vec::new();
        loop {
            let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) => {
                    return Err(ObserveError::SockDiag(format!(
                        "destroy notices: {e} (some were lost)"
                    )));
                }
            };
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let Ok(msg) = NetlinkMessage::<SockDiagMessage>::deserialize(bytes) else {
                    break;
                };
                let len = msg.header.length as usize;
                if let NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) = msg.payload
                {
                    out.extend(entry(bytes, &r));
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

/// A kernel timer in milliseconds (the kernel's own field is 32 bits).
fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
