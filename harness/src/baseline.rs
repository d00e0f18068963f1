//! Baselines: what this OS did last time, kept in the repository, so CI can
//! say when observed behaviour drifts.
//!
//! A baseline holds, per case, a *fingerprint*: the case's behavioural
//! facts (`facts::fingerprint`), named by the same paths expectations use
//! (`wire.client.distinct_fins`, `steps.lclose.errno`), plus the verdict.
//! Timings, retransmissions (FIN transmissions included: a tail-loss probe
//! can repeat a FIN whose ACK is merely late), packet lists and timers are
//! measurements, left out: they measure the machine as much as the stack.
//! Scenario expectations are where a timing belongs.
//!
//! A baseline is recorded from one or more runs; a fact that differed
//! between them is stored as `varies` (with the values seen) and not
//! checked, so a fact that is honestly nondeterministic cannot make CI flaky.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::report::{CaseReport, Host, Report};

/// Identifies baseline files, and their format version.
pub(crate) const KIND: &str = "teardown-baseline";
/// 2: facts are keyed by fact path (`steps.lclose.ret`), as expectations
/// name them.
pub(crate) const FORMAT: u32 = 2;

/// Why a baseline could not be read or recorded.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{0}")]
    Input(#[from] crate::files::InputError),
    #[error("{path}: not a teardown baseline (line {line}, column {column}): {message}")]
    Json {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}: not a teardown baseline this version reads (kind {kind:?}, format {format}; it reads {KIND:?} format {FORMAT}): re-record it with `just baseline`"
    )]
    Format {
        path: String,
        kind: String,
        format: u32,
    },
    #[error("no report to record a baseline from")]
    Empty,
    #[error("run {run} has other cases than run {first}: record from runs of the same scenarios")]
    DifferentCases { run: String, first: String },
    #[error("run {0} was interrupted; record from complete runs")]
    Interrupted(String),
}

/// One fact's recorded value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Recorded {
    /// Differed between the recorded runs: not checked.
    Varies { varies: Vec<Value> },
    /// The same in every recorded run.
    Value(Value),
}

/// A committed baseline (`reports/baseline/<os>.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub kind: String,
    pub format: u32,
    /// The host of the first recorded run.
    pub host: Host,
    pub tool_version: String,
    /// Run ids the baseline was recorded from.
    pub runs: Vec<String>,
    pub cases: BTreeMap<String, BTreeMap<String, Recorded>>,
    /// Each case's median duration over those runs, in whole ms: not a
    /// fact and never checked, only the order `run --baseline` starts the
    /// cases in (the longest first, so that none starts last).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub durations_ms: BTreeMap<String, f64>,
}

/// A case's fingerprint: its behavioural facts and its verdict.
pub(crate) fn fingerprint(c: &CaseReport) -> BTreeMap<String, Value> {
    let mut f = crate::facts::fingerprint(&c.facts());
    // A case that drives groups of connections is about all of them (see
    // `CaseReport::drives_groups`). How many bytes a read or write moved measures buffers and timing (a
    // buffer drained while the peer was still sending): the count is not
    // behaviour, whether it returned 0 or failed is.
    for s in &c.steps {
        let moved = matches!(
            s.verb,
            crate::scenario::Verb::Read | crate::scenario::Verb::Write
        ) && s.result.ret.is_some_and(|r| r > 0);
        if moved {
            f.remove(&format!("steps.{}.ret", s.key));
        }
    }
    if c.drives_groups() {
        f.retain(|path, _| !CaseReport::first_connection_fact(path));
    }
    // A fact the scenario bounds by a range varies by its author's word
    // (a race the kernel runs under load); the range is its check.
    for check in &c.verdict.checks {
        let bounded = check
            .expected
            .as_object()
            .is_some_and(|o| o.contains_key("min") || o.contains_key("max"));
        if bounded {
            f.remove(&check.path);
        }
    }
    f.insert("verdict".into(), json!(c.verdict.status.name()));
    f
}

impl Baseline {
    /// Records a baseline from one or more reports of the same cases.
    pub fn record(reports: &[Report]) -> Result<Baseline, BaselineError> {
        let first = reports.first().ok_or(BaselineError::Empty)?;
        if let Some(r) = reports.iter().find(|r| r.interrupted) {
            return Err(BaselineError::Interrupted(r.run_id.clone()));
        }
        let mut cases: BTreeMap<String, BTreeMap<String, Recorded>> = BTreeMap::new();
        let mut seen: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
        let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in reports {
            let ids: BTreeSet<&str> = r.cases.iter().map(|c| c.id.as_str()).collect();
            let first_ids: BTreeSet<&str> = first.cases.iter().map(|c| c.id.as_str()).collect();
            if ids != first_ids {
                return Err(BaselineError::DifferentCases {
                    run: r.run_id.clone(),
                    first: first.run_id.clone(),
                });
            }
            for c in &r.cases {
                durations
                    .entry(c.id.clone())
                    .or_default()
                    .push(c.duration_ms);
                let facts = seen.entry(c.id.clone()).or_default();
                for (k, v) in fingerprint(c) {
                    let vals = facts.entry(k).or_default();
                    if !vals.contains(&v) {
                        vals.push(v);
                    }
                }
            }
        }
        for (id, facts) in seen {
            let rec = facts
                .into_iter()
                .map(|(k, mut vals)| {
                    let r = if vals.len() == 1 {
                        Recorded::Value(vals.remove(0))
                    } else {
                        Recorded::Varies { varies: vals }
                    };
                    (k, r)
                })
                .collect();
            cases.insert(id, rec);
        }
        Ok(Baseline {
            kind: KIND.into(),
            format: FORMAT,
            host: first.host.clone(),
            tool_version: first.tool.version.clone(),
            runs: reports.iter().map(|r| r.run_id.clone()).collect(),
            cases,
            durations_ms: durations
                .into_iter()
                .map(|(id, mut ms)| {
                    ms.sort_by(f64::total_cmp);
                    (id, ms[ms.len() / 2].round())
                })
                .collect(),
        })
    }

    /// Reads a baseline file.
    pub fn read(path: &std::path::Path) -> Result<Baseline, BaselineError> {
        let text = crate::files::read_text(path, 1 << 30, "baseline")?;
        Baseline::parse(&path.display().to_string(), &text)
    }

    /// Parses a baseline file's text (`path` names it in errors); the
    /// error says what is wrong with it.
    pub fn parse(path: &str, text: &str) -> Result<Baseline, BaselineError> {
        /// The header alone, checked before the rest.
        #[derive(Deserialize)]
        struct Head {
            #[serde(default)]
            kind: String,
            #[serde(default)]
            format: u32,
        }
        let json = |e: serde_json::Error| BaselineError::Json {
            path: path.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        };
        let head: Head = serde_json::from_str(text).map_err(json)?;
        if head.kind != KIND || head.format != FORMAT {
            return Err(BaselineError::Format {
                path: path.to_string(),
                kind: head.kind,
                format: head.format,
            });
        }
        serde_json::from_str(text).map_err(json)
    }

    /// How many facts varied between the recorded runs (not checked).
    pub(crate) fn varying(&self) -> usize {
        self.cases
            .values()
            .flat_map(|f| f.values())
            .filter(|r| matches!(r, Recorded::Varies { .. }))
            .count()
    }

    /// The baseline of just these cases, for checking a run that selected
    /// them: the others are not missing, they were not asked for.
    pub fn only<'a>(mut self, ids: impl IntoIterator<Item = &'a str>) -> Baseline {
        let keep: BTreeSet<&str> = ids.into_iter().collect();
        self.cases.retain(|id, _| keep.contains(id.as_str()));
        self
    }

    /// Compares a run with the baseline.
    pub fn check(&self, report: &Report) -> Drift {
        let mut drift = Drift::default();
        for c in &report.cases {
            let Some(base) = self.cases.get(&c.id) else {
                drift.new_cases.push(c.id.clone());
                continue;
            };
            let now = fingerprint(c);
            let keys: BTreeSet<&String> = base.keys().chain(now.keys()).collect();
            let mut fields = Vec::new();
            for k in keys {
                let observed = now.get(k).cloned();
                match base.get(k) {
                    Some(Recorded::Varies { .. }) => {}
                    Some(Recorded::Value(v)) if Some(v) == observed.as_ref() => {}
                    recorded => fields.push(FieldDrift {
                        field: k.clone(),
                        baseline: recorded.and_then(|r| match r {
                            Recorded::Value(v) => Some(v.clone()),
                            Recorded::Varies { .. } => None,
                        }),
                        observed,
                    }),
                }
            }
            if !fields.is_empty() {
                drift.cases.push((c.id.clone(), fields));
            }
        }
        let ran: BTreeSet<&str> = report.cases.iter().map(|c| c.id.as_str()).collect();
        drift.missing = self
            .cases
            .keys()
            .filter(|id| !ran.contains(id.as_str()))
            .cloned()
            .collect();
        drift
    }
}

/// One fact that differs from the baseline; `None` = absent on that side.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldDrift {
    pub field: String,
    pub baseline: Option<Value>,
    pub observed: Option<Value>,
}

/// Everything that differs between a run and the baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Drift {
    /// Per case, the facts that differ.
    pub cases: Vec<(String, Vec<FieldDrift>)>,
    /// Cases the run has and the baseline does not (re-record to add them).
    pub new_cases: Vec<String>,
    /// Cases the baseline has and the run did not run.
    pub missing: Vec<String>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty() && self.new_cases.is_empty() && self.missing.is_empty()
    }

    /// A readable per-case, per-field diff.
    pub fn render(&self) -> String {
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".into(), |v| v.to_string());
        let mut out = String::new();
        for (id, fields) in &self.cases {
            let _ = writeln!(out, "{id}:");
            let width = fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
            for f in fields {
                let _ = writeln!(
                    out,
                    "  {:<width$}  baseline {}  now {}",
                    f.field,
                    show(&f.baseline),
                    show(&f.observed)
                );
            }
        }
        for id in &self.new_cases {
            let _ = writeln!(out, "{id}: not in the baseline");
        }
        for id in &self.missing {
            let _ = writeln!(out, "{id}: in the baseline but not in this run");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::report::fixture::report;

    #[test]
    fn the_same_behaviour_is_no_drift() {
        let b = Baseline::record(&[report("a", 1, None), report("b", 1, None)]).unwrap();
        assert!(b.check(&report("c", 1, None)).is_empty());
        let text = serde_json::to_string(&b).unwrap();
        assert_eq!(Baseline::parse("b.json", &text).unwrap(), b);
    }

    /// Each case's median duration is kept, only to order a run by: a
    /// different duration is not drift.
    #[test]
    fn durations_are_medians_and_never_drift() {
        let runs: Vec<Report> = [30.0, 10.0, 20.0]
            .iter()
            .enumerate()
            .map(|(i, ms)| {
                let mut r = report(&format!("r{i}"), 1, None);
                r.cases.iter_mut().for_each(|c| c.duration_ms = *ms);
                r
            })
            .collect();
        let b = Baseline::record(&runs).unwrap();
        assert!(!b.durations_ms.is_empty());
        assert!(b.durations_ms.values().all(|ms| *ms == 20.0));
        let mut slow = report("s", 1, None);
        slow.cases.iter_mut().for_each(|c| c.duration_ms = 9_000.0);
        assert!(b.check(&slow).is_empty());
        // A baseline written before durations were kept still reads.
        let mut text: serde_json::Value = serde_json::to_value(&b).unwrap();
        text.as_object_mut().unwrap().remove("durations_ms");
        let old = Baseline::parse("old.json", &text.to_string()).unwrap();
        assert!(old.durations_ms.is_empty());
    }

    #[test]
    fn a_changed_fact_is_named_with_both_values() {
        let b = Baseline::record(&[report("a", 1, None)]).unwrap();
        let d = b.check(&report("c", 2, Some("EPIPE")));
        let text = d.render();
        assert!(
            text.contains("wire.client.distinct_fins") && text.contains("baseline 1  now 2"),
            "{text}"
        );
        assert!(
            text.contains("steps.line3.errno") && text.contains("\"EPIPE\""),
            "{text}"
        );
        assert_eq!(d.cases[0].1.len(), 2);
    }

    #[test]
    fn a_selection_is_checked_against_its_own_cases_only() {
        let mut two = report("a", 1, None);
        let mut y = two.cases[0].clone();
        y.id = "y/ipv4".into();
        two.cases.push(y);
        let b = Baseline::record(&[two]).unwrap();
        let run = report("c", 1, None); // only x/ipv4
        assert_eq!(b.check(&run).missing, ["y/ipv4"]);
        assert!(b.clone().only(["x/ipv4"]).check(&run).is_empty());
        assert!(
            !b.only(["x/ipv4"]).check(&report("c", 2, None)).is_empty(),
            "a selected case still drifts"
        );
    }

    #[test]
    fn facts_that_varied_while_recording_are_not_checked() {
        let b = Baseline::record(&[report("a", 1, None), report("b", 2, None)]).unwrap();
        assert_eq!(
            b.cases["x/ipv4"]["wire.client.distinct_fins"],
            Recorded::Varies {
                varies: vec![json!(1), json!(2)]
            }
        );
        assert!(b.check(&report("c", 3, None)).is_empty());
        assert!(!b.check(&report("c", 1, Some("EPIPE"))).is_empty());
    }

    /// A fact the scenario checks with a range is left to its range: a
    /// value inside it that the recorded runs never showed is no drift.
    #[test]
    fn facts_a_scenario_bounds_by_a_range_are_not_recorded() {
        let bounded = |n| {
            let mut r = report("a", n, None);
            r.cases[0].verdict.checks.push(crate::verdict::Check {
                path: "wire.client.distinct_fins".into(),
                expected: json!({ "min": 1, "max": 3 }),
                observed: json!(n),
                unobserved: None,
                ok: true,
                claims: vec![],
                claim_outcomes: Default::default(),
                why: None,
                line: 9,
            });
            r
        };
        let b = Baseline::record(&[bounded(1)]).unwrap();
        assert!(!b.cases["x/ipv4"].contains_key("wire.client.distinct_fins"));
        assert!(b.check(&bounded(2)).is_empty());
        // Without the range the same change is drift.
        assert!(
            !Baseline::record(&[report("a", 1, None)])
                .unwrap()
                .check(&report("c", 2, None))
                .is_empty()
        );
    }

    #[test]
    fn new_and_missing_cases_are_drift() {
        let b = Baseline::record(&[report("a", 1, None)]).unwrap();
        let mut r = report("c", 1, None);
        r.cases[0].id = "y/ipv4".into();
        let d = b.check(&r);
        assert_eq!(d.new_cases, ["y/ipv4"]);
        assert_eq!(d.missing, ["x/ipv4"]);
        let e = Baseline::parse("b.json", "{\"kind\": \"other\"}").unwrap_err();
        assert!(
            e.to_string()
                .contains("b.json: not a teardown baseline this version reads (kind \"other\""),
            "{e}"
        );
        let e = Baseline::parse("b.json", "{\"kind\": ").unwrap_err();
        assert!(e.to_string().contains("not a teardown baseline"), "{e}");
    }
}
