//! Linux: NETLINK_SOCK_DIAG `inet_diag` dumps.
//!
//! The netlink socket must be opened by a thread inside the case namespace:
//! it then sees exactly that namespace's sockets.

use std::net::SocketAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, Timer};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr as NlAddr};

use super::{ObserveError, SockEntry, TimerKind};
use crate::sandbox::Namespace;
use crate::scenario::Family;
use crate::tcp::TcpState;

/// Offset of `idiag_expires` in a message: 16-byte nlmsghdr, then
/// `inet_diag_msg` {family, state, timer, retrans: u8; id: 48 bytes}.
/// netlink-packet-sock-diag 0.5 drops the expiry of TIME-WAIT timers, which
/// is exactly the one we report, so it is read from the raw bytes.
const EXPIRES_OFFSET: usize = 16 + 4 + 48;

/// A sock_diag socket bound to the case namespace.
pub struct Observer {
    socket: Socket,
    buf: Vec<u8>,
    request: Vec<u8>,
    family: Family,
}

impl Observer {
    /// Opens the netlink socket; call on the case thread, inside the namespace.
    pub fn open(_ns: &Namespace, family: Family) -> Result<Observer, ObserveError> {
        let err = |what: &str, e: std::io::Error| ObserveError(format!("{what}: {e}"));
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
        Ok(Observer {
            socket,
            buf: vec![0; 64 * 1024],
            request,
            family,
        })
    }

    /// Every TCP socket of the case's family in the namespace, right now.
    pub fn snapshot(&mut self) -> Result<Vec<SockEntry>, ObserveError> {
        self.socket
            .send(&self.request, 0)
            .map_err(|e| ObserveError(format!("send: {e}")))?;
        let mut out = Vec::new();
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(|e| ObserveError(format!("recv: {e}")))?;
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
                    .map_err(|e| ObserveError(format!("malformed reply: {e}")))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return Err(ObserveError(format!("kernel error: {e:?}")));
                    }
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let h = &r.header;
                        let raw_expires = bytes
                            .get(EXPIRES_OFFSET..EXPIRES_OFFSET + 4)
                            .map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        let (timer, timer_ms) = match &h.timer {
                            Some(Timer::Retransmit(d, _)) => {
                                (Some(TimerKind::Retransmit), d.as_millis() as u32)
                            }
                            Some(Timer::KeepAlive(d)) => {
                                (Some(TimerKind::KeepAlive), d.as_millis() as u32)
                            }
                            Some(Timer::TimeWait) => (Some(TimerKind::TimeWait), raw_expires),
                            Some(Timer::Probe(d)) => {
                                (Some(TimerKind::ZeroWindowProbe), d.as_millis() as u32)
                            }
                            None => (None, 0),
                        };
                        if let Some(state) = linux_state(h.state) {
                            let id = &h.socket_id;
                            out.push(SockEntry {
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

    pub fn family(&self) -> Family {
        self.family
    }
}

/// `include/net/tcp_states.h`.
fn linux_state(n: u8) -> Option<TcpState> {
    Some(match n {
        1 => TcpState::Established,
        2 => TcpState::SynSent,
        3 | 12 => TcpState::SynReceived, // 12: TCP_NEW_SYN_RECV (request socket)
        4 => TcpState::FinWait1,
        5 => TcpState::FinWait2,
        6 => TcpState::TimeWait,
        7 => TcpState::Closed,
        8 => TcpState::CloseWait,
        9 => TcpState::LastAck,
        10 => TcpState::Listen,
        11 => TcpState::Closing,
        _ => return None,
    })
}
