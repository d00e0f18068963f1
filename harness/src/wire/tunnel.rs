//! The layers between a frame's link header and the IP packet that carries
//! TCP: 802.11 (behind radiotap, A-MSDUs too), NFLOG, VLAN tags, VN-Tag,
//! PBB, Cisco FabricPath, MPLS, PPPoE and PPP below IP; GRE (with ERSPAN
//! I, II and III, WCCP, Aruba's 802.11, and over UDP), IP in IP, VXLAN, Geneve,
//! GTP-U, AYIYA and Teredo above it. The UDP tunnels are known by their
//! ports, as Zeek and Wireshark know them; Teredo also by its content on
//! any port, since relays answer from ports of their own.
//!
//! Each layer is read from its own header fields, by hand: none of these
//! headers is longer than a few fields, and etherparse reads only Ethernet,
//! VLAN and IP. A layer teardown does not decode is a [`Skipped`] with its
//! name, so a capture of such frames says why it has no segments.

use std::fmt;

use etherparse::EtherType;

/// Why a frame that parsed fine carries no TCP segment teardown reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Skipped {
    /// An EtherType that is not IP nor a layer teardown decodes (ARP, LLDP),
    /// or an 802.3 length field.
    EtherType(u16),
    /// IP carrying another transport (UDP, ICMP), by protocol number.
    IpProtocol(u8),
    /// A layer that is recognised but not decoded, by name.
    Layer(&'static str),
    /// More nested layers than [`MAX_LAYERS`]: a loop, or a crafted frame.
    TooDeep,
    /// An IP fragment: held until its datagram is whole, which is then
    /// read (and counted) as the packet of its last fragment.
    Fragment,
}

impl Skipped {
    /// Whether this is ordinary traffic of another protocol, as opposed to
    /// TCP that may be hidden in a layer teardown does not decode.
    pub(crate) fn is_other_protocol(self) -> bool {
        match self {
            Skipped::EtherType(t) => KNOWN_NOT_IP.iter().any(|(k, _)| *k == t) || t < 0x0600,
            Skipped::IpProtocol(_) | Skipped::Fragment => true,
            Skipped::Layer(_) | Skipped::TooDeep => false,
        }
    }
}

/// EtherTypes that are known to carry no IP.
const KNOWN_NOT_IP: &[(u16, &str)] = &[
    (0x0806, "ARP"),
    (0x8035, "RARP"),
    (0x88cc, "LLDP"),
    (0x8863, "PPPoE discovery"),
    (0x888e, "EAPOL"),
    (0x8809, "slow protocols (LACP)"),
    (0x88f7, "PTP"),
    (0x9000, "loopback (CTP)"),
    (0x88e1, "HomePlug"),
    (0x893a, "IEEE 1905"),
];

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Skipped::EtherType(t) if t < 0x0600 => {
                write!(
                    f,
                    "802.3 frames without SNAP (spanning tree, NetBIOS, IPX, ...)"
                )
            }
            Skipped::EtherType(t) => match KNOWN_NOT_IP.iter().find(|(k, _)| *k == t) {
                Some((_, name)) => write!(f, "{name} (EtherType 0x{t:04x})"),
                None => write!(f, "EtherType 0x{t:04x}"),
            },
            Skipped::IpProtocol(p) => {
                let name = match p {
                    1 => "ICMP",
                    2 => "IGMP",
                    17 => "UDP",
                    50 => "ESP",
                    51 => "AH",
                    58 => "ICMPv6",
                    89 => "OSPF",
                    103 => "PIM",
                    112 => "VRRP",
                    132 => "SCTP",
                    _ => "",
                };
                if name.is_empty() {
                    write!(f, "IP protocol {p}")
                } else {
                    write!(f, "{name} (IP protocol {p})")
                }
            }
            Skipped::Layer(name) => f.write_str(name),
            Skipped::TooDeep => write!(f, "more than {MAX_LAYERS} nested layers"),
            Skipped::Fragment => write!(f, "IP fragments (each datagram read whole)"),
        }
    }
}

/// Nested layers decoded before a frame is given up on.
pub(crate) const MAX_LAYERS: usize = 16;

/// What the bytes at hand are.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Layer<'a> {
    /// An Ethernet frame from its destination address.
    Ethernet(&'a [u8]),
    /// What follows an EtherType.
    Ether(EtherType, &'a [u8]),
    /// An IP packet.
    Ip(&'a [u8]),
    /// A PPP frame from its protocol field (address and control optional).
    Ppp(&'a [u8]),
    /// An MPLS label stack.
    Mpls(&'a [u8]),
    /// An IEEE 802.11 frame from its frame control field.
    Wifi(&'a [u8]),
    /// An 802.11 frame behind a radiotap header.
    Radiotap(&'a [u8]),
    /// Linux NFLOG: a 4-byte header, then type-length-value attributes.
    Nflog(&'a [u8]),
    /// An 802.2 LLC header (with SNAP, for IP).
    Llc(&'a [u8]),
}

/// One step down: the layer inside `layer`, the IP packet it is, or why
/// there is none.
pub enum Step<'a> {
    Inner(Layer<'a>),
    Ip(&'a [u8]),
    Skip(Skipped),
    /// An 802.11 A-MSDU: subframes, each its own packet (see [`amsdu`]).
    Amsdu(&'a [u8]),
}

fn short(what: &str) -> String {
    format!("{what}: frame too short")
}

pub(super) fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(at)?, *d.get(at + 1)?]))
}

fn rest<'a>(d: &'a [u8], at: usize, what: &str) -> Result<&'a [u8], String> {
    d.get(at..).ok_or_else(|| short(what))
}

/// Unwraps one layer below IP.
pub fn step(layer: Layer<'_>) -> Result<Step<'_>, String> {
    Ok(match layer {
        Layer::Ip(ip) => Step::Ip(ip),
        Layer::Ethernet(d) => {
            let t = be16(d, 12).ok_or_else(|| short("Ethernet header"))?;
            Step::Inner(Layer::Ether(EtherType(t), rest(d, 14, "Ethernet header")?))
        }
        Layer::Ether(t, d) => match t.0 {
            0x0800 | 0x86dd => Step::Ip(d),
            // 802.1Q, 802.1ad, and the older QinQ 0x9100 and 0x9200.
            0x8100 | 0x88a8 | 0x9100 | 0x9200 => {
                let inner = be16(d, 2).ok_or_else(|| short("VLAN tag"))?;
                Step::Inner(Layer::Ether(EtherType(inner), rest(d, 4, "VLAN tag")?))
            }
            // Cisco VN-Tag (802.1Qbh): a 4-byte tag, then an EtherType.
            0x8926 => {
                let inner = be16(d, 4).ok_or_else(|| short("VN-Tag"))?;
                Step::Inner(Layer::Ether(EtherType(inner), rest(d, 6, "VN-Tag")?))
            }
            // Cisco FabricPath: FTag and TTL (2 bytes), then the frame.
            0x8903 => Step::Inner(Layer::Ethernet(rest(d, 2, "FabricPath header")?)),
            // 802.1ah PBB: a 4-byte I-TAG, then the customer's frame.
            0x88e7 => Step::Inner(Layer::Ethernet(rest(d, 4, "PBB I-TAG")?)),
            0x8847 | 0x8848 => Step::Inner(Layer::Mpls(d)),
            // PPPoE session: version/type, code, session, length; then PPP.
            0x8864 => {
                let len = usize::from(be16(d, 4).ok_or_else(|| short("PPPoE header"))?);
                let ppp = rest(d, 6, "PPPoE header")?;
                Step::Inner(Layer::Ppp(&ppp[..len.min(ppp.len())]))
            }
            0x880b => Step::Inner(Layer::Ppp(d)),
            // IEEE 802.3: a length, then LLC; IP is there only with SNAP.
            // Without it (spanning tree, NetBIOS, IPX) all count as one.
            len if len < 0x0600 => {
                let llc = &d[..usize::from(len).min(d.len())];
                if llc.starts_with(&[0xaa, 0xaa, 0x03]) {
                    return llc_snap(llc);
                }
                Step::Skip(Skipped::EtherType(0))
            }
            other => Step::Skip(Skipped::EtherType(other)),
        },
        Layer::Ppp(d) => {
            // Address and control (0xff 0x03) when not compressed away.
            let d = if d.starts_with(&[0xff, 0x03]) {
                &d[2..]
            } else {
                d
            };
            // A protocol field whose first byte is odd was compressed to one byte.
            let (proto, len) = match d.first() {
                None => return Err(short("PPP header")),
                Some(b) if b & 1 == 1 => (u16::from(*b), 1),
                Some(_) => (be16(d, 0).ok_or_else(|| short("PPP header"))?, 2),
            };
            let inner = rest(d, len, "PPP header")?;
            match proto {
                0x0021 | 0x0057 => Step::Ip(inner),
                0x0281 | 0x0283 => Step::Inner(Layer::Mpls(inner)),
                _ => Step::Skip(Skipped::Layer("PPP control or non-IP protocol")),
            }
        }
        Layer::Wifi(d) => return wifi(d),
        Layer::Radiotap(d) => {
            // Version 0, a pad byte, then the header's length (little-endian).
            let len = match (d.first(), d.get(2), d.get(3)) {
                (Some(0), Some(a), Some(b)) => usize::from(u16::from_le_bytes([*a, *b])),
                (Some(_), Some(_), Some(_)) => {
                    return Ok(Step::Skip(Skipped::Layer("radiotap of an unknown version")));
                }
                _ => return Err(short("radiotap header")),
            };
            Step::Inner(Layer::Wifi(rest(d, len, "radiotap header")?))
        }
        Layer::Nflog(d) => return nflog(d),
        Layer::Llc(d) => return llc_snap(d),
        Layer::Mpls(d) => {
            // Label stack entries of 4 bytes, the last with bit S set.
            let mut at = 0;
            loop {
                let entry = d.get(at..at + 4).ok_or_else(|| short("MPLS label stack"))?;
                at += 4;
                if entry[2] & 1 == 1 {
                    break;
                }
                if at >= 4 * MAX_LAYERS {
                    return Ok(Step::Skip(Skipped::TooDeep));
                }
            }
            let inner = rest(d, at, "MPLS label stack")?;
            match inner.first().map(|b| b >> 4) {
                Some(4 | 6) => Step::Ip(inner),
                // A pseudowire control word (first nibble 0), then Ethernet.
                Some(0) => Step::Inner(Layer::Ethernet(rest(inner, 4, "MPLS control word")?)),
                _ => Step::Skip(Skipped::Layer("MPLS payload that is not IP or Ethernet")),
            }
        }
    })
}

/// IP protocol numbers that carry another packet.
pub mod proto {
    pub(crate) const IPIP: u8 = 4;
    pub(crate) const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
    pub const UDP: u8 = 17;
}

/// The layer an IP packet's payload of protocol `protocol` carries, if it
/// is a tunnel teardown decodes.
pub(crate) fn above_ip(protocol: u8, payload: &[u8]) -> Result<Step<'_>, String> {
    match protocol {
        proto::IPIP | proto::IPV6 => Ok(Step::Inner(Layer::Ip(payload))),
        proto::GRE => gre(payload),
        proto::UDP => udp(payload),
        other => Ok(Step::Skip(Skipped::IpProtocol(other))),
    }
}

/// GRE (RFC 2784, 2890) and PPTP's enhanced GRE (RFC 2637).
fn gre(d: &[u8]) -> Result<Step<'_>, String> {
    let (flags, version) = match (d.first(), d.get(1)) {
        (Some(a), Some(b)) => (*a, b & 0x07),
        _ => return Err(short("GRE header")),
    };
    let protocol = be16(d, 2).ok_or_else(|| short("GRE header"))?;
    let (checksum, routing, key, sequence) = (
        flags & 0x80 != 0,
        flags & 0x40 != 0,
        flags & 0x20 != 0,
        flags & 0x10 != 0,
    );
    let len = match version {
        0 if routing => return Ok(Step::Skip(Skipped::Layer("GRE with source routing"))),
        0 => 4 + 4 * (usize::from(checksum) + usize::from(key) + usize::from(sequence)),
        // The key is always there; an acknowledgment when bit A is set.
        1 => 8 + 4 * (usize::from(sequence) + usize::from(d[1] & 0x80 != 0)),
        _ => return Ok(Step::Skip(Skipped::Layer("GRE of an unknown version"))),
    };
    let inner = rest(d, len, "GRE header")?;
    Ok(match protocol {
        0x0800 | 0x86dd => Step::Ip(inner),
        0x6558 => Step::Inner(Layer::Ethernet(inner)),
        0x8847 | 0x8848 => Step::Inner(Layer::Mpls(inner)),
        0x880b => Step::Inner(Layer::Ppp(inner)),
        // ERSPAN type II (GRE with a sequence number): an 8-byte header,
        // then the mirrored frame; type I (without): the frame at once.
        0x88be if sequence => Step::Inner(Layer::Ethernet(rest(inner, 8, "ERSPAN header")?)),
        0x88be => Step::Inner(Layer::Ethernet(inner)),
        // Aruba's access points to their controller: 802.11 frames.
        p if (p & 0xff0f == 0x8200) || (p & 0xff0f == 0x8300 && p <= 0x8370) || p == 0x9000 => {
            Step::Inner(Layer::Wifi(inner))
        }
        // WCCP's redirection of traffic to a cache: IPv4, after a 4-byte
        // redirect header unless the first octet already reads as IPv4's
        // version (the WCCP v1 and v2 drafts; tcpdump and Wireshark decide
        // so too).
        0x883e => match inner.first() {
            Some(b) if b >> 4 == 4 => Step::Ip(inner),
            _ => Step::Ip(rest(inner, 4, "WCCP redirect header")?),
        },
        // ERSPAN type III: 12 bytes, and 8 more when bit O says so.
        0x22eb => {
            let o = inner.get(11).ok_or_else(|| short("ERSPAN header"))? & 1 == 1;
            let len = if o { 20 } else { 12 };
            Step::Inner(Layer::Ethernet(rest(inner, len, "ERSPAN header")?))
        }
        _ => Step::Skip(Skipped::Layer(
            "GRE carrying a protocol teardown does not decode",
        )),
    })
}

/// UDP ports whose payload is a tunnel (IANA's assignments, as Zeek and
/// Wireshark use them).
const VXLAN: u16 = 4789;
const GENEVE: u16 = 6081;
const TEREDO: u16 = 3544;
const GTP_U: u16 = 2152;
const AYIYA: u16 = 5072;
/// GRE in UDP (RFC 8086).
const GRE_UDP: u16 = 4754;

fn udp(d: &[u8]) -> Result<Step<'_>, String> {
    let (src, dst) = match (be16(d, 0), be16(d, 2)) {
        (Some(s), Some(t)) => (s, t),
        _ => return Err(short("UDP header")),
    };
    let payload = rest(d, 8, "UDP header")?;
    let skip = Ok(Step::Skip(Skipped::IpProtocol(proto::UDP)));
    let either = |port: u16| src == port || dst == port;
    if dst == VXLAN {
        // Flags (bit I: a valid VNI), reserved, VNI, reserved: 8 bytes.
        return match payload.first() {
            Some(flags) if flags & 0x08 != 0 => Ok(Step::Inner(Layer::Ethernet(rest(
                payload,
                8,
                "VXLAN header",
            )?))),
            _ => skip,
        };
    }
    if dst == GENEVE {
        let first = *payload.first().ok_or_else(|| short("Geneve header"))?;
        if first >> 6 != 0 {
            return Ok(Step::Skip(Skipped::Layer("Geneve of an unknown version")));
        }
        let len = 8 + 4 * usize::from(first & 0x3f);
        let protocol = be16(payload, 2).ok_or_else(|| short("Geneve header"))?;
        let inner = rest(payload, len, "Geneve header")?;
        return Ok(match protocol {
            0x6558 => Step::Inner(Layer::Ethernet(inner)),
            0x0800 | 0x86dd => Step::Ip(inner),
            _ => Step::Skip(Skipped::Layer(
                "Geneve carrying a protocol teardown does not decode",
            )),
        });
    }
    if dst == GRE_UDP {
        return gre(payload);
    }
    if either(GTP_U) {
        return gtp_u(payload);
    }
    if either(AYIYA) {
        return ayiya(payload);
    }
    if either(TEREDO) {
        return Ok(teredo(payload).map_or(Step::Skip(Skipped::IpProtocol(proto::UDP)), Step::Ip));
    }
    // A Teredo relay answers from a port of its own: a datagram that holds
    // exactly one IPv6 packet, by the two length fields (not by what the
    // snapshot length kept), is taken for Teredo.
    let udp_len = usize::from(be16(d, 4).unwrap_or(0));
    match teredo(payload) {
        Some(ip6)
            if udp_len
                == 8 + (payload.len() - ip6.len())
                    + 40
                    + usize::from(be16(ip6, 4).unwrap_or(0)) =>
        {
            Ok(Step::Ip(ip6))
        }
        _ => skip,
    }
}

/// A GTP-U datagram (3GPP TS 29.281): an 8-byte header, 4 more when any
/// of the E, S and PN flags is set, then the extension headers; a G-PDU
/// (message type 255) carries the user's IP packet.
fn gtp_u(d: &[u8]) -> Result<Step<'_>, String> {
    let (flags, kind) = match (d.first(), d.get(1)) {
        (Some(f), Some(k)) => (*f, *k),
        _ => return Err(short("GTP-U header")),
    };
    if flags >> 5 != 1 || flags & 0x10 == 0 {
        return Ok(Step::Skip(Skipped::Layer(
            "GTP of a version other than 1 (GTP-U)",
        )));
    }
    if kind != 0xff {
        return Ok(Step::Skip(Skipped::Layer("GTP-U signalling (not a G-PDU)")));
    }
    let mut at = 8;
    if flags & 0x07 != 0 {
        // Sequence number, N-PDU number, then the next extension's type.
        let mut next = *d.get(11).ok_or_else(|| short("GTP-U header"))?;
        at = 12;
        for _ in 0..MAX_LAYERS {
            if next == 0 {
                break;
            }
            // Length in 4-byte units, the last byte the next type.
            let units = usize::from(*d.get(at).ok_or_else(|| short("GTP-U extension"))?);
            if units == 0 {
                return Err("GTP-U extension header of length 0".into());
            }
            at += 4 * units;
            next = *d.get(at - 1).ok_or_else(|| short("GTP-U extension"))?;
        }
        if next != 0 {
            return Ok(Step::Skip(Skipped::TooDeep));
        }
    }
    let inner = rest(d, at, "GTP-U header")?;
    Ok(match inner.first().map(|b| b >> 4) {
        Some(4 | 6) => Step::Ip(inner),
        _ => Step::Skip(Skipped::Layer("GTP-U carrying no IP packet")),
    })
}

/// An AYIYA datagram (Anything In Anything, SixXS): 8 bytes, the
/// identity and the signature whose lengths they give, then the packet
/// when the operation is 1 (forward).
fn ayiya(d: &[u8]) -> Result<Step<'_>, String> {
    let head = d.get(..8).ok_or_else(|| short("AYIYA header"))?;
    let len = 8 + (1usize << (head[0] >> 4)) + 4 * usize::from(head[1] >> 4);
    if head[2] & 0x0f != 1 {
        return Ok(Step::Skip(Skipped::Layer("AYIYA other than forwarding")));
    }
    let inner = rest(d, len, "AYIYA header")?;
    Ok(match head[3] {
        proto::IPIP | proto::IPV6 => Step::Ip(inner),
        _ => Step::Skip(Skipped::Layer("AYIYA carrying no IP packet")),
    })
}

/// An IEEE 802.11 data frame: its header (24 bytes, 30 with four
/// addresses, 2 more with QoS), then an LLC/SNAP header whose EtherType
/// says what follows. Management and control frames, frames without data
/// and protected (encrypted) frames carry nothing teardown can read.
fn wifi(d: &[u8]) -> Result<Step<'_>, String> {
    let (fc, flags) = match (d.first(), d.get(1)) {
        (Some(a), Some(b)) => (*a, *b),
        _ => return Err(short("802.11 header")),
    };
    if (fc >> 2) & 0x03 != 2 {
        return Ok(Step::Skip(Skipped::Layer(
            "802.11 management or control frames",
        )));
    }
    let subtype = fc >> 4;
    if subtype & 0x04 != 0 {
        return Ok(Step::Skip(Skipped::Layer(
            "802.11 data frames without data",
        )));
    }
    if flags & 0x40 != 0 {
        return Ok(Step::Skip(Skipped::Layer(
            "802.11 protected (encrypted) frames",
        )));
    }
    let mut len = if flags & 0x03 == 0x03 { 30 } else { 24 };
    let mut aggregate = false;
    if subtype & 0x08 != 0 {
        // QoS control; bit 7 of its first byte: an A-MSDU.
        aggregate = *d.get(len).ok_or_else(|| short("802.11 QoS control"))? & 0x80 != 0;
        len += 2;
        // Order bit with QoS: an HT control field.
        if flags & 0x80 != 0 {
            len += 4;
        }
    }
    let body = rest(d, len, "802.11 header")?;
    if aggregate {
        return Ok(Step::Amsdu(body));
    }
    llc_snap(body)
}

/// An LLC header with SNAP and a zero organization code: an EtherType.
fn llc_snap(d: &[u8]) -> Result<Step<'_>, String> {
    let head = d.get(..8).ok_or_else(|| short("LLC/SNAP header"))?;
    if head[..6] != [0xaa, 0xaa, 0x03, 0, 0, 0] {
        return Ok(Step::Skip(Skipped::Layer("LLC frames without SNAP")));
    }
    Ok(Step::Inner(Layer::Ether(
        EtherType(u16::from_be_bytes([head[6], head[7]])),
        &d[8..],
    )))
}

/// The subframes of an 802.11 A-MSDU: each a 14-byte header (addresses
/// and the length of what follows), LLC/SNAP and a packet, padded to 4
/// bytes but the last. Fewer than 14 bytes after the last are padding or
/// a frame check sequence; a subframe the snapshot length cut is read as
/// far as it goes (its IP header still gives the lengths).
pub(crate) fn amsdu(mut d: &[u8]) -> impl Iterator<Item = Result<Step<'_>, String>> {
    std::iter::from_fn(move || {
        let len = usize::from(be16(d, 12)?);
        let sub = &d[14..(14 + len).min(d.len())];
        let next = (14 + len).div_ceil(4) * 4;
        d = d.get(next..).unwrap_or(&[]);
        Some(llc_snap(sub))
    })
}

/// Linux NFLOG (`tcpdump -i nflog`): family, version 0 and a resource id,
/// then attributes of a 2-byte length and a 2-byte type in the capturing
/// host's byte order, each padded to 4 bytes; type 9 holds the packet.
fn nflog(d: &[u8]) -> Result<Step<'_>, String> {
    match d.get(1) {
        None => return Err(short("NFLOG header")),
        Some(0) => {}
        Some(_) => return Ok(Step::Skip(Skipped::Layer("NFLOG of an unknown version"))),
    }
    let attrs = rest(d, 4, "NFLOG header")?;
    // The byte order is the capturing host's: try both, little-endian first.
    let walk = |read: fn([u8; 2]) -> u16| {
        let mut at = 0;
        while let (Some(a), Some(b)) = (attrs.get(at..at + 2), attrs.get(at + 2..at + 4)) {
            let (len, kind) = (usize::from(read([a[0], a[1]])), read([b[0], b[1]]));
            if len < 4 {
                return None;
            }
            if kind == 9 {
                return attrs.get(at + 4..);
            }
            at += len.div_ceil(4) * 4;
        }
        None
    };
    match walk(u16::from_le_bytes).or_else(|| walk(u16::from_be_bytes)) {
        Some(packet) => Ok(Step::Ip(packet)),
        None => Ok(Step::Skip(Skipped::Layer("NFLOG without a packet"))),
    }
}

/// The IPv6 packet in a Teredo datagram (RFC 4380 section 5.1.1), past an
/// authentication and an origin indication, if it holds one.
fn teredo(mut d: &[u8]) -> Option<&[u8]> {
    if d.starts_with(&[0x00, 0x01]) {
        // Authentication: id and auth lengths, then nonce and confirmation.
        let (id, auth) = (usize::from(*d.get(2)?), usize::from(*d.get(3)?));
        d = d.get(4 + id + auth + 9..)?;
    }
    if d.starts_with(&[0x00, 0x00]) {
        d = d.get(8..)?;
    }
    // Version 6, and room for the IPv6 header.
    (d.len() >= 40 && d[0] >> 4 == 6).then_some(d)
}
