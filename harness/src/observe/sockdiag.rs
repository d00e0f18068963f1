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
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, Timer};
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
pub struct SockDiag {
    socket: Socket,
    buf: Vec<u8>,
    request: Vec<u8>,
}

impl SockDiag {
    /// Opens the netlink socket; call on the case thread, inside the namespace.
    pub fn open(_ns: &Namespace, family: Family) -> Result<SockDiag, ObserveError> {
        SockDiag::open_here(family)
    }

    /// Opens the netlink socket in the calling thread's namespace, whatever
    /// it is: for an agent, which reads (never changes) its own stack's
    /// socket table.
    pub fn open_here(family: Family) -> Result<SockDiag, ObserveError> {
        let err = |what: &str, e: std::io::Error| ObserveError::SockDiag(format!("{what}: {e}"));
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| err("socket", e))?;
        socket.bind_auto().map_err(|e| err("bind", e))?;
        socket
            .connect(&NlAddr::new(0, 0))
            .map_err(|e| err("connect", e))?;

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
        Ok(SockDiag {
            socket,
            buf: vec![0; 64 * 1024],
            request,
        })
    }

    /// Every TCP socket of the case's family in the namespace, right now.
    pub fn snapshot(&mut self) -> Result<Vec<SockEntry>, ObserveError> {
        self.socket
            .send(&self.request, 0)
            .map_err(|e| ObserveError::SockDiag(format!("send: {e}")))?;
        let mut out = Vec::new();
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
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return Err(ObserveError::SockDiag(format!("kernel error: {e:?}")));
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let h = &r.header;
                        let raw_expires = bytes
                            .get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)
                            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        let (timer, timer_ms) = match &h.timer {
                            Some(Timer::Retransmit(d, _)) => {
                                (Some(TimerKind::Retransmit), millis(*d))
                            }
                            Some(Timer::KeepAlive(d)) => (Some(TimerKind::KeepAlive), millis(*d)),
                            Some(Timer::TimeWait) => (Some(TimerKind::TimeWait), raw_expires),
                            Some(Timer::Probe(d)) => (Some(TimerKind::ZeroWindowProbe), millis(*d)),
                            None => (None, 0),
                        };
                        let timer_ms = timer.map(|_| timer_ms);
                        if let Some(state) = linux_state(h.state) {
                            let id = &h.socket_id;
                            out.push(SockEntry {
                                host: None,
                                state,
                                local: SocketAddr::new(id.source_address, id.source_port),
                                remote: SocketAddr::new(
                                    id.destination_address,
                                    id.destination_port,
                                ),
                                timer,
                                timer_ms,
                                recv_queue: h.recv_queue,
                                send_queue: h.send_queue,
                                fd: None,
                            });
                        }
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

/// A kernel timer in milliseconds (the kernel's own field is 32 bits).
fn millis(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}
