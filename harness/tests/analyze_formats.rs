//! Snapshots of `teardown analyze`'s four output formats on one committed
//! capture, so a change to any of them is seen in review. The diagnosis is
//! replaced by a placeholder: it comes from the catalogue's signatures,
//! which change as scenarios are added, and `docs.rs` checks those.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const PCAP: &str = "close-unread-data-ipv4.pcap";

fn analyze(format: &str) -> String {
    common::stdout_of(
        Command::new(env!("CARGO_BIN_EXE_teardown"))
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
            .args(["analyze", "--color", "never", "--format", format, PCAP]),
    )
}

/// The name the signatures give this capture's one connection.
fn diagnosis() -> String {
    let v: Value = serde_json::from_str(analyze("jsonl").lines().next().unwrap()).unwrap();
    v["diagnosis"]["name"].as_str().unwrap().to_string()
}

/// Text with the diagnosis named by a placeholder, and column padding
/// (which follows the name's length) made one width.
fn text(format: &str) -> String {
    let name = diagnosis();
    let padding = regex::Regex::new(" {2,}").unwrap();
    analyze(format)
        .lines()
        .map(|l| {
            padding
                .replace_all(&l.replace(&name, "<diagnosis>"), "  ")
                .into_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn redact(v: &mut Value) {
    if let Some(d) = v.get_mut("diagnosis") {
        *d = Value::String("<diagnosis>".into());
    }
}

#[test]
fn the_table() {
    insta::assert_snapshot!(text("table"));
}

#[test]
fn zeek_conn_log() {
    insta::assert_snapshot!(text("zeek"));
}

#[test]
fn one_json_document() {
    let mut v: Value = serde_json::from_str(&analyze("json")).unwrap();
    for c in v["connections"].as_array_mut().unwrap() {
        redact(c);
    }
    let by = v["summary"]["by_diagnosis"].as_object_mut().unwrap();
    let n = by.values().cloned().collect::<Vec<_>>();
    by.clear();
    by.insert(
        "<diagnosis>".into(),
        n.into_iter().next().unwrap_or_default(),
    );
    insta::assert_snapshot!(serde_json::to_string_pretty(&v).unwrap());
}

#[test]
fn json_lines() {
    let lines: Vec<String> = analyze("jsonl")
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            redact(&mut v);
            serde_json::to_string(&v).unwrap()
        })
        .collect();
    insta::assert_snapshot!(lines.join("\n"));
}
