//! Verdicts: each expectation of the scenario, for this stack, against what
//! the case observed (read through the fact model).
//!
//! Both sides of every comparison go into the report: the expectation as
//! written (with its claims and file line) and the observed value. A case
//! with no expectation for this stack is `unchecked`; a case that needs
//! something the stack lacks is `unsupported`; a case where the harness
//! itself failed is `error`, whatever the checks say. This module never
//! supplies an expected value of its own.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::facts::{self, CaseFacts, FactPath};
use crate::scenario::{Case, Link};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// No expectation for this stack: observed, not checked.
    Unchecked,
    /// The case needs a capability the stack lacks (a fault step without a
    /// packet filter, a sysctl that does not exist, a wait on a socket the
    /// stack cannot see); `Verdict::unsupported` names what is missing.
    Unsupported,
    Error,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Pass,
        Status::Fail,
        Status::Unchecked,
        Status::Unsupported,
        Status::Error,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unchecked => "unchecked",
            Status::Unsupported => "unsupported",
            Status::Error => "error",
        }
    }
}

/// One `path = matcher` of the scenario, and what was observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    pub path: String,
    pub expected: Value,
    /// Null where the fact was not observed (then `unobserved` says why).
    pub observed: Value,
    /// Why the fact could not be observed on this stack or in this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unobserved: Option<String>,
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
    /// What the stack lacks, when status is `unsupported`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported: Vec<String>,
}

impl Verdict {
    /// The verdict of a case that did not run because the stack lacks
    /// what it needs.
    pub fn unsupported(missing: Vec<String>) -> Verdict {
        Verdict {
            status: Status::Unsupported,
            mismatches: vec![],
            checks: vec![],
            error: None,
            unsupported: missing,
        }
    }
}

/// A failed check as every sink prints it:
/// `wire.client.rst: expected 1, observed 0 (scenarios/x.toml:12; C6)`.
pub struct Mismatch<'a> {
    pub check: &'a Check,
    /// The scenario file the expectation is in.
    pub file: &'a str,
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.check;
        write!(
            f,
            "{}: expected {}, observed {}",
            c.path, c.expected, c.observed
        )?;
        if let Some(why) = &c.unobserved {
            write!(f, " (not observed: {why})")?;
        }
        write!(f, " ({}:{}", self.file, c.line)?;
        if !c.claims.is_empty() {
            write!(f, "; {}", c.claims.join(" "))?;
        }
        f.write_str(")")
    }
}

/// Judges one case on `stack`. `problems` are harness-side failures that
/// make any verdict unreliable.
pub fn judge(
    case: &Case,
    stack: &str,
    link: Link,
    observed: &CaseFacts,
    problems: &[String],
) -> Verdict {
    let keys = facts::keys_of(observed);
    let mut checks = Vec::new();
    for e in case.expectations_for(stack, link) {
        for f in &e.facts {
            let seen = match FactPath::parse(&f.path, &keys) {
                Ok(path) => facts::resolve(observed, &path),
                // The catalogue checked the path against the scenario; a
                // case that stopped early has no record of the step.
                Err(why) => facts::Observed::Unobserved(why),
            };
            let unobserved = seen.reason().map(str::to_string);
            let value = seen.value();
            checks.push(Check {
                path: f.path.clone(),
                expected: f.matcher.to_json(),
                // An unobserved fact matches nothing, not even `null`.
                ok: unobserved.is_none() && f.matcher.matches(Some(&value)),
                observed: value,
                unobserved,
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
        unsupported: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::report;
    use serde_json::json;
    use std::path::Path;

    const SCENARIO: &str = "title = \"t\"\nsteps = '''\nclient close as c\n'''\n[[expect]]\nos = \"linux\"\nclaims = [\"C6\"]\nfacts = { \"wire.client.rst\" = 1, \"steps.c.errno\" = { null = true } }\n";

    fn case() -> Case {
        crate::catalogue::parse(Path::new("t.toml"), SCENARIO)
            .unwrap()
            .remove(0)
    }

    /// The fixture report, with its step labelled `c` and `rst` client RSTs.
    fn observed(rst: u32) -> crate::report::CaseReport {
        let mut r = report("a", 1, None).cases.remove(0);
        r.steps[0].key = "c".into();
        r.steps[0].label = Some("c".into());
        r.outcome.wire.as_mut().unwrap().sides.client.rst = rst;
        r
    }

    #[test]
    fn pass_fail_and_both_sides_recorded() {
        let v = judge(&case(), "linux", Link::Loopback, &observed(1).facts(), &[]);
        assert_eq!(v.status, Status::Pass);
        assert_eq!(v.checks.len(), 2);
        let v = judge(&case(), "linux", Link::Loopback, &observed(0).facts(), &[]);
        assert_eq!(v.status, Status::Fail);
        assert_eq!(v.mismatches.len(), 1);
        assert_eq!(v.mismatches[0].expected, json!(1));
        assert_eq!(v.mismatches[0].observed, json!(0));
        assert_eq!(v.mismatches[0].claims, ["C6"]);
        assert_eq!(v.mismatches[0].line, 8);
        let m = Mismatch {
            check: &v.mismatches[0],
            file: "t.toml",
        };
        assert_eq!(
            m.to_string(),
            "wire.client.rst: expected 1, observed 0 (t.toml:8; C6)"
        );
    }

    #[test]
    fn other_stacks_are_unchecked_and_harness_problems_are_errors() {
        assert_eq!(
            judge(
                &case(),
                "freebsd",
                Link::Loopback,
                &observed(1).facts(),
                &[]
            )
            .status,
            Status::Unchecked
        );
        let v = judge(
            &case(),
            "linux",
            Link::Loopback,
            &observed(1).facts(),
            &["capture: dropped 3 packets".into()],
        );
        assert_eq!(v.status, Status::Error);
        assert!(v.error.unwrap().contains("dropped"));
    }

    /// An expectation on a fact the stack could not observe fails, with the
    /// reason, even when it expects null.
    #[test]
    fn an_unobserved_fact_matches_nothing() {
        let mut r = observed(1);
        r.outcome
            .unobserved
            .insert("steps".into(), "no steps ran".into());
        let v = judge(&case(), "linux", Link::Loopback, &r.facts(), &[]);
        let errno = v.checks.iter().find(|c| c.path == "steps.c.errno").unwrap();
        assert!(!errno.ok);
        assert_eq!(errno.unobserved.as_deref(), Some("no steps ran"));
    }
}
