//! The link a userspace stack (smoltcp, lwIP) runs on: one interface of
//! the host, reached through a raw packet socket, whose addresses the
//! host's kernel has given up (see [`crate::sandbox::bench::Bench::take_over`]).

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Where a userspace stack runs: an interface, and the addresses and
/// default routes it is given.
#[derive(Clone, Debug)]
pub struct Config {
    pub interface: String,
    /// Addresses with their prefix lengths; at most one per family.
    pub addresses: Vec<(IpAddr, u8)>,
    pub gateways: Vec<IpAddr>,
}

/// `interface`'s MAC address (SIOCGIFHWADDR).
pub(crate) fn hardware_address(interface: &str) -> Result<[u8; 6], String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| format!("a socket to ask for {interface}'s address: {e}"))?;
    // SAFETY: an ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(format!(
            "{interface}: an interface name is at most 15 bytes"
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes ifr_hwaddr.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if ret < 0 {
        return Err(format!(
            "{interface}'s hardware address: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the ioctl filled the union's hardware address.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(data) {
        *d = s as u8;
    }
    Ok(mac)
}

/// A raw packet socket bound to `interface`, for every Ethernet frame.
pub(crate) fn packet_socket(interface: &str) -> Result<OwnedFd, String> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| format!("{interface:?}: an interface name has no NUL byte"))?;
    // SAFETY: a C string; 0 if no such interface.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!("no interface {interface} here"));
    }
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain system call.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            all.into(),
        )
    };
    if fd < 0 {
        return Err(format!(
            "a packet socket (needs CAP_NET_RAW): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor just made, ours alone.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a zeroed sockaddr_ll is valid.
    let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    at.sll_family = libc::AF_PACKET as u16;
    at.sll_protocol = all;
    at.sll_ifindex = i32::try_from(index).map_err(|_| format!("{interface}: index {index}"))?;
    // SAFETY: pointer and length of that sockaddr_ll.
    let ret = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const at).cast(),
            libc::socklen_t::try_from(size_of::<libc::sockaddr_ll>()).expect("a few bytes"),
        )
    };
    if ret < 0 {
        return Err(format!(
            "binding a packet socket to {interface}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(sock)
}
