//! Comparing reports: the same cases on different OSes, kernels or harness
//! versions, side by side.
//!
//! Cases are aligned by id. For each case the behavioural facts of every
//! report are compared (the [`baseline::fingerprint`]: FIN/RST per side, first
//! FIN and RST, TIME-WAIT side, final states, every call's return value and
//! errno, data lost, ...), plus how long each close() took, which counts as
//! different only beyond a tolerance. Only facts that differ are shown.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};

use crate::baseline::{fingerprint, step_key, step_verb};
use crate::report::{CaseReport, Report};

/// One report taking part, as the header shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Column {
    /// `A`, `B`, ... in argument order.
    pub label: String,
    pub file: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub tool_version: String,
    pub started_at: String,
}

/// A fact with different values across the reports (null where a report
/// lacks it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub field: String,
    pub values: Vec<Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CaseDiff {
    pub id: String,
    pub differences: Vec<Difference>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub columns: Vec<Column>,
    /// close() durations differ only by more than this.
    pub tolerance_ms: f64,
    /// Cases in every report that differ somewhere.
    pub cases: Vec<CaseDiff>,
    /// Cases in every report.
    pub compared: usize,
    /// Cases missing from some report: id -> labels of the reports that have it.
    pub partial: BTreeMap<String, Vec<String>>,
}

impl Comparison {
    pub fn differs(&self) -> bool {
        !self.cases.is_empty() || !self.partial.is_empty()
    }
}

/// The facts compared for one case: the fingerprint plus close() durations.
fn facts(c: &CaseReport) -> BTreeMap<String, Value> {
    let mut f = fingerprint(c);
    for (i, s) in c.steps.iter().enumerate() {
        if step_verb(s) == Some("close") {
            f.insert(
                format!("{}.duration_ms", step_key(i, s)),
                json!(s.duration_ms),
            );
        }
    }
    f
}

/// Compares reports (at least two), given with the file each came from.
pub fn compare(reports: &[(String, Report)], tolerance_ms: f64) -> Comparison {
    let columns: Vec<Column> = reports
        .iter()
        .enumerate()
        .map(|(i, (file, r))| Column {
            label: label(i),
            file: file.clone(),
            os: r.host.os.clone(),
            kernel: r.host.kernel.clone(),
            arch: r.host.arch.clone(),
            tool_version: r.tool.version.clone(),
            started_at: r.started_at.clone(),
        })
        .collect();
    let by_id: Vec<BTreeMap<&str, &CaseReport>> = reports
        .iter()
        .map(|(_, r)| r.cases.iter().map(|c| (c.id.as_str(), c)).collect())
        .collect();
    let all_ids: BTreeSet<&str> = by_id.iter().flat_map(|m| m.keys().copied()).collect();
    let mut cases = Vec::new();
    let mut partial = BTreeMap::new();
    let mut compared = 0;
    for id in all_ids {
        let present: Vec<Option<&CaseReport>> = by_id.iter().map(|m| m.get(id).copied()).collect();
        if present.iter().any(Option::is_none) {
            let having = present
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_some())
                .map(|(i, _)| label(i))
                .collect();
            partial.insert(id.to_string(), having);
            continue;
        }
        compared += 1;
        let facts: Vec<BTreeMap<String, Value>> =
            present.iter().flatten().map(|c| facts(c)).collect();
        let keys: BTreeSet<&String> = facts.iter().flat_map(|f| f.keys()).collect();
        let mut differences = Vec::new();
        for k in keys {
            let values: Vec<Value> = facts
                .iter()
                .map(|f| f.get(k).cloned().unwrap_or(Value::Null))
                .collect();
            let same = if k.ends_with(".duration_ms") {
                let ms: Vec<f64> = values.iter().filter_map(Value::as_f64).collect();
                ms.len() == values.len()
                    && ms.iter().copied().fold(f64::MIN, f64::max)
                        - ms.iter().copied().fold(f64::MAX, f64::min)
                        <= tolerance_ms
            } else {
                values.windows(2).all(|w| w[0] == w[1])
            };
            if !same {
                differences.push(Difference {
                    field: k.clone(),
                    values,
                });
            }
        }
        if !differences.is_empty() {
            cases.push(CaseDiff {
                id: id.to_string(),
                differences,
            });
        }
    }
    Comparison {
        columns,
        tolerance_ms,
        cases,
        compared,
        partial,
    }
}

fn label(i: usize) -> String {
    if i < 26 {
        char::from(b'A' + i as u8).to_string()
    } else {
        format!("R{}", i + 1)
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// For a terminal: a legend, then per case the differing facts in columns.
pub fn table(c: &Comparison) -> String {
    let mut out = legend(c, "");
    for case in &c.cases {
        let _ = writeln!(out, "\n{}", case.id);
        let mut rows: Vec<Vec<String>> = vec![
            std::iter::once("field".to_string())
                .chain(c.columns.iter().map(|col| col.label.clone()))
                .collect(),
        ];
        for d in &case.differences {
            rows.push(
                std::iter::once(d.field.clone())
                    .chain(d.values.iter().map(show))
                    .collect(),
            );
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for r in rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
        }
    }
    out.push_str(&summary(c));
    out
}

/// The same as Markdown, for a pull request or the README.
pub fn markdown(c: &Comparison) -> String {
    let mut out = legend(c, "- ");
    if !c.cases.is_empty() {
        let head: Vec<&str> = c.columns.iter().map(|col| col.label.as_str()).collect();
        let _ = writeln!(
            out,
            "\n| case | field | {} |\n|---|---|{}",
            head.join(" | "),
            "---|".repeat(head.len())
        );
        for case in &c.cases {
            for d in &case.differences {
                let vals: Vec<String> = d
                    .values
                    .iter()
                    .map(|v| show(v).replace('|', "\\|"))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} |",
                    case.id,
                    d.field.replace('|', "\\|"),
                    vals.join(" | ")
                );
            }
        }
    }
    out.push('\n');
    out.push_str(&summary(c));
    out
}

fn legend(c: &Comparison, bullet: &str) -> String {
    let mut out = String::new();
    for col in &c.columns {
        let _ = writeln!(
            out,
            "{bullet}{}: {} {} {}, teardown {}, {} ({})",
            col.label, col.os, col.kernel, col.arch, col.tool_version, col.started_at, col.file
        );
    }
    out
}

fn summary(c: &Comparison) -> String {
    let mut out = String::new();
    for (id, having) in &c.partial {
        let _ = writeln!(out, "only in {}: {id}", having.join(", "));
    }
    let _ = writeln!(
        out,
        "{} of {} cases differ (close() durations within {} ms count as equal){}",
        c.cases.len(),
        c.compared,
        c.tolerance_ms,
        if c.partial.is_empty() {
            String::new()
        } else {
            format!("; {} cases are not in every report", c.partial.len())
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::report;

    #[test]
    fn only_differing_facts_are_shown() {
        let a = report("a", 1, None);
        let mut b = report("b", 2, Some("EPIPE"));
        b.host.kernel = "6.1.0".into();
        let c = compare(&[("a.json".into(), a.clone()), ("b.json".into(), b)], 100.0);
        assert!(c.differs());
        assert_eq!(c.compared, 1);
        let fields: Vec<&str> = c.cases[0]
            .differences
            .iter()
            .map(|d| d.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "steps[line 3: client close].errno",
                "wire.client.distinct_fins"
            ]
        );
        let t = table(&c);
        assert!(t.contains("B: linux 6.1.0 x86_64"), "{t}");
        assert!(t.contains("wire.client.distinct_fins"), "{t}");
        assert!(t.contains("1 of 1 cases differ"), "{t}");
        let md = markdown(&c);
        assert!(
            md.contains("| x/ipv4 | `wire.client.distinct_fins` | 1 | 2 |"),
            "{md}"
        );

        let same = compare(
            &[("a.json".into(), a.clone()), ("a2.json".into(), a)],
            100.0,
        );
        assert!(!same.differs());
    }

    #[test]
    fn close_durations_differ_only_beyond_the_tolerance() {
        let a = report("a", 1, None);
        let mut b = a.clone();
        b.cases[0].steps[0].duration_ms = 50.0;
        assert!(!compare(&[("a".into(), a.clone()), ("b".into(), b.clone())], 100.0).differs());
        b.cases[0].steps[0].duration_ms = 1000.0;
        let c = compare(&[("a".into(), a), ("b".into(), b)], 100.0);
        assert_eq!(
            c.cases[0].differences[0].field,
            "steps[line 3: client close].duration_ms"
        );
    }

    #[test]
    fn cases_missing_from_a_report_are_listed() {
        let a = report("a", 1, None);
        let mut b = a.clone();
        b.cases[0].id = "y/ipv4".into();
        let c = compare(&[("a".into(), a), ("b".into(), b)], 100.0);
        assert_eq!(c.compared, 0);
        assert_eq!(c.partial["x/ipv4"], ["A"]);
        assert_eq!(c.partial["y/ipv4"], ["B"]);
        assert!(table(&c).contains("only in B: y/ipv4"));
    }
}
