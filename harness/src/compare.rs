//! Comparing reports: the same cases on different OSes, kernels or harness
//! versions, side by side.
//!
//! Cases are aligned by id. For each case the behavioural facts of every
//! report are compared (the fingerprint of the fact model: FIN/RST per
//! side, first FIN and RST, TIME-WAIT side, final states, every call's
//! return value and errno, data lost, ...), plus how long each close()
//! took, which counts as different only beyond a tolerance. Facts are named
//! as expectations name them. Only facts that differ are shown; the table
//! and Markdown forms are in `sinks::compare`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::baseline::fingerprint;
use crate::report::{CaseReport, Report};
use crate::scenario::Verb;

/// One report taking part, as the header shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Column {
    /// `A`, `B`, ... in argument order.
    pub label: String,
    pub file: String,
    /// The host, as `Host::name` prints it.
    pub host: String,
    pub os: String,
    pub kernel: String,
    pub arch: String,
    pub stack: String,
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
    for s in c.steps.iter().filter(|s| s.verb == Verb::Close) {
        f.insert(format!("steps.{}.duration_ms", s.key), json!(s.duration_ms));
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
            host: r.host.name(),
            os: r.host.os.clone(),
            stack: r.host.stack.name.clone(),
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

pub(crate) fn label(i: usize) -> String {
    match u8::try_from(i) {
        Ok(n) if n < 26 => char::from(b'A' + n).to_string(),
        _ => format!("R{}", i + 1),
    }
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
        assert_eq!(fields, ["steps.line3.errno", "wire.client.distinct_fins"]);
        assert_eq!(c.columns[1].host, "linux 6.1.0 x86_64");

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
        assert_eq!(c.cases[0].differences[0].field, "steps.line3.duration_ms");
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
    }
}
