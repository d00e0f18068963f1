//! JUnit XML for CI systems: one test suite per scenario, one test case per
//! case. A mismatch is a `failure` listing every failed check with its
//! expected and observed value and the scenario line; a harness problem is
//! an `error`; a case with no expectation for this stack, or one the stack
//! cannot run, is `skipped`, because nothing was checked.

use std::collections::BTreeMap;
use std::time::Duration;

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};

use crate::report::Report;
use crate::verdict::{Mismatch, Status};

/// The report as JUnit XML.
pub fn junit(report: &Report) -> String {
    let mut suites: BTreeMap<&str, TestSuite> = BTreeMap::new();
    for c in &report.cases {
        let v = &c.verdict;
        let status = match v.status {
            Status::Pass => TestCaseStatus::success(),
            Status::Fail => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let lines: Vec<String> = v
                    .mismatches
                    .iter()
                    .map(|m| {
                        let mismatch = Mismatch {
                            check: m,
                            file: &c.scenario_file,
                        };
                        match &m.why {
                            Some(w) => format!("{mismatch} - {w}"),
                            None => mismatch.to_string(),
                        }
                    })
                    .collect();
                s.set_message(format!(
                    "{} observation(s) differ from the expectation",
                    lines.len()
                ))
                .set_type("mismatch")
                .set_description(lines.join("\n"));
                s
            }
            Status::Error => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(v.error.clone().unwrap_or_default())
                    .set_type("harness");
                s
            }
            Status::Unchecked => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(format!(
                    "no expectation for {}: observed, not checked",
                    report.host.stack.name
                ));
                s
            }
            Status::Unsupported => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(format!(
                    "unsupported on {}: {}",
                    report.host.stack.name,
                    v.unsupported.join("; ")
                ));
                s
            }
        };
        let mut tc = TestCase::new(c.id.clone(), status);
        tc.set_classname(c.scenario.clone())
            .set_assertions(v.checks.len())
            .set_time(Duration::from_secs_f64(c.duration_ms.max(0.0) / 1e3));
        if let Some(pcap) = &c.capture {
            tc.set_system_out(format!("capture: {pcap}"));
        }
        suites
            .entry(c.scenario.as_str())
            .or_insert_with(|| TestSuite::new(c.scenario.clone()))
            .add_test_case(tc);
    }
    let mut r = quick_junit::Report::new("teardown");
    r.set_time(Duration::from_secs_f64(report.duration_ms.max(0.0) / 1e3));
    r.add_test_suites(suites.into_values());
    r.to_string().unwrap_or_else(|e| {
        // Serialising owned strings into memory cannot fail in practice;
        // keep the file well-formed and say why if it ever does.
        format!("<?xml version=\"1.0\"?>\n<!-- teardown: JUnit serialisation failed: {e} -->\n<testsuites/>\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::report;
    use crate::verdict::Check;

    #[test]
    fn one_test_case_per_case_with_mismatches_as_failures() {
        let mut r = report("a", 1, None);
        let xml = junit(&r);
        assert!(
            xml.contains("<testcase name=\"x/ipv4\" classname=\"x\""),
            "{xml}"
        );
        assert!(!xml.contains("<failure"), "{xml}");

        let check = Check {
            path: "wire.client.rst".into(),
            expected: serde_json::json!(1),
            observed: serde_json::json!(0),
            unobserved: None,
            ok: false,
            claims: vec!["C6".into()],
            claim_outcomes: Default::default(),
            why: Some("abortive close".into()),
            line: 12,
        };
        r.cases[0].verdict.status = Status::Fail;
        r.cases[0].verdict.mismatches = vec![check.clone()];
        r.cases[0].verdict.checks = vec![check];
        insta::assert_snapshot!(junit(&r));

        r.cases[0].verdict.status = Status::Unsupported;
        r.cases[0].verdict.unsupported = vec!["line 4: `drop all` needs a packet filter".into()];
        assert!(junit(&r).contains("<skipped message=\"unsupported on linux: line 4"));
    }
}
