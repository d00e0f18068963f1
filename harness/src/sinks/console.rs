//! The console: one row per case, then every mismatch and harness error,
//! then the summary line.

use std::fmt::Write as _;

use crate::analyze::SideCounts;
use crate::outcome::TimeWaitSide;
use crate::report::Report;
use crate::verdict::{Mismatch, Status};

use super::terminal::{Terminal, fit_by_hiding, keep_whole, lines};
use comfy_table::{Cell, Color};

/// One row per case, the verdict first and the id exactly as `-f` takes
/// it, fitted to the terminal's width; then every problem and the summary.
pub fn table(report: &Report, term: &Terminal) -> String {
    let mut t = term.table(&[
        "verdict",
        "case",
        "client F/R",
        "server F/R",
        "first FIN",
        "TIME-WAIT",
        "lost c>s",
        "lost s>c",
    ]);
    for c in &report.cases {
        let o = &c.outcome;
        let fr = |s: Option<&SideCounts>| s.map_or("-".into(), |s| format!("{}/{}", s.fin, s.rst));
        let w = o.wire.as_ref();
        let first = w
            .and_then(|w| w.first_fin)
            .map_or("-", |f| f.name())
            .to_string();
        let tw = o.time_wait.side.map_or("-", TimeWaitSide::name).to_string();
        let lost = |f: &crate::outcome::Flow, key: &str| match f.lost {
            Some(lost) if !o.unobserved.contains_key("data") && !o.unobserved.contains_key(key) => {
                lost.to_string()
            }
            _ => "-".to_string(),
        };
        t.add_row(vec![
            verdict_cell(c, term),
            Cell::new(&c.id),
            Cell::new(fr(w.map(|w| &w.sides.client))),
            Cell::new(fr(w.map(|w| &w.sides.server))),
            Cell::new(first),
            Cell::new(tw),
            Cell::new(lost(&o.data.client_to_server, "data.client_to_server")),
            Cell::new(lost(&o.data.server_to_client, "data.server_to_client")),
        ]);
    }
    for i in 0..8 {
        keep_whole(&mut t, i);
    }
    // Values are never split; on a narrow terminal the least needed
    // columns go, and a note says which.
    let hidden = fit_by_hiding(&mut t, term.width, &[7, 6, 4, 5, 3, 2]);
    let mut out = lines(&t);
    if !hidden.is_empty() {
        let _ = writeln!(
            out,
            "(to fit {} columns, not shown: {}; the report has them)",
            term.width.unwrap_or(0),
            hidden.join(", ")
        );
    }
    out.push_str(&problems(report));
    out.push_str(&report.summary.line(report.cases.len()));
    out.push('\n');
    out
}

/// `pass`, `FAIL`, `ERROR`, ...: one word a script can split on, coloured
/// on a terminal (failures red, errors magenta, the rest dim).
fn verdict_cell(c: &crate::report::CaseReport, term: &Terminal) -> Cell {
    let (text, colour) = match c.verdict.status {
        Status::Pass => ("pass".to_string(), Color::Green),
        Status::Fail => ("FAIL".to_string(), Color::Red),
        Status::Error => ("ERROR".to_string(), Color::Magenta),
        other => (other.name().to_string(), Color::Yellow),
    };
    term.paint(&text, colour)
}

/// `teardown list`: one row per case, id (as `-f` takes it), claims,
/// title; the title wraps within the terminal's width.
pub fn list(cases: &[crate::scenario::Case], term: &Terminal) -> String {
    let mut t = term.table(&["case", "claims", "title"]);
    for c in cases {
        t.add_row(vec![
            c.id.as_str(),
            &c.scenario.claims.join(" "),
            &c.scenario.title,
        ]);
    }
    keep_whole(&mut t, 0);
    keep_whole(&mut t, 1);
    lines(&t)
}

/// `teardown list --format json`: each case's id (as `-f` takes it),
/// scenario, title, claims and parameters, in the id's order.
pub(crate) fn list_json(cases: &[crate::scenario::Case]) -> serde_json::Value {
    serde_json::Value::Array(
        cases
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id,
                    "scenario": c.scenario.id,
                    "title": c.scenario.title,
                    "claims": c.scenario.claims,
                    "family": c.family.to_string(),
                    "params": c.params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                })
            })
            .collect(),
    )
}

/// `teardown facts`: every fact path an expectation can name. `<step>` is
/// a step's label, or `lineN` for the step on line N; `<fault>` a fault
/// step's label or `lineN`.
/// What `teardown check` found: the case count, and how far the sysctls
/// could be checked.
pub fn checked(
    cases: usize,
    sysctls: &crate::catalogue::SysctlCheck,
    reach: &crate::stack::Reach,
    unsupported: &[(&crate::scenario::Case, Vec<String>)],
) -> String {
    use crate::catalogue::SysctlCheck;
    let mut out = format!("ok: {cases} cases\n");
    let stack = reach.name();
    if !unsupported.is_empty() {
        let _ = writeln!(
            out,
            "on {stack}, {} of {cases} cases would be unsupported:",
            unsupported.len()
        );
        for (c, missing) in unsupported {
            let _ = writeln!(out, "  {}: {}", c.id, missing.join("; "));
        }
    }
    match sysctls {
        SysctlCheck::Checked { absent } => {
            for name in absent {
                let _ = writeln!(out, "note: this kernel has no {name}");
            }
        }
        SysctlCheck::NotChecked(why) => {
            let _ = writeln!(
                out,
                "note: [sysctl] names were not checked against a network namespace ({why})"
            );
        }
    }
    out
}

pub fn facts() -> String {
    let width = crate::facts::KINDS
        .iter()
        .map(|k| k.pattern.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for k in crate::facts::KINDS {
        let class = k.used_as.name();
        let _ = writeln!(out, "{:<width$}  {class:<11}  {}", k.pattern, k.doc);
    }
    out
}

/// Every mismatch, harness error and unsupported case, one line each. A
/// case the harness could not run says so alone: its expectations met
/// nothing observed, so listing them would bury the reason.
pub fn problems(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.cases {
        let mismatches = if c.verdict.error.is_some() {
            &[][..]
        } else {
            &c.verdict.mismatches[..]
        };
        for m in mismatches {
            let _ = writeln!(
                out,
                "  {}: {}",
                c.id,
                Mismatch {
                    check: m,
                    file: &c.scenario_file
                }
            );
        }
        if let Some(e) = &c.verdict.error {
            let _ = writeln!(out, "  {}: harness error: {e}", c.id);
        }
        for u in &c.verdict.unsupported {
            let _ = writeln!(out, "  {}: unsupported: {u}", c.id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::report;
    use crate::verdict::Check;

    #[test]
    fn a_row_per_case_then_problems_then_the_summary() {
        let mut r = report("a", 1, None);
        let mut failed = r.cases[0].clone();
        failed.id = "x/ipv6".into();
        failed.params.insert("family".into(), "ipv6".into());
        failed.verdict.status = Status::Fail;
        failed.verdict.mismatches = vec![Check {
            path: "wire.client.rst".into(),
            expected: serde_json::json!(1),
            observed: serde_json::json!(0),
            unobserved: None,
            ok: false,
            claims: vec!["C6".into()],
            claim_outcomes: Default::default(),
            why: None,
            line: 12,
        }];
        r.cases.push(failed);
        r.summary = crate::report::Summary::of(&r.cases);
        insta::assert_snapshot!(table(&r, &Terminal::PLAIN));
    }
}
