//! The console: one row per case, then every mismatch and harness error,
//! then the summary line.

use std::fmt::Write as _;

use crate::analyze::SideCounts;
use crate::outcome::TimeWaitSide;
use crate::report::Report;
use crate::verdict::{Mismatch, Status};

/// One row per case: what a person scans first.
pub fn table(report: &Report) -> String {
    let head = [
        "scenario",
        "params",
        "client F/R",
        "server F/R",
        "first FIN",
        "TIME-WAIT",
        "lost c>s",
        "lost s>c",
        "verdict",
    ];
    let mut rows: Vec<[String; 9]> = Vec::new();
    for c in &report.cases {
        let o = &c.outcome;
        let fr = |s: Option<&SideCounts>| s.map_or("-".into(), |s| format!("{}/{}", s.fin, s.rst));
        let w = o.wire.as_ref();
        let first = w
            .and_then(|w| w.first_fin)
            .map_or("-", |f| f.name())
            .to_string();
        let tw = o.time_wait.side.map_or("-", TimeWaitSide::name).to_string();
        let status = match c.verdict.status {
            Status::Fail => format!("FAIL ({})", c.verdict.mismatches.len()),
            Status::Error => "ERROR".to_string(),
            other => other.name().to_string(),
        };
        // family first, then the other axes as name=value
        let mut params: Vec<String> = c.params.get("family").cloned().into_iter().collect();
        params.extend(
            c.params
                .iter()
                .filter(|(k, _)| *k != "family")
                .map(|(k, v)| format!("{k}={v}")),
        );
        let lost = |f: &crate::outcome::Flow, key: &str| {
            if o.unobserved.contains_key("data") || o.unobserved.contains_key(key) {
                "-".to_string()
            } else {
                f.lost.to_string()
            }
        };
        rows.push([
            c.scenario.clone(),
            params.join(" "),
            fr(w.map(|w| &w.sides.client)),
            fr(w.map(|w| &w.sides.server)),
            first,
            tw,
            lost(&o.data.client_to_server, "data.client_to_server"),
            lost(&o.data.server_to_client, "data.server_to_client"),
            status,
        ]);
    }
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&head, &mut out);
    for r in &rows {
        line(&r.each_ref().map(String::as_str), &mut out);
    }
    out.push_str(&problems(report));
    out.push_str(&report.summary.line(report.cases.len()));
    out.push('\n');
    out
}

/// `teardown list`: one line per case, id, claims, title.
pub fn list(cases: &[crate::scenario::Case]) -> String {
    let width = cases
        .iter()
        .map(|c| c.id.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in cases {
        let _ = writeln!(
            out,
            "{:<width$}  {:<10} {}",
            c.id,
            c.scenario.claims.join(" "),
            c.scenario.title
        );
    }
    out
}

/// `teardown list --format json`: each case's id (as `-f` takes it),
/// scenario, title, claims and parameters, in the id's order.
pub fn list_json(cases: &[crate::scenario::Case]) -> serde_json::Value {
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
    stack: &crate::stack::Stack,
    unsupported: &[(&crate::scenario::Case, Vec<String>)],
) -> String {
    use crate::catalogue::SysctlCheck;
    let mut out = format!("ok: {cases} cases\n");
    if !unsupported.is_empty() {
        let _ = writeln!(
            out,
            "on {}, {} of {cases} cases would be unsupported:",
            stack.name,
            unsupported.len()
        );
        for (c, missing) in unsupported {
            let _ = writeln!(out, "  {}: {}", c.id, missing.join("; "));
        }
    }
    match sysctls {
        SysctlCheck::Checked { absent } => {
            for name in absent {
                let _ = writeln!(out, "note: {} has no {name}", stack.name);
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

/// Every mismatch, harness error and unsupported case, one line each.
pub fn problems(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.cases {
        for m in &c.verdict.mismatches {
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
        insta::assert_snapshot!(table(&r));
    }
}
