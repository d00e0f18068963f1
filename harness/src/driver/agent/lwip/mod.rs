//! An agent whose stack is lwIP (`teardown agent --lwip IFACE`): the
//! protocol of [`super`], served by [`super::serve`] through lwIP's own BSD
//! socket API (`lwip_socket`, `lwip_close`, ...) instead of the OS's. lwIP
//! runs in the agent's process (Debian's liblwip: lwIP 2.1 as the Hurd
//! builds it, with threads, SO_LINGER, SO_RCVBUF and keepalive) on a raw
//! packet socket bound to one interface, whose addresses the host's kernel
//! has given up (on the bench, [`crate::sandbox::bench::Bench::take_over`]).
//!
//! Every call is lwIP's own: an option or ioctl it does not know fails
//! with the errno lwIP sets (ENOPROTOOPT, ENOSYS), which is an observation
//! of lwIP like any other, so no call is refused in advance. lwIP raises
//! no signals, keeps no counters by Linux's names and has no sysctls.
//!
//! Socket states come from lwIP's control block lists (listening, bound,
//! active, TIME-WAIT), read under its core lock by a little C
//! (`shim.c`, built by `build.rs`): every connection lwIP still holds,
//! closed sockets' included, with the timer that runs on it
//! (retransmission, persist, keep-alive, TIME-WAIT) and the time left.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{IntoRawFd, RawFd};

use super::link::{self, Config};
use super::serve::AgentStack;
use super::{Answer, Hello};
use crate::driver::sockets::{CSockets, SocketApi};
use crate::observe::SockEntry;
use crate::scenario::Family;
use crate::tcp::{TcpState, TimerKind};

/// The lwIP release the agent was built against (liblwip-dev's
/// pkg-config version, read by `build.rs`).
pub(crate) const LWIP_VERSION: &str = env!("TEARDOWN_LWIP_VERSION");

/// One control block as `td_lwip_pcbs` copies it (`struct td_pcb`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Pcb {
    id: usize,
    state: libc::c_int,
    v6: libc::c_int,
    local: [u8; 16],
    remote: [u8; 16],
    local_port: u16,
    remote_port: u16,
    recv_queue: u32,
    send_queue: u32,
    timer: libc::c_int,
    timer_ms: u32,
}

unsafe extern "C" {
    fn td_lwip_start(
        packet_fd: libc::c_int,
        mac: *const u8,
        ip4: u32,
        prefix4: u8,
        gw4: u32,
        ip6: *const u8,
        prefix6: u8,
    ) -> libc::c_int;
    fn td_lwip_pcbs(out: *mut Pcb, max: libc::c_int) -> libc::c_int;
    fn td_lwip_socket_pcb(fd: libc::c_int) -> usize;

    fn lwip_socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> libc::c_int;
    fn lwip_bind(s: libc::c_int, name: *const libc::sockaddr, len: libc::socklen_t) -> libc::c_int;
    fn lwip_listen(s: libc::c_int, backlog: libc::c_int) -> libc::c_int;
    fn lwip_accept(
        s: libc::c_int,
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    ) -> libc::c_int;
    fn lwip_connect(
        s: libc::c_int,
        name: *const libc::sockaddr,
        len: libc::socklen_t,
    ) -> libc::c_int;
    fn lwip_getsockname(
        s: libc::c_int,
        name: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    ) -> libc::c_int;
    fn lwip_send(
        s: libc::c_int,
        data: *const libc::c_void,
        size: usize,
        flags: libc::c_int,
    ) -> isize;
    fn lwip_recv(s: libc::c_int, mem: *mut libc::c_void, len: usize, flags: libc::c_int) -> isize;
    fn lwip_shutdown(s: libc::c_int, how: libc::c_int) -> libc::c_int;
    fn lwip_close(s: libc::c_int) -> libc::c_int;
    fn lwip_getsockopt(
        s: libc::c_int,
        level: libc::c_int,
        name: libc::c_int,
        value: *mut libc::c_void,
        len: *mut libc::socklen_t,
    ) -> libc::c_int;
    fn lwip_setsockopt(
        s: libc::c_int,
        level: libc::c_int,
        name: libc::c_int,
        value: *const libc::c_void,
        len: libc::socklen_t,
    ) -> libc::c_int;
    fn lwip_fcntl(s: libc::c_int, cmd: libc::c_int, val: libc::c_int) -> libc::c_int;
    fn lwip_ioctl(s: libc::c_int, cmd: libc::c_long, argp: *mut libc::c_void) -> libc::c_int;
    fn lwip_poll(fds: *mut libc::pollfd, nfds: libc::nfds_t, timeout: libc::c_int) -> libc::c_int;
}

/// `lwip_ioctl` writing one int, with the request as the OS's ioctl takes
/// it (lwIP takes a long: the same bits).
unsafe extern "C" fn ioctl_int(
    fd: libc::c_int,
    request: libc::Ioctl,
    value: *mut libc::c_int,
) -> libc::c_int {
    // SAFETY: the caller's contract is ioctl's; lwIP's FIONREAD writes one
    // int and it refuses the requests it does not know.
    unsafe { lwip_ioctl(fd, request as libc::c_long, value.cast()) }
}

/// lwIP's socket API: its functions have the C library's signatures, and
/// its descriptors are its own numbers, not the process's. lwIP raises no
/// signals and has no close-on-exec.
pub static API: CSockets = CSockets {
    socket: lwip_socket,
    bind: lwip_bind,
    listen: lwip_listen,
    accept: lwip_accept,
    connect: lwip_connect,
    getsockname: lwip_getsockname,
    send: lwip_send,
    recv: lwip_recv,
    shutdown: lwip_shutdown,
    close: lwip_close,
    getsockopt: lwip_getsockopt,
    setsockopt: lwip_setsockopt,
    fcntl: lwip_fcntl,
    ioctl: ioctl_int,
    poll: lwip_poll,
    type_flags: 0,
    cloexec_accepted: false,
    raises_sigpipe: false,
    // lwip_connect waits on its netconn until the handshake ends.
    connect_obeys_send_timeout: false,
};

/// lwIP, started on one interface, as an agent's stack.
pub(crate) struct LwipStack {
    /// The packet socket lwIP's interface sends and receives on; lwIP
    /// holds it for the life of the process.
    _link: RawFd,
}

impl LwipStack {
    /// Starts lwIP (its thread, and one interface on `config`'s link).
    /// Once per process: lwIP's state is global.
    pub fn start(config: &Config) -> Result<LwipStack, String> {
        let mac = link::hardware_address(&config.interface)?;
        let mut ip4 = None;
        let mut ip6 = None;
        for (addr, prefix) in &config.addresses {
            match addr {
                IpAddr::V4(a) if ip4.is_none() => ip4 = Some((*a, *prefix)),
                IpAddr::V6(a) if ip6.is_none() => ip6 = Some((*a, *prefix)),
                _ => {
                    return Err(format!(
                        "lwIP takes one address per family: {addr} is another"
                    ));
                }
            }
        }
        let Some((ip4, prefix4)) = ip4 else {
            return Err("lwIP needs an IPv4 address (--address A.B.C.D/N)".into());
        };
        let gw4 = config
            .gateways
            .iter()
            .find_map(|g| match g {
                IpAddr::V4(g) => Some(*g),
                IpAddr::V6(_) => None,
            })
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let link = link::packet_socket(&config.interface)?.into_raw_fd();
        let ip6_bytes = ip6.map(|(a, _)| a.octets());
        // SAFETY: `mac` is six bytes, `ip6_bytes` sixteen if given; lwIP
        // keeps the packet socket, which this process never closes.
        let ret = unsafe {
            td_lwip_start(
                link,
                mac.as_ptr(),
                u32::from_ne_bytes(ip4.octets()),
                prefix4,
                u32::from_ne_bytes(gw4.octets()),
                ip6_bytes.as_ref().map_or(std::ptr::null(), |b| b.as_ptr()),
                ip6.map_or(0, |(_, p)| p),
            )
        };
        if ret < 0 {
            return Err(format!(
                "lwIP's interface on {}: {}",
                config.interface,
                std::io::Error::last_os_error()
            ));
        }
        Ok(LwipStack { _link: link })
    }

    /// Every control block lwIP holds.
    fn pcbs() -> Vec<Pcb> {
        let mut room = 64;
        loop {
            let mut out = vec![
                Pcb {
                    id: 0,
                    state: 0,
                    v6: 0,
                    local: [0; 16],
                    remote: [0; 16],
                    local_port: 0,
                    remote_port: 0,
                    recv_queue: 0,
                    send_queue: 0,
                    timer: 0,
                    timer_ms: 0,
                };
                room
            ];
            let max = libc::c_int::try_from(room).unwrap_or(libc::c_int::MAX);
            // SAFETY: `out` has room for `max` blocks.
            let n = usize::try_from(unsafe { td_lwip_pcbs(out.as_mut_ptr(), max) }).unwrap_or(0);
            if n <= room {
                out.truncate(n);
                return out;
            }
            room = n + 16;
        }
    }
}

/// A TCP state by lwIP's number (`enum tcp_state`).
fn state_of(n: libc::c_int) -> Option<TcpState> {
    Some(match n {
        0 => TcpState::Closed,
        1 => TcpState::Listen,
        2 => TcpState::SynSent,
        3 => TcpState::SynReceived,
        4 => TcpState::Established,
        5 => TcpState::FinWait1,
        6 => TcpState::FinWait2,
        7 => TcpState::CloseWait,
        8 => TcpState::Closing,
        9 => TcpState::LastAck,
        10 => TcpState::TimeWait,
        _ => return None,
    })
}

/// A timer by the shim's number (`TD_TIMER_*`).
fn timer_of(n: libc::c_int) -> Option<TimerKind> {
    match n {
        1 => Some(TimerKind::Retransmit),
        2 => Some(TimerKind::KeepAlive),
        3 => Some(TimerKind::TimeWait),
        4 => Some(TimerKind::ZeroWindowProbe),
        _ => None,
    }
}

fn address(bytes: [u8; 16], v6: bool, port: u16) -> SocketAddr {
    let ip = if v6 {
        IpAddr::from(bytes)
    } else {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    };
    SocketAddr::new(ip, port)
}

impl AgentStack for LwipStack {
    fn api(&self) -> &'static dyn SocketApi {
        &API
    }

    fn hello(&self) -> Hello {
        Hello::userspace(
            "lwip",
            LWIP_VERSION,
            crate::observe::StateSource::StackTableTimers,
            Default::default(),
        )
    }

    fn states(&self, family: Family, port: u16, held: &[RawFd]) -> Result<Vec<SockEntry>, String> {
        let holders: Vec<(usize, RawFd)> = held
            .iter()
            // SAFETY: lwIP looks the descriptor up in its own table.
            .map(|fd| (unsafe { td_lwip_socket_pcb(*fd) }, *fd))
            .filter(|(id, _)| *id != 0)
            .collect();
        let v6 = family == Family::Ipv6;
        Ok(Self::pcbs()
            .into_iter()
            .filter(|p| (p.v6 != 0) == v6 && (p.local_port == port || p.remote_port == port))
            .filter_map(|p| {
                let state = state_of(p.state).filter(|s| *s != TcpState::Closed)?;
                let timer = timer_of(p.timer);
                Some(SockEntry {
                    state,
                    local: address(p.local, v6, p.local_port),
                    remote: address(p.remote, v6, p.remote_port),
                    timer,
                    timer_ms: timer.map(|_| p.timer_ms),
                    recv_queue: p.recv_queue,
                    send_queue: p.send_queue,
                    fd: holders
                        .iter()
                        .find(|(id, _)| *id == p.id)
                        .map(|(_, fd)| *fd),
                    host: None,
                    cookie: None,
                })
            })
            .collect())
    }

    fn sysctl(&self, _name: &str, _value: Option<&str>) -> Result<Answer, String> {
        // lwIP's settings are compiled in.
        Ok(Answer::Sysctl(None))
    }

    fn counters(&self) -> Result<Answer, String> {
        Err("lwIP keeps no TCP counters by Linux's names".into())
    }
}

/// Serves one session on lwIP started on `config`'s link.
pub fn serve(
    input: impl std::io::BufRead,
    output: Box<dyn std::io::Write + Send>,
    config: &Config,
) -> Result<(), super::serve::ServeError> {
    let stack = LwipStack::start(config)
        .map_err(|why| super::serve::ServeError::Start { stack: "lwIP", why })?;
    super::serve::serve(input, output, Box::new(stack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lwip_state_number_names_a_state() {
        // lwIP's enum tcp_state, CLOSED (0) to TIME_WAIT (10).
        let states: Vec<_> = (0..=10).map(state_of).collect();
        assert!(states.iter().all(Option::is_some), "{states:?}");
        assert_eq!(state_of(1), Some(TcpState::Listen));
        assert_eq!(state_of(10), Some(TcpState::TimeWait));
        assert_eq!(state_of(11), None);
    }
}
