//! Baselines: what this OS did last time, kept in the repository, so CI can
//! say when observed behaviour drifts.
//!
//! A baseline holds, per case, a *fingerprint*: the behavioural facts of the
//! case report flattened to `path = value` (distinct FINs and RSTs per side,
//! first FIN and RST, Zeek state, TIME-WAIT side, final states, application
//! data counts, every step's return value, errno and timeout, fault rule
//! counts, the verdict). Timings, retransmissions (FIN transmissions
//! included: a tail-loss probe can repeat a FIN whose ACK is merely late),
//! packet lists and timers are left out: they measure the machine as much as
//! the stack. Scenario expectations are where a timing belongs.
//!
//! A baseline is recorded from one or more runs; a fact that differed
//! between them is stored as `varies` (with the values seen) and not
//! checked, so a fact that is honestly nondeterministic cannot make CI flaky.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::driver::StepRecord;
use crate::report::{CaseReport, Host, Report};

/// Identifies baseline files, and their format version.
pub const KIND: &str = "teardown-baseline";
pub const FORMAT: u32 = 1;

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
}

/// A case's behavioural facts as `path -> value`.
pub fn fingerprint(c: &CaseReport) -> BTreeMap<String, Value> {
    let mut f = BTreeMap::new();
    let mut put = |k: String, v: Value| {
        f.insert(k, v);
    };
    put("verdict".into(), json!(c.verdict.status.name()));
    match &c.wire {
        Some(w) => {
            for (side, s) in [("client", &w.client), ("server", &w.server)] {
                put(format!("wire.{side}.syn"), json!(s.syn));
                put(format!("wire.{side}.distinct_fins"), json!(s.distinct_fins));
                put(format!("wire.{side}.rst"), json!(s.rst));
            }
            put("wire.first_fin".into(), json!(w.first_fin));
            put("wire.first_rst".into(), json!(w.first_rst));
            put("wire.conn_state".into(), json!(w.conn_state));
        }
        None => put("wire".into(), Value::Null),
    }
    put("time_wait.side".into(), json!(c.time_wait.side));
    put("final_state.client".into(), json!(c.final_state.client));
    put("final_state.server".into(), json!(c.final_state.server));
    for (dir, flow) in [
        ("client_to_server", &c.data.client_to_server),
        ("server_to_client", &c.data.server_to_client),
    ] {
        put(format!("data.{dir}.written"), json!(flow.written));
        put(format!("data.{dir}.read"), json!(flow.read));
        put(format!("data.{dir}.lost"), json!(flow.lost));
        put(format!("data.{dir}.corrupted"), json!(flow.corrupted));
    }
    for (i, s) in c.steps.iter().enumerate() {
        let key = step_key(i, s);
        let r = &s.result;
        // accept() returns a descriptor number, which depends on what else
        // the process has open; that it succeeded is the behaviour.
        let ret = match r.ret {
            Some(fd) if fd >= 0 && step_verb(s) == Some("accept") => {
                json!("fd")
            }
            other => json!(other),
        };
        put(format!("{key}.ret"), ret);
        put(format!("{key}.errno"), json!(r.errno));
        put(format!("{key}.timed_out"), json!(r.timed_out));
    }
    for (i, fault) in c.faults.iter().enumerate() {
        put(
            format!("faults[{}: {}].matched", i + 1, fault.rule),
            json!(fault.matched),
        );
    }
    f
}

/// A step's name in fingerprints: `steps[line 12: client close as lc]`
/// (`setup N` for the implicit connection setup). `index` is its position.
pub fn step_key(index: usize, s: &StepRecord) -> String {
    let at = s
        .line
        .map_or(format!("setup {}", index + 1), |l| format!("line {l}"));
    format!("steps[{at}: {}]", s.call)
}

/// The call a step made (`close`, `accept`, ...), after `bg` and the actor.
pub fn step_verb(s: &StepRecord) -> Option<&str> {
    let mut words = s.call.split_whitespace().skip_while(|w| *w == "bg");
    words.next()?;
    words.next()
}

impl Baseline {
    /// Records a baseline from one or more reports of the same cases.
    pub fn record(reports: &[Report]) -> Result<Baseline, String> {
        let first = reports.first().ok_or("no report to record from")?;
        let mut cases: BTreeMap<String, BTreeMap<String, Recorded>> = BTreeMap::new();
        let mut seen: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
        for r in reports {
            let ids: BTreeSet<&str> = r.cases.iter().map(|c| c.id.as_str()).collect();
            let first_ids: BTreeSet<&str> = first.cases.iter().map(|c| c.id.as_str()).collect();
            if ids != first_ids {
                return Err(format!(
                    "run {} has other cases than run {}: record from runs of the same scenarios",
                    r.run_id, first.run_id
                ));
            }
            for c in &r.cases {
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
        })
    }

    /// Parses a baseline file's text; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Baseline, String> {
        let b: Baseline = serde_json::from_str(text).map_err(|e| {
            format!(
                "not a teardown baseline (line {}, column {}): {e}",
                e.line(),
                e.column()
            )
        })?;
        if b.kind != KIND || b.format != FORMAT {
            return Err(format!(
                "a baseline of kind {:?} format {}; this teardown reads {KIND:?} format {FORMAT}: re-record it",
                b.kind, b.format
            ));
        }
        Ok(b)
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
        assert_eq!(Baseline::parse(&text).unwrap(), b);
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
            text.contains("steps[line 3: client close].errno") && text.contains("\"EPIPE\""),
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

    #[test]
    fn step_verbs_skip_bg_and_the_actor() {
        let mut s = report("a", 1, None).cases[0].steps[0].clone();
        assert_eq!(step_verb(&s), Some("close"));
        s.call = "bg client close as lc".into();
        assert_eq!(step_verb(&s), Some("close"));
        assert_eq!(step_key(0, &s), "steps[line 3: bg client close as lc]");
        s.call = "sleep 10ms".into();
        assert_eq!(step_verb(&s), Some("10ms"));
        s.line = None;
        assert_eq!(step_key(1, &s), "steps[setup 2: sleep 10ms]");
    }

    #[test]
    fn new_and_missing_cases_are_drift() {
        let b = Baseline::record(&[report("a", 1, None)]).unwrap();
        let mut r = report("c", 1, None);
        r.cases[0].id = "y/ipv4".into();
        let d = b.check(&r);
        assert_eq!(d.new_cases, ["y/ipv4"]);
        assert_eq!(d.missing, ["x/ipv4"]);
        assert!(
            Baseline::parse("{\"kind\": \"other\"}")
                .unwrap_err()
                .contains("not a teardown baseline")
        );
    }
}
