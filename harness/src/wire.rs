//! Captured frames to TCP segments.
//!
//! Parses link layers (Ethernet, as Linux uses on lo, with or without VLAN
//! tags; BSD loopback; raw IP; Linux cooked captures) and IPv4/IPv6 with
//! etherparse, tolerantly: a frame that is truncated or odd becomes a
//! [`Frame::Malformed`] finding with a reason, never a panic. Payload
//! lengths come from the IP header, so a capture with a short snaplen still
//! counts every payload byte.
//!
//! Each layer is sliced on its own (Ethernet, VLAN tags, IP, TCP), straight
//! to the TCP header: this runs for every packet of a capture, and
//! etherparse's whole-packet slicer would also copy out the layers this
//! does not read.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, Ethernet2Slice, IpNumber, LaxIpSlice, SingleVlanSlice, TcpSlice};

use crate::capture::{RawPacket, linktype};
use crate::tcp::Flags;

/// A TCP sequence number: 32 bits, compared with wrapping arithmetic
/// (RFC 9293 section 3.4, RFC 1982 serial numbers). SYN and FIN each occupy
/// one unit.
///
/// The order is `PartialOrd`, not `Ord`: `a < b` means `b` is less than
/// 2^31 ahead of `a`, which is what "later in the stream" means on the wire,
/// but it is not transitive over the whole space (a < b < c < a is
/// possible), so a total order would lie. Numbers exactly 2^31 apart are
/// unordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqNum(pub u32);

impl SeqNum {
    /// `self - earlier` as a forward distance in sequence space.
    pub fn since(self, earlier: SeqNum) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }
}

impl PartialOrd for SeqNum {
    fn partial_cmp(&self, other: &SeqNum) -> Option<std::cmp::Ordering> {
        // The signed distance; i32::MIN (exactly 2^31 apart) is ambiguous.
        let d = self.0.wrapping_sub(other.0) as i32;
        (d != i32::MIN).then(|| d.cmp(&0))
    }
}

impl std::ops::Add<u32> for SeqNum {
    type Output = SeqNum;

    /// Advances by `n` units of sequence space, wrapping.
    fn add(self, n: u32) -> SeqNum {
        SeqNum(self.0.wrapping_add(n))
    }
}

/// One TCP segment as seen on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Position in the capture (0-based), to point users at a packet.
    pub index: usize,
    pub ts_us: i64,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: SeqNum,
    pub ack: SeqNum,
    pub flags: Flags,
    /// The raw window field (not scaled).
    pub window: u16,
    /// Payload bytes, from the IP header (not limited by the snaplen).
    pub len: u32,
    /// The IP packet's length, headers included (Zeek's `ip_bytes`).
    pub ip_len: u32,
}

#[cfg(test)]
impl Segment {
    /// A segment for tests: `flags` as tcpdump prints them (`S.`, `F.`),
    /// the index its timestamp, a 100-byte window, IPv4 lengths.
    pub fn example(
        ts_us: i64,
        src: &str,
        dst: &str,
        flags: &str,
        seq: u32,
        ack: u32,
        len: u32,
    ) -> Segment {
        Segment {
            index: usize::try_from(ts_us).unwrap_or(0),
            ts_us,
            src: src.parse().expect("an address"),
            dst: dst.parse().expect("an address"),
            seq: SeqNum(seq),
            ack: SeqNum(ack),
            flags: Flags::parse_tcpdump(flags).expect("tcpdump flags"),
            window: 100,
            len,
            ip_len: 52 + len,
        }
    }
}

impl Segment {
    /// Sequence space the segment occupies: payload plus one each for SYN, FIN.
    pub fn seq_len(&self) -> u32 {
        self.len + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }
}

/// What a captured frame turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Tcp(Segment),
    /// Parsed fine but is not TCP over IP (e.g. ARP).
    Other,
    /// Could not be parsed; the reason says why.
    Malformed(String),
}

/// The link types [`parse_frame`] decodes, by name.
pub const DECODED_LINKTYPES: &[(i32, &str)] = &[
    (linktype::ETHERNET, "Ethernet"),
    (linktype::LINUX_SLL, "Linux cooked (SLL)"),
    (linktype::LINUX_SLL2, "Linux cooked v2 (SLL2)"),
    (linktype::NULL, "BSD loopback (NULL)"),
    (linktype::LOOP, "OpenBSD loopback (LOOP)"),
    (linktype::RAW, "raw IP"),
    (linktype::RAW_BSD, "raw IP (BSD)"),
    (linktype::RAW_OPENBSD, "raw IP (OpenBSD)"),
    (linktype::IPV4, "raw IPv4"),
    (linktype::IPV6, "raw IPv6"),
];

/// Why a capture's link type cannot be decoded, or None if it can.
pub fn undecodable_linktype(linktype: i32) -> Option<String> {
    if DECODED_LINKTYPES.iter().any(|(lt, _)| *lt == linktype) {
        return None;
    }
    let known: Vec<&str> = DECODED_LINKTYPES.iter().map(|(_, n)| *n).collect();
    Some(format!(
        "link type {linktype} is not one teardown decodes; it reads {}",
        known.join(", ")
    ))
}

/// Parses one captured frame.
pub fn parse_frame<D: AsRef<[u8]>>(linktype: i32, index: usize, packet: &RawPacket<D>) -> Frame {
    let data = packet.data.as_ref();
    let ip = match ip_of(linktype, data) {
        Ok(Some(ip)) => ip,
        Ok(None) => return Frame::Other,
        Err(e) => return Frame::Malformed(e),
    };
    // What came before the IP header (link header, VLAN tags): the frame's
    // length less this is the IP packet's, where its header says 0.
    let link_len = data.len() - ip.len();
    let parsed = match LaxIpSlice::from_slice(ip) {
        Ok((parsed, _)) => parsed,
        Err(e) => return Frame::Malformed(format!("IP header: {e}")),
    };
    let (src_ip, dst_ip, ip_payload, full_len, ip_len) = match &parsed {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            if h.is_fragmenting_payload() {
                return Frame::Malformed("IPv4 fragment".into());
            }
            let header_len =
                h.slice().len() + v4.extensions().auth.as_ref().map_or(0, |a| a.slice().len());
            let total = match h.total_len() as usize {
                // TSO super-packets may carry 0; fall back to the frame length.
                0 => (packet.orig_len as usize).saturating_sub(link_len),
                n => n,
            };
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
                total.saturating_sub(header_len),
                total,
            )
        }
        LaxIpSlice::Ipv6(v6) => {
            let h = v6.header();
            let ext_len = v6.extensions().slice().len();
            let payload_len = match h.payload_length() as usize {
                0 => (packet.orig_len as usize).saturating_sub(link_len + 40),
                n => n,
            };
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
                payload_len.saturating_sub(ext_len),
                payload_len + 40,
            )
        }
    };
    if ip_payload.ip_number != IpNumber::TCP {
        return Frame::Other;
    }
    let tcp = match TcpSlice::from_slice(ip_payload.payload) {
        Ok(t) => t,
        Err(e) => return Frame::Malformed(format!("TCP header: {e}")),
    };
    let header_len = tcp.header_slice().len();
    let Some(len) = full_len
        .checked_sub(header_len)
        .and_then(|l| u32::try_from(l).ok())
    else {
        return Frame::Malformed(format!(
            "IP payload ({full_len} bytes) shorter than the TCP header ({header_len})"
        ));
    };
    Frame::Tcp(Segment {
        index,
        ts_us: packet.ts_us,
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        seq: SeqNum(tcp.sequence_number()),
        ack: SeqNum(tcp.acknowledgment_number()),
        // Byte 13 of the TCP header holds the eight flag bits.
        flags: Flags::from_bits(tcp.slice()[13]),
        window: tcp.window_size(),
        len,
        ip_len: u32::try_from(ip_len).unwrap_or(u32::MAX),
    })
}

/// The IP packet a frame carries (to the end of the frame), None for a
/// frame that carries something else (ARP, ...).
fn ip_of(linktype: i32, data: &[u8]) -> Result<Option<&[u8]>, String> {
    match linktype {
        linktype::ETHERNET => {
            let eth = Ethernet2Slice::from_slice_without_fcs(data)
                .map_err(|e| format!("Ethernet header: {e}"))?;
            after_ether_type(eth.ether_type(), eth.payload_slice())
        }
        linktype::NULL | linktype::LOOP => after_link_header(data, 4).map(Some),
        linktype::RAW
        | linktype::RAW_BSD
        | linktype::RAW_OPENBSD
        | linktype::IPV4
        | linktype::IPV6 => Ok(Some(data)),
        // Linux cooked captures: the protocol (an EtherType, so VLAN tags
        // are followed too) at bytes 14..16 (SLL) or 0..2 (SLL2).
        linktype::LINUX_SLL => cooked(data, 14, 16),
        linktype::LINUX_SLL2 => cooked(data, 0, 20),
        other => Err(format!("unsupported link type {other}")),
    }
}

/// What follows a link header of `len` bytes.
fn after_link_header(data: &[u8], len: usize) -> Result<&[u8], String> {
    data.get(len..)
        .ok_or_else(|| format!("frame shorter than its {len}-byte link header"))
}

/// A Linux cooked frame: its EtherType at `type_at`, its header `len` long.
fn cooked(data: &[u8], type_at: usize, len: usize) -> Result<Option<&[u8]>, String> {
    let rest = after_link_header(data, len)?;
    let ether_type = EtherType(u16::from_be_bytes([data[type_at], data[type_at + 1]]));
    after_ether_type(ether_type, rest)
}

/// The IP packet after an EtherType, past any VLAN tags (802.1Q, 802.1ad,
/// and the older QinQ 0x9100).
fn after_ether_type(mut ether_type: EtherType, mut rest: &[u8]) -> Result<Option<&[u8]>, String> {
    loop {
        match ether_type {
            EtherType::IPV4 | EtherType::IPV6 => return Ok(Some(rest)),
            EtherType::VLAN_TAGGED_FRAME
            | EtherType::PROVIDER_BRIDGING
            | EtherType::VLAN_DOUBLE_TAGGED_FRAME => {
                let tag =
                    SingleVlanSlice::from_slice(rest).map_err(|e| format!("VLAN tag: {e}"))?;
                ether_type = tag.ether_type();
                rest = tag.payload_slice();
            }
            _ => return Ok(None),
        }
    }
}

/// Parses every frame; returns the TCP segments and the problems found.
pub fn segments(linktype: i32, packets: &[RawPacket]) -> (Vec<Segment>, Vec<String>) {
    let mut segs = Vec::with_capacity(packets.len());
    let mut findings = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        match parse_frame(linktype, i, p) {
            Frame::Tcp(s) => segs.push(s),
            Frame::Other => {}
            Frame::Malformed(why) => findings.push(format!("packet {}: {why}", i + 1)),
        }
    }
    (segs, findings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, TcpHeader};

    fn frame(builder: PacketBuilderStep<TcpHeader>, payload: &[u8]) -> RawPacket {
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        RawPacket {
            ts_us: 0,
            orig_len: out.len() as u32,
            data: out,
        }
    }

    fn eth_v4() -> PacketBuilderStep<IpHeaders> {
        PacketBuilder::ethernet2([0; 6], [0; 6]).ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64)
    }

    #[test]
    fn ethernet_ipv4_fin_ack() {
        let p = frame(eth_v4().tcp(40000, 9000, 1000, 512).fin().ack(77), b"hello");
        let Frame::Tcp(s) = parse_frame(linktype::ETHERNET, 3, &p) else {
            panic!("not tcp")
        };
        assert_eq!(s.src, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(s.dst.port(), 9000);
        assert_eq!(s.seq, SeqNum(1000));
        assert_eq!(s.ack, SeqNum(77));
        assert_eq!(s.len, 5);
        assert_eq!(s.seq_len(), 6);
        assert_eq!(s.flags.to_string(), "F.");
        assert_eq!(s.index, 3);
    }

    #[test]
    fn raw_ipv6_syn() {
        let b = PacketBuilder::ipv6([0; 16], [0; 16], 64)
            .tcp(1, 2, u32::MAX, 100)
            .syn();
        let p = frame(b, &[]);
        let Frame::Tcp(s) = parse_frame(linktype::RAW, 0, &p) else {
            panic!("not tcp")
        };
        assert!(s.src.is_ipv6());
        assert_eq!(s.flags.to_string(), "S");
        assert_eq!(s.seq_len(), 1);
        assert_eq!(s.seq + 1, SeqNum(0), "sequence numbers wrap");
    }

    #[test]
    fn snaplen_truncation_keeps_the_true_payload_length() {
        let mut p = frame(eth_v4().tcp(1, 2, 0, 100).ack(1), &[7u8; 1000]);
        p.data.truncate(100);
        let Frame::Tcp(s) = parse_frame(linktype::ETHERNET, 0, &p) else {
            panic!("not tcp")
        };
        assert_eq!(s.len, 1000);
    }

    #[test]
    fn truncated_headers_are_findings_not_panics() {
        let p = frame(eth_v4().tcp(1, 2, 0, 100).ack(1), b"");
        for cut in 0..p.data.len() {
            let short = RawPacket {
                data: p.data[..cut].to_vec(),
                ..p.clone()
            };
            match parse_frame(linktype::ETHERNET, 0, &short) {
                Frame::Malformed(_) | Frame::Other => {}
                Frame::Tcp(s) => panic!("cut at {cut} parsed as {s:?}"),
            }
        }
        assert!(
            matches!(parse_frame(999, 0, &p), Frame::Malformed(m) if m.contains("link type 999"))
        );
    }

    /// The same IP packet under every link layer teardown decodes, and
    /// behind one and two VLAN tags, is the same segment; Ethernet's
    /// padding of a short frame is not payload; other EtherTypes are not
    /// TCP.
    #[test]
    fn every_link_type_gives_the_same_segment() {
        for (ip, ether_type) in [
            (
                PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
                [0x08, 0x00],
            ),
            (PacketBuilder::ipv6([1; 16], [2; 16], 64), [0x86, 0xdd]),
        ] {
            let mut packet = Vec::new();
            ip.tcp(40000, 9000, 1000, 512)
                .fin()
                .ack(77)
                .write(&mut packet, b"hello")
                .unwrap();
            let raw = |link: Vec<u8>, trailer: usize| {
                let mut data = link;
                data.extend_from_slice(&packet);
                data.extend(std::iter::repeat_n(0, trailer));
                RawPacket {
                    ts_us: 5,
                    orig_len: data.len() as u32,
                    data,
                }
            };
            let macs = [0u8; 12].to_vec();
            let ether = |tags: &[[u8; 2]]| {
                let mut h = macs.clone();
                for tpid in tags {
                    h.extend_from_slice(tpid);
                    h.extend_from_slice(&[0x00, 0x2a]); // VLAN 42
                }
                h.extend_from_slice(&ether_type);
                h
            };
            let mut sll = vec![0, 0, 0, 1, 0, 6];
            sll.extend_from_slice(&[0; 8]);
            sll.extend_from_slice(&ether_type);
            let mut sll2 = ether_type.to_vec();
            sll2.extend_from_slice(&[0; 18]);
            let cases = [
                ("Ethernet", linktype::ETHERNET, raw(ether(&[]), 0)),
                ("Ethernet, padded", linktype::ETHERNET, raw(ether(&[]), 30)),
                ("802.1Q", linktype::ETHERNET, raw(ether(&[[0x81, 0x00]]), 0)),
                (
                    "802.1ad + 802.1Q",
                    linktype::ETHERNET,
                    raw(ether(&[[0x88, 0xa8], [0x81, 0x00]]), 0),
                ),
                ("SLL", linktype::LINUX_SLL, raw(sll, 0)),
                ("SLL2", linktype::LINUX_SLL2, raw(sll2, 0)),
                ("NULL", linktype::NULL, raw(vec![2, 0, 0, 0], 0)),
                ("LOOP", linktype::LOOP, raw(vec![0, 0, 0, 2], 0)),
                ("raw", linktype::RAW, raw(Vec::new(), 0)),
            ];
            let mut seen = Vec::new();
            for (name, lt, p) in cases {
                match parse_frame(lt, 0, &p) {
                    Frame::Tcp(s) => seen.push((name, s)),
                    other => panic!("{name}: {other:?}"),
                }
            }
            let (_, first) = &seen[0];
            assert_eq!(first.len, 5);
            assert_eq!(first.flags.to_string(), "F.");
            assert_eq!((first.src.port(), first.dst.port()), (40000, 9000));
            assert_eq!(first.ip_len as usize, packet.len());
            for (name, s) in &seen {
                assert_eq!(s, first, "{name}");
            }
            // ARP is not TCP, and not malformed.
            let mut arp = macs.clone();
            arp.extend_from_slice(&[0x08, 0x06]);
            arp.extend_from_slice(&[0; 28]);
            assert_eq!(
                parse_frame(linktype::ETHERNET, 0, &raw(arp, 0)),
                Frame::Other
            );
        }
    }

    #[test]
    fn sequence_distance_wraps() {
        assert_eq!(SeqNum(5).since(SeqNum(u32::MAX - 4)), 10);
    }

    #[test]
    fn sequence_order_wraps() {
        assert!(
            SeqNum(5) > SeqNum(u32::MAX - 4),
            "5 comes 10 after 2^32 - 5"
        );
        assert!(SeqNum(u32::MAX) < SeqNum(0));
        assert!(SeqNum(100) < SeqNum(200));
        assert_eq!(SeqNum(0).partial_cmp(&SeqNum(1 << 31)), None);
        assert!(SeqNum(7) <= SeqNum(7));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(lt in prop::sample::select(vec![0, 1, 12, 101, 108, 113, 276, 7]),
                                           data in prop::collection::vec(any::<u8>(), 0..120)) {
                let p = RawPacket { ts_us: 0, orig_len: data.len() as u32, data };
                let _ = parse_frame(lt, 0, &p);
            }
        }
    }
}
