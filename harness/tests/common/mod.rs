//! Shared by the end-to-end test binaries (each uses some of it).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Command;

use teardown::report::{CaseReport, Report};

/// Per side, what tshark finds for the case's connection in its pcap:
/// SYN, FIN and RST segments, and distinct payload bytes, computed from
/// tshark's own fields (the union of `[seq, seq + len)` per TCP stream),
/// not from the harness's analyzer. Every stream between the case's two
/// ports counts (a reused 4-tuple is several streams).
fn tshark_counts(c: &CaseReport) -> Result<BTreeMap<&'static str, [u64; 4]>, String> {
    let pcap = c.capture.as_deref().ok_or("no pcap")?;
    let ends = c.outcome.endpoints.as_ref().ok_or("no endpoints")?;
    let port = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(0)
    };
    let (cport, sport) = (port(&ends.client), port(&ends.server));
    let mut counts: BTreeMap<&'static str, [u64; 4]> = BTreeMap::new();
    for stream in tshark_streams(pcap)?.values() {
        for (side, dir) in [("client", (cport, sport)), ("server", (sport, cport))] {
            if let Some(n) = stream.get(&dir) {
                let e = counts.entry(side).or_default();
                for (sum, x) in e.iter_mut().zip(n) {
                    *sum += x;
                }
            }
        }
    }
    Ok(counts)
}

/// Every case of `report` whose SYN/FIN/RST counts or payload bytes per
/// side differ from what tshark reads in its pcap, with both.
pub fn tshark_disagreements(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for c in &report.cases {
        let Some(w) = c.outcome.wire.as_ref() else {
            continue;
        };
        let theirs = match tshark_counts(c) {
            Ok(t) => t,
            Err(e) => {
                out.push(format!("{}: {e}", c.id));
                continue;
            }
        };
        for (side, s) in w.sides.iter() {
            let ours = [
                u64::from(s.syn),
                u64::from(s.fin),
                u64::from(s.rst),
                s.data_bytes,
            ];
            let t = theirs.get(side.name()).copied().unwrap_or_default();
            if ours != t {
                out.push(format!(
                    "{} {side}: report [syn fin rst bytes] {ours:?}, tshark {t:?}",
                    c.id
                ));
            }
        }
    }
    out
}

/// Per TCP stream of a pcap, as tshark numbers them (a SYN on a closed
/// conversation starts a new one), and per direction (source port,
/// destination port): SYN, FIN and RST segments and distinct payload bytes.
pub type StreamCounts = BTreeMap<u64, Directions>;
/// (source port, destination port) -> [SYN, FIN, RST, payload bytes].
pub type Directions = BTreeMap<(u16, u16), [u64; 4]>;
/// (stream, direction) -> the payload ranges seen.
type Ranges = BTreeMap<(u64, (u16, u16)), Vec<(u64, u64)>>;

pub fn tshark_streams(pcap: &str) -> Result<StreamCounts, String> {
    let out = Command::new("tshark")
        .args(["-r", pcap, "-T", "fields", "-E", "separator=,"])
        .args(["-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.dstport"])
        .args([
            "-e",
            "tcp.flags.syn",
            "-e",
            "tcp.flags.fin",
            "-e",
            "tcp.flags.reset",
        ])
        .args(["-e", "tcp.seq", "-e", "tcp.len"])
        .output()
        .map_err(|e| format!("tshark: {e} (apt-get install tshark)"))?;
    if !out.status.success() {
        return Err(format!(
            "tshark -r {pcap}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut counts = StreamCounts::new();
    let mut ranges = Ranges::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(',').collect();
        let (Ok(stream), Ok(src), Ok(dst)) = (
            f[0].parse::<u64>(),
            f[1].parse::<u16>(),
            f[2].parse::<u16>(),
        ) else {
            continue;
        };
        let set = |s: &str| u64::from(s == "1" || s == "True");
        let e = counts
            .entry(stream)
            .or_default()
            .entry((src, dst))
            .or_default();
        e[0] += set(f[3]);
        e[1] += set(f[4]);
        e[2] += set(f[5]);
        let seq: u64 = f[6].parse().unwrap_or(0);
        let len: u64 = f[7].parse().unwrap_or(0);
        if len > 0 {
            ranges
                .entry((stream, (src, dst)))
                .or_default()
                .push((seq, seq + len));
        }
    }
    for ((stream, dir), mut rs) in ranges {
        rs.sort_unstable();
        let (mut covered, mut end) = (0, 0);
        for (a, b) in rs {
            let a = a.max(end);
            if b > a {
                covered += b - a;
                end = b;
            }
        }
        counts.entry(stream).or_default().entry(dir).or_default()[3] += covered;
    }
    Ok(counts)
}

/// The per-connection records of a case with several connections: inline,
/// or from the JSON Lines file beside its pcap.
pub fn connection_records(c: &CaseReport) -> Vec<serde_json::Value> {
    if let Some(file) = &c.outcome.connections_file {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file}: {e}"));
        return text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    }
    c.outcome
        .connections
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

/// For every case with several connections, each connection whose
/// SYN/FIN/RST counts or payload bytes per side differ from tshark's count
/// for the same stream. Connections are paired with tshark's streams by
/// client port and, on a reused port, by order.
pub fn tshark_connection_disagreements(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let port = |v: &serde_json::Value| -> u16 {
        v.as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    for c in report
        .cases
        .iter()
        .filter(|c| c.outcome.connection_summary.is_some())
    {
        let records = connection_records(c);
        let Some(pcap) = c.capture.as_deref() else {
            out.push(format!("{}: no pcap", c.id));
            continue;
        };
        let streams = match tshark_streams(pcap) {
            Ok(s) => s,
            Err(e) => {
                out.push(format!("{}: {e}", c.id));
                continue;
            }
        };
        if streams.len() != records.len() {
            out.push(format!(
                "{}: {} connections in the report, {} TCP streams by tshark",
                c.id,
                records.len(),
                streams.len()
            ));
        }
        // tshark's streams, and ours, by client port in order of appearance.
        let mut theirs: BTreeMap<u16, Vec<&Directions>> = BTreeMap::new();
        let server_port = records.first().map_or(0, |r| port(&r["server"]));
        for s in streams.values() {
            let client = s
                .keys()
                .flat_map(|(a, b)| [*a, *b])
                .find(|p| *p != server_port)
                .unwrap_or(0);
            theirs.entry(client).or_default().push(s);
        }
        let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
        for r in &records {
            let (cp, sp) = (port(&r["client"]), port(&r["server"]));
            let k = seen.entry(cp).or_default();
            let Some(t) = theirs.get(&cp).and_then(|v| v.get(*k)) else {
                out.push(format!(
                    "{}: connection {} has no tshark stream",
                    c.id, r["index"]
                ));
                continue;
            };
            *k += 1;
            for (side, dir) in [("client", (cp, sp)), ("server", (sp, cp))] {
                let w = &r["wire"][side];
                let ours =
                    ["syn", "fin", "rst", "data_bytes"].map(|f| w[f].as_u64().unwrap_or(u64::MAX));
                let t = t.get(&dir).copied().unwrap_or_default();
                if ours != t {
                    out.push(format!(
                        "{} connection {} {side}: report [syn fin rst bytes] {ours:?}, tshark {t:?}",
                        c.id, r["index"]
                    ));
                }
            }
        }
    }
    out
}

/// Whether an `unsupported` reason is one of the gaps gVisor is known to
/// state about itself: a sysctl it lacks, states only through descriptors
/// (no sight of a socket after close, its timers or a listener's accept
/// queue), or, in loopback mode, a packet filter it has not got.
#[allow(dead_code)]
pub fn a_stated_gvisor_gap(reason: &str) -> bool {
    [
        "needs",
        "out of sight",
        "shows states only through descriptors",
        "does not exist",
        "shows no timers",
        "reads the accept queue",
        // A program starts in the host's namespace, outside the sandbox.
        "would run beside",
    ]
    .iter()
    .any(|gap| reason.contains(gap))
}

/// Checks that the cases `teardown check` listed as impossible (its
/// output, `text`) are exactly those the run reports `unsupported`; how
/// many there were.
#[allow(dead_code)]
pub fn unsupported_as_predicted(text: &str, r: &Report) -> usize {
    let mut predicted: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.split(": ").next())
        .collect();
    let mut ran: Vec<&str> = r
        .cases
        .iter()
        .filter(|c| c.verdict.status == teardown::verdict::Status::Unsupported)
        .map(|c| c.id.as_str())
        .collect();
    predicted.sort_unstable();
    ran.sort_unstable();
    assert_eq!(predicted, ran, "{text}");
    ran.len()
}

/// Runs `cmd` (a teardown command), which must succeed; its stdout.
#[allow(dead_code)]
pub fn stdout_of(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("the teardown binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// A scratch directory for this test process's lifetime: for a run kept in
/// a static, whose captures later tests read. Statics are never dropped,
/// so it is removed when the process exits.
pub fn process_scratch(what: &str) -> std::path::PathBuf {
    static DIRS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
    extern "C" fn remove_all() {
        let dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("teardown-{what}-"))
        .tempdir()
        .unwrap()
        .keep();
    let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    if dirs.is_empty() {
        // SAFETY: `remove_all` is a plain function that stays valid for
        // the life of the process, as atexit requires.
        unsafe { libc::atexit(remove_all) };
    }
    dirs.push(dir.clone());
    dir
}
