//! `teardown analyze`: a capture's connections as a summary table, JSON,
//! JSON Lines, or Zeek's conn.log (TSV), so Zeek's own tools read it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::terminal::{Terminal, keep_whole, lines};

use serde::Serialize;
use serde_json::value::RawValue;

use crate::analyze::Traces;
use crate::analyze::file::FileStats;
use crate::analyze::flows::FlowFacts;
use crate::diagnosis::{Diagnosed, Diagnosis};

/// Counts over the connections a filter kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub connections: u64,
    pub by_conn_state: BTreeMap<String, u64>,
    pub by_diagnosis: BTreeMap<String, u64>,
}

impl Summary {
    pub fn add(&mut self, c: &Diagnosed) {
        self.connections += 1;
        count(&mut self.by_conn_state, &c.flow.wire.conn_state);
        count(&mut self.by_diagnosis, &c.diagnosis.name);
    }
}

/// Counts one more `key`, copying it only the first time it is seen.
fn count(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_string(), 1);
        }
    }
}

/// How `teardown analyze` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Counts by conn_state and by diagnosis, then the first connections.
    Table,
    /// One document: file statistics, summary, every connection.
    Json,
    /// One JSON object per connection, as each ends (streams).
    Jsonl,
    /// Zeek conn.log (TSV, with a teardown_diagnosis column).
    Zeek,
}

impl Format {
    /// Whether connections' traces (`wire.trace`) are spelled out: the JSON
    /// formats print them, the table and conn.log do not.
    pub(crate) fn traces(self) -> Traces {
        match self {
            Format::Json | Format::Jsonl => Traces::Kept,
            Format::Table | Format::Zeek => Traces::Skipped,
        }
    }
}

/// Prints a capture's connections in one format as they arrive: JSON Lines
/// and Zeek stream each one out; the table keeps the first `limit` by
/// number and JSON keeps them all, for [`Printer::finish`].
pub(crate) struct Printer {
    format: Format,
    limit: usize,
    file: String,
    summary: Summary,
    kept: BTreeMap<usize, Diagnosed>,
    lines: JsonLines,
    term: Terminal,
}

impl Printer {
    /// A printer for `file`; the text to print first (Zeek's header).
    pub fn new(format: Format, limit: usize, file: &str, term: Terminal) -> (Printer, String) {
        let head = if format == Format::Zeek {
            zeek_header(file)
        } else {
            String::new()
        };
        let p = Printer {
            format,
            limit,
            file: file.to_string(),
            summary: Summary::default(),
            kept: BTreeMap::new(),
            lines: JsonLines::default(),
            term,
        };
        (p, head)
    }

    /// One connection; the text to print now, if any.
    pub fn add(&mut self, c: Diagnosed) -> Option<String> {
        self.summary.add(&c);
        match self.format {
            Format::Jsonl => return Some(self.lines.line(&c)),
            Format::Zeek => return Some(format!("{}\n", zeek_line(&c))),
            Format::Json => {
                self.kept.insert(c.flow.index, c);
            }
            Format::Table => {
                // Connections arrive as they end, not in order: keep the
                // `limit` lowest-numbered so far.
                let full = self.kept.len() >= self.limit;
                if full
                    && self
                        .kept
                        .last_key_value()
                        .is_none_or(|(&i, _)| c.flow.index > i)
                {
                    return None;
                }
                self.kept.insert(c.flow.index, c);
                if self.kept.len() > self.limit {
                    self.kept.pop_last();
                }
            }
        }
        None
    }

    /// The text to print last.
    pub fn finish(self, stats: &FileStats) -> String {
        let kept: Vec<Diagnosed> = self.kept.into_values().collect();
        match self.format {
            Format::Table => table(&self.file, stats, &self.summary, &kept, &self.term),
            Format::Json => {
                let doc = Document {
                    file: self.file.clone(),
                    stats,
                    summary: &self.summary,
                    connections: &kept,
                };
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&doc).unwrap_or_default()
                )
            }
            Format::Zeek => zeek_footer().to_string(),
            Format::Jsonl => String::new(),
        }
    }
}

/// The whole analysis as one JSON document.
#[derive(Serialize)]
pub(crate) struct Document<'a> {
    pub file: String,
    pub stats: &'a FileStats,
    pub summary: &'a Summary,
    pub connections: &'a [Diagnosed],
}

/// The summary by ending, then the first connections, one per line.
pub fn table(
    file: &str,
    stats: &FileStats,
    summary: &Summary,
    shown: &[Diagnosed],
    term: &Terminal,
) -> String {
    let mut out = format!(
        "{file}: {} packets, {} TCP segments, {} connections ({} shown by the filter)\n",
        stats.packets, stats.segments, stats.connections, summary.connections
    );
    let counts = |head: &str, rows: Vec<(&String, &u64)>| {
        let mut t = term.table(&[head, "connections"]);
        for (name, n) in rows {
            t.add_row(vec![name.clone(), n.to_string()]);
        }
        if let Some(c) = t.column_mut(1) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
        lines(&t)
    };
    out.push('\n');
    out.push_str(&counts(
        "conn_state",
        summary.by_conn_state.iter().collect(),
    ));
    let mut by_count: Vec<_> = summary.by_diagnosis.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    out.push('\n');
    out.push_str(&counts("diagnosis", by_count));
    if !shown.is_empty() {
        let mut t = term.table(&["#", "client", "server", "state", "history", "diagnosis"]);
        for c in shown {
            t.add_row(vec![
                c.flow.index.to_string(),
                c.flow.client.to_string(),
                c.flow.server.to_string(),
                c.flow.wire.conn_state.clone(),
                c.flow.wire.history.clone(),
                c.diagnosis.name.clone(),
            ]);
        }
        for i in 0..6 {
            keep_whole(&mut t, i);
        }
        if let Some(c) = t.column_mut(0) {
            c.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
        out.push('\n');
        out.push_str(&lines(&t));
        let more = summary.connections.saturating_sub(shown.len() as u64);
        if more > 0 {
            out.push_str(&format!(
                "... and {more} more (--limit, a filter, or --format jsonl|zeek for all)\n"
            ));
        }
        out.push_str("\nteardown explain --pcap FILE <#> shows one connection; --format json gives each diagnosis in full\n");
    }
    for f in &stats.findings {
        out.push_str(&format!("finding: {f}\n"));
    }
    out
}

/// One connection as a JSON line.
pub fn json_line(c: &Diagnosed) -> String {
    serde_json::to_string(c).unwrap_or_default()
}

/// JSON Lines, a connection a line, as [`json_line`] writes them. The
/// connections that end alike share one diagnosis: its JSON is written once
/// and copied into each of their lines, not escaped again for every one
/// (it is about a quarter of a line).
#[derive(Default)]
struct JsonLines {
    /// Shared diagnoses (one per signature, at most), with their JSON.
    shared: Vec<(Arc<Diagnosis>, Box<RawValue>)>,
    /// The longest line so far: each line is written into that much room
    /// at once, not grown a doubling at a time.
    room: usize,
}

impl JsonLines {
    /// One connection's line, with its newline.
    fn line(&mut self, c: &Diagnosed) -> String {
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(flatten)]
            flow: &'a FlowFacts,
            diagnosis: &'a RawValue,
        }
        let mut text = Vec::with_capacity(self.room);
        let written = match self.shared_json(&c.diagnosis) {
            Some(diagnosis) => {
                let flow = &c.flow;
                serde_json::to_writer(&mut text, &Line { flow, diagnosis })
            }
            None => serde_json::to_writer(&mut text, c),
        };
        if written.is_err() {
            // As json_line: an empty line rather than half of one.
            text.clear();
        }
        text.push(b'\n');
        self.room = self.room.max(text.len());
        // serde_json writes UTF-8.
        String::from_utf8(text).unwrap_or_default()
    }

    /// The JSON of a diagnosis other connections share, written the first
    /// time; None for one only this connection holds (an unknown ending:
    /// not worth keeping).
    fn shared_json(&mut self, d: &Arc<Diagnosis>) -> Option<&RawValue> {
        if Arc::strong_count(d) == 1 {
            return None;
        }
        let at = match self.shared.iter().position(|(s, _)| Arc::ptr_eq(s, d)) {
            Some(at) => at,
            None => {
                let json = serde_json::value::to_raw_value(&**d).ok()?;
                self.shared.push((Arc::clone(d), json));
                self.shared.len() - 1
            }
        };
        Some(&self.shared[at].1)
    }
}

/// Zeek conn.log's header, with one extra field: the diagnosis.
pub(crate) fn zeek_header(file: &str) -> String {
    let fields = [
        ("ts", "time"),
        ("uid", "string"),
        ("id.orig_h", "addr"),
        ("id.orig_p", "port"),
        ("id.resp_h", "addr"),
        ("id.resp_p", "port"),
        ("proto", "enum"),
        ("service", "string"),
        ("duration", "interval"),
        ("orig_bytes", "count"),
        ("resp_bytes", "count"),
        ("conn_state", "string"),
        ("local_orig", "bool"),
        ("local_resp", "bool"),
        ("missed_bytes", "count"),
        ("history", "string"),
        ("orig_pkts", "count"),
        ("orig_ip_bytes", "count"),
        ("resp_pkts", "count"),
        ("resp_ip_bytes", "count"),
        ("tunnel_parents", "set[string]"),
        ("teardown_diagnosis", "string"),
    ];
    let names: Vec<&str> = fields.iter().map(|f| f.0).collect();
    let types: Vec<&str> = fields.iter().map(|f| f.1).collect();
    format!(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#open\t{file}\n#fields\t{}\n#types\t{}\n",
        names.join("\t"),
        types.join("\t")
    )
}

/// One connection as a conn.log line, its byte counts as Zeek keeps them:
/// a side's `orig_bytes`/`resp_bytes` is the sequence space it covered,
/// payload the capture saw and payload it missed (acknowledged by the peer
/// but not captured), and `missed_bytes` the missed payload of both; a side
/// the capture shows no packet of counts 0 for both, as Zeek's inactive
/// endpoint does. (The JSON keeps them apart: `data_bytes`, and `missed`,
/// null where there is nothing to count from.)
pub(crate) fn zeek_line(c: &Diagnosed) -> String {
    let f = &c.flow;
    let w = &f.wire;
    let missed = f.missed.map(|side, m| {
        if f.packets[side] == 0 {
            0
        } else {
            m.unwrap_or(0)
        }
    });
    let bytes = f.packets.as_ref().map(|side, &n| {
        if n == 0 {
            0
        } else {
            w.sides[side].data_bytes + missed[side]
        }
    });
    let secs = |us: i64| {
        format!(
            "{}.{:06}",
            us.div_euclid(1_000_000),
            us.rem_euclid(1_000_000)
        )
    };
    let fields = [
        secs(f.start_us),
        format!("CT{}", f.index),
        f.client.ip().to_string(),
        f.client.port().to_string(),
        f.server.ip().to_string(),
        f.server.port().to_string(),
        "tcp".into(),
        "-".into(),
        secs(f.duration_us),
        bytes.client.to_string(),
        bytes.server.to_string(),
        w.conn_state.clone(),
        "-".into(),
        "-".into(),
        (missed.client + missed.server).to_string(),
        if w.history.is_empty() {
            "-".into()
        } else {
            w.history.clone()
        },
        f.packets.client.to_string(),
        f.ip_bytes.client.to_string(),
        f.packets.server.to_string(),
        f.ip_bytes.server.to_string(),
        "-".into(),
        c.diagnosis.name.replace(['\t', '\n'], " "),
    ];
    fields.join("\t")
}

/// Zeek's closing line.
pub(crate) fn zeek_footer() -> &'static str {
    "#close\n"
}

/// One connection of a capture, segment by segment, with its diagnosis.
pub(crate) fn connection_ladder(c: &Diagnosed, packets: &[crate::analyze::PacketRecord]) -> String {
    use crate::tcp::Side;
    let f = &c.flow;
    let mut out = format!(
        "connection {}: client {} server {}, {} {}{}{}\n{}\n",
        f.index,
        f.client,
        f.server,
        f.wire.conn_state,
        f.wire.history,
        if f.began_before_capture {
            ", begun before the capture"
        } else {
            ""
        },
        if f.open_at_end {
            ", still open at its end"
        } else {
            ""
        },
        c.diagnosis.explanation
    );
    if c.diagnosis.matches.len() > 1 {
        out.push_str(&format!(
            "also ends like {}\n",
            c.diagnosis.matches[1..].join(", ")
        ));
    }
    for p in packets {
        let (arrow, pad) = match p.from {
            Side::Client => ("client ──►", ""),
            Side::Server => ("◄── server", "          "),
        };
        out.push_str(&format!(
            "{:>12.3} ms  {arrow}  {pad}{}\n",
            p.t_ms,
            crate::sinks::ladder::packet_label(p)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::flows::split;
    use crate::wire::Segment;

    /// conn.log counts bytes as Zeek does: the server's 100 bytes the
    /// client acknowledged but the capture missed are in `resp_bytes` and
    /// `missed_bytes`; a side the capture has no packet of counts 0, not
    /// what its peer acknowledged (Zeek's inactive endpoint).
    #[test]
    fn conn_log_counts_bytes_by_sequence_space_as_zeek_does() {
        let (c, s) = ("10.0.0.1:40000", "10.0.0.2:80");
        let line = |segs: &[Segment]| {
            let d = Diagnosed {
                flow: split(segs).remove(0),
                diagnosis: Arc::new(Diagnosis {
                    name: "x".into(),
                    explanation: String::new(),
                    matches: vec![],
                }),
            };
            let l = zeek_line(&d);
            let f: Vec<String> = l.split('\t').map(str::to_string).collect();
            // orig_bytes, resp_bytes, missed_bytes
            (f[9].clone(), f[10].clone(), f[14].clone())
        };
        let lost_response = [
            Segment::example(0, c, s, "S", 100, 0, 0),
            Segment::example(1, s, c, "S.", 900, 101, 0),
            Segment::example(2, c, s, ".", 101, 901, 0),
            Segment::example(3, c, s, "P.", 101, 901, 10),
            // The server's 100 bytes (901..1001) were not captured.
            Segment::example(5, c, s, ".", 111, 1001, 0),
            Segment::example(6, c, s, "F.", 111, 1001, 0),
            Segment::example(7, s, c, "F.", 1001, 112, 0),
            Segment::example(8, c, s, ".", 112, 1002, 0),
        ];
        assert_eq!(
            line(&lost_response),
            ("10".into(), "100".into(), "100".into())
        );
        // Only the client's direction captured: the server is inactive.
        let one_way: Vec<Segment> = lost_response
            .iter()
            .filter(|x| x.src == c.parse().unwrap())
            .cloned()
            .collect();
        assert_eq!(line(&one_way), ("10".into(), "0".into(), "0".into()));
    }

    #[test]
    fn json_lines_with_a_shared_diagnosis_are_the_plain_lines() {
        let (c, s) = ("10.0.0.1:40000", "10.0.0.2:80");
        let flow = split(&[
            Segment::example(0, c, s, "S", 100, 0, 0),
            Segment::example(1, s, c, "R.", 0, 101, 0),
        ])
        .remove(0);
        let diagnosis = |name: &str| {
            Arc::new(Diagnosis {
                name: name.into(),
                explanation: "a \"quoted\" why\nover two lines".into(),
                matches: vec![format!("{name} on linux")],
            })
        };
        let shared = diagnosis("refused");
        let with = |d: &Arc<Diagnosis>| Diagnosed {
            flow: flow.clone(),
            diagnosis: Arc::clone(d),
        };
        let (a, b) = (with(&shared), with(&shared));
        let unique = Diagnosed {
            flow: flow.clone(),
            diagnosis: diagnosis("unknown"),
        };
        let mut lines = JsonLines::default();
        for c in [&a, &b, &unique, &a] {
            assert_eq!(lines.line(c), format!("{}\n", json_line(c)));
        }
        assert_eq!(lines.shared.len(), 1, "only the shared diagnosis is kept");
    }
}
