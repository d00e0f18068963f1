//! The agent's sockets on smoltcp: the protocol's POSIX calls mapped onto
//! smoltcp's TCP sockets (the table is in the module above), and the
//! calls that wait, advanced each time the stack has moved.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Medium, RawSocket};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::driver::agent::link::{Config, hardware_address};
use crate::driver::agent::{Accepted, Answer, DataAnswer, Op, StreamRef, StreamTotals};
use crate::driver::calls::{
    CallResult, FdCall, Ready, StreamLog, connected, read_ended, revents_names,
};
use crate::observe::SockEntry;
use crate::scenario::{Family, GetOpt, How, IoctlQuery, ReadAmount, SockOpt};
use crate::tcp::{Side, TcpState};

/// A socket's buffers unless SO_RCVBUF / SO_SNDBUF say otherwise: smoltcp's
/// are fixed when the socket is made, so the agent makes them at connect
/// or listen, with the sizes set by then.
const DEFAULT_BUFFER: usize = 64 * 1024;

/// The largest buffer an option may ask for (the scenario parser bounds
/// the value; this bounds the memory).
const MAX_BUFFER: usize = 4 << 20;

/// The ephemeral ports the agent hands out (smoltcp has no port table).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 32768..=60999;

/// At most this many connections wait to be accepted per listener.
const MAX_BACKLOG: usize = 128;

/// What smoltcp has no mapping for, by the names a step's call uses
/// ([`FdCall::uses`]), each with why: announced in the hello, so that a
/// case which needs one is `unsupported` before it runs.
pub(crate) const UNMAPPED: &[(&str, &str)] = &[
    ("MSG_MORE", "smoltcp's send has no flags"),
    (
        "SHUT_RD",
        "smoltcp's close() is its only shutdown, of the sending half",
    ),
    ("TCP_CORK", "smoltcp has Nagle's algorithm only"),
    (
        "TCP_LINGER2",
        "smoltcp has no orphaned FIN-WAIT-2 timeout to set",
    ),
    (
        "TCP_KEEPCNT",
        "smoltcp's keep-alive probes until its timeout (TCP_USER_TIMEOUT), never by count",
    ),
    ("SO_RCVLOWAT", "smoltcp has no receive low-water mark"),
    ("SO_REUSEPORT", "smoltcp has no port table to share"),
    (
        "SIOCOUTQNSD",
        "smoltcp's send buffer does not tell sent from unsent bytes",
    ),
    (
        "connect(AF_UNSPEC)",
        "smoltcp has no disconnect other than abort",
    ),
    (
        "shutdown() on a listener",
        "smoltcp has no listening socket, only sockets in LISTEN that each become a connection",
    ),
];

/// The socket options a step may set, as the agent holds them until the
/// smoltcp socket is made (buffers) or applies them at once.
#[derive(Clone, Copy, Debug, Default)]
struct Opts {
    linger: Option<i32>,
    rcvbuf: Option<usize>,
    sndbuf: Option<usize>,
    nodelay: bool,
    keepalive: bool,
    keepidle: Option<u32>,
    keepintvl: Option<u32>,
    user_timeout: Option<u32>,
}

impl Opts {
    /// The keep-alive interval smoltcp is given: it sends a probe after
    /// each idle interval, so TCP_KEEPIDLE (else TCP_KEEPINTVL, else
    /// Linux's default idle time) is the one it gets.
    fn keep_alive(&self) -> Option<smoltcp::time::Duration> {
        self.keepalive.then(|| {
            let secs = self.keepidle.or(self.keepintvl).unwrap_or(7200);
            smoltcp::time::Duration::from_secs(u64::from(secs))
        })
    }

    fn apply(&self, s: &mut tcp::Socket) {
        s.set_nagle_enabled(!self.nodelay);
        s.set_keep_alive(self.keep_alive());
        s.set_timeout(
            self.user_timeout
                .filter(|ms| *ms > 0)
                .map(|ms| smoltcp::time::Duration::from_millis(u64::from(ms))),
        );
    }
}

/// What a handle is.
enum Role {
    /// Made, perhaps bound; no smoltcp socket yet.
    Fresh,
    /// Listening: one smoltcp socket per connection it can take, those not
    /// yet accepted in order.
    Listening {
        addr: SocketAddr,
        backlog: usize,
        queue: Vec<SocketHandle>,
    },
    Connection(SocketHandle),
}

/// A socket of the protocol (a handle).
struct Sock {
    family: Family,
    nonblocking: bool,
    opts: Opts,
    bound: Option<SocketAddr>,
    role: Role,
    /// shutdown(RDWR) was called: reads see the end of the stream.
    read_shut: bool,
}

/// What the agent knows of one smoltcp socket beyond what smoltcp says.
struct Conn {
    /// Its state after the last poll, to tell how it reached CLOSED.
    last: State,
    /// It reached ESTABLISHED once.
    synchronized: bool,
    /// The pending error (SO_ERROR), taken by the next call that fails.
    error: Option<Errno>,
    /// It ended by a reset (or smoltcp's timeout) after it was
    /// synchronized: its data is gone, and a read says so once.
    reset: bool,
    /// No handle holds it any more (closed, or its listener went).
    orphan: bool,
}

/// One step of a socket that is waited for.
pub(crate) enum Waiting {
    Connect {
        handles: Vec<u32>,
        many: bool,
    },
    Write {
        handle: u32,
        stream: StreamRef,
        payload: crate::scenario::Payload,
        start: u64,
        sent: u64,
        wait: bool,
    },
    Read {
        handle: u32,
        stream: StreamRef,
        progress: ReadProgress,
    },
    Ready {
        handle: u32,
        stream: StreamRef,
        ready: Ready,
    },
    /// A close lingering (SO_LINGER on, a blocking socket) until what it
    /// sent is acknowledged.
    Linger {
        conn: SocketHandle,
    },
}

/// A request being waited for.
pub(crate) struct Pending {
    pub id: u64,
    pub started: Instant,
    pub deadline: Instant,
    pub what: Waiting,
}

impl Pending {
    fn new(id: u64, started: Instant, deadline: Instant, what: Waiting) -> Pending {
        Pending {
            id,
            started,
            deadline,
            what,
        }
    }
}

/// The agent's stack: smoltcp's interface on a raw packet socket, its
/// sockets, and the protocol's handles onto them.
pub struct Host {
    iface: Interface,
    device: RawSocket,
    set: SocketSet<'static>,
    socks: BTreeMap<u32, Sock>,
    conns: HashMap<SocketHandle, Conn>,
    next_handle: u32,
    next_port: u16,
    addrs: Vec<IpAddr>,
    streams: HashMap<(u32, Side), StreamLog>,
    epoch: Instant,
}

fn smol_now(epoch: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(
        i64::try_from(epoch.elapsed().as_micros()).unwrap_or(i64::MAX),
    )
}

fn state_of(s: State) -> TcpState {
    match s {
        State::Closed => TcpState::Closed,
        State::Listen => TcpState::Listen,
        State::SynSent => TcpState::SynSent,
        State::SynReceived => TcpState::SynReceived,
        State::Established => TcpState::Established,
        State::FinWait1 => TcpState::FinWait1,
        State::FinWait2 => TcpState::FinWait2,
        State::CloseWait => TcpState::CloseWait,
        State::Closing => TcpState::Closing,
        State::LastAck => TcpState::LastAck,
        State::TimeWait => TcpState::TimeWait,
    }
}

fn fail(e: Errno) -> CallResult {
    CallResult::failed(e)
}

/// A data call that can move nothing now: nothing yet (`None`) while it
/// waits, its deadline's result once that has passed, else what it moved
/// (`EAGAIN after ...`), or EAGAIN for nothing (0 for a read of what is
/// `available`).
fn stalled(
    wait: bool,
    timed_out: bool,
    moved: u64,
    available: bool,
    progress: &str,
) -> Option<CallResult> {
    Some(if wait && !timed_out {
        return None;
    } else if wait {
        CallResult {
            timed_out: true,
            note: Some(format!("not ready before the deadline; {progress}")),
            ..Default::default()
        }
    } else if moved > 0 || available {
        CallResult {
            note: (moved > 0).then(|| format!("EAGAIN after {progress}")),
            ..CallResult::ok(count(moved))
        }
    } else {
        fail(Errno::EAGAIN)
    })
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn family_of(addr: &SocketAddr) -> Family {
    if addr.is_ipv6() {
        Family::Ipv6
    } else {
        Family::Ipv4
    }
}

impl Host {
    /// smoltcp on `config.interface`, with its addresses and routes.
    pub fn open(config: &Config) -> Result<Host, String> {
        let interface = &config.interface;
        let mut device = RawSocket::new(interface, Medium::Ethernet)
            .map_err(|e| format!("a raw packet socket on {interface}: {e}"))?;
        let mac = hardware_address(interface)?;
        let mut iface_config = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        // Initial sequence numbers and the like: a seed per process.
        iface_config.random_seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        let epoch = Instant::now();
        let mut iface = Interface::new(iface_config, &mut device, smol_now(epoch));
        let mut full = false;
        iface.update_ip_addrs(|a| {
            for (ip, prefix) in &config.addresses {
                full |= a.push(IpCidr::new((*ip).into(), *prefix)).is_err();
            }
        });
        if full {
            return Err("smoltcp takes at most two addresses on an interface".into());
        }
        for gw in &config.gateways {
            let added = match gw {
                IpAddr::V4(v4) => iface.routes_mut().add_default_ipv4_route(*v4).map(|_| ()),
                IpAddr::V6(v6) => iface.routes_mut().add_default_ipv6_route(*v6).map(|_| ()),
            };
            added.map_err(|_| format!("a default route through {gw}: the route table is full"))?;
        }
        Ok(Host {
            iface,
            device,
            set: SocketSet::new(vec![]),
            socks: BTreeMap::new(),
            conns: HashMap::new(),
            next_handle: 3,
            next_port: *EPHEMERAL.start(),
            addrs: config.addresses.iter().map(|(ip, _)| *ip).collect(),
            streams: HashMap::new(),
            epoch,
        })
    }

    /// The raw packet socket, to wait on.
    pub(crate) fn device_fd(&self) -> std::os::fd::RawFd {
        self.device.as_raw_fd()
    }

    /// Lets smoltcp take in and send out what it can, then notes how each
    /// socket moved, refills listeners and forgets orphans that are done.
    pub fn poll(&mut self) {
        let now = smol_now(self.epoch);
        self.iface.poll(now, &mut self.device, &mut self.set);
        self.track();
        self.refill();
    }

    /// How long until smoltcp next has something to do, if it knows.
    pub(crate) fn delay(&mut self) -> Option<Duration> {
        let now = smol_now(self.epoch);
        self.iface
            .poll_delay(now, &self.set)
            .map(|d| Duration::from_micros(d.total_micros()))
    }

    fn track(&mut self) {
        let mut gone = Vec::new();
        for (h, c) in &mut self.conns {
            let now = self.set.get::<tcp::Socket>(*h).state();
            if now == State::Established {
                c.synchronized = true;
            }
            if now == State::Closed && c.last != State::Closed {
                // A normal end passes through LAST-ACK or TIME-WAIT; from
                // anywhere else, CLOSED is a reset (or smoltcp's timeout).
                match c.last {
                    State::LastAck | State::TimeWait | State::Listen => {}
                    State::SynSent | State::SynReceived if !c.synchronized => {
                        c.error = Some(Errno::ECONNREFUSED);
                    }
                    _ => {
                        c.reset = true;
                        c.error = Some(Errno::ECONNRESET);
                    }
                }
            }
            c.last = now;
            if c.orphan && now == State::Closed {
                gone.push(*h);
            }
        }
        for h in gone {
            self.conns.remove(&h);
            self.set.remove(h);
        }
    }

    /// Keeps each listener's sockets in LISTEN: as many as its backlog
    /// leaves room for beside the connections waiting to be accepted.
    fn refill(&mut self) {
        let handles: Vec<u32> = self.socks.keys().copied().collect();
        for handle in handles {
            let Some(sock) = self.socks.get(&handle) else {
                continue;
            };
            let Role::Listening {
                addr,
                backlog,
                queue,
            } = &sock.role
            else {
                continue;
            };
            let (addr, backlog, opts) = (*addr, *backlog, sock.opts);
            let listening = queue
                .iter()
                .filter(|h| self.set.get::<tcp::Socket>(**h).state() == State::Listen)
                .count();
            if listening > 0 || queue.len() > backlog {
                continue;
            }
            if let Ok(h) = self.listening_socket(addr, &opts) {
                if let Some(Sock {
                    role: Role::Listening { queue, .. },
                    ..
                }) = self.socks.get_mut(&handle)
                {
                    queue.push(h);
                }
            }
        }
    }

    fn new_socket(&mut self, opts: &Opts) -> SocketHandle {
        let rx = opts.rcvbuf.unwrap_or(DEFAULT_BUFFER);
        let tx = opts.sndbuf.unwrap_or(DEFAULT_BUFFER);
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; rx]),
            tcp::SocketBuffer::new(vec![0; tx]),
        );
        opts.apply(&mut s);
        let h = self.set.add(s);
        self.conns.insert(
            h,
            Conn {
                last: State::Closed,
                synchronized: false,
                error: None,
                reset: false,
                orphan: false,
            },
        );
        h
    }

    fn listening_socket(&mut self, addr: SocketAddr, opts: &Opts) -> Result<SocketHandle, Errno> {
        let h = self.new_socket(opts);
        match self.set.get_mut::<tcp::Socket>(h).listen(addr) {
            Ok(()) => {
                self.conns.get_mut(&h).expect("just made").last = State::Listen;
                Ok(h)
            }
            Err(_) => {
                self.conns.remove(&h);
                self.set.remove(h);
                Err(Errno::EADDRINUSE)
            }
        }
    }

    fn sock(&mut self, handle: u32) -> Result<&mut Sock, String> {
        self.socks.get_mut(&handle).ok_or_else(|| {
            format!("no open socket has handle {handle} (closed, or never made by this agent)")
        })
    }

    /// Why a request that names handles cannot be made, if one is not open.
    pub(crate) fn unknown_handle(&self, op: &Op) -> Option<String> {
        op.handles()
            .iter()
            .find(|h| !self.socks.contains_key(h))
            .map(|h| format!("no open socket has handle {h} (closed, or never made by this agent)"))
    }

    fn connection(&self, handle: u32) -> Option<SocketHandle> {
        match self.socks.get(&handle)?.role {
            Role::Connection(h) => Some(h),
            _ => None,
        }
    }

    fn port_taken(&self, port: u16) -> bool {
        let by_handle = self.socks.values().any(|s| match &s.role {
            Role::Listening { addr, .. } => addr.port() == port,
            _ => s.bound.is_some_and(|b| b.port() == port),
        });
        by_handle
            || self.conns.keys().any(|h| {
                let s = self.set.get::<tcp::Socket>(*h);
                s.state() != State::Closed && s.local_endpoint().is_some_and(|e| e.port == port)
            })
    }

    fn ephemeral_port(&mut self) -> Option<u16> {
        let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let port = self.next_port;
            self.next_port = if port == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                port + 1
            };
            if !self.port_taken(port) {
                return Some(port);
            }
        }
        None
    }

    /// Answers a request that does not wait.
    pub fn now(&mut self, op: &Op) -> Result<Answer, String> {
        Ok(match op {
            Op::Socket { family } => {
                let handle = self.next_handle;
                self.next_handle += 1;
                self.socks.insert(
                    handle,
                    Sock {
                        family: *family,
                        nonblocking: false,
                        opts: Opts::default(),
                        bound: None,
                        role: Role::Fresh,
                        read_shut: false,
                    },
                );
                Answer::Handle(handle)
            }
            Op::Bind { handle, addr } => Answer::Result(self.bind(*handle, *addr)?),
            Op::Listen {
                handle,
                addr,
                backlog,
            } => Answer::Result(self.listen(*handle, *addr, *backlog)?),
            Op::Accept { handle } => self.accept(*handle)?,
            Op::Nonblocking { handle } => Answer::Flag(self.sock(*handle)?.nonblocking),
            Op::LocalAddr { handle } => Answer::Addr(self.local_addr(*handle)?),
            Op::States { family, port } => Answer::States(self.states(*family, *port)),
            Op::Sysctl { .. } => Answer::Sysctl(None),
            Op::Counters => {
                return Err("smoltcp keeps no TCP counters by Linux's names".into());
            }
            Op::Bye => Answer::Bye(true),
            Op::Connect { .. }
            | Op::ConnectMany { .. }
            | Op::Call { .. }
            | Op::Close { .. }
            | Op::CloseMany { .. } => {
                unreachable!("requests that wait are started with `start`")
            }
        })
    }

    fn bind(&mut self, handle: u32, addr: SocketAddr) -> Result<CallResult, String> {
        if !addr.ip().is_unspecified() && !self.addrs.contains(&addr.ip()) {
            return Ok(fail(Errno::EADDRNOTAVAIL));
        }
        if addr.port() != 0 && self.port_taken(addr.port()) {
            return Ok(fail(Errno::EADDRINUSE));
        }
        let port = match addr.port() {
            0 => match self.ephemeral_port() {
                Some(p) => p,
                None => return Ok(fail(Errno::EADDRINUSE)),
            },
            p => p,
        };
        let sock = self.sock(handle)?;
        if sock.bound.is_some() || !matches!(sock.role, Role::Fresh) {
            return Ok(fail(Errno::EINVAL));
        }
        sock.bound = Some(SocketAddr::new(addr.ip(), port));
        Ok(CallResult::ok(0))
    }

    fn listen(
        &mut self,
        handle: u32,
        addr: SocketAddr,
        backlog: i32,
    ) -> Result<CallResult, String> {
        let sock = self.sock(handle)?;
        if !matches!(sock.role, Role::Fresh) {
            return Ok(fail(Errno::EINVAL));
        }
        let bound = sock.bound;
        let addr = match bound {
            Some(b) => b,
            None => {
                if self.port_taken(addr.port()) {
                    return Ok(fail(Errno::EADDRINUSE));
                }
                addr
            }
        };
        let sock = self.sock(handle)?;
        let opts = sock.opts;
        // Linux's queue holds one connection more than the backlog.
        let backlog = usize::try_from(backlog.max(0))
            .unwrap_or(0)
            .min(MAX_BACKLOG);
        sock.bound = Some(addr);
        sock.role = Role::Listening {
            addr,
            backlog,
            queue: Vec::new(),
        };
        match self.listening_socket(addr, &opts) {
            Ok(h) => {
                if let Role::Listening { queue, .. } = &mut self.sock(handle)?.role {
                    queue.push(h);
                }
                Ok(CallResult::ok(0))
            }
            Err(e) => {
                self.sock(handle)?.role = Role::Fresh;
                Ok(fail(e))
            }
        }
    }

    fn accept(&mut self, handle: u32) -> Result<Answer, String> {
        let set = &self.set;
        let sock = self.socks.get_mut(&handle).ok_or_else(|| {
            format!("no open socket has handle {handle} (closed, or never made by this agent)")
        })?;
        let (family, opts) = (sock.family, sock.opts);
        let Role::Listening { queue, .. } = &mut sock.role else {
            return Ok(Answer::Result(fail(Errno::EINVAL)));
        };
        let Some(i) = queue.iter().position(|h| {
            !matches!(
                set.get::<tcp::Socket>(*h).state(),
                State::Listen | State::SynReceived
            )
        }) else {
            return Ok(Answer::Accepted(None));
        };
        let conn = queue.remove(i);
        let peer = self
            .set
            .get::<tcp::Socket>(conn)
            .remote_endpoint()
            .map(SocketAddr::from);
        let local = self
            .set
            .get::<tcp::Socket>(conn)
            .local_endpoint()
            .map(SocketAddr::from);
        let new = self.next_handle;
        self.next_handle += 1;
        // Options set on the listener are the accepted socket's too.
        self.socks.insert(
            new,
            Sock {
                family,
                nonblocking: false,
                opts,
                bound: local,
                role: Role::Connection(conn),
                read_shut: false,
            },
        );
        Ok(Answer::Accepted(Some(Accepted { handle: new, peer })))
    }

    fn local_addr(&mut self, handle: u32) -> Result<Option<SocketAddr>, String> {
        let sock = self.socks.get(&handle).ok_or_else(|| {
            format!("no open socket has handle {handle} (closed, or never made by this agent)")
        })?;
        Ok(match sock.role {
            Role::Connection(h) => self
                .set
                .get::<tcp::Socket>(h)
                .local_endpoint()
                .map(SocketAddr::from)
                .or(sock.bound),
            _ => sock.bound,
        })
    }

    /// Every socket of `family` with `port` at either end, held or not.
    fn states(&self, family: Family, port: u16) -> Vec<SockEntry> {
        let holder: HashMap<SocketHandle, u32> = self
            .socks
            .iter()
            .filter_map(|(k, s)| match s.role {
                Role::Connection(h) => Some((h, *k)),
                _ => None,
            })
            .collect();
        let mut out = Vec::new();
        for (h, c) in &self.conns {
            let s = self.set.get::<tcp::Socket>(*h);
            let state = s.state();
            if state == State::Closed {
                continue;
            }
            let local = s.local_endpoint().map(SocketAddr::from);
            let remote = s.remote_endpoint().map(SocketAddr::from);
            let (local, remote) = match (local, remote, state) {
                (Some(l), Some(r), _) => (l, r),
                (_, _, State::Listen) => {
                    // Listeners are shown once, below.
                    let _ = c;
                    continue;
                }
                _ => continue,
            };
            if family_of(&local) != family || (local.port() != port && remote.port() != port) {
                continue;
            }
            out.push(SockEntry {
                state: state_of(state),
                local,
                remote,
                timer: None,
                timer_ms: None,
                recv_queue: u32::try_from(s.recv_queue()).unwrap_or(u32::MAX),
                send_queue: u32::try_from(s.send_queue()).unwrap_or(u32::MAX),
                fd: holder.get(h).and_then(|k| i32::try_from(*k).ok()),
                host: None,
                cookie: None,
            });
        }
        for (k, sock) in &self.socks {
            if let Role::Listening { addr, queue, .. } = &sock.role {
                if family_of(addr) != family || addr.port() != port {
                    continue;
                }
                let waiting = queue
                    .iter()
                    .filter(|h| {
                        !matches!(
                            self.set.get::<tcp::Socket>(**h).state(),
                            State::Listen | State::SynReceived
                        )
                    })
                    .count();
                let unspecified = match family {
                    Family::Ipv4 => IpAddr::from([0u8; 4]),
                    Family::Ipv6 => IpAddr::from([0u16; 8]),
                };
                out.push(SockEntry {
                    state: TcpState::Listen,
                    local: *addr,
                    remote: SocketAddr::new(unspecified, 0),
                    timer: None,
                    timer_ms: None,
                    recv_queue: u32::try_from(waiting).unwrap_or(u32::MAX),
                    send_queue: u32::try_from(queue.len()).unwrap_or(u32::MAX),
                    fd: i32::try_from(*k).ok(),
                    host: None,
                    cookie: None,
                });
            }
        }
        out
    }

    /// `close()`: the handle goes whatever happens; its connection goes on
    /// as an orphan until CLOSED. SO_LINGER {1, 0} aborts it (a RST);
    /// SO_LINGER {1, n} on a blocking socket lingers: the connection and
    /// the linger time are returned for the caller to wait on.
    fn close(
        &mut self,
        handle: u32,
    ) -> Result<(CallResult, Option<(SocketHandle, Duration)>), String> {
        let sock = self
            .socks
            .remove(&handle)
            .ok_or_else(|| format!("no open socket has handle {handle}"))?;
        match sock.role {
            Role::Fresh => Ok((CallResult::ok(0), None)),
            Role::Listening { queue, .. } => {
                // The connections no one accepted are dropped, as Linux
                // drops them: aborted (a RST to each that was synchronized).
                for h in queue {
                    self.set.get_mut::<tcp::Socket>(h).abort();
                    self.orphan(h);
                }
                Ok((CallResult::ok(0), None))
            }
            Role::Connection(h) => {
                let s = self.set.get_mut::<tcp::Socket>(h);
                let linger = match sock.opts.linger {
                    Some(0) => {
                        s.abort();
                        None
                    }
                    Some(secs) if !sock.nonblocking => {
                        s.close();
                        Some((h, Duration::from_secs(u64::try_from(secs).unwrap_or(0))))
                    }
                    _ => {
                        s.close();
                        None
                    }
                };
                self.orphan(h);
                Ok((CallResult::ok(0), linger))
            }
        }
    }

    fn orphan(&mut self, h: SocketHandle) {
        if let Some(c) = self.conns.get_mut(&h) {
            c.orphan = true;
        }
    }

    fn stream(&mut self, conn: u32, writer: Side) -> &mut StreamLog {
        self.streams
            .entry((conn, writer))
            .or_insert_with(|| StreamLog::written_by(writer))
    }

    fn totals(&mut self, stream: &StreamRef) -> StreamTotals {
        let written = self.stream(stream.conn, stream.side).written;
        let incoming = self.stream(stream.conn, stream.side.peer());
        StreamTotals {
            written,
            read: incoming.read,
            corrupted: incoming.corrupted,
        }
    }

    /// Starts a request that may wait: its answer now, or what to wait on.
    pub fn start(
        &mut self,
        id: u64,
        op: &Op,
        now: Instant,
    ) -> Result<Result<Answer, Pending>, String> {
        let deadline = now + Duration::from_millis(op.bound_ms());
        let pending = |what| Ok(Err(Pending::new(id, now, deadline, what)));
        match op {
            Op::Connect { handle, to, .. } => {
                if let Some(r) = self.connect(*handle, *to)? {
                    return Ok(Ok(Answer::Result(r)));
                }
                pending(Waiting::Connect {
                    handles: vec![*handle],
                    many: false,
                })
            }
            Op::ConnectMany { handles, to, .. } => {
                for h in handles {
                    // A connect refused at once is seen again when waited on.
                    let _ = self.connect(*h, *to)?;
                }
                pending(Waiting::Connect {
                    handles: handles.clone(),
                    many: true,
                })
            }
            Op::Close { handle } => match self.close(*handle)? {
                (r, None) => Ok(Ok(Answer::Result(r))),
                (_, Some((conn, linger))) => Ok(Err(Pending::new(
                    id,
                    now,
                    deadline.min(now + linger),
                    Waiting::Linger { conn },
                ))),
            },
            Op::CloseMany { handles } => Ok(Ok(Answer::Results(
                handles
                    .iter()
                    .map(|h| {
                        self.close(*h)
                            .map(|(r, _)| r)
                            .unwrap_or_else(CallResult::harness_error)
                    })
                    .collect(),
            ))),
            Op::Call {
                handle,
                call,
                stream,
                ..
            } => self.call(id, *handle, call, stream, now, deadline),
            other => self.now(other).map(Ok),
        }
    }

    /// Starts a connect; a result now if it failed at once.
    fn connect(&mut self, handle: u32, to: SocketAddr) -> Result<Option<CallResult>, String> {
        let sock = self.sock(handle)?;
        match sock.role {
            Role::Connection(_) => return Ok(Some(fail(Errno::EISCONN))),
            Role::Listening { .. } => return Ok(Some(fail(Errno::EINVAL))),
            Role::Fresh => {}
        }
        if family_of(&to) != sock.family {
            return Ok(Some(fail(Errno::EAFNOSUPPORT)));
        }
        let (bound, opts) = (sock.bound, sock.opts);
        let local = match bound {
            Some(b) => b,
            None => match self.ephemeral_port() {
                Some(p) => SocketAddr::new(
                    match to {
                        SocketAddr::V4(_) => IpAddr::from([0u8; 4]),
                        SocketAddr::V6(_) => IpAddr::from([0u16; 8]),
                    },
                    p,
                ),
                None => return Ok(Some(fail(Errno::EADDRNOTAVAIL))),
            },
        };
        let h = self.new_socket(&opts);
        // smoltcp picks the address itself only when none is named.
        let endpoint = IpListenEndpoint {
            addr: (!local.ip().is_unspecified()).then(|| local.ip().into()),
            port: local.port(),
        };
        let started = self.set.get_mut::<tcp::Socket>(h).connect(
            self.iface.context(),
            IpEndpoint::from(to),
            endpoint,
        );
        if started.is_err() {
            self.conns.remove(&h);
            self.set.remove(h);
            return Ok(Some(fail(Errno::EADDRNOTAVAIL)));
        }
        self.conns.get_mut(&h).expect("just made").last = State::SynSent;
        let sock = self.sock(handle)?;
        sock.bound = Some(local);
        sock.role = Role::Connection(h);
        Ok(None)
    }

    /// A connect's outcome once it has one (ESTABLISHED, or CLOSED with
    /// its error), or `timed_out` at the deadline.
    fn connect_outcome(&mut self, handle: u32, timed_out: bool) -> Option<CallResult> {
        let sock = self.socks.get(&handle)?;
        let nonblocking = sock.nonblocking;
        let Role::Connection(h) = sock.role else {
            return Some(fail(Errno::EBADF));
        };
        let state = self.set.get::<tcp::Socket>(h).state();
        let port = self
            .set
            .get::<tcp::Socket>(h)
            .local_endpoint()
            .map(|e| i64::from(e.port));
        let mut r = match state {
            State::SynSent | State::SynReceived if timed_out => CallResult {
                ret: nonblocking.then_some(-1),
                errno: nonblocking.then(|| "EINPROGRESS".into()),
                timed_out: true,
                note: Some("the handshake had not finished when the step's bound ran out".into()),
                ..Default::default()
            },
            State::SynSent | State::SynReceived => return None,
            State::Closed => {
                let conn = self.conns.get_mut(&h)?;
                let err = conn.error.take().unwrap_or(Errno::ECONNREFUSED);
                connected(nonblocking, Some(format!("{err:?}").into()))
            }
            _ => connected(nonblocking, None),
        };
        r.value = port.or(r.value);
        Some(r)
    }

    /// Starts a call on one socket.
    fn call(
        &mut self,
        id: u64,
        handle: u32,
        call: &FdCall,
        stream: &StreamRef,
        now: Instant,
        deadline: Instant,
    ) -> Result<Result<Answer, Pending>, String> {
        let sock = self.sock(handle)?;
        let blocking = !sock.nonblocking;
        let pending = |what| Ok(Err(Pending::new(id, now, deadline, what)));
        let answer = |host: &mut Host, result: CallResult| {
            Ok(Ok(Answer::Data(DataAnswer {
                result,
                stream: host.totals(stream),
            })))
        };
        let unmapped = call
            .uses()
            .into_iter()
            .find(|u| UNMAPPED.iter().any(|(name, _)| name == u));
        if let Some(what) = unmapped {
            return answer(
                self,
                CallResult {
                    unobserved: Some(format!("smoltcp has no mapping for {what}")),
                    ..Default::default()
                },
            );
        }
        match call {
            FdCall::Write {
                payload, dontwait, ..
            } => {
                let start = self.stream(stream.conn, stream.side).written;
                pending(Waiting::Write {
                    handle,
                    stream: stream.clone(),
                    payload: payload.clone(),
                    start,
                    sent: 0,
                    wait: blocking && !dontwait,
                })
            }
            FdCall::Read {
                amount,
                dontwait,
                peek,
                keep,
            } => {
                self.stream(stream.conn, stream.side.peer())
                    .written_elsewhere(stream.texts.clone());
                pending(Waiting::Read {
                    handle,
                    stream: stream.clone(),
                    progress: ReadProgress {
                        amount: *amount,
                        peek: *peek,
                        keep: *keep,
                        wait: blocking && !dontwait && *amount != ReadAmount::Available,
                        total: 0,
                        bad: 0,
                        kept: Vec::new(),
                    },
                })
            }
            FdCall::Wait { ready } => pending(Waiting::Ready {
                handle,
                stream: stream.clone(),
                ready: *ready,
            }),
            FdCall::GetOption { opt } => {
                let r = self.get_option(handle, *opt)?;
                answer(self, r)
            }
            FdCall::SetOption { opt } => {
                let r = self.set_option(handle, *opt)?;
                answer(self, r)
            }
            FdCall::Shutdown { how } => {
                let r = self.shutdown(handle, *how)?;
                answer(self, r)
            }
            FdCall::Ioctl { query } => {
                let r = match (self.connection(handle), query) {
                    (None, _) => fail(Errno::ENOTCONN),
                    (Some(h), IoctlQuery::InQueue) => CallResult {
                        value: Some(count(self.set.get::<tcp::Socket>(h).recv_queue() as u64)),
                        ..CallResult::ok(0)
                    },
                    (Some(h), IoctlQuery::OutQueue) => CallResult {
                        value: Some(count(self.set.get::<tcp::Socket>(h).send_queue() as u64)),
                        ..CallResult::ok(0)
                    },
                    (Some(_), IoctlQuery::OutQueueNotSent) => unreachable!("unmapped"),
                };
                answer(self, r)
            }
            FdCall::Disconnect => unreachable!("unmapped"),
        }
    }

    fn get_option(&mut self, handle: u32, opt: GetOpt) -> Result<CallResult, String> {
        let conn = self.connection(handle);
        let sock = self.sock(handle)?;
        Ok(match opt {
            GetOpt::Linger => CallResult {
                value: sock.opts.linger.map(i64::from),
                note: Some(
                    if sock.opts.linger.is_some() {
                        "on"
                    } else {
                        "off"
                    }
                    .into(),
                ),
                ..CallResult::ok(0)
            },
            GetOpt::SoError => {
                let err = conn
                    .and_then(|h| self.conns.get_mut(&h))
                    .and_then(|c| c.error.take());
                CallResult {
                    so_error: Some(err.map_or_else(|| "0".into(), |e| format!("{e:?}").into())),
                    ..CallResult::ok(0)
                }
            }
            GetOpt::TcpInfo => CallResult {
                tcp_state: Some(match conn {
                    Some(h) => state_of(self.set.get::<tcp::Socket>(h).state()),
                    None if matches!(sock.role, Role::Listening { .. }) => TcpState::Listen,
                    None => TcpState::Closed,
                }),
                ..CallResult::ok(0)
            },
        })
    }

    fn set_option(&mut self, handle: u32, opt: SockOpt) -> Result<CallResult, String> {
        let conn = self.connection(handle);
        let sock = self.sock(handle)?;
        let buffer = |v: i32| usize::try_from(v).unwrap_or(0).clamp(1024, MAX_BUFFER);
        let o = &mut sock.opts;
        let mut note = None;
        match opt {
            SockOpt::Linger(l) => o.linger = l,
            SockOpt::RcvBuf(v) | SockOpt::SndBuf(v) => {
                if !matches!(sock.role, Role::Fresh) {
                    note = Some("smoltcp's buffers are fixed once the socket connects or listens: kept for sockets made from it".to_string());
                }
                if matches!(opt, SockOpt::RcvBuf(_)) {
                    sock.opts.rcvbuf = Some(buffer(v));
                } else {
                    sock.opts.sndbuf = Some(buffer(v));
                }
            }
            // bind() is the agent's: nothing to relax.
            SockOpt::ReuseAddr(_) => {}
            SockOpt::KeepAlive(on) => o.keepalive = on,
            SockOpt::NoDelay(on) => o.nodelay = on,
            SockOpt::UserTimeout(ms) => o.user_timeout = Some(ms),
            SockOpt::NonBlocking(on) => sock.nonblocking = on,
            SockOpt::KeepIdle(s) => o.keepidle = u32::try_from(s).ok(),
            SockOpt::KeepIntvl(s) => o.keepintvl = u32::try_from(s).ok(),
            SockOpt::ReusePort(_)
            | SockOpt::Cork(_)
            | SockOpt::Linger2(_)
            | SockOpt::KeepCnt(_)
            | SockOpt::RcvLowat(_) => unreachable!("unmapped"),
        }
        let opts = sock.opts;
        if let Some(h) = conn {
            opts.apply(self.set.get_mut::<tcp::Socket>(h));
        }
        Ok(CallResult {
            note,
            ..CallResult::ok(0)
        })
    }

    /// shutdown(WR) is smoltcp's close (a FIN); RDWR also ends reading.
    fn shutdown(&mut self, handle: u32, how: How) -> Result<CallResult, String> {
        let sock = self.sock(handle)?;
        match sock.role {
            Role::Fresh => Ok(fail(Errno::ENOTCONN)),
            Role::Listening { .. } => Ok(CallResult {
                unobserved: Some(format!(
                    "smoltcp has no mapping for {}",
                    crate::scenario::features::LISTENER_SHUTDOWN
                )),
                ..Default::default()
            }),
            Role::Connection(h) => {
                if how == How::Both {
                    sock.read_shut = true;
                }
                let s = self.set.get_mut::<tcp::Socket>(h);
                if matches!(s.state(), State::Closed | State::SynSent | State::Listen) {
                    return Ok(fail(Errno::ENOTCONN));
                }
                s.close();
                Ok(CallResult::ok(0))
            }
        }
    }

    /// Moves a waiting request on: its answer once it has one.
    pub fn advance(&mut self, p: &mut Pending, now: Instant) -> Option<Answer> {
        let timed_out = now >= p.deadline;
        let answer = match &mut p.what {
            Waiting::Connect { handles, many } => {
                let mut results = Vec::new();
                for h in handles.iter() {
                    match self.connect_outcome(*h, timed_out) {
                        Some(r) => results.push(r),
                        None if self.socks.contains_key(h) => return None,
                        None => results.push(fail(Errno::EBADF)),
                    }
                }
                if *many {
                    Answer::Results(results)
                } else {
                    Answer::Result(results.pop().unwrap_or_default())
                }
            }
            Waiting::Linger { conn } => {
                let done = match self.set.iter().find(|(h, _)| h == conn) {
                    None => true,
                    Some(_) => {
                        let s = self.set.get::<tcp::Socket>(*conn);
                        s.send_queue() == 0
                            && !matches!(
                                s.state(),
                                State::FinWait1 | State::Closing | State::LastAck
                            )
                    }
                };
                if !done && !timed_out {
                    return None;
                }
                let mut r = CallResult::ok(0);
                if !done {
                    r.note = Some("the linger time ran out with data unacknowledged".into());
                }
                Answer::Result(r)
            }
            Waiting::Write {
                handle,
                stream,
                payload,
                start,
                sent,
                wait,
            } => {
                let r =
                    self.write_some(*handle, stream, payload, *start, sent, *wait, timed_out)?;
                Answer::Data(DataAnswer {
                    result: r,
                    stream: self.totals(stream),
                })
            }
            Waiting::Read {
                handle,
                stream,
                progress,
            } => {
                let r = self.read_some(*handle, stream, progress, timed_out)?;
                Answer::Data(DataAnswer {
                    result: r,
                    stream: self.totals(stream),
                })
            }
            Waiting::Ready {
                handle,
                stream,
                ready,
            } => {
                let rev = self.revents(*handle);
                let want = match ready {
                    Ready::Readable => libc::POLLIN | libc::POLLRDHUP,
                    Ready::Writable => libc::POLLOUT,
                } | libc::POLLERR
                    | libc::POLLHUP;
                let r = if rev & want != 0 {
                    CallResult {
                        ret: Some(1),
                        value: Some(rev.into()),
                        note: Some(format!("revents {}", revents_names(rev))),
                        ..Default::default()
                    }
                } else if timed_out {
                    CallResult {
                        timed_out: true,
                        note: Some("not ready before the deadline".into()),
                        ..Default::default()
                    }
                } else {
                    return None;
                };
                Answer::Data(DataAnswer {
                    result: r,
                    stream: self.totals(stream),
                })
            }
        };
        Some(answer)
    }

    /// What poll(2) would say of `handle` now.
    fn revents(&self, handle: u32) -> libc::c_short {
        let Some(sock) = self.socks.get(&handle) else {
            return libc::POLLNVAL;
        };
        let h = match &sock.role {
            Role::Connection(h) => *h,
            Role::Listening { queue, .. } => {
                let ready = queue.iter().any(|h| {
                    !matches!(
                        self.set.get::<tcp::Socket>(*h).state(),
                        State::Listen | State::SynReceived
                    )
                });
                return if ready { libc::POLLIN } else { 0 };
            }
            Role::Fresh => return libc::POLLOUT | libc::POLLHUP,
        };
        let s = self.set.get::<tcp::Socket>(h);
        let conn = self.conns.get(&h);
        let mut rev = 0;
        if s.can_recv() {
            rev |= libc::POLLIN;
        }
        let fin_in = matches!(
            s.state(),
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        );
        if fin_in || sock.read_shut {
            rev |= libc::POLLIN | libc::POLLRDHUP;
        }
        if s.can_send() {
            rev |= libc::POLLOUT;
        }
        if conn.is_some_and(|c| c.reset || c.error.is_some()) {
            rev |= libc::POLLIN | libc::POLLRDHUP | libc::POLLERR | libc::POLLHUP;
        } else if s.state() == State::Closed && conn.is_some_and(|c| c.synchronized) {
            rev |= libc::POLLIN | libc::POLLRDHUP | libc::POLLHUP;
        }
        rev
    }

    /// Hands smoltcp what fits of a write; the result once it is done.
    #[allow(clippy::too_many_arguments)]
    fn write_some(
        &mut self,
        handle: u32,
        stream: &StreamRef,
        payload: &crate::scenario::Payload,
        start: u64,
        sent: &mut u64,
        wait: bool,
        timed_out: bool,
    ) -> Option<CallResult> {
        let total = payload.len();
        let Some(h) = self.connection(handle) else {
            return Some(self.finish_write(stream, payload, start, *sent, fail(Errno::ENOTCONN)));
        };
        loop {
            if *sent == total {
                let r = CallResult::ok(count(*sent));
                return Some(self.finish_write(stream, payload, start, *sent, r));
            }
            let s = self.set.get::<tcp::Socket>(h);
            if !s.may_send() {
                let err = self
                    .conns
                    .get_mut(&h)
                    .and_then(|c| c.error.take())
                    .unwrap_or(Errno::EPIPE);
                let r = if *sent > 0 {
                    CallResult {
                        note: Some(format!("{err:?} after {sent} of {total} bytes written")),
                        ..CallResult::ok(count(*sent))
                    }
                } else if matches!(s.state(), State::SynSent | State::SynReceived) {
                    fail(Errno::ENOTCONN)
                } else {
                    fail(err)
                };
                return Some(self.finish_write(stream, payload, start, *sent, r));
            }
            let room = s.send_capacity() - s.send_queue();
            if room == 0 {
                let progress = format!("{sent} of {total} bytes written");
                let r = stalled(wait, timed_out, *sent, false, &progress)?;
                return Some(self.finish_write(stream, payload, start, *sent, r));
            }
            let bytes = self
                .stream(stream.conn, stream.side)
                .payload_bytes(payload, start, *sent, room);
            let n = self
                .set
                .get_mut::<tcp::Socket>(h)
                .send_slice(&bytes)
                .unwrap_or(0);
            *sent += n as u64;
            if n == 0 {
                return None;
            }
        }
    }

    fn finish_write(
        &mut self,
        stream: &StreamRef,
        payload: &crate::scenario::Payload,
        start: u64,
        sent: u64,
        mut r: CallResult,
    ) -> CallResult {
        self.stream(stream.conn, stream.side)
            .wrote(payload, start, sent);
        r.partial = sent < payload.len();
        r.bytes = Some(sent);
        r
    }

    /// Takes what smoltcp has received for a read; the result once done.
    fn read_some(
        &mut self,
        handle: u32,
        stream: &StreamRef,
        st: &mut ReadProgress,
        timed_out: bool,
    ) -> Option<CallResult> {
        let ReadProgress {
            amount,
            peek,
            keep,
            wait,
            ref mut total,
            ref mut bad,
            ref mut kept,
        } = *st;
        let done = |mut r: CallResult, total: u64, bad: u64, kept: &[u8]| {
            read_ended(&mut r, amount, total, bad, keep.then_some(kept));
            Some(r)
        };
        let Some(sock) = self.socks.get(&handle) else {
            return done(fail(Errno::EBADF), *total, *bad, kept);
        };
        let read_shut = sock.read_shut;
        let Role::Connection(h) = sock.role else {
            return done(fail(Errno::ENOTCONN), *total, *bad, kept);
        };
        loop {
            if let ReadAmount::Exactly(n) = amount {
                if *total >= n {
                    return done(CallResult::ok(count(*total)), *total, *bad, kept);
                }
            }
            let want = match amount {
                ReadAmount::Exactly(n) => usize::try_from(n - *total).unwrap_or(usize::MAX),
                _ => usize::MAX,
            }
            .min(64 * 1024);
            let eof = |total: u64| CallResult {
                note: Some(format!("EOF after {total} bytes")),
                ..CallResult::ok(count(total))
            };
            if read_shut {
                return done(eof(*total), *total, *bad, kept);
            }
            let mut buf = vec![0u8; want];
            let s = self.set.get_mut::<tcp::Socket>(h);
            let got = if peek {
                s.peek_slice(&mut buf)
            } else {
                s.recv_slice(&mut buf)
            };
            match got {
                Ok(0) => {}
                Ok(n) => {
                    let log = self.stream(stream.conn, stream.side.peer());
                    *bad += if peek {
                        log.differing(&buf[..n])
                    } else {
                        log.verify(&buf[..n])
                    };
                    if keep && kept.len() < crate::scenario::limits::MAX_KEPT {
                        kept.extend_from_slice(&buf[..n]);
                    }
                    *total += n as u64;
                    if peek {
                        return done(CallResult::ok(count(*total)), *total, *bad, kept);
                    }
                    continue;
                }
                Err(tcp::RecvError::Finished) => {
                    return done(eof(*total), *total, *bad, kept);
                }
                Err(tcp::RecvError::InvalidState) => {
                    let state = self.set.get::<tcp::Socket>(h).state();
                    let conn = self.conns.get_mut(&h);
                    let r = match conn {
                        Some(c) if c.reset && c.error.is_some() && *total == 0 => {
                            fail(c.error.take().unwrap_or(Errno::ECONNRESET))
                        }
                        Some(c) if c.synchronized => eof(*total),
                        _ if matches!(state, State::SynSent | State::SynReceived) => {
                            if wait && !timed_out {
                                return None;
                            }
                            fail(Errno::EAGAIN)
                        }
                        _ => fail(Errno::ENOTCONN),
                    };
                    return done(r, *total, *bad, kept);
                }
            }
            // Nothing queued now.
            let progress = format!("{total} bytes read");
            let available = amount == ReadAmount::Available;
            let r = stalled(wait, timed_out, *total, available, &progress)?;
            return done(r, *total, *bad, kept);
        }
    }

    /// Aborts every connection the session holds or left behind, so
    /// nothing of it reaches a later session.
    pub(crate) fn abort_all(&mut self) {
        let handles: Vec<SocketHandle> = self.conns.keys().copied().collect();
        for h in handles {
            self.set.get_mut::<tcp::Socket>(h).abort();
        }
        self.poll();
    }
}

/// How far a read has got.
pub(crate) struct ReadProgress {
    amount: ReadAmount,
    peek: bool,
    keep: bool,
    wait: bool,
    total: u64,
    bad: u64,
    kept: Vec<u8>,
}
