//! Comparing reports: the same cases on different OSes, kernels or harness
//! versions, side by side.
//!
//! Cases are aligned by id. For each case the behavioural facts of every
//! report are compared (the fingerprint of the fact model: FIN/RST per
//! side, first FIN and RST, TIME-WAIT side, final states, every call's
//! return value and errno, data lost, ...), plus how long each close()
//! took, which counts as different only beyond a tolerance. Facts are named
//! as expectations name them. Only facts that differ are shown; a fact some
//! report could not observe, and a case some report's stack could not run,
//! are listed apart: they are not differences in behaviour. The table and
//! Markdown forms are in `sinks::compare`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::facts::{Observed, Use};
use crate::report::{CaseReport, Report};
use crate::scenario::Verb;
use crate::verdict::Status;

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
    /// Facts some report could not observe (null with a reason there): not
    /// compared, so not differences.
    pub unobserved: Vec<String>,
}

/// The whole comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub columns: Vec<Column>,
    /// Durations differ only by more than this.
    pub tolerance_ms: f64,
    /// Whether measured facts were compared too.
    pub measurements: bool,
    /// Cases in every report that differ somewhere.
    pub cases: Vec<CaseDiff>,
    /// Cases in every report.
    pub compared: usize,
    /// Cases missing from some report: id -> labels of the reports that have it.
    pub partial: BTreeMap<String, Vec<String>>,
    /// Cases some report's stack could not run: id -> (label, what is
    /// missing) per such report. Their facts are not compared.
    pub unsupported: BTreeMap<String, Vec<(String, String)>>,
}

impl Comparison {
    /// Whether any case behaved differently, or is missing from a report.
    /// Unobserved facts and unsupported cases are not differences.
    pub fn differs(&self) -> bool {
        self.cases.iter().any(|c| !c.differences.is_empty()) || !self.partial.is_empty()
    }

    /// The cases with facts that differ.
    pub fn differing(&self) -> impl Iterator<Item = &CaseDiff> {
        self.cases.iter().filter(|c| !c.differences.is_empty())
    }
}

/// The facts compared for one case: its behavioural facts plus close()
/// durations (or, with `measurements`, every fact), named as expectations
/// name them.
fn facts(c: &CaseReport, measurements: bool) -> BTreeMap<String, Observed> {
    let view = c.facts();
    crate::facts::all(&view)
        .into_iter()
        .filter(|(p, _)| {
            measurements
                || p.used_as(&view) == Use::Behaviour
                || (p.kind().pattern == "steps.<step>.duration_ms"
                    && c.steps.iter().any(|s| {
                        Some(s.key.as_str()) == p.binding().key.as_deref() && s.verb == Verb::Close
                    }))
        })
        .map(|(p, v)| (p.to_string(), v))
        .collect()
}

/// Compares reports (at least two), given with the file each came from.
/// Durations (`*_ms`) count as equal within `tolerance_ms`; `measurements`
/// also compares the facts that measure the machine (byte counts of buffer
/// fills, FIN transmissions, timers).
pub fn compare(reports: &[(String, Report)], tolerance_ms: f64, measurements: bool) -> Comparison {
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
    let mut unsupported = BTreeMap::new();
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
        let present: Vec<&CaseReport> = present.into_iter().flatten().collect();
        let not_run: Vec<(String, String)> = present
            .iter()
            .enumerate()
            .filter(|(_, c)| c.verdict.status == Status::Unsupported)
            .map(|(i, c)| (label(i), c.verdict.unsupported.join("; ")))
            .collect();
        if !not_run.is_empty() {
            unsupported.insert(id.to_string(), not_run);
            continue;
        }
        compared += 1;
        let facts: Vec<BTreeMap<String, Observed>> =
            present.iter().map(|c| facts(c, measurements)).collect();
        let keys: BTreeSet<&String> = facts.iter().flat_map(|f| f.keys()).collect();
        let mut differences = Vec::new();
        let mut unobserved = Vec::new();
        for k in keys {
            let seen: Vec<Option<&Observed>> = facts.iter().map(|f| f.get(k)).collect();
            if seen
                .iter()
                .any(|o| matches!(o, Some(Observed::Unobserved(_))))
            {
                unobserved.push(k.clone());
                continue;
            }
            let values: Vec<Value> = seen
                .iter()
                .map(|o| o.map_or(Value::Null, Observed::value))
                .collect();
            let same = if k.ends_with("_ms") {
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
        if !differences.is_empty() || !unobserved.is_empty() {
            cases.push(CaseDiff {
                id: id.to_string(),
                differences,
                unobserved,
            });
        }
    }
    Comparison {
        columns,
        tolerance_ms,
        measurements,
        cases,
        compared,
        partial,
        unsupported,
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

    fn compare_all(reports: &[(String, Report)], tolerance_ms: f64) -> Comparison {
        compare(reports, tolerance_ms, false)
    }
    use crate::report::fixture::report;

    #[test]
    fn only_differing_facts_are_shown() {
        let a = report("a", 1, None);
        let mut b = report("b", 2, Some("EPIPE"));
        b.host.kernel = "6.1.0".into();
        let c = compare_all(&[("a.json".into(), a.clone()), ("b.json".into(), b)], 100.0);
        assert!(c.differs());
        assert_eq!(c.compared, 1);
        assert!(c.unsupported.is_empty());
        let fields: Vec<&str> = c.cases[0]
            .differences
            .iter()
            .map(|d| d.field.as_str())
            .collect();
        assert_eq!(fields, ["steps.line3.errno", "wire.client.distinct_fins"]);
        assert_eq!(c.columns[1].host, "linux 6.1.0 x86_64");

        let same = compare_all(
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
        assert!(!compare_all(&[("a".into(), a.clone()), ("b".into(), b.clone())], 100.0).differs());
        b.cases[0].steps[0].duration_ms = 1000.0;
        let c = compare_all(&[("a".into(), a), ("b".into(), b)], 100.0);
        assert_eq!(c.cases[0].differences[0].field, "steps.line3.duration_ms");
    }

    /// Across stacks: a fact one stack cannot observe, or a case it cannot
    /// run, is listed as such, not as a difference.
    #[test]
    fn unobserved_facts_and_unsupported_cases_are_not_differences() {
        let a = report("a", 1, None);
        let mut b = a.clone();
        b.cases[0].outcome.time_wait.side = None;
        b.cases[0]
            .outcome
            .unobserved
            .insert("time_wait".into(), "TCP_INFO".into());
        let c = compare_all(&[("a".into(), a.clone()), ("b".into(), b.clone())], 100.0);
        assert!(!c.differs());
        assert_eq!(c.cases[0].unobserved, ["time_wait.side"]);
        b.cases[0].verdict = crate::verdict::Verdict::unsupported(vec!["needs nft".into()]);
        let c = compare_all(&[("a".into(), a), ("b".into(), b)], 100.0);
        assert!(!c.differs() && c.cases.is_empty());
        assert_eq!(
            c.unsupported["x/ipv4"],
            [("B".to_string(), "needs nft".to_string())]
        );
    }

    #[test]
    fn cases_missing_from_a_report_are_listed() {
        let a = report("a", 1, None);
        let mut b = a.clone();
        b.cases[0].id = "y/ipv4".into();
        let c = compare_all(&[("a".into(), a), ("b".into(), b)], 100.0);
        assert_eq!(c.compared, 0);
        assert_eq!(c.partial["x/ipv4"], ["A"]);
        assert_eq!(c.partial["y/ipv4"], ["B"]);
    }
}
