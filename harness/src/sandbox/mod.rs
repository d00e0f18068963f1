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
