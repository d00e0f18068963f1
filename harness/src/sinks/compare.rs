//! A comparison of reports (`teardown compare`) as a terminal table or as
//! Markdown for a pull request or the README. The JSON form is the
//! comparison itself, serialised.

use std::fmt::Write as _;

use serde_json::Value;

use comfy_table::{Cell, Color};

use super::terminal::{Terminal, keep_whole, lines};
use crate::compare::Comparison;

/// A fact's value as the comparison tables print it (`-` for null).
pub(super) fn show(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// For a terminal: a legend, then per case the differing facts in columns
/// (on a terminal, a value that differs from column A's in yellow).
pub fn table(c: &Comparison, term: &Terminal) -> String {
    let mut out = legend(c, "");
    let by = stacks_vary(c);
    for case in c.differing() {
        let _ = writeln!(out, "\n{}", case.id);
        let head: Vec<&str> = std::iter::once("field")
            .chain(c.columns.iter().map(|col| col.label.as_str()))
            .chain(by.then_some("decided by"))
            .collect();
        // Two columns of indent.
        let term = Terminal {
            width: term.width.map(|w| w.saturating_sub(2)),
            ..*term
        };
        let mut t = term.table(&head);
        for d in &case.differences {
            let first = d.values.first();
            t.add_row(
                std::iter::once(Cell::new(&d.field))
                    .chain(d.values.iter().map(|v| {
                        if Some(v) == first {
                            Cell::new(show(v))
                        } else {
                            term.paint(&show(v), Color::Yellow)
                        }
                    }))
                    .chain(by.then(|| Cell::new(decider(d))))
                    .collect::<Vec<_>>(),
            );
        }
        keep_whole(&mut t, 0);
        for l in lines(&t).lines() {
            let _ = writeln!(out, "  {l}");
        }
        if !case.unobserved.is_empty() {
            let _ = writeln!(
                out,
                "  not observed in every report: {}",
                case.unobserved.join(", ")
            );
        }
    }
    out.push_str(&summary(c));
    out
}

/// The same as Markdown, for a pull request or the README.
pub fn markdown(c: &Comparison) -> String {
    let mut out = legend(c, "- ");
    let by = stacks_vary(c);
    if c.differs() {
        let head: Vec<&str> = c
            .columns
            .iter()
            .map(|col| col.label.as_str())
            .chain(by.then_some("decided by"))
            .collect();
        let _ = writeln!(
            out,
            "\n| case | field | {} |\n|---|---|{}",
            head.join(" | "),
            "---|".repeat(head.len())
        );
        for case in c.differing() {
            for d in &case.differences {
                let vals: Vec<String> = d
                    .values
                    .iter()
                    .map(|v| show(v).replace('|', "\\|"))
                    .chain(by.then(|| decider(d).to_string()))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} |",
                    case.id,
                    d.field.replace('|', "\\|"),
                    vals.join(" | ")
                );
            }
        }
    }
    out.push('\n');
    out.push_str(&summary(c));
    out
}

fn legend(c: &Comparison, bullet: &str) -> String {
    let mut out = String::new();
    for col in &c.columns {
        let _ = writeln!(
            out,
            "{bullet}{}: {}, {}, teardown {}, {} ({})",
            col.label,
            col.host,
            sides(col),
            col.tool_version,
            col.started_at,
            col.file
        );
    }
    out
}

/// Whether the reports ran on different stacks, so that a difference can
/// be put down to one side's.
fn stacks_vary(c: &Comparison) -> bool {
    c.columns.windows(2).any(|w| w[0].sides != w[1].sides)
}

/// Whose stack decides a difference, or `-` where none does.
fn decider(d: &crate::compare::Difference) -> &'static str {
    d.decided_by.map_or("-", crate::compare::Decider::name)
}

/// `loopback`, or on the bench `client gvisor, server linux`.
fn sides(col: &crate::compare::Column) -> String {
    match col.link {
        crate::scenario::Link::Loopback => "loopback".into(),
        crate::scenario::Link::Bench => format!(
            "bench: client {}, server {}",
            col.sides.client, col.sides.server
        ),
    }
}

fn summary(c: &Comparison) -> String {
    let mut out = String::new();
    for (id, having) in &c.partial {
        let _ = writeln!(out, "only in {}: {id}", having.join(", "));
    }
    for (id, not_run) in &c.unsupported {
        for (label, why) in not_run {
            let _ = writeln!(out, "unsupported in {label}: {id}: {why}");
        }
    }
    let unobserved = c.cases.iter().filter(|d| !d.unobserved.is_empty()).count();
    if unobserved > 0 {
        let _ = writeln!(
            out,
            "{unobserved} case(s) have facts some report could not observe (not compared)"
        );
    }
    let _ = writeln!(
        out,
        "{} of {} cases differ ({}; durations within {} ms count as equal){}",
        c.differing().count(),
        c.compared,
        if c.measurements {
            "every fact"
        } else {
            "behaviour and close() durations; --measurements for every fact"
        },
        c.tolerance_ms,
        if c.partial.is_empty() {
            String::new()
        } else {
            format!("; {} cases are not in every report", c.partial.len())
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::compare;
    use crate::report::fixture::report;

    fn comparison() -> Comparison {
        let a = report("a", 1, None);
        let mut b = report("b", 2, Some("EPIPE"));
        b.host.kernel = "6.1.0".into();
        let mut extra = b.cases[0].clone();
        extra.id = "y/ipv4".into();
        b.cases.push(extra);
        compare(&[("a.json".into(), a), ("b.json".into(), b)], 100.0, false)
    }

    #[test]
    fn table_form() {
        insta::assert_snapshot!(table(&comparison(), &super::Terminal::PLAIN));
    }

    #[test]
    fn markdown_form() {
        insta::assert_snapshot!(markdown(&comparison()));
    }
}
