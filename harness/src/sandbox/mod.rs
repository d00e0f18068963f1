//! Isolation: every case runs in a network namespace of its own, created for
//! the case's thread and gone when that thread and its sockets are.
//!
//! Cases therefore never see each other's ports, TIME-WAIT entries or
//! packets, and sysctls written here change only the case's namespace. This
//! module must never change the host's network configuration.
//!
//! OS-specific code lives in one file per OS with the same functions.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;
#[cfg(target_os = "linux")]
pub mod bench;

use std::collections::BTreeMap;
#[cfg(target_os = "linux")]
use std::net::IpAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
use crate::scenario::Family;
#[cfg(target_os = "linux")]
use crate::tcp::Side;

/// What to do when an error is this process running out of file
/// descriptors (EMFILE: its own limit; ENFILE: the system's), decided by
/// the errno, not by the message; None for any other error. The errno's
/// text names neither the limit nor the remedy.
pub fn descriptor_remedy(errno: i32) -> Option<String> {
    if errno != libc::EMFILE && errno != libc::ENFILE {
        return None;
    }
    #[cfg(unix)]
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or_else(
            |_| "its limit".to_string(),
            |(soft, _)| format!("its limit of {soft}"),
        );
    #[cfg(not(unix))]
    let limit = "its limit".to_string();
    Some(format!(
        "this process ran out of file descriptors at {limit}; a case holds about two per connection: \
         use fewer connections, or raise the hard limit with ulimit -Hn, which needs CAP_SYS_RESOURCE"
    ))
}

/// An I/O error of the harness's own as text, with the remedy if it is
/// the descriptor limit (see [`descriptor_remedy`]).
pub fn describe(e: &std::io::Error) -> String {
    match e.raw_os_error().and_then(descriptor_remedy) {
        Some(remedy) => format!("{e} ({remedy})"),
        None => e.to_string(),
    }
}

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "{0}: run teardown as root, or give the binary CAP_SYS_ADMIN (new namespaces), CAP_NET_ADMIN (lo up) and CAP_NET_RAW (capture): sudo setcap cap_sys_admin,cap_net_admin,cap_net_raw+ep target/release/teardown"
    )]
    NotPermitted(String),
    #[error("setting up the case's network namespace failed: {0}")]
    Setup(String),
    #[error("sysctl {name}: {message}")]
    Sysctl { name: String, message: String },
    #[error("sysctl {name} does not exist in a network namespace of this stack")]
    NoSuchSysctl { name: String },
    #[error("sysctl {name} is read-only on this stack: its value is fixed")]
    ReadOnlySysctl { name: String },
}

/// Where a sysctl exists on this stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysctlScope {
    /// In every network namespace: a case can set it for itself.
    PerNamespace,
    /// Only in the initial namespace (e.g. net.ipv4.tcp_max_orphans): one
    /// value for the whole host, which a case must not touch.
    InitialOnly,
    /// Not at all (an older kernel, another stack).
    Absent,
}

/// Sysctls that change how a connection ends; recorded in every report.
pub const TEARDOWN_SYSCTLS: &[&str] = &[
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_orphan_retries",
    "net.ipv4.tcp_retries2",
    "net.ipv4.tcp_abort_on_overflow",
    "net.ipv4.tcp_rfc1337",
    "net.ipv4.tcp_timestamps",
];

/// What the bench's links are, as read back from them after setup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LinkReport {
    /// "veth": the links between the hosts and the router.
    pub kind: String,
    pub mtu: u32,
    /// Each offload by its ethtool name ("tcp-segmentation-offload"):
    /// whether any link end has it on, as read back from the links.
    pub offloads: BTreeMap<String, bool>,
    /// Where the capture was taken: the router's inbound side of both links.
    pub capture_point: String,
}

/// A bridge in a named network namespace (`ip netns add`) through which
/// the bench reaches a remote host: its NIC, a VM's tap, or a namespace
/// standing in for one is a port of it. Written `NETNS/BRIDGE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    pub netns: String,
    pub name: String,
}

impl std::fmt::Display for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.netns, self.name)
    }
}

impl std::str::FromStr for Bridge {
    type Err = String;

    fn from_str(s: &str) -> Result<Bridge, String> {
        let ok = |n: &str| {
            !n.is_empty() && n.len() <= 64 && !n.contains(['/', '\0']) && n != "." && n != ".."
        };
        match s.split_once('/') {
            Some((netns, name)) if ok(netns) && ok(name) && name.len() < 16 => Ok(Bridge {
                netns: netns.into(),
                name: name.into(),
            }),
            _ => Err(format!(
                "{s:?}: expected NETNS/BRIDGE, a bridge in a named network namespace (ip netns add NETNS), e.g. lab/br0"
            )),
        }
    }
}

/// Packets a namespace's interfaces dropped, by direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkDrops {
    pub received: u64,
    pub sent: u64,
}

/// Where a case's two sides live: each side's calls that create sockets
/// run [`Hosts::on`] its host, so its sockets belong to that host's stack.
#[cfg(target_os = "linux")]
pub enum Hosts {
    /// Both sides in the case namespace, over its loopback (the default).
    Loopback,
    /// A client host and a server host joined by a router.
    Bench(bench::Bench),
}

#[cfg(target_os = "linux")]
impl Hosts {
    /// Runs `f` on `side`'s host.
    pub fn on<T>(&self, side: Side, f: impl FnOnce() -> T) -> Result<T, SandboxError> {
        match self {
            Hosts::Loopback => Ok(f()),
            Hosts::Bench(b) => b.on(side, f),
        }
    }

    /// Whether `side`'s host is a namespace of this machine's (not a remote
    /// host the bench only has a link to).
    pub(crate) fn is_local(&self, side: Side) -> bool {
        match self {
            Hosts::Loopback => true,
            Hosts::Bench(b) => !b.is_remote(side),
        }
    }

    /// One side per distinct stack instance: sysctls are written, and
    /// counters read, once on each. On loopback both sides share one.
    pub fn sides(&self) -> &'static [Side] {
        match self {
            Hosts::Loopback => &[Side::Client],
            Hosts::Bench(_) => &[Side::Client, Side::Server],
        }
    }

    /// `side`'s address in `family`.
    pub fn address(&self, side: Side, family: Family) -> IpAddr {
        let v6 = family == Family::Ipv6;
        match self {
            Hosts::Loopback if v6 => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            Hosts::Loopback => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            Hosts::Bench(_) => bench::address(side, v6, false),
        }
    }

    pub(crate) fn is_bench(&self) -> bool {
        !matches!(self, Hosts::Loopback)
    }
}

#[cfg(test)]
mod remedy_tests {
    use super::*;

    /// The descriptor limit is known by its errno, whatever the message.
    #[test]
    fn running_out_of_descriptors_is_told_by_the_errno() {
        for errno in [libc::EMFILE, libc::ENFILE] {
            let why = descriptor_remedy(errno).expect("a remedy");
            assert!(why.contains("ran out of file descriptors"), "{why}");
            let e = std::io::Error::from_raw_os_error(errno);
            assert!(describe(&e).starts_with(&e.to_string()), "{}", describe(&e));
            assert!(describe(&e).contains("ulimit -Hn"), "{}", describe(&e));
        }
        assert_eq!(descriptor_remedy(libc::ECONNRESET), None);
        let other = std::io::Error::other("Too many open files (os error 24)");
        assert_eq!(describe(&other), other.to_string(), "not by the message");
    }
}
