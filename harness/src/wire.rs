//! Captured frames to TCP segments.
//!
//! Parses link layers (Ethernet, as Linux uses on lo; BSD loopback; raw IP;
//! Linux cooked captures; PPP; Cisco HDLC), the layers around IP that
//! captures from the field carry ([`tunnel`]: VLAN tags, MPLS, PPPoE, GRE,
//! VXLAN, ...), and IPv4/IPv6 with etherparse, tolerantly: a frame that is truncated or odd becomes a
//! [`Frame::Malformed`] finding with a reason, never a panic. Payload
//! lengths come from the IP header, so a capture with a short snaplen still
//! counts every payload byte.
//!
//! Each layer is sliced on its own (Ethernet, tags, IP, TCP), straight
//! to the TCP header: this runs for every packet of a capture, and
//! etherparse's whole-packet slicer would also copy out the layers this
//! does not read.

use std::net::{IpAddr, SocketAddr};

mod defrag;
mod tunnel;

use etherparse::{EtherType, IpNumber, LaxIpSlice};

pub use tunnel::Skipped;
use tunnel::{Layer, MAX_LAYERS, Step};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
    pub(crate) fn seq_len(&self) -> u32 {
        self.len + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }
}

/// What a captured frame turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    Tcp(Segment),
    /// Parsed fine but carries no TCP segment teardown reads (ARP, UDP, a
    /// layer it does not decode); why.
    Other(Skipped),
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
    (linktype::PPP, "PPP"),
    (linktype::C_HDLC, "Cisco HDLC"),
    (linktype::FDDI, "FDDI"),
    (linktype::IEEE802_11, "IEEE 802.11"),
    (linktype::IEEE802_11_RADIOTAP, "802.11 with radiotap"),
    (linktype::NFLOG, "Linux NFLOG"),
];

/// The layers decoded between the link header and TCP, for the README and
/// `analyze --help`.
pub const DECODED_LAYERS: &str = decoded_layers!();

/// [`DECODED_LAYERS`], as a literal that `concat!` takes.
macro_rules! decoded_layers {
    () => {
        "802.1Q/802.1ad VLAN tags (QinQ), VN-Tag, PBB, Cisco FabricPath, MPLS, PPPoE, PPP, 802.11 (A-MSDUs too), GRE (with ERSPAN I/II/III, PPTP, WCCP and Aruba's 802.11, and in UDP), IP in IP, VXLAN, Geneve, GTP-U, AYIYA and Teredo, and IP fragments reassembled"
    };
}
use decoded_layers;

/// What `analyze --help` says it reads.
pub(crate) const ANALYZE_READS: &str = concat!(
    "Reads link types Ethernet, Linux cooked (SLL, SLL2), BSD and OpenBSD loopback, raw IP, PPP, Cisco HDLC, FDDI, IEEE 802.11 (also with radiotap) and Linux NFLOG; through ",
    decoded_layers!(),
    ". What it does not decode is counted by name on stderr."
);

/// Why a capture's link type cannot be decoded, or None if it can.
pub(crate) fn undecodable_linktype(linktype: i32) -> Option<String> {
    if DECODED_LINKTYPES.iter().any(|(lt, _)| *lt == linktype) {
        return None;
    }
    let known: Vec<&str> = DECODED_LINKTYPES.iter().map(|(_, n)| *n).collect();
    Some(format!(
        "link type {linktype} is not one teardown decodes; it reads {}",
        known.join(", ")
    ))
}

/// Parses one captured frame, through any tunnels, to the TCP segment it
/// carries: the first one, for a frame that holds several (an 802.11
/// A-MSDU); an IP fragment is not reassembled (see [`Decoder`]).
pub(crate) fn parse_frame<D: AsRef<[u8]>>(
    linktype: i32,
    index: usize,
    packet: &RawPacket<D>,
) -> Frame {
    let mut first = None;
    walk_frame(linktype, index, packet, None, &mut |f| {
        first.get_or_insert(f);
    });
    first.unwrap_or(Frame::Other(Skipped::TooDeep))
}

/// Frames of a capture read in order, with what reading them in order
/// allows: IP fragments reassembled ([`defrag`]), and every packet of a
/// frame that holds several.
#[derive(Default)]
pub(crate) struct Decoder {
    defrag: defrag::Defrag,
}

impl Decoder {
    /// The frames in `packet` (usually one; none more than the A-MSDU's
    /// subframes): each TCP segment, or why it holds none. A fragment held
    /// for the rest of its datagram is [`Skipped::Fragment`]; the datagram
    /// is read when its last fragment comes.
    pub fn decode<D: AsRef<[u8]>>(
        &mut self,
        linktype: i32,
        index: usize,
        packet: &RawPacket<D>,
        out: &mut impl FnMut(Frame),
    ) {
        walk_frame(linktype, index, packet, Some(&mut self.defrag), out);
    }

    /// Fragments given up so far (cut by the snapshot length, too old, too
    /// many waiting) and still waiting: at the end of a capture, those
    /// whose datagram was never read.
    pub(crate) fn fragments_lost(&self) -> u64 {
        self.defrag.given_up()
    }
}

/// Where a frame came from.
#[derive(Clone, Copy)]
struct At {
    index: usize,
    ts_us: i64,
    orig_len: u32,
}

fn walk_frame<D: AsRef<[u8]>>(
    linktype: i32,
    index: usize,
    packet: &RawPacket<D>,
    defrag: Option<&mut defrag::Defrag>,
    out: &mut impl FnMut(Frame),
) {
    let data = packet.data.as_ref();
    let at = At {
        index,
        ts_us: packet.ts_us,
        orig_len: packet.orig_len,
    };
    if let Some(seg) = plain_tcp(linktype, data, at) {
        return out(Frame::Tcp(seg));
    }
    match link_layer(linktype, data) {
        Ok(layer) => walk(layer, data, at, defrag, 0, out),
        Err(e) => out(Frame::Malformed(e)),
    }
}

/// The most common frame, read without the general walk: untagged
/// Ethernet, then IPv4 without options or fragments, or IPv6 without
/// extension headers, then TCP, all captured. Anything else, or anything
/// odd about it, is None, and [`walk`] reads the frame; where this reads
/// one, it reads the same segment (a property test holds it to that).
/// On a capture of small packets the general walk was a third of the
/// reading thread's time.
fn plain_tcp(linktype: i32, frame: &[u8], at: At) -> Option<Segment> {
    if linktype != linktype::ETHERNET {
        return None;
    }
    let ip = frame.get(14..)?;
    let be16 = tunnel::be16;
    let (src, dst, ip_len, tcp) = match (be16(frame, 12)?, ip.first()? >> 4) {
        (0x0800, 4) => {
            let h = ip.get(..20)?;
            let total = usize::from(be16(h, 2)?);
            // No options (IHL 5); neither More Fragments nor an offset.
            let plain = h[0] & 0x0f == 5 && be16(h, 6)? & 0x3fff == 0 && h[9] == 6;
            if !plain || total < 40 || total > ip.len() {
                return None;
            }
            let addr = |at: usize| Some(IpAddr::from(<[u8; 4]>::try_from(&h[at..at + 4]).ok()?));
            (addr(12)?, addr(16)?, total, &ip[20..total])
        }
        (0x86dd, 6) => {
            let h = ip.get(..40)?;
            let payload = usize::from(be16(h, 4)?);
            if h[6] != 6 || payload < 20 || 40 + payload > ip.len() {
                return None;
            }
            let addr = |at: usize| Some(IpAddr::from(<[u8; 16]>::try_from(&h[at..at + 16]).ok()?));
            (addr(8)?, addr(24)?, 40 + payload, &ip[40..40 + payload])
        }
        _ => return None,
    };
    let t = TcpFixed::read(tcp).ok()?;
    let len = u32::try_from(tcp.len().checked_sub(t.header_len)?).ok()?;
    Some(t.segment(at, src, dst, len, ip_len))
}

/// Follows `layer`, a part of `frame`, down to TCP.
fn walk(
    mut layer: Layer<'_>,
    frame: &[u8],
    at: At,
    mut defrag: Option<&mut defrag::Defrag>,
    depth: usize,
    out: &mut impl FnMut(Frame),
) {
    for depth in depth..MAX_LAYERS {
        let ip = match tunnel::step(layer) {
            Ok(Step::Inner(inner)) => {
                layer = inner;
                continue;
            }
            Ok(Step::Ip(ip)) => ip,
            Ok(Step::Amsdu(body)) => {
                let mut subframes = 0;
                for sub in tunnel::amsdu(body) {
                    subframes += 1;
                    match sub {
                        Ok(Step::Inner(inner)) => {
                            walk(inner, frame, at, defrag.as_deref_mut(), depth + 1, out)
                        }
                        Ok(Step::Skip(why)) => out(Frame::Other(why)),
                        Ok(_) => out(Frame::Other(Skipped::TooDeep)),
                        Err(e) => out(Frame::Malformed(e)),
                    }
                }
                if subframes == 0 {
                    out(Frame::Other(Skipped::Layer(
                        "802.11 A-MSDUs without a subframe",
                    )));
                }
                return;
            }
            Ok(Step::Skip(why)) => return out(Frame::Other(why)),
            Err(e) => return out(Frame::Malformed(e)),
        };
        // What precedes the IP header in the frame (link header, tags,
        // outer tunnels), for a length field left 0 by segmentation offload.
        let link_len = (ip.as_ptr() as usize).saturating_sub(frame.as_ptr() as usize);
        match ip_packet(ip, link_len, at) {
            Ok(IpPayload::Tcp(seg)) => return out(Frame::Tcp(seg)),
            Ok(IpPayload::Inner(inner)) => layer = inner,
            Ok(IpPayload::Skip(why)) => return out(Frame::Other(why)),
            Ok(IpPayload::Fragment(piece)) => {
                let Some(d) = defrag else {
                    return out(Frame::Other(Skipped::Fragment));
                };
                return match d.push(&piece, at.ts_us) {
                    defrag::Outcome::Held | defrag::Outcome::GivenUp => {
                        out(Frame::Other(Skipped::Fragment))
                    }
                    defrag::Outcome::Complete(p) => {
                        let at = At {
                            orig_len: u32::try_from(p.len()).unwrap_or(u32::MAX),
                            ..at
                        };
                        walk(Layer::Ip(&p), &p, at, Some(d), depth + 1, out)
                    }
                };
            }
            Err(e) => return out(Frame::Malformed(e)),
        }
    }
    out(Frame::Other(Skipped::TooDeep))
}

/// What an IP packet carries.
enum IpPayload<'a> {
    Tcp(Segment),
    Inner(Layer<'a>),
    Skip(Skipped),
    /// A fragment of a larger datagram.
    Fragment(defrag::Piece<'a>),
}

/// Reads the IP packet `ip`, which `link_len` bytes of the frame precede
/// (link header, tags, outer tunnels).
fn ip_packet(ip: &[u8], link_len: usize, at: At) -> Result<IpPayload<'_>, String> {
    let parsed = match LaxIpSlice::from_slice(ip) {
        Ok((parsed, _)) => parsed,
        Err(e) => return Err(format!("IP header: {e}")),
    };
    // (identification, byte offset, more fragments) of a fragment.
    let mut fragment = None;
    let (src_ip, dst_ip, ip_payload, full_len, ip_len) = match &parsed {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            if h.is_fragmenting_payload() {
                fragment = Some((
                    u32::from(h.identification()),
                    h.fragments_offset().byte_offset(),
                    h.more_fragments(),
                ));
            }
            let header_len =
                h.slice().len() + v4.extensions().auth.as_ref().map_or(0, |a| a.slice().len());
            let total = match h.total_len() as usize {
                // TSO super-packets may carry 0; fall back to the frame length.
                0 => (at.orig_len as usize).saturating_sub(link_len),
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
            if v6.is_payload_fragmented() {
                fragment = v6.extensions().clone().into_iter().find_map(|e| match e {
                    etherparse::Ipv6ExtensionSlice::Fragment(f) => Some((
                        f.identification(),
                        f.fragment_offset().byte_offset(),
                        f.more_fragments(),
                    )),
                    _ => None,
                });
            }
            let ext_len = v6.extensions().slice().len();
            let payload_len = match h.payload_length() as usize {
                0 => (at.orig_len as usize).saturating_sub(link_len + 40),
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
    if let Some((id, offset, more)) = fragment {
        let data = ip_payload.payload;
        return Ok(IpPayload::Fragment(defrag::Piece {
            src: src_ip,
            dst: dst_ip,
            id,
            protocol: ip_payload.ip_number.0,
            offset: usize::from(offset),
            more,
            whole: data.len() >= full_len,
            data: &data[..data.len().min(full_len)],
        }));
    }
    if ip_payload.ip_number != IpNumber::TCP {
        return Ok(
            match tunnel::above_ip(ip_payload.ip_number.0, ip_payload.payload)? {
                Step::Inner(inner) => IpPayload::Inner(inner),
                Step::Ip(inner) => IpPayload::Inner(Layer::Ip(inner)),
                Step::Skip(why) => IpPayload::Skip(why),
                // Only an 802.11 header says A-MSDU; none sits right above IP.
                Step::Amsdu(_) => IpPayload::Skip(Skipped::Layer("A-MSDU right above IP")),
            },
        );
    }
    let tcp = TcpFixed::read(ip_payload.payload)?;
    let Some(len) = full_len
        .checked_sub(tcp.header_len)
        .and_then(|l| u32::try_from(l).ok())
    else {
        return Err(format!(
            "IP payload ({full_len} bytes) shorter than the TCP header ({})",
            tcp.header_len
        ));
    };
    Ok(IpPayload::Tcp(tcp.segment(at, src_ip, dst_ip, len, ip_len)))
}

/// The fixed 20 bytes of a TCP header, which is all a segment needs: its
/// options may be cut by the snapshot length (a capture taken with
/// `-s 68`, or with tags and tunnels in front) and the segment is still
/// read. (Zeek skips such a segment; tshark reads it as teardown does.)
struct TcpFixed {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: Flags,
    window: u16,
    /// From the data offset: options included, even where they were cut.
    header_len: usize,
}

impl TcpFixed {
    const LEN: usize = 20;

    /// The segment this header starts, `at` that place in the capture,
    /// from `src` to `dst` (the header has their ports), with `len` bytes
    /// of payload in an IP packet of `ip_len` bytes.
    fn segment(&self, at: At, src: IpAddr, dst: IpAddr, len: u32, ip_len: usize) -> Segment {
        Segment {
            index: at.index,
            ts_us: at.ts_us,
            src: SocketAddr::new(src, self.src_port),
            dst: SocketAddr::new(dst, self.dst_port),
            seq: SeqNum(self.seq),
            ack: SeqNum(self.ack),
            flags: self.flags,
            window: self.window,
            len,
            ip_len: u32::try_from(ip_len).unwrap_or(u32::MAX),
        }
    }

    fn read(d: &[u8]) -> Result<TcpFixed, String> {
        let Some(h) = d.get(..Self::LEN) else {
            return Err(format!(
                "TCP header: {} bytes captured, its fixed part is {}",
                d.len(),
                Self::LEN
            ));
        };
        let be16 = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
        let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let header_len = usize::from(h[12] >> 4) * 4;
        if header_len < Self::LEN {
            return Err(format!(
                "TCP header: data offset {header_len} bytes, less than the fixed {}",
                Self::LEN
            ));
        }
        Ok(TcpFixed {
            src_port: be16(0),
            dst_port: be16(2),
            seq: be32(4),
            ack: be32(8),
            // Byte 13 holds the eight flag bits.
            flags: Flags::from_bits(h[13]),
            window: be16(14),
            header_len,
        })
    }
}

/// The first layer of a frame of `linktype`.
fn link_layer(linktype: i32, data: &[u8]) -> Result<Layer<'_>, String> {
    match linktype {
        linktype::ETHERNET => Ok(Layer::Ethernet(data)),
        linktype::NULL | linktype::LOOP => after_link_header(data, 4).map(Layer::Ip),
        linktype::RAW
        | linktype::RAW_BSD
        | linktype::RAW_OPENBSD
        | linktype::IPV4
        | linktype::IPV6 => Ok(Layer::Ip(data)),
        // Linux cooked captures: the protocol (an EtherType, so VLAN tags
        // are followed too) at bytes 14..16 (SLL) or 0..2 (SLL2).
        linktype::LINUX_SLL => cooked(data, 14, 16),
        linktype::LINUX_SLL2 => cooked(data, 0, 20),
        linktype::PPP => Ok(Layer::Ppp(data)),
        // Cisco HDLC: address, control, then an EtherType.
        linktype::C_HDLC => cooked(data, 2, 4),
        // FDDI: frame control and two addresses, then LLC.
        linktype::FDDI => after_link_header(data, 13).map(Layer::Llc),
        linktype::IEEE802_11 => Ok(Layer::Wifi(data)),
        linktype::IEEE802_11_RADIOTAP => Ok(Layer::Radiotap(data)),
        linktype::NFLOG => Ok(Layer::Nflog(data)),
        other => Err(format!("unsupported link type {other}")),
    }
}

/// What follows a link header of `len` bytes.
fn after_link_header(data: &[u8], len: usize) -> Result<&[u8], String> {
    data.get(len..)
        .ok_or_else(|| format!("frame shorter than its {len}-byte link header"))
}

/// A frame whose EtherType is at `type_at`, its header `len` long.
fn cooked(data: &[u8], type_at: usize, len: usize) -> Result<Layer<'_>, String> {
    let rest = after_link_header(data, len)?;
    let ether_type = EtherType(u16::from_be_bytes([data[type_at], data[type_at + 1]]));
    Ok(Layer::Ether(ether_type, rest))
}

/// Parses every frame; returns the TCP segments and the problems found.
pub fn segments(linktype: i32, packets: &[RawPacket]) -> (Vec<Segment>, Vec<String>) {
    let mut segs = Vec::with_capacity(packets.len());
    let mut findings = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        match parse_frame(linktype, i, p) {
            Frame::Tcp(s) => segs.push(s),
            Frame::Other(_) => {}
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

    /// A snapshot length that cuts the TCP options (timestamps behind a
    /// VLAN tag with `-s 68`) leaves the segment readable: its fixed
    /// header and the payload length the IP header gives.
    #[test]
    fn options_cut_by_the_snaplen_leave_the_segment() {
        use etherparse::TcpOptionElement::{Noop, Timestamp};
        let builder = eth_v4()
            .tcp(443, 50000, 7, 100)
            .syn()
            .ack(9)
            .options(&[Noop, Noop, Timestamp(1, 2)])
            .unwrap();
        let p = frame(builder, &[1u8; 300]);
        let fixed_end = 14 + 20 + 20;
        for cut in fixed_end..fixed_end + 12 {
            let short = RawPacket {
                data: p.data[..cut].to_vec(),
                ..p.clone()
            };
            let Frame::Tcp(s) = parse_frame(linktype::ETHERNET, 0, &short) else {
                panic!("cut at {cut}: not read")
            };
            assert_eq!((s.len, s.seq, s.ack), (300, SeqNum(7), SeqNum(9)));
            assert_eq!(s.flags.to_string(), "S.");
        }
        let mut bad = p.clone();
        bad.data[14 + 20 + 12] = 0x40; // data offset 16 bytes
        assert!(
            matches!(parse_frame(linktype::ETHERNET, 0, &bad), Frame::Malformed(m) if m.contains("data offset 16"))
        );
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
                Frame::Malformed(_) | Frame::Other(_) => {}
                Frame::Tcp(s) => panic!("cut at {cut} parsed as {s:?}"),
            }
        }
        assert!(
            matches!(parse_frame(999, 0, &p), Frame::Malformed(m) if m.contains("link type 999"))
        );
    }

    /// A [`Decoder`] reads every packet of an A-MSDU and puts IP fragments
    /// back together, in any order, for IPv4 and IPv6; a fragment alone
    /// is never read as TCP.
    #[test]
    fn a_decoder_reads_subframes_and_reassembles_fragments() {
        let tcp_packet = |ip: PacketBuilderStep<IpHeaders>, payload: &[u8]| {
            let mut out = Vec::new();
            ip.tcp(40000, 80, 1000, 512)
                .ack(7)
                .write(&mut out, payload)
                .unwrap();
            out
        };
        let v4 = tcp_packet(
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
            &[5; 3000],
        );
        let v6 = tcp_packet(PacketBuilder::ipv6([1; 16], [2; 16], 64), &[6; 3000]);
        let raw = |d: Vec<u8>| RawPacket {
            ts_us: 1,
            orig_len: d.len() as u32,
            data: d,
        };
        let frames = |decoder: &mut Decoder, lt: i32, packets: &[Vec<u8>]| {
            let mut all = Vec::new();
            for (i, p) in packets.iter().enumerate() {
                decoder.decode(lt, i, &raw(p.clone()), &mut |f| all.push(f));
            }
            all
        };
        // IPv4: the TCP header and payload cut at 1480 and 2960.
        let v4_fragment = |from: usize, to: usize, more: bool| {
            let payload = &v4[20..];
            let to = to.min(payload.len());
            let mut h = etherparse::Ipv4Header::new(
                (to - from) as u16,
                64,
                IpNumber::TCP,
                [10, 0, 0, 1],
                [10, 0, 0, 2],
            )
            .unwrap();
            h.identification = 99;
            h.more_fragments = more;
            h.fragment_offset = etherparse::IpFragOffset::try_new((from / 8) as u16).unwrap();
            [&h.to_bytes()[..], &payload[from..to]].concat()
        };
        let pieces = [
            v4_fragment(2960, 9999, false),
            v4_fragment(0, 1480, true),
            v4_fragment(1480, 2960, true),
        ];
        let mut d = Decoder::default();
        let got = frames(&mut d, linktype::RAW, &pieces);
        assert_eq!(
            got[..2],
            [
                Frame::Other(Skipped::Fragment),
                Frame::Other(Skipped::Fragment)
            ]
        );
        let Frame::Tcp(s) = &got[2] else {
            panic!("{got:?}")
        };
        assert_eq!((s.len, s.index, s.seq), (3000, 2, SeqNum(1000)));
        assert_eq!(d.fragments_lost(), 0);
        // Alone, the first fragment is not a segment.
        assert_eq!(
            parse_frame(linktype::RAW, 0, &raw(pieces[1].clone())),
            Frame::Other(Skipped::Fragment)
        );
        // Cut by the snapshot length: never whole, counted as lost.
        let mut d = Decoder::default();
        let mut cut = raw(pieces[1].clone());
        cut.data.truncate(100);
        d.decode(linktype::RAW, 0, &cut, &mut |_| {});
        assert_eq!(d.fragments_lost(), 1);
        // IPv6: a fragment header after the fixed header.
        let v6_fragment = |from: usize, to: usize, more: bool| {
            let payload = &v6[40..];
            let to = to.min(payload.len());
            let mut h = v6[..40].to_vec();
            h[4..6].copy_from_slice(&((8 + to - from) as u16).to_be_bytes());
            h[6] = 44;
            let offset = ((from / 8) as u16) << 3 | u16::from(more);
            let frag = [&[6, 0][..], &offset.to_be_bytes(), &[0, 0, 0, 42]].concat();
            [&h[..], &frag, &payload[from..to]].concat()
        };
        let mut d = Decoder::default();
        let got = frames(
            &mut d,
            linktype::RAW,
            &[v6_fragment(0, 1448, true), v6_fragment(1448, 9999, false)],
        );
        assert!(matches!(&got[1], Frame::Tcp(s) if s.len == 3000), "{got:?}");
        // An A-MSDU of two subframes: two segments from one frame.
        let sub = |ip: &[u8]| {
            let body = [&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00][..], ip].concat();
            let mut s = vec![0; 12];
            s.extend_from_slice(&(body.len() as u16).to_be_bytes());
            s.extend_from_slice(&body);
            s.resize(s.len().div_ceil(4) * 4, 0);
            s
        };
        let small = tcp_packet(
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64),
            b"abc",
        );
        let wifi = [
            &[0x88, 0x01][..],
            &[0; 22],
            &[0x80, 0],
            &sub(&small),
            &sub(&small),
        ]
        .concat();
        let got = frames(&mut Decoder::default(), linktype::IEEE802_11, &[wifi]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|f| matches!(f, Frame::Tcp(s) if s.len == 3)));
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
                Frame::Other(Skipped::EtherType(0x0806))
            );
            // Nor is 802.3 without SNAP (spanning tree's LLC, 0x42 0x42),
            // whatever its length: one kind, not one per length.
            for len in [38u16, 39] {
                let mut stp = macs.clone();
                stp.extend_from_slice(&len.to_be_bytes());
                stp.extend_from_slice(&[0x42, 0x42, 0x03]);
                stp.extend_from_slice(&[0; 35]);
                assert_eq!(
                    parse_frame(linktype::ETHERNET, 0, &raw(stp, 0)),
                    Frame::Other(Skipped::EtherType(0))
                );
            }
        }
    }

    /// Wrappers of an IP packet as captures from the field carry them:
    /// each gives the same segment as the bare packet (the one inside,
    /// never the outer one), and a layer teardown does not decode is
    /// skipped with its name.
    #[test]
    fn tunnelled_frames_give_the_inner_segment() {
        let mut inner = Vec::new();
        PacketBuilder::ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
            .tcp(40000, 80, 1000, 512)
            .fin()
            .ack(77)
            .write(&mut inner, b"hello")
            .unwrap();
        let mut inner6 = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(40000, 80, 1000, 512)
            .ack(77)
            .write(&mut inner6, b"hi")
            .unwrap();
        let ether = |ether_type: u16, payload: &[u8]| {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&ether_type.to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        let cat = |parts: &[&[u8]]| parts.concat();
        // Outer IPv4 of protocol `proto` around `payload`.
        let outer_ip = |proto: u8, payload: &[u8]| {
            let mut h = etherparse::Ipv4Header::new(
                payload.len() as u16,
                64,
                IpNumber(proto),
                [192, 0, 2, 1],
                [192, 0, 2, 2],
            )
            .unwrap();
            h.header_checksum = h.calc_header_checksum();
            let mut out = h.to_bytes().to_vec();
            out.extend_from_slice(payload);
            out
        };
        let udp = |src: u16, dst: u16, payload: &[u8]| {
            let mut u = src.to_be_bytes().to_vec();
            u.extend_from_slice(&dst.to_be_bytes());
            u.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
            u.extend_from_slice(&[0, 0]);
            u.extend_from_slice(payload);
            u
        };
        let eth_inner = ether(0x0800, &inner);
        let mpls1 = [0x00, 0x01, 0x01, 0x40]; // label 16, bottom of stack
        let mpls_mid = [0x00, 0x02, 0x00, 0x40]; // label 32, not bottom
        let pppoe = |ppp: &[u8]| {
            let mut h = vec![0x11, 0x00, 0x12, 0x34];
            h.extend_from_slice(&(ppp.len() as u16).to_be_bytes());
            h.extend_from_slice(ppp);
            h
        };
        let ppp_ip = cat(&[&[0x00, 0x21], &inner]);
        let vlan = |id: u8, next: u16| {
            let mut t = vec![0x00, id];
            t.extend_from_slice(&next.to_be_bytes());
            t
        };
        let gre = |flags: u8, proto: u16, extra: &[u8], payload: &[u8]| {
            cat(&[&[flags, 0x00], &proto.to_be_bytes(), extra, payload])
        };
        let vxlan = cat(&[&[0x08, 0, 0, 0, 0, 0, 0x2a, 0], &eth_inner]);
        let geneve = cat(&[&[0x00, 0x00, 0x65, 0x58, 0, 0, 0x2a, 0], &eth_inner]);
        // GTP-U: flags, G-PDU, length, TEID, then `extra` and the packet.
        let gtp = |flags: u8, extra: &[u8], payload: &[u8]| {
            let len = (extra.len() + payload.len()) as u16;
            cat(&[
                &[flags, 0xff],
                &len.to_be_bytes(),
                &[0, 0, 0, 7],
                extra,
                payload,
            ])
        };
        // An 802.11 QoS data frame to the access point (To DS), without
        // and with an A-MSDU bit, around LLC/SNAP and an IPv4 packet.
        let llc = |payload: &[u8]| cat(&[&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00], payload]);
        let wifi = |qos: u8, body: &[u8]| cat(&[&[0x88, 0x01], &[0; 22], &[qos, 0], body]);
        let wifi_inner = wifi(0, &llc(&inner));
        let teredo_origin = cat(&[&[0x00, 0x00, 0, 0, 0, 0, 0, 0], &inner6]);
        let cases: Vec<(&str, i32, Vec<u8>, &[u8])> = vec![
            (
                "MPLS",
                linktype::ETHERNET,
                ether(0x8847, &cat(&[&mpls1, &inner])),
                &inner,
            ),
            (
                "MPLS, two labels",
                linktype::ETHERNET,
                ether(0x8847, &cat(&[&mpls_mid, &mpls1, &inner6])),
                &inner6,
            ),
            (
                "MPLS, pseudowire control word and Ethernet",
                linktype::ETHERNET,
                ether(0x8847, &cat(&[&mpls1, &[0, 0, 0, 0], &eth_inner])),
                &inner,
            ),
            (
                "PPPoE",
                linktype::ETHERNET,
                ether(0x8864, &pppoe(&ppp_ip)),
                &inner,
            ),
            (
                "PPPoE in QinQ",
                linktype::ETHERNET,
                ether(
                    0x88a8,
                    &cat(&[&vlan(10, 0x8100), &vlan(20, 0x8864), &pppoe(&ppp_ip)]),
                ),
                &inner,
            ),
            (
                "GRE",
                linktype::ETHERNET,
                ether(0x0800, &outer_ip(47, &gre(0, 0x0800, &[], &inner))),
                &inner,
            ),
            (
                "GRE with checksum, key and sequence",
                linktype::ETHERNET,
                ether(0x0800, &outer_ip(47, &gre(0xb0, 0x0800, &[0; 12], &inner))),
                &inner,
            ),
            (
                "GRE, transparent Ethernet",
                linktype::RAW,
                outer_ip(47, &gre(0, 0x6558, &[], &eth_inner)),
                &inner,
            ),
            (
                "ERSPAN I",
                linktype::ETHERNET,
                ether(0x0800, &outer_ip(47, &gre(0, 0x88be, &[], &eth_inner))),
                &inner,
            ),
            (
                "WCCP redirection (GRE), with its redirect header",
                linktype::ETHERNET,
                ether(
                    0x0800,
                    &outer_ip(47, &gre(0, 0x883e, &[0x05, 0x59, 0x00, 0x48], &inner)),
                ),
                &inner,
            ),
            (
                "WCCP redirection (GRE), IPv4 at once",
                linktype::ETHERNET,
                ether(0x0800, &outer_ip(47, &gre(0, 0x883e, &[], &inner))),
                &inner,
            ),
            (
                "Cisco FabricPath",
                linktype::ETHERNET,
                ether(0x8903, &cat(&[&[0x00, 0x3f], &[0; 12], &eth_inner[12..]])),
                &inner,
            ),
            (
                "ERSPAN II",
                linktype::ETHERNET,
                ether(
                    0x0800,
                    &outer_ip(
                        47,
                        &gre(0x10, 0x88be, &[0; 4], &cat(&[&[0; 8], &eth_inner])),
                    ),
                ),
                &inner,
            ),
            (
                "PPTP (enhanced GRE, PPP)",
                linktype::RAW,
                outer_ip(
                    47,
                    &cat(&[&[0x30, 0x01, 0x88, 0x0b], &[0; 8], &[0xff, 0x03], &ppp_ip]),
                ),
                &inner,
            ),
            (
                "VXLAN",
                linktype::ETHERNET,
                ether(0x0800, &outer_ip(17, &udp(50000, 4789, &vxlan))),
                &inner,
            ),
            (
                "Geneve",
                linktype::ETHERNET,
                ether(0x0800, &outer_ip(17, &udp(50000, 6081, &geneve))),
                &inner,
            ),
            ("IP in IP", linktype::RAW, outer_ip(4, &inner), &inner),
            (
                "IPv6 in IPv4",
                linktype::RAW,
                outer_ip(41, &inner6),
                &inner6,
            ),
            (
                "Teredo, with an origin indication",
                linktype::RAW,
                outer_ip(17, &udp(3544, 50000, &teredo_origin)),
                &inner6,
            ),
            (
                "Teredo from a relay's own port, known by its content",
                linktype::RAW,
                outer_ip(17, &udp(32900, 3797, &inner6)),
                &inner6,
            ),
            (
                "GRE in UDP",
                linktype::RAW,
                outer_ip(17, &udp(50000, 4754, &gre(0, 0x0800, &[], &inner))),
                &inner,
            ),
            (
                "GTP-U",
                linktype::RAW,
                outer_ip(17, &udp(2152, 2152, &gtp(0x30, &[], &inner))),
                &inner,
            ),
            (
                "GTP-U with a sequence number and an extension header",
                linktype::RAW,
                outer_ip(
                    17,
                    &udp(
                        2152,
                        2152,
                        &gtp(0x36, &[0, 1, 0, 0x85, 1, 0x10, 0x05, 0], &inner6),
                    ),
                ),
                &inner6,
            ),
            (
                "AYIYA",
                linktype::RAW,
                outer_ip(
                    17,
                    &udp(
                        5072,
                        5072,
                        &cat(&[
                            &[0x41, 0x52, 0x11, 41],
                            &[0; 4],
                            &[0; 16],
                            &[0; 20],
                            &inner6,
                        ]),
                    ),
                ),
                &inner6,
            ),
            (
                "IEEE 802.3 with LLC/SNAP",
                linktype::ETHERNET,
                {
                    let snap = llc(&inner);
                    cat(&[&[0; 12], &(snap.len() as u16).to_be_bytes(), &snap])
                },
                &inner,
            ),
            (
                "FDDI",
                linktype::FDDI,
                cat(&[&[0x50], &[0; 12], &llc(&inner)]),
                &inner,
            ),
            (
                "802.11 QoS data",
                linktype::IEEE802_11,
                wifi_inner.clone(),
                &inner,
            ),
            (
                "802.11 behind radiotap",
                linktype::IEEE802_11_RADIOTAP,
                cat(&[&[0, 0, 12, 0], &[0; 8], &wifi_inner]),
                &inner,
            ),
            (
                "Aruba GRE (802.11)",
                linktype::RAW,
                outer_ip(47, &gre(0, 0x8200, &[], &wifi_inner)),
                &inner,
            ),
            (
                "NFLOG, a prefix attribute then the packet (little-endian)",
                linktype::NFLOG,
                cat(&[
                    &[2, 0, 0, 1],
                    &[7, 0, 10, 0, b'a', b'b', b'c', 0],
                    &[(4 + inner.len()) as u8, 0, 9, 0],
                    &inner,
                ]),
                &inner,
            ),
            (
                "NFLOG (big-endian attributes)",
                linktype::NFLOG,
                cat(&[
                    &[10, 0, 0, 1],
                    &[0, 8, 0, 1, 1, 2, 3, 4],
                    &[0, (4 + inner6.len()) as u8, 0, 9],
                    &inner6,
                ]),
                &inner6,
            ),
            (
                "VN-Tag",
                linktype::ETHERNET,
                ether(0x8926, &cat(&[&[0; 4], &0x0800u16.to_be_bytes(), &inner])),
                &inner,
            ),
            (
                "PBB",
                linktype::ETHERNET,
                ether(0x88e7, &cat(&[&[0; 4], &eth_inner])),
                &inner,
            ),
            (
                "PPP link type",
                linktype::PPP,
                cat(&[&[0xff, 0x03], &ppp_ip]),
                &inner,
            ),
            (
                "Cisco HDLC",
                linktype::C_HDLC,
                cat(&[&[0x0f, 0x00, 0x08, 0x00], &inner]),
                &inner,
            ),
        ];
        for (name, lt, data, bare) in cases {
            let p = |d: &[u8]| RawPacket {
                ts_us: 9,
                orig_len: d.len() as u32,
                data: d.to_vec(),
            };
            let want = parse_frame(linktype::RAW, 0, &p(bare));
            assert!(matches!(want, Frame::Tcp(_)), "{name}: the bare packet");
            assert_eq!(parse_frame(lt, 0, &p(&data)), want, "{name}");
            // Cut anywhere, never a panic and never a segment of the
            // wrong length.
            for cut in 0..data.len() {
                if let Frame::Tcp(s) = parse_frame(lt, 0, &p(&data[..cut])) {
                    let Frame::Tcp(w) = &want else { unreachable!() };
                    assert_eq!(s.len, w.len, "{name} cut at {cut}");
                }
            }
        }
        // What is not decoded says what it is.
        let unknown_gre = outer_ip(47, &gre(0, 0x1234, &[], &inner));
        let plain_udp = outer_ip(17, &udp(53, 5353, b"dns"));
        // IPv6 by its first byte, but not by its length: not Teredo.
        let almost_teredo = outer_ip(17, &udp(32900, 3797, &inner6[..inner6.len() - 1]));
        let gtp_signalling = outer_ip(
            17,
            &udp(2152, 2152, &[0x32, 0x01, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0]),
        );
        for (data, want) in [
            (
                unknown_gre,
                Skipped::Layer("GRE carrying a protocol teardown does not decode"),
            ),
            (plain_udp, Skipped::IpProtocol(17)),
            (almost_teredo, Skipped::IpProtocol(17)),
            (
                gtp_signalling,
                Skipped::Layer("GTP-U signalling (not a G-PDU)"),
            ),
        ] {
            let p = RawPacket {
                ts_us: 0,
                orig_len: data.len() as u32,
                data,
            };
            assert_eq!(parse_frame(linktype::RAW, 0, &p), Frame::Other(want));
        }
        assert!(Skipped::IpProtocol(17).is_other_protocol());
        assert!(!Skipped::Layer("x").is_other_protocol());
        assert_eq!(Skipped::IpProtocol(17).to_string(), "UDP (IP protocol 17)");
    }

    /// A frame that nests without end (IP in IP in IP ...) is given up on.
    #[test]
    fn endless_nesting_is_skipped() {
        let mut data = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .tcp(1, 2, 0, 100)
            .write(&mut data, b"")
            .unwrap();
        for _ in 0..MAX_LAYERS + 2 {
            let mut h = etherparse::Ipv4Header::new(
                data.len() as u16,
                64,
                IpNumber(4),
                [192, 0, 2, 1],
                [192, 0, 2, 2],
            )
            .unwrap();
            h.header_checksum = h.calc_header_checksum();
            let mut outer = h.to_bytes().to_vec();
            outer.extend_from_slice(&data);
            data = outer;
        }
        let p = RawPacket {
            ts_us: 0,
            orig_len: data.len() as u32,
            data,
        };
        assert_eq!(
            parse_frame(linktype::RAW, 0, &p),
            Frame::Other(Skipped::TooDeep)
        );
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

        fn linktypes() -> Vec<i32> {
            let mut all: Vec<i32> = DECODED_LINKTYPES.iter().map(|(lt, _)| *lt).collect();
            all.push(7);
            all
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(lt in prop::sample::select(linktypes()),
                                           data in prop::collection::vec(any::<u8>(), 0..120)) {
                let p = RawPacket { ts_us: 0, orig_len: data.len() as u32, data };
                let _ = parse_frame(lt, 0, &p);
            }

            /// A stream of arbitrary frames through one decoder (fragments
            /// held across them): no panic, and at least one frame out
            /// per packet.
            #[test]
            fn a_decoder_never_panics_on_a_stream(lt in prop::sample::select(linktypes()),
                                                  packets in prop::collection::vec(
                                                      prop::collection::vec(any::<u8>(), 0..200), 1..20)) {
                let mut d = Decoder::default();
                for (i, data) in packets.into_iter().enumerate() {
                    let p = RawPacket { ts_us: i as i64, orig_len: data.len() as u32, data };
                    let mut n = 0;
                    d.decode(lt, i, &p, &mut |_| n += 1);
                    prop_assert!(n >= 1);
                }
                let _ = d.fragments_lost();
            }

            /// Where the quick read of a plain frame reads a segment, the
            /// general walk reads the same one: a valid Ethernet frame
            /// (IPv4 or IPv6, TCP options or none, payload or none), some of
            /// its bytes overwritten, maybe cut short.
            #[test]
            fn the_quick_read_agrees_with_the_general_walk(
                v6 in any::<bool>(),
                options in 0usize..3,
                payload in 0usize..40,
                edits in prop::collection::vec((0usize..140, any::<u8>()), 0..4),
                cut in prop::option::of(0usize..140),
            ) {
                let eth = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6]);
                let ip = if v6 {
                    eth.ipv6([1; 16], [2; 16], 64)
                } else {
                    eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                };
                let mut tcp = ip.tcp(40000, 80, 1000, 500).ack(7).psh();
                if options > 0 {
                    tcp = tcp
                        .options(&vec![etherparse::TcpOptionElement::Noop; options * 4])
                        .expect("room for the options");
                }
                let mut data = Vec::new();
                tcp.write(&mut data, &vec![0xab; payload]).expect("a frame");
                for (at, byte) in edits {
                    if let Some(b) = data.get_mut(at) {
                        *b = byte;
                    }
                }
                if let Some(n) = cut {
                    data.truncate(n);
                }
                let at = At { index: 3, ts_us: 9, orig_len: data.len() as u32 };
                if let Some(quick) = plain_tcp(linktype::ETHERNET, &data, at) {
                    let mut general = Vec::new();
                    let layer = link_layer(linktype::ETHERNET, &data).expect("Ethernet");
                    walk(layer, &data, at, None, 0, &mut |f| general.push(f));
                    prop_assert_eq!(general, vec![Frame::Tcp(quick)]);
                }
            }
        }

        /// The quick read takes the common frames (or the property above
        /// would hold of nothing).
        #[test]
        fn the_quick_read_takes_plain_frames_and_leaves_the_rest() {
            let at = At {
                index: 0,
                ts_us: 0,
                orig_len: 0,
            };
            let frame = |b: etherparse::PacketBuilderStep<etherparse::IpHeaders>| {
                let mut data = Vec::new();
                b.tcp(1, 2, 3, 4)
                    .syn()
                    .write(&mut data, b"hi")
                    .expect("a frame");
                data
            };
            let eth = || etherparse::PacketBuilder::ethernet2([1; 6], [2; 6]);
            let v4 = frame(eth().ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64));
            let v6 = frame(eth().ipv6([1; 16], [2; 16], 64));
            let tagged = frame(
                eth()
                    .single_vlan(7.try_into().unwrap())
                    .ipv4([1; 4], [2; 4], 64),
            );
            assert!(plain_tcp(linktype::ETHERNET, &v4, at).is_some_and(|s| s.len == 2));
            assert!(plain_tcp(linktype::ETHERNET, &v6, at).is_some_and(|s| s.len == 2));
            assert_eq!(
                plain_tcp(linktype::ETHERNET, &tagged, at),
                None,
                "a VLAN tag"
            );
            assert_eq!(
                plain_tcp(linktype::ETHERNET, &v4[..v4.len() - 1], at),
                None,
                "cut"
            );
            assert_eq!(
                plain_tcp(linktype::RAW, &v4[14..], at),
                None,
                "not Ethernet"
            );
            assert_eq!(
                parse_frame(
                    linktype::RAW,
                    0,
                    &RawPacket {
                        ts_us: 0,
                        orig_len: 0,
                        data: v4[14..].to_vec()
                    }
                ),
                Frame::Tcp(plain_tcp(linktype::ETHERNET, &v4, at).unwrap())
            );
        }
    }
}
