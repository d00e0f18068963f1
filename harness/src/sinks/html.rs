//! `teardown render`: one self-contained HTML file (inline CSS and SVG, no
//! scripts, no network fetches) for one or more reports: an overview matrix
//! (case x host), the claims C1-C13 with what each host showed and links to
//! the evidence, and per case a ladder diagram.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Deserialize;

use super::ladder::{self, What};
use crate::compare::{CaseDiff, Comparison};
use crate::report::{CaseReport, Report};
use crate::tcp::{Side, TcpState};
use crate::verdict::Status;

#[derive(Deserialize)]
struct Claim {
    claim: String,
    source: String,
}

/// The claims of the source articles, C1-C13, in order.
fn claims() -> Vec<(String, Claim)> {
    let mut c: Vec<(String, Claim)> =
        toml::from_str::<BTreeMap<String, Claim>>(include_str!("../../claims.toml"))
            .expect("harness/claims.toml is valid (a unit test checks it)")
            .into_iter()
            .collect();
    c.sort_by_key(|(id, _)| {
        id.trim_start_matches('C')
            .parse::<u32>()
            .unwrap_or(u32::MAX)
    });
    c
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A case id as an HTML id: letters and digits kept, the rest `-`.
fn slug(case_id: &str) -> String {
    case_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Where one host's ladder of a case is.
fn anchor(host: usize, case_id: &str) -> String {
    format!("h{host}-{}", slug(case_id))
}

/// Where a case's section (all hosts) is.
fn case_anchor(case_id: &str) -> String {
    format!("case-{}", slug(case_id))
}

fn host_name(r: &Report) -> String {
    r.host.name()
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
nav { position: sticky; top: 0; z-index: 1; background: #fff; padding: .4em 0; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 6px; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
.pass { background: #e3f6e3; } .fail { background: #fbe0e0; } .error { background: #f8d7a8; }
.unchecked, .unsupported { background: #eee; } .missing { color: #999; }
.holds { background: #e3f6e3; } .does-not-hold { background: #fbe0e0; } .partly, .seen { background: #fff3c4; }
.differs { background: #f8d7a8; } .untested { color: #999; }
td.other { outline: 2px solid #b35900; outline-offset: -2px; }
.mark { color: #b35900; font-weight: bold; }
.why { color: #555; font-size: 12px; }
.case { margin: 1.5em 0 3em; } .facts { font-family: ui-monospace, monospace; font-size: 12px; }
.scroll { overflow-x: auto; }
.ladders { display: flex; gap: 1.5em; overflow-x: auto; }
.ladder { flex: 0 0 auto; max-width: 100%; } .ladder svg { max-width: 100%; height: auto; }
.ladder h4 { margin: .5em 0 .2em; }
svg text { font-family: ui-monospace, monospace; font-size: 11px; }
.legend span { display: inline-block; margin-right: 1.2em; white-space: nowrap; }
.swatch { display: inline-block; width: 1em; height: .8em; vertical-align: middle; margin-right: .3em; }
#only-problems:checked ~ main .same { display: none; }
a { color: #0645ad; }
"#;

/// The state colours. None of them is the failure red (RST segments and
/// failed calls): the closing states are blues and violets, the passive
/// closer's amber.
fn state_color(s: TcpState) -> &'static str {
    match s {
        TcpState::Established => "#9ccc9c",
        TcpState::TimeWait => "#c89be0",
        TcpState::Closed => "#cccccc",
        TcpState::CloseWait | TcpState::LastAck => "#f0c36d",
        TcpState::Listen | TcpState::SynSent | TcpState::SynReceived => "#bcd7f5",
        _ => "#6fa8dc", // FIN-WAIT-1/2, CLOSING: the active closer on its way out
    }
}

const FAILED: &str = "#c0392b";

fn packet_color(flags: crate::tcp::Flags) -> &'static str {
    if flags.rst() {
        FAILED
    } else if flags.fin() {
        "#1f5fbf"
    } else if flags.syn() {
        "#2e8b57"
    } else {
        "#444"
    }
}

/// What the colours and marks mean: once on the page, and (shorter) under
/// every ladder, so a screenshot of one carries its own.
fn legend(out: &mut String) {
    out.push_str("<p class=\"legend\" id=\"legend\"><b>Legend</b><br>");
    for (name, color) in [
        ("SYN", "#2e8b57"),
        ("FIN", "#1f5fbf"),
        ("RST, failed call", FAILED),
        ("data, ACK", "#444"),
    ] {
        let _ = write!(
            out,
            "<span><i class=\"swatch\" style=\"background:{color}\"></i>{name}</span>"
        );
    }
    out.push_str("<span>dashed, ending in <b style=\"color:#c0392b\">X</b>: dropped by the named fault rule (counted by the packet filter)</span><br>");
    for st in [
        TcpState::Listen,
        TcpState::Established,
        TcpState::FinWait1,
        TcpState::CloseWait,
        TcpState::TimeWait,
        TcpState::Closed,
    ] {
        let name = match st {
            TcpState::Listen => "LISTEN, SYN-*".to_string(),
            TcpState::FinWait1 => "FIN-WAIT-1/2, CLOSING".to_string(),
            TcpState::CloseWait => "CLOSE-WAIT, LAST-ACK".to_string(),
            other => other.to_string(),
        };
        let _ = write!(
            out,
            "<span><i class=\"swatch\" style=\"background:{}\"></i>{name}</span>",
            state_color(st)
        );
    }
    out.push_str(
        "<br><span>grey bar beside a lifeline: a call in progress, from its start to its return</span>\
         <span>time runs down to scale (1 px per ms) up to 100 ms; a longer idle gap is cut, drawn as <b>≈</b>, and labelled with its length</span>\
         <span><span class=\"mark\">≠</span> hosts differ (as <code>teardown compare</code> says); an outlined cell differs from the first host</span>\
         <span>overview cells: verdict, then FIN/RST sent by client (c) and server (s)</span></p>\n",
    );
}

/// The whole page for `reports` (file name, report), in argument order, and
/// the comparison of them that marks where hosts differ.
pub fn html(reports: &[(String, Report)], diff: &Comparison) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>teardown: {}</title><style>{STYLE}</style></head><body id=\"top\">\n",
        esc(&reports
            .iter()
            .map(|(_, r)| host_name(r))
            .collect::<Vec<_>>()
            .join(" vs "))
    );
    // A checkbox, not a script: checked, it hides every case that passed
    // everywhere and did not differ between hosts.
    out.push_str("<input type=\"checkbox\" id=\"only-problems\"><label for=\"only-problems\">show failures and differences only</label>\n");
    out.push_str("<nav><a href=\"#top\">top</a> · <a href=\"#overview\">Overview</a> · <a href=\"#claims\">Claims C1-C13</a> · <a href=\"#cases\">Cases</a> · <a href=\"#legend\">Legend</a></nav>\n<main>\n");
    out.push_str("<h1>What the TCP stack did when connections ended</h1>\n<ul>\n");
    for (j, (file, r)) in reports.iter().enumerate() {
        let _ = writeln!(
            out,
            "<li id=\"host{j}\"><b>{}</b>: {} cases ({} pass, {} fail, {} unchecked, {} unsupported, {} error), run {} by teardown {}, <code>{}</code></li>",
            esc(&host_name(r)),
            r.cases.len(),
            r.summary.pass,
            r.summary.fail,
            r.summary.unchecked,
            r.summary.unsupported,
            r.summary.error,
            esc(&r.started_at),
            esc(&r.tool.version),
            esc(file)
        );
    }
    out.push_str("</ul>\n");
    let differing: BTreeMap<&str, &CaseDiff> =
        diff.differing().map(|d| (d.id.as_str(), d)).collect();
    if reports.len() > 1 {
        let _ = writeln!(
            out,
            "<p>{} of {} cases differ between the hosts (<span class=\"mark\">≠</span>; durations within {} ms count as equal, and facts that measure the machine as much as the stack are not compared).</p>",
            differing.len(),
            diff.compared,
            diff.tolerance_ms
        );
    }
    let ids = case_ids(reports);
    overview(&mut out, reports, &ids, &differing, diff.tolerance_ms);
    claims_page(&mut out, reports);
    out.push_str("<h2 id=\"cases\">Cases</h2>\n");
    legend(&mut out);
    for id in &ids {
        case_section(
            &mut out,
            reports,
            id,
            differing.get(id).copied(),
            diff.tolerance_ms,
        );
    }
    out.push_str("</main></body></html>\n");
    out
}

/// Every case id of any report, in the first report's order, then the rest.
fn case_ids(reports: &[(String, Report)]) -> Vec<&str> {
    let mut seen = BTreeSet::new();
    let mut ids = Vec::new();
    for (_, r) in reports {
        for c in &r.cases {
            if seen.insert(c.id.as_str()) {
                ids.push(c.id.as_str());
            }
        }
    }
    ids
}

/// Whether a case is worth a look: it did not pass somewhere, or hosts
/// differ on it.
fn is_problem(reports: &[(String, Report)], id: &str, differs: bool) -> bool {
    differs
        || reports.iter().any(|(_, r)| {
            r.cases
                .iter()
                .find(|c| c.id == id)
                .is_none_or(|c| c.verdict.status != Status::Pass)
        })
}

/// FIN and RST segments each side sent: `c 1/0 s 1/0`.
fn fin_rst(c: &CaseReport) -> String {
    c.outcome
        .wire
        .as_ref()
        .map_or("no capture".to_string(), |w| {
            format!(
                "c {}/{} s {}/{}",
                w.sides.client.fin, w.sides.client.rst, w.sides.server.fin, w.sides.server.rst
            )
        })
}

fn overview(
    out: &mut String,
    reports: &[(String, Report)],
    ids: &[&str],
    differing: &BTreeMap<&str, &CaseDiff>,
    tolerance_ms: f64,
) {
    out.push_str(
        "<h2 id=\"overview\">Overview</h2>\n<div class=\"scroll\"><table><tr><th>case</th>",
    );
    for (_, r) in reports {
        host_th(out, r);
    }
    out.push_str("</tr>\n");
    for id in ids {
        let d = differing.get(id);
        let class = if is_problem(reports, id, d.is_some()) {
            "problem"
        } else {
            "same"
        };
        let mark = d.map_or(String::new(), |d| {
            format!(
                " <span class=\"mark\" title=\"{}\">≠</span>",
                esc(&d
                    .differences
                    .iter()
                    .map(|x| x.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
            )
        });
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td><a href=\"#{}\">{}</a>{mark}</td>",
            case_anchor(id),
            esc(id)
        );
        // A host whose values of a differing fact are not the first
        // host's is outlined.
        let others: BTreeSet<usize> = d.map_or(BTreeSet::new(), |d| {
            d.differences
                .iter()
                .flat_map(|x| {
                    x.values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| !agrees_with_first(&x.field, &x.values, v, tolerance_ms))
                        .map(|(j, _)| j)
                })
                .collect()
        });
        for (j, (_, r)) in reports.iter().enumerate() {
            match r.cases.iter().find(|c| c.id == *id) {
                Some(c) => {
                    let other = if others.contains(&j) { " other" } else { "" };
                    let _ = write!(
                        out,
                        "<td class=\"{s}{other}\"><a href=\"#{}\">{s}</a> {}</td>",
                        anchor(j, id),
                        esc(&fin_rst(c)),
                        s = c.verdict.status.name()
                    );
                }
                None => out.push_str("<td class=\"missing\">not run</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
}

/// A column header naming a host briefly (its kernel, or its stack), in
/// full on hover and in the list at the top.
fn host_th(out: &mut String, r: &Report) {
    let h = &r.host;
    let short = if h.stack.name == h.os {
        h.kernel.clone()
    } else {
        format!(
            "{} {}",
            h.stack.name,
            h.stack.version.as_deref().unwrap_or_default()
        )
    };
    let _ = write!(
        out,
        "<th title=\"{}\">{}</th>",
        esc(&host_name(r)),
        esc(&short)
    );
}

/// Whether `v` counts as the first host's value of `field` (durations
/// within the comparison's tolerance).
fn agrees_with_first(
    field: &str,
    values: &[serde_json::Value],
    v: &serde_json::Value,
    tolerance_ms: f64,
) -> bool {
    values
        .first()
        .is_none_or(|first| crate::compare::agree(field, first, v, tolerance_ms))
}

/// How a check bears on a claim: the outcome its expectation names, or,
/// for a plain `claims = ["C6"]`, that the expected behaviour was seen.
fn claim_outcome<'a>(check: &'a crate::verdict::Check, claim: &str) -> Option<&'a str> {
    check
        .claim_outcomes
        .get(claim)
        .map(String::as_str)
        .or_else(|| check.claims.iter().any(|c| c == claim).then_some(SEEN))
}

/// The outcome of a claim listed without a judgement.
const SEEN: &str = "seen as expected";

fn claims_page(out: &mut String, reports: &[(String, Report)]) {
    out.push_str(
        "<h2 id=\"claims\">Claims C1-C13</h2>\n<p>What the source articles claim, and what each host showed. \
         An outcome comes from a scenario expectation that says what its facts mean for the claim \
         (<i>seen as expected</i>: the expectation names the claim without judging it), \
         and counts only where those facts were observed; under it, the expectation's own why; \
         the links go to the evidence.</p>\n\
         <div class=\"scroll\"><table><tr><th>claim</th><th>says</th>",
    );
    for (_, r) in reports {
        host_th(out, r);
    }
    out.push_str("</tr>\n");
    for (id, claim) in claims() {
        let _ = write!(
            out,
            "<tr id=\"claim-{id}\"><td>{id}</td><td>{} <small>(doc {})</small></td>",
            esc(&claim.claim),
            esc(&claim.source)
        );
        for (j, (_, r)) in reports.iter().enumerate() {
            // outcome -> cases observed with it, and why; failed checks -> cases
            let mut seen: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
            let mut differs: BTreeSet<&str> = BTreeSet::new();
            for c in &r.cases {
                for check in &c.verdict.checks {
                    let Some(outcome) = claim_outcome(check, &id) else {
                        continue;
                    };
                    if check.ok {
                        let e = seen.entry(outcome).or_default();
                        e.0.insert(&c.id);
                        e.1.extend(check.why.as_deref());
                    } else {
                        differs.insert(&c.id);
                    }
                }
            }
            // A case whose checks for the claim did not all pass is not evidence.
            for (cases, _) in seen.values_mut() {
                cases.retain(|c| !differs.contains(c));
            }
            seen.retain(|_, (cases, _)| !cases.is_empty());
            if seen.is_empty() && differs.is_empty() {
                out.push_str("<td class=\"untested\">not tested</td>");
                continue;
            }
            let class = match (seen.len(), differs.is_empty()) {
                (1, true) if seen.contains_key(SEEN) => "seen".into(),
                (1, true) => seen.keys().next().expect("one").replace(' ', "-"),
                (0, false) => "differs".into(),
                _ => "partly".into(),
            };
            let _ = write!(out, "<td class=\"{class}\">");
            let links = |cases: &BTreeSet<&str>| -> String {
                cases
                    .iter()
                    .map(|c| format!("<a href=\"#{}\">{}</a>", anchor(j, c), esc(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for (outcome, (cases, whys)) in &seen {
                let _ = write!(out, "<b>{}</b>: {}<br>", esc(outcome), links(cases));
                for why in whys {
                    let _ = write!(out, "<span class=\"why\">{}</span><br>", esc(why));
                }
            }
            if !differs.is_empty() {
                let _ = write!(
                    out,
                    "<b>differs from the expectation</b>: {}",
                    links(&differs)
                );
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table></div>\n");
}

/// A case on every host: its facts side by side (values that differ from
/// the first host's outlined), the mismatches, and the ladders side by side;
/// hosts whose ladder has the same shape (same segments, calls, results and
/// states in the same order; only times differ) share one.
fn case_section(
    out: &mut String,
    reports: &[(String, Report)],
    id: &str,
    d: Option<&CaseDiff>,
    tolerance_ms: f64,
) {
    let cases: Vec<Option<&CaseReport>> = reports
        .iter()
        .map(|(_, r)| r.cases.iter().find(|c| c.id == id))
        .collect();
    let Some(first) = cases.iter().flatten().next() else {
        return;
    };
    let class = if is_problem(reports, id, d.is_some()) {
        "problem"
    } else {
        "same"
    };
    let _ = write!(
        out,
        "<section class=\"case {class}\" id=\"{}\"><h3>{}{}</h3>\n<p>{}</p>\n",
        case_anchor(id),
        esc(id),
        if d.is_some() {
            " <span class=\"mark\">≠ hosts differ</span>"
        } else {
            ""
        },
        esc(&first.title)
    );
    // Facts side by side.
    /// A row of the facts table: its name, and how a case shows it.
    type Row = (&'static str, fn(&CaseReport) -> String);
    let rows: [Row; 5] = [
        ("verdict", |c| c.verdict.status.name().to_string()),
        ("FIN/RST", fin_rst),
        ("first FIN", |c| {
            c.outcome
                .wire
                .as_ref()
                .and_then(|w| w.first_fin)
                .map_or("-", crate::analyze::FirstFin::name)
                .to_string()
        }),
        ("TIME-WAIT", |c| {
            c.outcome
                .time_wait
                .side
                .map_or("unknown", crate::outcome::TimeWaitSide::name)
                .to_string()
        }),
        ("lost c>s, s>c; Zeek", |c| {
            let lost = |f: &crate::outcome::Flow| f.lost.map_or("-".to_string(), |l| l.to_string());
            format!(
                "{}, {}{}",
                lost(&c.outcome.data.client_to_server),
                lost(&c.outcome.data.server_to_client),
                c.outcome.wire.as_ref().map_or(String::new(), |w| format!(
                    "; {} {}",
                    w.conn_state, w.history
                ))
            )
        }),
    ];
    out.push_str("<div class=\"scroll\"><table class=\"facts\"><tr><th></th>");
    for (_, r) in reports {
        host_th(out, r);
    }
    out.push_str("</tr>\n");
    for (name, value) in rows {
        let _ = write!(out, "<tr><th>{name}</th>");
        let firsts = cases.iter().flatten().next().map(|c| value(c));
        for c in &cases {
            match c {
                Some(c) => {
                    let v = value(c);
                    let other = if Some(&v) != firsts.as_ref() {
                        " class=\"other\""
                    } else {
                        ""
                    };
                    let _ = write!(out, "<td{other}>{}</td>", esc(&v));
                }
                None => out.push_str("<td class=\"missing\">not run</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    if let Some(d) = d {
        for x in &d.differences {
            let _ = write!(out, "<tr><th>{}</th>", esc(&x.field));
            for v in &x.values {
                let other = if agrees_with_first(&x.field, &x.values, v, tolerance_ms) {
                    ""
                } else {
                    " class=\"other\""
                };
                let _ = write!(out, "<td{other}>{}</td>", esc(&super::compare::show(v)));
            }
            out.push_str("</tr>\n");
        }
    }
    out.push_str("</table></div>\n");
    for (j, c) in cases.iter().enumerate() {
        let Some(c) = c else { continue };
        for m in &c.verdict.mismatches {
            let m = crate::verdict::Mismatch {
                check: m,
                file: &c.scenario_file,
            };
            let _ = writeln!(
                out,
                "<p class=\"fail\">{}: {}</p>",
                esc(&host_name(&reports[j].1)),
                esc(&m.to_string())
            );
        }
        if let Some(e) = &c.verdict.error {
            let _ = writeln!(
                out,
                "<p class=\"error\">{}: harness error: {}</p>",
                esc(&host_name(&reports[j].1)),
                esc(e)
            );
        }
    }
    // Ladders: one per distinct shape, named by every host that drew it.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (j, c) in cases.iter().enumerate() {
        let Some(c) = c else { continue };
        let shape = ladder::shape(c);
        match groups.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, hosts)) => hosts.push(j),
            None => groups.push((shape, vec![j])),
        }
    }
    out.push_str("<div class=\"ladders\">\n");
    for (_, hosts) in &groups {
        let c = cases[hosts[0]].expect("a host in a group ran the case");
        out.push_str("<div class=\"ladder\">");
        for &j in hosts {
            let _ = write!(out, "<span id=\"{}\"></span>", anchor(j, id));
        }
        let names: Vec<String> = hosts
            .iter()
            .map(|&j| esc(&host_name(&reports[j].1)))
            .collect();
        let _ = write!(
            out,
            "<h4>{}{}</h4>",
            names.join(", "),
            if hosts.len() > 1 {
                " <small>(the same segments, calls and states; drawn with the first's times)</small>"
            } else {
                ""
            }
        );
        if let Some(p) = &c.capture {
            let _ = write!(
                out,
                "<p class=\"facts\">capture <code>{}</code></p>",
                esc(p)
            );
        }
        svg(out, c);
        out.push_str("</div>\n");
    }
    out.push_str("</div>\n<p><a href=\"#top\">↑ back to top</a> · <a href=\"#overview\">overview</a></p></section>\n");
}

const WIDTH: f64 = 1040.0;
const XC: f64 = 400.0;
const XS: f64 = 700.0;
/// Characters of 11 px monospace beside a lifeline (316 px) and between the
/// lifelines (290 px): longer text wraps onto more lines, never cut.
const SIDE_CHARS: usize = 47;
const MIDDLE_CHARS: usize = 43;
const LINE: f64 = 13.0;
const TOP: f64 = 40.0;
/// Pixels per millisecond of a gap drawn to scale.
const PX_PER_MS: f64 = 1.0;
/// The height of a cut gap.
const CUT: f64 = 26.0;

/// `<text>` with one `<tspan>` per line.
fn text_lines(x: f64, y: f64, attrs: &str, lines: &[String]) -> String {
    let mut t = format!("<text x=\"{x}\" y=\"{y}\"{attrs}>");
    for (i, l) in lines.iter().enumerate() {
        let dy = if i == 0 { 0.0 } else { LINE };
        let _ = write!(t, "<tspan x=\"{x}\" dy=\"{dy}\">{}</tspan>", esc(l));
    }
    t.push_str("</text>");
    t
}

/// The ladder: lifelines, a row per event (as tall as its wrapped text),
/// gaps to scale up to 100 ms and cut beyond, arrows for segments, spans
/// for calls, coloured bars for each side's TCP state, and a legend line.
fn svg(out: &mut String, c: &CaseReport) {
    let ev = ladder::events(c);
    // Each row's text, then its top; rows are as tall as their text.
    let texts: Vec<Vec<String>> = ev
        .iter()
        .map(|e| match e.what {
            What::Packet(p) => ladder::wrap(&ladder::packet_label(p), MIDDLE_CHARS),
            What::Call(s) => ladder::wrap(&ladder::call_label(s), SIDE_CHARS),
            What::Return(s) => ladder::wrap(&ladder::return_label(s), SIDE_CHARS),
            What::State(st) => vec![st.to_string()],
        })
        .collect();
    let mut tops = Vec::with_capacity(ev.len());
    let mut cuts: Vec<(f64, f64)> = Vec::new();
    let mut y = TOP;
    for (i, e) in ev.iter().enumerate() {
        if i > 0 {
            match ladder::gap(ev[i - 1].t_ms, e.t_ms) {
                ladder::Gap::Scaled(d) => y += d * PX_PER_MS,
                ladder::Gap::Cut(d) => {
                    cuts.push((y, d));
                    y += CUT;
                }
                ladder::Gap::None => {}
            }
        }
        tops.push(y);
        y += LINE * texts[i].len() as f64 + 9.0;
    }
    let bottom = y + 6.0;
    let height = bottom + 30.0;
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" \
         role=\"img\" aria-label=\"ladder diagram of {}\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"context-stroke\"/></marker></defs>\n\
         <text x=\"4\" y=\"20\">t (ms)</text><text x=\"{XC}\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">client</text>\
         <text x=\"{XS}\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">server</text>\n",
        esc(&c.id)
    );
    // Lifelines, broken where a gap is cut.
    for x in [XC, XS] {
        let mut from = TOP;
        for (at, _) in &cuts {
            let _ = write!(
                out,
                "<line x1=\"{x}\" y1=\"{from}\" x2=\"{x}\" y2=\"{}\" stroke=\"#888\"/>\
                 <path d=\"M {} {} l 12 -4 M {} {} l 12 -4\" stroke=\"#888\"/>",
                at + 4.0,
                x - 6.0,
                at + 8.0,
                x - 6.0,
                at + CUT - 6.0,
            );
            from = at + CUT - 4.0;
        }
        let _ = writeln!(
            out,
            "<line x1=\"{x}\" y1=\"{from}\" x2=\"{x}\" y2=\"{bottom}\" stroke=\"#888\"/>"
        );
    }
    for (at, d) in &cuts {
        let _ = writeln!(
            out,
            "<text class=\"cut\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#777\" font-style=\"italic\">≈ {} idle, not to scale</text>",
            (XC + XS) / 2.0,
            at + CUT / 2.0 + 4.0,
            ladder::duration_text(*d)
        );
    }
    // State bars first, under everything else.
    for (side, x) in [(Side::Client, XC), (Side::Server, XS)] {
        let changes: Vec<(usize, TcpState)> = ev
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.what {
                What::State(s) if e.side == Some(side) => Some((i, s)),
                _ => None,
            })
            .collect();
        for (k, (i, s)) in changes.iter().enumerate() {
            let y1 = tops[*i];
            let y2 = changes.get(k + 1).map_or(bottom, |(n, _)| tops[*n]);
            let _ = writeln!(
                out,
                "<rect class=\"state\" x=\"{}\" y=\"{y1}\" width=\"8\" height=\"{}\" fill=\"{}\"><title>{side:?}: {s}</title></rect>",
                x - 4.0,
                (y2 - y1).max(1.0),
                state_color(*s)
            );
        }
    }
    // Spans: from a call's row to its return's.
    for (i, e) in ev.iter().enumerate() {
        let What::Call(s) = e.what else { continue };
        if !ladder::is_span(s) {
            continue;
        }
        let Some(end) = ev[i..]
            .iter()
            .position(|r| matches!(r.what, What::Return(x) if std::ptr::eq(x, s)))
        else {
            continue;
        };
        let x = if e.side == Some(Side::Server) {
            XS + 6.0
        } else {
            XC - 10.0
        };
        let y1 = tops[i] + LINE / 2.0;
        let y2 = tops[i + end] + LINE / 2.0;
        let _ = writeln!(
            out,
            "<rect class=\"span\" x=\"{x}\" y=\"{y1}\" width=\"4\" height=\"{}\" fill=\"#666\" opacity=\"0.7\"><title>{}</title></rect>",
            (y2 - y1).max(1.0),
            esc(&ladder::return_label(s))
        );
    }
    for (i, e) in ev.iter().enumerate() {
        let top = tops[i];
        let base = top + LINE - 2.0;
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{base}\" fill=\"#777\">{:.3}</text>",
            e.t_ms
        );
        let lines = &texts[i];
        match (e.what, e.side) {
            (What::Packet(p), side) => {
                let (x1, x2) = if side == Some(Side::Server) {
                    (XS, XC)
                } else {
                    (XC, XS)
                };
                let color = packet_color(p.flags);
                // The label above, the arrow under it; a segment a fault
                // rule took stops two thirds of the way, dashed, with an X
                // where it was dropped.
                let ya = top + LINE * lines.len() as f64 + 4.0;
                let dropped = p.dropped_by.is_some();
                let x2 = if dropped {
                    x1 + (x2 - x1) * 2.0 / 3.0
                } else {
                    x2
                };
                let (dash, marker) = if dropped {
                    (" stroke-dasharray=\"4 3\"", "")
                } else {
                    ("", " marker-end=\"url(#arrow)\"")
                };
                let _ = write!(
                    out,
                    "<line class=\"segment\" x1=\"{x1}\" y1=\"{}\" x2=\"{x2}\" y2=\"{ya}\" stroke=\"{color}\" stroke-width=\"1.5\"{dash}{marker}/>",
                    ya - 2.0
                );
                if dropped {
                    let _ = write!(
                        out,
                        "<text class=\"dropped\" x=\"{x2}\" y=\"{}\" text-anchor=\"middle\" fill=\"{FAILED}\" font-weight=\"bold\">X</text>",
                        ya + 4.0
                    );
                }
                let _ = writeln!(
                    out,
                    "{}",
                    text_lines(
                        (XC + XS) / 2.0,
                        base,
                        &format!(" text-anchor=\"middle\" fill=\"{color}\""),
                        lines
                    )
                );
            }
            (What::Call(_) | What::Return(_), side) => {
                let s = match e.what {
                    What::Call(s) | What::Return(s) => s,
                    _ => unreachable!("matched above"),
                };
                // Calls without an actor (faults, sleep, join) sit between
                // the lifelines.
                let (anchor_side, tx) = match side {
                    Some(Side::Server) => ("start", XS + 14.0),
                    Some(Side::Client) => ("end", XC - 14.0),
                    None => ("middle", (XC + XS) / 2.0),
                };
                let bad = s.result.errno.is_some()
                    || s.result.timed_out
                    || s.result.harness_error.is_some();
                let fill = if bad { FAILED } else { "#222" };
                if let (Some(side), What::Call(_)) = (side, e.what) {
                    let x = if side == Side::Server { XS } else { XC };
                    let _ = write!(
                        out,
                        "<circle class=\"call\" cx=\"{x}\" cy=\"{}\" r=\"4\" fill=\"{fill}\"/>",
                        top + LINE / 2.0
                    );
                }
                let style = match (side, e.what) {
                    (None, _) => " font-style=\"italic\"",
                    (_, What::Return(_)) => " fill-opacity=\"0.75\"",
                    _ => "",
                };
                let class = if matches!(e.what, What::Return(_)) {
                    "return-label"
                } else {
                    "call-label"
                };
                let _ = writeln!(
                    out,
                    "{}",
                    text_lines(
                        tx,
                        base,
                        &format!(
                            " class=\"{class}\" text-anchor=\"{anchor_side}\" fill=\"{fill}\"{style}"
                        ),
                        lines
                    )
                );
            }
            (What::State(st), side) => {
                let (anchor_side, tx) = match side {
                    Some(Side::Server) => ("start", XS + 14.0),
                    _ => ("end", XC - 14.0),
                };
                let _ = writeln!(
                    out,
                    "<text class=\"state-label\" x=\"{tx}\" y=\"{base}\" text-anchor=\"{anchor_side}\" font-style=\"italic\" fill=\"#555\">{st}</text>"
                );
            }
        }
    }
    // A legend line, so a screenshot of one ladder explains itself.
    let _ = writeln!(
        out,
        "<text x=\"4\" y=\"{}\" fill=\"#555\"><tspan fill=\"#2e8b57\">SYN</tspan> <tspan fill=\"#1f5fbf\">FIN</tspan> \
         <tspan fill=\"{FAILED}\">RST/failed call</tspan> data/ACK · <tspan fill=\"{FAILED}\">X</tspan> dropped by a fault rule · \
         bar: call in progress · ≈ idle gap cut · time to scale up to 100 ms</text>",
        bottom + 20.0
    );
    out.push_str("</svg>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::report;

    #[test]
    fn the_claims_file_has_c1_to_c13_in_order() {
        let ids: Vec<String> = claims().into_iter().map(|(id, _)| id).collect();
        let want: Vec<String> = (1..=13).map(|i| format!("C{i}")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn a_page_has_overview_claims_and_a_ladder_per_case() {
        let mut r = report("a", 1, None);
        let check = crate::verdict::Check {
            path: "steps.x.errno".into(),
            expected: serde_json::json!(null),
            observed: serde_json::json!(null),
            unobserved: None,
            ok: true,
            claims: vec!["C8".into()],
            claim_outcomes: [("C8".to_string(), "does not hold".to_string())].into(),
            why: None,
            line: 9,
        };
        r.cases[0].verdict.checks = vec![check];
        r.cases[0].title = "a <title> & more".into();
        let reports = [("a.json".to_string(), r)];
        let page = html(&reports, &crate::compare::compare(&reports, 100.0, false));
        assert!(page.contains("<td class=\"pass\"><a href=\"#h0-x-ipv4\">pass</a>"));
        assert!(
            page.contains("<td class=\"does-not-hold\"><b>does not hold</b>: <a href=\"#h0-x-ipv4\">x/ipv4</a>"),
            "{page}"
        );
        assert!(page.contains("id=\"h0-x-ipv4\""));
        assert!(page.contains("id=\"case-x-ipv4\""));
        assert!(page.contains("a &lt;title&gt; &amp; more"));
        assert_eq!(page.matches("<svg").count(), 1);
        // Self-contained: nothing to fetch.
        assert!(!page.contains("src=") && !page.contains("href=\"http"));
        assert!(!page.contains("<script"));
        insta::assert_snapshot!(page);
    }
}
