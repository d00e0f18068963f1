//! The analyzer on small pcaps the harness itself captured on Linux 6.18.
//! No privileges needed. Each expected value below was read off the same
//! file with `tshark -r` when the fixture was committed.

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
    let dir = std::env::temp_dir().join(format!("teardown-trunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for cut in [10, 24 + 8, 300, bytes.len() - 5] {
        let path = dir.join(format!("cut{cut}.pcap"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = capture::read_pcap(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("cut{cut}.pcap")), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
