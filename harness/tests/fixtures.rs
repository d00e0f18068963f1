//! The analyzer on small pcaps the harness itself captured on Linux 6.18.
//! No privileges needed. Each expected value below was read off the same
//! file with `tshark -r` when the fixture was committed.

mod common;

use std::path::{Path, PathBuf};

use teardown::analyze::{self, Analysis, FirstFin};
use teardown::capture;
use teardown::tcp::Side;
use teardown::wire;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn analyze_fixture(name: &str) -> Analysis {
    let c = capture::read_pcap(&fixture(name)).unwrap();
    assert_eq!(
        c.linktype,
        capture::linktype::ETHERNET,
        "Linux captures lo as Ethernet"
    );
    let (segs, findings) = wire::segments(c.linktype, &c.packets);
    assert!(findings.is_empty(), "{findings:?}");
    analyze::analyze(&segs, None, c.packets[0].ts_us)
}

#[test]
fn close_graceful_three_segment_close() {
    let a = analyze_fixture("close-graceful-ipv4.pcap");
    let w = &a.wire;
    assert_eq!(
        (
            w.sides.client.syn,
            w.sides.client.fin,
            w.sides.client.rst,
            w.sides.client.data_bytes
        ),
        (1, 1, 0, 1000)
    );
    assert_eq!(
        (
            w.sides.server.syn,
            w.sides.server.fin,
            w.sides.server.rst,
            w.sides.server.data_bytes
        ),
        (1, 1, 0, 0)
    );
    assert_eq!(w.first_fin, Some(FirstFin::Client));
    assert_eq!(w.close_segments, 3);
    assert_eq!(w.conn_state, "SF");
    assert_eq!(w.history, "ShADaFf");
    assert_eq!((a.acked.client, a.acked.server), (1000, 0));
    assert_eq!(a.ends.unwrap().server.port(), 9000);
}

#[test]
fn close_passive_first_ipv6() {
    let a = analyze_fixture("close-passive-first-ipv6.pcap");
    assert!(a.ends.unwrap().client.is_ipv6());
    assert_eq!(a.wire.first_fin, Some(FirstFin::Server));
    assert_eq!(a.wire.conn_state, "SF");
    assert_eq!(a.wire.history, "ShADafF");
}

#[test]
fn close_with_unread_data_is_a_reset_after_the_data_was_acked() {
    let a = analyze_fixture("close-unread-data-ipv4.pcap");
    assert_eq!((a.wire.sides.server.fin, a.wire.sides.server.rst), (0, 1));
    assert_eq!(a.wire.first_rst, Some(Side::Server));
    assert_eq!(a.wire.first_fin, None);
    assert_eq!(a.wire.conn_state, "RSTR");
    assert_eq!(a.acked.client, 1000, "acknowledged, yet never read");
}

#[test]
fn linger_zero_reset_after_window_full() {
    let a = analyze_fixture("linger-zero-ipv4.pcap");
    assert_eq!(
        (
            a.wire.sides.client.fin,
            a.wire.sides.client.rst,
            a.wire.sides.client.data_bytes
        ),
        (0, 1, 24576)
    );
    assert_eq!(a.wire.conn_state, "RSTO");
    assert_eq!(a.acked.client, 8192);
    let rst = a.packets.last().unwrap();
    assert_eq!(
        (rst.flags.to_string().as_str(), rst.seq),
        ("R.", 24577),
        "RST at snd_nxt"
    );
}

#[test]
fn linger_timeout_zero_window_probes_are_not_data() {
    let a = analyze_fixture("linger-timeout-blocking-ipv4.pcap");
    assert_eq!(a.wire.sides.client.data_bytes, 10240);
    assert_eq!(
        a.wire.sides.client.retransmits, 0,
        "zero-window probes carry no payload"
    );
    assert!(
        a.wire.history.contains('w'),
        "the server advertised a zero window"
    );
    assert_eq!(a.wire.first_fin, Some(FirstFin::Client));
    let fin = a.packets.iter().find(|p| p.flags.fin()).unwrap();
    assert_eq!(
        (fin.flags.to_string().as_str(), fin.len),
        ("FP.", 2048),
        "the FIN rides on the last data"
    );
    assert!(
        fin.t_ms > 1000.0,
        "only after the linger timeout and the drain"
    );
}

#[test]
fn shutdown_rdwr_then_data_draws_a_bare_rst() {
    let a = analyze_fixture("shutdown-rdwr-ipv6.pcap");
    assert_eq!((a.wire.sides.server.fin, a.wire.sides.server.rst), (1, 1));
    assert_eq!(a.wire.sides.client.data_bytes, 100);
    assert_eq!(a.acked.client, 0);
    let rst = a.packets.last().unwrap();
    assert_eq!((rst.flags.to_string().as_str(), rst.ack), ("R", None));
}

#[test]
fn truncated_pcap_is_an_error_naming_the_file() {
    let bytes = std::fs::read(fixture("close-graceful-ipv4.pcap")).unwrap();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-trunc-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    for cut in [10, 24 + 8, 300, bytes.len() - 5] {
        let path = dir.join(format!("cut{cut}.pcap"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = capture::read_pcap(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("cut{cut}.pcap")), "{err}");
    }
}

/// A gzip-compressed capture (`.pcap.gz`) reads as the capture itself;
/// one whose compressed stream breaks off keeps the packets before the
/// break and says where and why; gzip that does not decompress is an
/// error naming the file.
#[test]
fn gzip_compressed_captures_read_as_the_capture() {
    use std::io::Write;
    use teardown::analyze::file::each_connection;
    let plain = fixture("close-graceful-ipv4.pcap");
    let bytes = std::fs::read(&plain).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes).unwrap();
    let gz = gz.finish().unwrap();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-gz-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let conns = |path: &Path| {
        let mut all = Vec::new();
        let stats = each_connection(path, |f| all.push(f)).unwrap();
        (stats, all)
    };
    let whole = dir.join("whole.pcap.gz");
    std::fs::write(&whole, &gz).unwrap();
    let (plain_stats, plain_conns) = conns(&plain);
    let (gz_stats, gz_conns) = conns(&whole);
    assert_eq!(gz_conns, plain_conns);
    assert_eq!(gz_stats.packets, plain_stats.packets);
    assert_eq!(gz_stats.stopped, None);
    // Cut inside the compressed stream: the packets before, and why.
    let cut = dir.join("cut.pcap.gz");
    std::fs::write(&cut, &gz[..gz.len() * 2 / 3]).unwrap();
    let (cut_stats, _) = conns(&cut);
    assert!(cut_stats.packets < plain_stats.packets, "{cut_stats:?}");
    let why = cut_stats.stopped.expect("the break is reported");
    assert!(
        why.contains("compressed file breaks off") && why.contains("gzip"),
        "{why}"
    );
    // Not gzip after its magic number.
    let bad = dir.join("bad.pcap.gz");
    std::fs::write(&bad, [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9]).unwrap();
    let err = each_connection(&bad, |_| {}).unwrap_err().to_string();
    assert!(
        err.contains("bad.pcap.gz") && err.contains("does not decompress"),
        "{err}"
    );
}

/// Captures shaped as they come from the field, made from a catalogue pcap
/// (handshake, data both ways, a RST): cut to start at the SYN-ACK or
/// mid-connection, every frame wrapped in MPLS, PPPoE in QinQ, GRE,
/// VXLAN, GTP-U or GRE in UDP, every TCP header's options cut by the
/// snapshot length, every frame ending in its frame check sequence (the
/// link-type field's high bits say so), and a pcapng (also with the obsolete Packet Blocks)
/// whose two interfaces differ in link type and snapshot length.
/// `teardown analyze` counts, per direction, the SYNs,
/// FINs, RSTs and distinct payload bytes that tshark reads in the same
/// file (needs tshark).
#[test]
fn field_shaped_captures_read_as_tshark_reads_them() {
    use teardown::analyze::file::each_connection;
    let src = capture::read_pcap(&fixture("close-unread-data-ipv4.pcap")).unwrap();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-field-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let ip = |p: &capture::RawPacket| p.data[14..].to_vec();
    let eth = |ether_type: u16, payload: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ether_type.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    // Outer IPv4 around `payload`, whose true length is `real` (the
    // catalogue's snaplen cut the data segments).
    let outer_ip = |proto: u8, payload: &[u8], real: usize| {
        let mut h = etherparse::Ipv4Header::new(
            real as u16,
            64,
            etherparse::IpNumber(proto),
            [192, 0, 2, 1],
            [192, 0, 2, 2],
        )
        .unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut out = h.to_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    };
    // UDP to `port` around `payload`, its true length `real`.
    let udp = |port: u16, payload: &[u8], real: usize| {
        let mut u = vec![0xc3, 0x50];
        u.extend_from_slice(&port.to_be_bytes());
        u.extend_from_slice(&(8 + real as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    };
    type Wrap<'a> = Box<dyn Fn(&[u8], usize) -> Vec<u8> + 'a>;
    let wraps: Vec<(&str, Wrap)> = vec![
        (
            "mpls",
            Box::new(|p, _| eth(0x8847, &[&[0x00, 0x01, 0x01, 0x40][..], p].concat())),
        ),
        (
            "pppoe-qinq",
            Box::new(|p, real| {
                let ppp = [&[0x00, 0x21][..], p].concat();
                let mut pppoe = vec![0x11, 0x00, 0x00, 0x07];
                pppoe.extend_from_slice(&((real + 2) as u16).to_be_bytes());
                pppoe.extend_from_slice(&ppp);
                let tags = [0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x88, 0x64];
                eth(0x88a8, &[&tags[..], &pppoe].concat())
            }),
        ),
        (
            "gre",
            Box::new(|p, real| {
                let gre = [&[0, 0, 0x08, 0x00][..], p].concat();
                eth(0x0800, &outer_ip(47, &gre, 20 + 4 + real))
            }),
        ),
        (
            "vxlan",
            Box::new(|p, real| {
                let inner = eth(0x0800, p);
                let vx = [&[0x08, 0, 0, 0, 0, 0, 0x2a, 0][..], &inner].concat();
                let vx_len = 8 + 14 + real;
                eth(
                    0x0800,
                    &outer_ip(17, &udp(4789, &vx, vx_len), 20 + 8 + vx_len),
                )
            }),
        ),
        (
            "gtp-u",
            Box::new(|p, real| {
                let mut gtp = vec![0x30, 0xff];
                gtp.extend_from_slice(&(real as u16).to_be_bytes());
                gtp.extend_from_slice(&[0, 0, 0, 7]);
                gtp.extend_from_slice(p);
                eth(
                    0x0800,
                    &outer_ip(17, &udp(2152, &gtp, 8 + real), 20 + 8 + 8 + real),
                )
            }),
        ),
        (
            "gre-in-udp",
            Box::new(|p, real| {
                let gre = [&[0, 0, 0x08, 0x00][..], p].concat();
                eth(
                    0x0800,
                    &outer_ip(17, &udp(4754, &gre, 4 + real), 20 + 8 + 4 + real),
                )
            }),
        ),
    ];
    let mut files = Vec::new();
    let write = |name: &str, packets: Vec<capture::RawPacket>| {
        let path = dir.join(format!("{name}.pcap"));
        let c = capture::Captured {
            linktype: capture::linktype::ETHERNET,
            packets,
            dropped: None,
        };
        capture::write_pcap(&path, &c).unwrap();
        path
    };
    files.push(write("at-syn-ack", src.packets[1..].to_vec()));
    files.push(write("mid-stream", src.packets[4..].to_vec()));
    // A snapshot length that cuts the TCP options (timestamps) of every
    // segment: only the fixed 20 bytes of each TCP header are left.
    let cut = |p: &capture::RawPacket| capture::RawPacket {
        data: p.data[..p.data.len().min(14 + 20 + 20)].to_vec(),
        ..p.clone()
    };
    assert!(src.packets.iter().all(|p| p.data.len() > 14 + 20 + 20));
    files.push(write("options-cut", src.packets.iter().map(cut).collect()));
    // Every frame ends with its 4-byte frame check sequence, as the
    // header's link-type field says in its high bits (FCS length 2 x 16
    // bits, and the bit saying it is there).
    let with_fcs = |p: &capture::RawPacket| capture::RawPacket {
        data: [&p.data[..], &[0xde, 0xad, 0xbe, 0xef]].concat(),
        orig_len: p.orig_len + 4,
        ..p.clone()
    };
    let fcs = write("fcs", src.packets.iter().map(with_fcs).collect());
    let mut bytes = std::fs::read(&fcs).unwrap();
    assert_eq!(bytes[..4], [0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    bytes[20..24].copy_from_slice(&0x2400_0001u32.to_le_bytes());
    std::fs::write(&fcs, bytes).unwrap();
    files.push(fcs);
    for (name, wrap) in &wraps {
        let packets = src
            .packets
            .iter()
            .map(|p| {
                let inner = ip(p);
                let real = usize::from(u16::from_be_bytes([inner[2], inner[3]]));
                let data = wrap(&inner, real);
                // The catalogue's snaplen cut the data segments: the
                // original frame is longer by what the wrapping added.
                let added = (data.len() - p.data.len()) as u32;
                capture::RawPacket {
                    ts_us: p.ts_us,
                    orig_len: p.orig_len + added,
                    data,
                }
            })
            .collect();
        files.push(write(name, packets));
    }
    // pcapng: interface 0 Ethernet (snaplen 262144), interface 1 raw IP
    // cut at 96 bytes; the packets alternate between them. Written with
    // Enhanced Packet Blocks (type 6), and again with the obsolete Packet
    // Blocks (type 2) of older writers.
    let block = |ng: &mut Vec<u8>, kind: u32, body: &[u8]| {
        let len = (12 + body.len()) as u32;
        ng.extend_from_slice(&kind.to_le_bytes());
        ng.extend_from_slice(&len.to_le_bytes());
        ng.extend_from_slice(body);
        ng.extend_from_slice(&len.to_le_bytes());
    };
    for (name, packet_block) in [("two-interfaces", 6u32), ("packet-blocks", 2)] {
        let mut ng = Vec::new();
        block(
            &mut ng,
            0x0a0d_0d0a,
            &[&0x1a2b_3c4du32.to_le_bytes()[..], &[1, 0, 0, 0], &[0xff; 8]].concat(),
        );
        for (linktype, snaplen) in [(1u16, 262_144u32), (101, 96)] {
            block(
                &mut ng,
                1,
                &[&linktype.to_le_bytes()[..], &[0, 0], &snaplen.to_le_bytes()].concat(),
            );
        }
        for (i, p) in src.packets.iter().enumerate() {
            let iface = (i % 2) as u16;
            let (data, orig) = if iface == 0 {
                (p.data.clone(), p.orig_len)
            } else {
                let d = ip(p);
                (d[..d.len().min(96)].to_vec(), p.orig_len - 14)
            };
            // EPB: a 4-byte interface; PB: 2 bytes, then 2 of drop count.
            let mut body = iface.to_le_bytes().to_vec();
            body.extend_from_slice(&[0, 0]);
            let ts = p.ts_us as u64;
            body.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
            body.extend_from_slice(&(ts as u32).to_le_bytes());
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(&orig.to_le_bytes());
            body.extend_from_slice(&data);
            body.resize(body.len().div_ceil(4) * 4, 0);
            block(&mut ng, packet_block, &body);
        }
        let ng_path = dir.join(format!("{name}.pcapng"));
        std::fs::write(&ng_path, &ng).unwrap();
        files.push(ng_path);
    }

    for path in &files {
        let mut ours: Vec<common::Directions> = Vec::new();
        let stats = each_connection(path, |f| {
            let mut d = common::Directions::new();
            for (side, from, to) in [
                (Side::Client, f.client, f.server),
                (Side::Server, f.server, f.client),
            ] {
                let s = &f.wire.sides[side];
                if f.packets[side] > 0 {
                    d.insert(
                        (from.port(), to.port()),
                        [s.syn.into(), s.fin.into(), s.rst.into(), s.data_bytes],
                    );
                }
            }
            ours.push(d);
        })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(stats.segments > 0, "{}: no segments", path.display());
        assert_eq!(
            stats.malformed,
            0,
            "{}: {:?}",
            path.display(),
            stats.findings
        );
        let theirs: Vec<common::Directions> = common::tshark_streams(path.to_str().unwrap())
            .unwrap()
            .into_values()
            .collect();
        assert_eq!(ours, theirs, "{}", path.display());
    }
    // The cut captures are the connection Zeek would see there.
    let state_of = |name: &str| {
        let mut states = Vec::new();
        each_connection(&dir.join(name), |f| {
            states.push((f.wire.conn_state.clone(), f.wire.history.clone()))
        })
        .unwrap();
        states
    };
    let at_syn_ack = state_of("at-syn-ack.pcap");
    assert!(at_syn_ack[0].1.starts_with("^h"), "{at_syn_ack:?}");
}
