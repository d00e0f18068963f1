//! Verdicts: each expectation of the scenario, for this OS, against what the
//! case report says was observed.
//!
//! Both sides of every comparison go into the report: the expectation as
//! written (with its claims and file line) and the observed value. A case
//! with no expectation for this OS is `unchecked`; a case where the harness
//! itself failed is `error`, whatever the checks say. This module never
//! supplies an expected value of its own.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scenario::Case;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Unchecked,
    Error,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unchecked => "unchecked",
            Status::Error => "error",
        }
    }
}

/// One `path = matcher` of the scenario, and what was observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    pub path: String,
    pub expected: Value,
    pub observed: Value,
    pub ok: bool,
    /// The claims (behaviour.md ids) or references this expectation checks.
    pub claims: Vec<String>,
    /// What the expectation says about each claim when its facts are
    /// observed: holds | does not hold | partly (empty: no judgement).
    #[serde(default)]
    pub claim_outcomes: BTreeMap<String, String>,
    pub why: Option<String>,
    /// Line of the fact in the scenario file.
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verdict {
    pub status: Status,
    /// The checks that failed.
    pub mismatches: Vec<Check>,
    /// Every check made, passed or not.
    pub checks: Vec<Check>,
    /// Why the harness could not give a verdict, when status is `error`.
    pub error: Option<String>,
}

/// Looks up a fact path in a case report. `steps.<label>.<field>` finds the
/// step with that label; other paths walk the JSON objects.
pub fn resolve<'a>(case: &'a Value, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = case;
    // `steps.<label>...` and `faults.<label>...` pick a list item by label.
    if path.starts_with("steps.") || path.starts_with("faults.") {
        let list = parts.next()?;
        let label = parts.next()?;
        cur = case
            .get(list)?
            .as_array()?
            .iter()
            .find(|s| s.get("label").and_then(Value::as_str) == Some(label))?;
    }
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

/// Judges one case. `report` is the case report as JSON (without verdict);
/// `problems` are harness-side failures that make any verdict unreliable.
pub fn judge(case: &Case, os: &str, report: &Value, problems: &[String]) -> Verdict {
    let mut checks = Vec::new();
    for e in case.expectations_for(os) {
        for f in &e.facts {
            let observed = resolve(report, &f.path).cloned().unwrap_or(Value::Null);
            checks.push(Check {
                path: f.path.clone(),
                expected: f.matcher.to_json(),
                ok: f.matcher.matches(Some(&observed)),
                observed,
                claims: e.claims.clone(),
                claim_outcomes: e.outcomes.clone(),
                why: e.why.clone(),
                line: f.line,
            });
        }
    }
    let mismatches: Vec<Check> = checks.iter().filter(|c| !c.ok).cloned().collect();
    let (status, error) = if !problems.is_empty() {
        (Status::Error, Some(problems.join("; ")))
    } else if checks.is_empty() {
        (Status::Unchecked, None)
    } else if mismatches.is_empty() {
        (Status::Pass, None)
    } else {
        (Status::Fail, None)
    };
    Verdict {
        status,
        mismatches,
        checks,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    const SCENARIO: &str = r#"title = "t"
steps = '''
client close as c
'''
[[expect]]
os = "linux"
claims = ["C6"]
facts = { "wire.client.rst" = 1, "steps.c.errno" = { null = true } }
"#;

    fn case() -> Case {
        crate::scenario::parse(Path::new("t.toml"), SCENARIO)
            .unwrap()
            .1
            .remove(0)
    }

    fn report(rst: u32) -> Value {
        json!({ "wire": { "client": { "rst": rst } }, "steps": [ { "label": null }, { "label": "c", "errno": null } ] })
    }

    #[test]
    fn pass_fail_and_both_sides_recorded() {
        let v = judge(&case(), "linux", &report(1), &[]);
        assert_eq!(v.status, Status::Pass);
        assert_eq!(v.checks.len(), 2);
        let v = judge(&case(), "linux", &report(0), &[]);
        assert_eq!(v.status, Status::Fail);
        assert_eq!(v.mismatches.len(), 1);
        assert_eq!(v.mismatches[0].expected, json!(1));
        assert_eq!(v.mismatches[0].observed, json!(0));
        assert_eq!(v.mismatches[0].claims, ["C6"]);
        assert_eq!(v.mismatches[0].line, 8);
    }

    #[test]
    fn other_os_is_unchecked_and_harness_problems_are_errors() {
        assert_eq!(
            judge(&case(), "freebsd", &report(1), &[]).status,
            Status::Unchecked
        );
        let v = judge(
            &case(),
            "linux",
            &report(1),
            &["capture: dropped 3 packets".into()],
        );
        assert_eq!(v.status, Status::Error);
        assert!(v.error.unwrap().contains("dropped"));
    }

    #[test]
    fn resolve_finds_labelled_steps_and_nested_fields() {
        let r = report(1);
        assert_eq!(resolve(&r, "wire.client.rst"), Some(&json!(1)));
        assert_eq!(resolve(&r, "steps.c.errno"), Some(&Value::Null));
        assert_eq!(resolve(&r, "steps.x.errno"), None);
        assert_eq!(resolve(&r, "wire.server.rst"), None);
    }
}
