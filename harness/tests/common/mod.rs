//! Shared by the end-to-end test binaries.

use std::collections::BTreeMap;
use std::process::Command;

use teardown::report::{CaseReport, Report};

/// Per side, what tshark finds for the case's connection in its pcap:
/// SYN, FIN and RST segments, and distinct payload bytes, computed from
/// tshark's own fields (the union of `[seq, seq + len)` per TCP stream),
/// not from the harness's analyzer.
fn tshark_counts(c: &CaseReport) -> Result<BTreeMap<&'static str, [u64; 4]>, String> {
    let pcap = c.capture.as_deref().ok_or("no pcap")?;
    let ends = c.outcome.endpoints.as_ref().ok_or("no endpoints")?;
    let port = |a: &str| a.rsplit(':').next().unwrap_or("").to_string();
    let (cport, sport) = (port(&ends.client), port(&ends.server));
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
    let mut counts: BTreeMap<&'static str, [u64; 4]> = BTreeMap::new();
    // (side, stream) -> payload ranges
    let mut ranges: BTreeMap<(&'static str, String), Vec<(u64, u64)>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(',').collect();
        let side = match (f[1], f[2]) {
            (s, d) if s == cport && d == sport => "client",
            (s, d) if s == sport && d == cport => "server",
            _ => continue, // another connection
        };
        let set = |s: &str| u64::from(s == "1" || s == "True");
        let e = counts.entry(side).or_default();
        e[0] += set(f[3]);
        e[1] += set(f[4]);
        e[2] += set(f[5]);
        let seq: u64 = f[6].parse().unwrap_or(0);
        let len: u64 = f[7].parse().unwrap_or(0);
        if len > 0 {
            ranges
                .entry((side, f[0].to_string()))
                .or_default()
                .push((seq, seq + len));
        }
    }
    for ((side, _), mut rs) in ranges {
        rs.sort_unstable();
        let mut covered = 0;
        let mut end = 0;
        for (a, b) in rs {
            let a = a.max(end);
            if b > a {
                covered += b - a;
                end = b;
            }
        }
        counts.entry(side).or_default()[3] += covered;
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
