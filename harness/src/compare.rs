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

use crate::baseline::{Baseline, Recorded};
use crate::facts::{Observed, Use};
use crate::report::{CaseReport, Report};
use crate::scenario::Verb;
use crate::tcp::PerSide;
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
    /// What joined the sides: `loopback` or `bench`.
    pub link: crate::scenario::Link,
    /// The stack each side ran on (on loopback, the one stack twice).
    pub sides: PerSide<String>,
    pub tool_version: String,
    pub started_at: String,
}

/// A fact with different values across the reports (null where a report
/// lacks it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub field: String,
    pub values: Vec<Value>,
    /// Whose stack decides it, where the reports' stacks tell (see
    /// [`decided_by`]); null where the value does not follow them (the
    /// link, the kernel, the harness, the run).
    pub decided_by: Option<Decider>,
}

/// Which side's stack a fact follows across the reports compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decider {
    /// The reports with the same client stack agree, whatever the server's.
    Client,
    /// The reports with the same server stack agree, whatever the client's.
    Server,
    /// Either would explain it: the two sides' stacks changed together in
    /// these reports (a 2x2 matrix tells them apart).
    ClientOrServer,
    /// Only the pair explains it: neither side's stack alone does.
    Both,
}

impl Decider {
    pub fn name(self) -> &'static str {
        match self {
            Decider::Client => "client's stack",
            Decider::Server => "server's stack",
            Decider::ClientOrServer => "client's or server's stack",
            Decider::Both => "both stacks",
        }
    }
}

/// Whose stack decides a fact that takes `values` in reports whose sides
/// ran `stacks` (one per report, in the same order): the side whose stack
/// alone determines the value, both if only the pair does, none if reports
/// on the same stacks disagree (something else decides) or every report
/// ran the same stacks (nothing to tell by).
pub(crate) fn decided_by(
    field: &str,
    values: &[Value],
    stacks: &[PerSide<String>],
    tolerance_ms: f64,
) -> Option<Decider> {
    // Whether the value is a function of `key`: equal keys, agreeing values.
    let follows = |key: &dyn Fn(&PerSide<String>) -> String| {
        values.iter().zip(stacks).enumerate().all(|(i, (v, s))| {
            values
                .iter()
                .zip(stacks)
                .skip(i + 1)
                .all(|(w, t)| key(s) != key(t) || agree(field, v, w, tolerance_ms))
        })
    };
    let pair = |s: &PerSide<String>| format!("{}/{}", s.client, s.server);
    if stacks.windows(2).all(|w| w[0] == w[1]) || !follows(&pair) {
        return None;
    }
    match (
        follows(&|s: &PerSide<String>| s.client.clone()),
        follows(&|s: &PerSide<String>| s.server.clone()),
    ) {
        (true, true) => Some(Decider::ClientOrServer),
        (true, false) => Some(Decider::Client),
        (false, true) => Some(Decider::Server),
        (false, false) => Some(Decider::Both),
    }
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

/// What `compare` reads: a report, or a baseline (the behaviour facts of
/// every case, as recorded over several runs).
#[derive(Clone, Debug)]
pub enum Input {
    Report(Report),
    Baseline(Baseline),
}

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Report(#[from] crate::report::load::LoadError),
    #[error("{0}")]
    Baseline(#[from] crate::baseline::BaselineError),
    #[error("{0}")]
    File(#[from] crate::files::InputError),
}

/// Reads reports and baselines (told apart by a baseline's `kind`).
pub fn read_inputs(paths: &[std::path::PathBuf]) -> Result<Vec<(String, Input)>, InputError> {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(default)]
        kind: String,
    }
    paths
        .iter()
        .map(|p| {
            let name = p.display().to_string();
            let text = crate::files::read_text(p, 1 << 30, "report or baseline")?;
            let is_baseline =
                serde_json::from_str::<Head>(&text).is_ok_and(|h| h.kind == crate::baseline::KIND);
            Ok((
                name.clone(),
                if is_baseline {
                    Input::Baseline(Baseline::parse(&name, &text)?)
                } else {
                    Input::Report(crate::report::load::parse(p, &text)?)
                },
            ))
        })
        .collect()
}

/// One case of one input, as compared.
struct CaseView {
    /// Why the stack could not run it, if it could not.
    unsupported: Option<String>,
    facts: BTreeMap<String, Observed>,
}

impl Input {
    /// The stack the input was observed on (`linux`, `gvisor`).
    pub fn stack(&self) -> String {
        match self {
            Input::Report(r) => r.host.stacks_name(),
            Input::Baseline(b) => b.host.stacks_name(),
        }
    }

    /// What joined each case's sides.
    pub fn link(&self) -> crate::scenario::Link {
        match self {
            Input::Report(r) => r.host.link(),
            Input::Baseline(b) => b.host.link(),
        }
    }

    /// Every case the stack ran, with its observed behavioural facts
    /// (unobserved and varying facts left out).
    pub(crate) fn observed_facts(&self) -> BTreeMap<String, BTreeMap<String, Value>> {
        self.cases(false)
            .into_iter()
            .filter(|(_, view)| view.unsupported.is_none())
            .map(|(id, view)| {
                let facts = view
                    .facts
                    .into_iter()
                    .filter_map(|(k, o)| match o {
                        Observed::Value(v) => Some((k, v)),
                        Observed::Unobserved(_) => None,
                    })
                    .collect();
                (id, facts)
            })
            .collect()
    }

    fn column(&self, label: String, file: &str) -> Column {
        let (host, tool_version, started_at) = match self {
            Input::Report(r) => (&r.host, r.tool.version.clone(), r.started_at.clone()),
            Input::Baseline(b) => (
                &b.host,
                b.tool_version.clone(),
                format!("baseline of {} runs", b.runs.len()),
            ),
        };
        Column {
            label,
            file: file.to_string(),
            host: host.name(),
            os: host.os.clone(),
            stack: host.stack.name.clone(),
            link: host.link(),
            sides: host.side_stacks(),
            kernel: host.kernel.clone(),
            arch: host.arch.clone(),
            tool_version,
            started_at,
        }
    }

    fn cases(&self, measurements: bool) -> BTreeMap<String, CaseView> {
        match self {
            Input::Report(r) => r
                .cases
                .iter()
                .map(|c| {
                    let view = CaseView {
                        unsupported: (c.verdict.status == Status::Unsupported)
                            .then(|| c.verdict.unsupported.join("; ")),
                        facts: facts(c, measurements),
                    };
                    (c.id.clone(), view)
                })
                .collect(),
            Input::Baseline(b) => b
                .cases
                .iter()
                .map(|(id, recorded)| {
                    let unsupported = matches!(
                        recorded.get("verdict"),
                        Some(Recorded::Value(Value::String(s))) if s == "unsupported"
                    );
                    let facts = recorded
                        .iter()
                        .filter(|(k, _)| k.as_str() != "verdict")
                        .map(|(k, r)| {
                            let o = match r {
                                Recorded::Value(v) => Observed::Value(v.clone()),
                                Recorded::Varies { varies } => Observed::Unobserved(format!(
                                    "varied across the baseline's runs: {}",
                                    Value::from(varies.clone())
                                )),
                            };
                            (k.clone(), o)
                        })
                        .collect();
                    let view = CaseView {
                        unsupported: unsupported
                            .then(|| "unsupported when the baseline was recorded".to_string()),
                        facts,
                    };
                    (id.clone(), view)
                })
                .collect(),
        }
    }
}

/// The facts compared for one case: its behavioural facts plus close()
/// durations (or, with `measurements`, every fact), named as expectations
/// name them.
fn facts(c: &CaseReport, measurements: bool) -> BTreeMap<String, Observed> {
    let view = c.facts();
    let groups = c.drives_groups();
    crate::facts::all(&view)
        .into_iter()
        // A group case's first-connection facts are chance: not compared.
        .filter(|(p, _)| !(groups && CaseReport::first_connection_fact(&p.to_string())))
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

/// Whether two values of fact `field` count as the same: durations
/// (`*_ms`) within `tolerance_ms`, anything else exactly.
pub(crate) fn agree(field: &str, a: &Value, b: &Value, tolerance_ms: f64) -> bool {
    match (field.ends_with("_ms"), a.as_f64(), b.as_f64()) {
        (true, Some(x), Some(y)) => (x - y).abs() <= tolerance_ms,
        _ => a == b,
    }
}

/// Compares reports (at least two), given with the file each came from.
/// Durations (`*_ms`) count as equal within `tolerance_ms`; `measurements`
/// also compares the facts that measure the machine (byte counts of buffer
/// fills, FIN transmissions, timers).
pub fn compare(reports: &[(String, Report)], tolerance_ms: f64, measurements: bool) -> Comparison {
    let inputs: Vec<(String, Input)> = reports
        .iter()
        .map(|(f, r)| (f.clone(), Input::Report(r.clone())))
        .collect();
    compare_inputs(&inputs, tolerance_ms, measurements)
}

/// [`compare`] over reports and baselines. A baseline holds behaviour facts
/// only: a fact it did not record, or recorded as varying, is listed as
/// not compared, like a fact a stack could not observe.
pub(crate) fn compare_inputs(
    inputs: &[(String, Input)],
    tolerance_ms: f64,
    measurements: bool,
) -> Comparison {
    let columns: Vec<Column> = inputs
        .iter()
        .enumerate()
        .map(|(i, (file, input))| input.column(label(i), file))
        .collect();
    let mut by_id: Vec<BTreeMap<String, CaseView>> =
        inputs.iter().map(|(_, i)| i.cases(measurements)).collect();
    let baselines: Vec<bool> = inputs
        .iter()
        .map(|(_, i)| matches!(i, Input::Baseline(_)))
        .collect();
    let stacks: Vec<PerSide<String>> = columns.iter().map(|c| c.sides.clone()).collect();
    let all_ids: BTreeSet<String> = by_id.iter().flat_map(|m| m.keys().cloned()).collect();
    let mut cases = Vec::new();
    let mut partial = BTreeMap::new();
    let mut unsupported = BTreeMap::new();
    let mut compared = 0;
    for id in all_ids {
        let present: Vec<Option<CaseView>> = by_id.iter_mut().map(|m| m.remove(&id)).collect();
        if present.iter().any(Option::is_none) {
            let having = present
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_some())
                .map(|(i, _)| label(i))
                .collect();
            partial.insert(id.clone(), having);
            continue;
        }
        let present: Vec<CaseView> = present.into_iter().flatten().collect();
        let not_run: Vec<(String, String)> = present
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((label(i), c.unsupported.clone()?)))
            .collect();
        if !not_run.is_empty() {
            unsupported.insert(id.clone(), not_run);
            continue;
        }
        compared += 1;
        let facts: Vec<BTreeMap<String, Observed>> = present.into_iter().map(|c| c.facts).collect();
        let keys: BTreeSet<&String> = facts.iter().flat_map(|f| f.keys()).collect();
        let mut differences = Vec::new();
        let mut unobserved = Vec::new();
        for k in keys {
            let seen: Vec<Option<&Observed>> = facts.iter().map(|f| f.get(k)).collect();
            // A baseline keeps behaviour facts only: one it lacks was not
            // recorded, which says nothing about the behaviour.
            let unrecorded = seen
                .iter()
                .zip(&baselines)
                .any(|(o, baseline)| *baseline && o.is_none());
            if unrecorded {
                continue;
            }
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
                values
                    .windows(2)
                    .all(|w| agree(k, &w[0], &w[1], tolerance_ms))
            };
            if !same {
                let decided_by = decided_by(k, &values, &stacks, tolerance_ms);
                differences.push(Difference {
                    field: k.clone(),
                    values,
                    decided_by,
                });
            }
        }
        if !differences.is_empty() || !unobserved.is_empty() {
            cases.push(CaseDiff {
                id: id.clone(),
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

    fn stacks(pairs: &[(&str, &str)]) -> Vec<PerSide<String>> {
        pairs
            .iter()
            .map(|(c, s)| PerSide::new(c.to_string(), s.to_string()))
            .collect()
    }

    /// A 2x2 matrix tells the sides apart: a fact that follows the server's
    /// stack whatever the client's is the server's to decide.
    #[test]
    fn a_two_by_two_matrix_says_whose_stack_decides() {
        let matrix = stacks(&[
            ("linux", "linux"),
            ("linux", "gvisor"),
            ("gvisor", "linux"),
            ("gvisor", "gvisor"),
        ]);
        let v = |xs: [i64; 4]| xs.map(Value::from).to_vec();
        let by = |xs| decided_by("wire.server.rst", &v(xs), &matrix, 0.0);
        assert_eq!(by([1, 0, 1, 0]), Some(Decider::Server));
        assert_eq!(by([1, 1, 0, 0]), Some(Decider::Client));
        assert_eq!(by([1, 1, 1, 0]), Some(Decider::Both));
        // Two reports on the same stacks would have to agree.
        let twice = stacks(&[("linux", "linux"), ("linux", "linux"), ("gvisor", "gvisor")]);
        let values = [1, 2, 2].map(Value::from);
        assert_eq!(decided_by("x", &values, &twice, 0.0), None);
        // Both sides changed together: either could decide.
        let values = [1, 1, 2].map(Value::from);
        assert_eq!(
            decided_by("x", &values, &twice, 0.0),
            Some(Decider::ClientOrServer)
        );
        // Every report on the same stacks: nothing to tell by.
        let same = stacks(&[("linux", "linux"), ("linux", "linux")]);
        assert_eq!(decided_by("x", &[1, 2].map(Value::from), &same, 0.0), None);
        // Durations count as one within the tolerance.
        let ms = [10.0, 30.0, 11.0, 31.0].map(Value::from).to_vec();
        assert_eq!(
            decided_by("steps.c.duration_ms", &ms, &matrix, 5.0),
            Some(Decider::Server)
        );
    }

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

    /// A baseline compares like a report, on the behaviour facts it keeps:
    /// a fact it did not record (a duration) or recorded as varying is not
    /// a difference.
    #[test]
    fn a_baseline_compares_on_the_facts_it_recorded() {
        let a = report("a", 1, None);
        let b = report("b", 2, Some("EPIPE"));
        let varied = Baseline::record(&[a.clone(), b.clone()]).unwrap();
        let steady = Baseline::record(std::slice::from_ref(&a)).unwrap();
        let mut slow = a.clone();
        slow.cases[0].steps[0].duration_ms = 5000.0;
        let inputs = |base: &Baseline, r: &Report| {
            vec![
                ("base.json".to_string(), Input::Baseline(base.clone())),
                ("r.json".to_string(), Input::Report(r.clone())),
            ]
        };
        // Durations are not in a baseline; equal behaviour is no difference.
        let c = compare_inputs(&inputs(&steady, &slow), 100.0, false);
        assert!(!c.differs(), "{:?}", c.cases);
        assert_eq!(c.columns[0].started_at, "baseline of 1 runs");
        // A behaviour fact that differs from the baseline's value does.
        let c = compare_inputs(&inputs(&steady, &b), 100.0, false);
        let fields: Vec<&str> = c.cases[0]
            .differences
            .iter()
            .map(|d| d.field.as_str())
            .collect();
        assert_eq!(fields, ["steps.line3.errno", "wire.client.distinct_fins"]);
        // Facts that varied between the baseline's runs are not compared.
        let c = compare_inputs(&inputs(&varied, &b), 100.0, false);
        assert!(!c.differs());
        assert!(
            c.cases[0]
                .unobserved
                .contains(&"steps.line3.errno".to_string())
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
