//! Windows: the machine's TCP table (`GetTcpTable2`, `GetTcp6Table2`),
//! every connection the stack holds, closed sockets' included (TIME-WAIT,
//! orphans in FIN-WAIT), without timers or queues. An entry held by a
//! socket of the session is matched to it by its addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::windows::io::{BorrowedSocket, RawSocket};

use socket2::SockRef;
use windows_sys::Win32::NetworkManagement::IpHelper as ip;

use super::{ObserveError, RawFd, SockEntry};
use crate::scenario::Family;
use crate::tcp::TcpState;

/// `MIB_TCP_STATE`.
fn state(n: i64) -> Option<TcpState> {
    Some(match n {
        1 => TcpState::Closed,
        2 => TcpState::Listen,
        3 => TcpState::SynSent,
        4 => TcpState::SynReceived,
        5 => TcpState::Established,
        6 => TcpState::FinWait1,
        7 => TcpState::FinWait2,
        8 => TcpState::CloseWait,
        9 => TcpState::Closing,
        10 => TcpState::LastAck,
        11 => TcpState::TimeWait,
        // 12: DELETE_TCB, going away.
        _ => return None,
    })
}

/// A port as the table holds it: network order in the low 16 bits.
fn port(p: u32) -> u16 {
    u16::from_be(p as u16)
}

/// The table `get` fills: called with a size it grows until the table
/// fits (ERROR_INSUFFICIENT_BUFFER, 122). 4-byte aligned, as its rows are.
fn table(get: impl Fn(*mut u32, *mut u32) -> u32) -> Result<Vec<u32>, ObserveError> {
    let mut size: u32 = 0;
    let mut buf: Vec<u32> = Vec::new();
    for _ in 0..8 {
        let r = get(buf.as_mut_ptr(), &mut size);
        match r {
            0 => return Ok(buf),
            122 => buf = vec![0; (size as usize).div_ceil(4) + 64],
            e => {
                return Err(ObserveError::TcpInfo(format!("GetTcpTable2: error {e}")));
            }
        }
    }
    Err(ObserveError::TcpInfo(
        "GetTcpTable2: the table kept growing".into(),
    ))
}

/// The rows of a table `(count, rows...)` as `T`s.
fn rows<T: Copy>(buf: &[u32]) -> Vec<T> {
    let Some(&n) = buf.first() else {
        return Vec::new();
    };
    let start = 4usize;
    let size = size_of::<T>();
    let bytes = buf.len() * 4;
    (0..n as usize)
        .take_while(|i| start + (i + 1) * size <= bytes)
        // SAFETY: within the buffer the call filled; rows are plain data.
        .map(|i| unsafe {
            std::ptr::read_unaligned(buf.as_ptr().cast::<u8>().add(start + i * size).cast::<T>())
        })
        .collect()
}

/// The connections of `family` with `port` at either end; `held` are the
/// session's sockets, matched to their rows by address.
pub fn snapshot(
    family: Family,
    port_: u16,
    held: &[RawFd],
) -> Result<Vec<SockEntry>, ObserveError> {
    let mut entries: Vec<(i64, SocketAddr, SocketAddr)> = Vec::new();
    match family {
        Family::Ipv4 => {
            // SAFETY: the table and its size, as GetTcpTable2 takes them.
            let buf = table(|t, s| unsafe { ip::GetTcpTable2(t.cast(), s, 0) })?;
            for r in rows::<ip::MIB_TCPROW2>(&buf) {
                let a = |addr: u32, p: u32| {
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(addr.to_ne_bytes())), port(p))
                };
                entries.push((
                    i64::from(r.dwState),
                    a(r.dwLocalAddr, r.dwLocalPort),
                    a(r.dwRemoteAddr, r.dwRemotePort),
                ));
            }
        }
        Family::Ipv6 => {
            // SAFETY: the table and its size, as GetTcp6Table2 takes them.
            let buf = table(|t, s| unsafe { ip::GetTcp6Table2(t.cast(), s, 0) })?;
            for r in rows::<ip::MIB_TCP6ROW2>(&buf) {
                // SAFETY: IN6_ADDR's union is 16 bytes either way.
                let a = |addr: windows_sys::Win32::Networking::WinSock::IN6_ADDR, p: u32| {
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(unsafe { addr.u.Byte })), port(p))
                };
                entries.push((
                    i64::from(r.State),
                    a(r.LocalAddr, r.dwLocalPort),
                    a(r.RemoteAddr, r.dwRemotePort),
                ));
            }
        }
    }
    let named: Vec<(RawFd, Option<SocketAddr>, Option<SocketAddr>)> = held
        .iter()
        .map(|&fd| {
            // SAFETY: the session holds the socket while it is read.
            let b = unsafe { BorrowedSocket::borrow_raw(fd as RawSocket) };
            let s = SockRef::from(&b);
            let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
            (fd, addr(s.local_addr()), addr(s.peer_addr()))
        })
        .collect();
    Ok(entries
        .into_iter()
        .filter(|(_, l, r)| l.port() == port_ || r.port() == port_)
        .filter_map(|(n, local, remote)| {
            let state = state(n)?;
            let fd = named
                .iter()
                .find(|(_, l, r)| *l == Some(local) && r.is_none_or(|r| r == remote))
                .map(|(fd, _, _)| *fd);
            Some(SockEntry {
                state,
                local,
                remote,
                timer: None,
                timer_ms: None,
                recv_queue: 0,
                send_queue: 0,
                fd,
                host: None,
                cookie: None,
            })
        })
        .collect())
}
