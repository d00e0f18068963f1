//! `teardown render`: one self-contained HTML file (inline CSS and SVG, no
//! scripts, no network fetches) for one or more reports: an overview matrix
//! (case x host), the claims C1-C13 with what each host showed and links to
//! the evidence, and per case a ladder diagram.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Deserialize;

use super::ladder::{self, What};
use crate::report::{CaseReport, Report};
use crate::tcp::{Side, TcpState};

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

fn anchor(host: usize, case_id: &str) -> String {
    let id: String = case_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("h{host}-{id}")
}

fn host_name(r: &Report) -> String {
    r.host.name()
}

const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 6px; }
th { background: #f3f3f3; text-align: left; }
.pass { background: #e3f6e3; } .fail { background: #fbe0e0; } .error { background: #f8d7a8; }
.unchecked { background: #eee; } .missing { color: #999; }
.holds { background: #e3f6e3; } .does-not-hold { background: #fbe0e0; } .partly { background: #fff3c4; }
.differs { background: #f8d7a8; } .untested { color: #999; }
.case { margin: 1.5em 0 3em; } .facts { font-family: ui-monospace, monospace; font-size: 12px; }
svg text { font-family: ui-monospace, monospace; font-size: 11px; }
a { color: #0645ad; }
"#;

/// The whole page for `reports` (file name, report), in argument order.
pub fn html(reports: &[(String, Report)]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>teardown: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&reports
            .iter()
            .map(|(_, r)| host_name(r))
            .collect::<Vec<_>>()
            .join(" vs "))
    );
    out.push_str("<h1>What the TCP stack did when connections ended</h1>\n<ul>\n");
    for (j, (file, r)) in reports.iter().enumerate() {
        let _ = writeln!(
            out,
            "<li id=\"host{j}\"><b>{}</b>: {} cases ({} pass, {} fail, {} unchecked, {} error), run {} by teardown {}, <code>{}</code></li>",
            esc(&host_name(r)),
            r.cases.len(),
            r.summary.pass,
            r.summary.fail,
            r.summary.unchecked,
            r.summary.error,
            esc(&r.started_at),
            esc(&r.tool.version),
            esc(file)
        );
    }
    out.push_str("</ul>\n<p><a href=\"#overview\">Overview</a> · <a href=\"#claims\">Claims C1-C13</a> · <a href=\"#cases\">Ladder diagrams</a></p>\n");
    overview(&mut out, reports);
    claims_page(&mut out, reports);
    out.push_str("<h2 id=\"cases\">Ladder diagrams</h2>\n");
    for (j, (_, r)) in reports.iter().enumerate() {
        for c in &r.cases {
            case_section(&mut out, j, r, c);
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn overview(out: &mut String, reports: &[(String, Report)]) {
    out.push_str("<h2 id=\"overview\">Overview</h2>\n<table><tr><th>case</th>");
    for (_, r) in reports {
        let _ = write!(out, "<th>{}</th>", esc(&host_name(r)));
    }
    out.push_str("</tr>\n");
    let ids: BTreeSet<&str> = reports
        .iter()
        .flat_map(|(_, r)| r.cases.iter().map(|c| c.id.as_str()))
        .collect();
    for id in ids {
        let _ = write!(out, "<tr><td>{}</td>", esc(id));
        for (j, (_, r)) in reports.iter().enumerate() {
            match r.cases.iter().find(|c| c.id == id) {
                Some(c) => {
                    let fr = c
                        .outcome
                        .wire
                        .as_ref()
                        .map_or("no capture".to_string(), |w| {
                            format!(
                                "FIN/RST c {}/{} s {}/{}",
                                w.sides.client.fin,
                                w.sides.client.rst,
                                w.sides.server.fin,
                                w.sides.server.rst
                            )
                        });
                    let _ = write!(
                        out,
                        "<td class=\"{s}\"><a href=\"#{}\">{s}</a> {}</td>",
                        anchor(j, id),
                        esc(&fr),
                        s = c.verdict.status.name()
                    );
                }
                None => out.push_str("<td class=\"missing\">not run</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn claims_page(out: &mut String, reports: &[(String, Report)]) {
    out.push_str(
        "<h2 id=\"claims\">Claims C1-C13</h2>\n<p>What the source articles claim, and what each host showed. \
         An outcome comes from a scenario expectation that says what its facts mean for the claim, \
         and counts only where those facts were observed; the links go to the evidence.</p>\n\
         <table><tr><th>claim</th><th>says</th>",
    );
    for (_, r) in reports {
        let _ = write!(out, "<th>{}</th>", esc(&host_name(r)));
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
            // outcome -> cases observed with it; failed checks -> cases
            let mut seen: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            let mut differs: BTreeSet<&str> = BTreeSet::new();
            for c in &r.cases {
                for check in &c.verdict.checks {
                    if let Some(outcome) = check.claim_outcomes.get(&id) {
                        if check.ok {
                            seen.entry(outcome.as_str()).or_default().insert(&c.id);
                        } else {
                            differs.insert(&c.id);
                        }
                    }
                }
            }
            // A case whose checks for the claim did not all pass is not evidence.
            for cases in seen.values_mut() {
                cases.retain(|c| !differs.contains(c));
            }
            seen.retain(|_, cases| !cases.is_empty());
            if seen.is_empty() && differs.is_empty() {
                out.push_str("<td class=\"untested\">not tested</td>");
                continue;
            }
            let class = match (seen.len(), differs.is_empty()) {
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
            for (outcome, cases) in &seen {
                let _ = write!(out, "<b>{}</b>: {}<br>", esc(outcome), links(cases));
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
    out.push_str("</table>\n");
}

fn case_section(out: &mut String, j: usize, r: &Report, c: &CaseReport) {
    let _ = write!(
        out,
        "<div class=\"case\" id=\"{}\"><h3>{} <small>on {}</small></h3>\n<p>{}</p>\n",
        anchor(j, &c.id),
        esc(&c.id),
        esc(&host_name(r)),
        esc(&c.title)
    );
    let w = c.outcome.wire.as_ref();
    let _ = writeln!(
        out,
        "<p class=\"facts\">verdict <span class=\"{s}\">{s}</span>{}; TIME-WAIT {}; lost c&gt;s {} s&gt;c {}{}</p>",
        w.map_or(String::new(), |w| format!(
            "; client FIN/RST {}/{}, server FIN/RST {}/{}; first FIN {}; Zeek {} {}",
            w.sides.client.fin,
            w.sides.client.rst,
            w.sides.server.fin,
            w.sides.server.rst,
            w.first_fin.map_or("-", crate::analyze::FirstFin::name),
            esc(&w.conn_state),
            esc(&w.history)
        )),
        c.outcome
            .time_wait
            .side
            .map_or("unknown", crate::outcome::TimeWaitSide::name),
        c.outcome.data.client_to_server.lost,
        c.outcome.data.server_to_client.lost,
        c.capture.as_ref().map_or(String::new(), |p| format!(
            "; capture <code>{}</code>",
            esc(p)
        )),
        s = c.verdict.status.name()
    );
    for m in &c.verdict.mismatches {
        let m = crate::verdict::Mismatch {
            check: m,
            file: &c.scenario_file,
        };
        let _ = writeln!(out, "<p class=\"fail\">{}</p>", esc(&m.to_string()));
    }
    svg(out, c);
    out.push_str("</div>\n");
}

const XC: f64 = 470.0;
const XS: f64 = 800.0;
const WIDTH: f64 = 1200.0;
/// Annotations beside a lifeline are cut to this many characters (the full
/// text is the element's tooltip): 390 px of 11 px monospace.
const LABEL_CHARS: usize = 58;

/// `<text>` content with `s` cut to [`LABEL_CHARS`] and the whole of it as
/// tooltip.
fn label(s: &str) -> String {
    if s.chars().count() <= LABEL_CHARS {
        esc(s)
    } else {
        let cut: String = s.chars().take(LABEL_CHARS - 1).collect();
        format!("<title>{}</title>{}…", esc(s), esc(&cut))
    }
}
const ROW: f64 = 18.0;
const TOP: f64 = 40.0;

fn state_color(s: TcpState) -> &'static str {
    match s {
        TcpState::Established => "#9ccc9c",
        TcpState::TimeWait => "#c89be0",
        TcpState::Closed => "#cccccc",
        TcpState::CloseWait | TcpState::LastAck => "#f0c36d",
        TcpState::Listen | TcpState::SynSent | TcpState::SynReceived => "#a8c8f0",
        _ => "#f29b8b", // FIN-WAIT-1/2, CLOSING: the active closer on its way out
    }
}

fn packet_color(flags: crate::tcp::Flags) -> &'static str {
    if flags.rst() {
        "#c0392b"
    } else if flags.fin() {
        "#1f5fbf"
    } else if flags.syn() {
        "#2e8b57"
    } else {
        "#444"
    }
}

/// The ladder: lifelines, a row per event, arrows for segments, markers for
/// calls, coloured bars for each side's TCP state.
fn svg(out: &mut String, c: &CaseReport) {
    let ev = ladder::events(c);
    let height = TOP + ROW * (ev.len() as f64 + 1.0);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         role=\"img\" aria-label=\"ladder diagram of {}\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\">\
         <path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"context-stroke\"/></marker></defs>\n\
         <text x=\"4\" y=\"20\">t (ms)</text><text x=\"{XC}\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">client</text>\
         <text x=\"{XS}\" y=\"20\" text-anchor=\"middle\" font-weight=\"bold\">server</text>\n\
         <line x1=\"{XC}\" y1=\"{TOP}\" x2=\"{XC}\" y2=\"{height}\" stroke=\"#888\"/>\
         <line x1=\"{XS}\" y1=\"{TOP}\" x2=\"{XS}\" y2=\"{height}\" stroke=\"#888\"/>\n",
        esc(&c.id)
    );
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
            let y1 = TOP + ROW * *i as f64;
            let y2 = changes
                .get(k + 1)
                .map_or(height, |(n, _)| TOP + ROW * *n as f64);
            let _ = writeln!(
                out,
                "<rect class=\"state\" x=\"{}\" y=\"{y1}\" width=\"8\" height=\"{}\" fill=\"{}\"><title>{side:?}: {s}</title></rect>",
                x - 4.0,
                (y2 - y1).max(1.0),
                state_color(*s)
            );
        }
    }
    for (i, e) in ev.iter().enumerate() {
        let y = TOP + ROW * i as f64 + ROW / 2.0;
        let _ = write!(
            out,
            "<text x=\"4\" y=\"{}\" fill=\"#777\">{:.3}</text>",
            y + 4.0,
            e.t_ms
        );
        match (e.what, e.side) {
            (What::Packet(p), side) => {
                let (x1, x2) = if side == Some(Side::Server) {
                    (XS, XC)
                } else {
                    (XC, XS)
                };
                let color = packet_color(p.flags);
                // A segment a fault rule took stops at two thirds of the
                // way, dashed, with an X where it was dropped.
                let (x2, dash) = if p.dropped_by.is_some() {
                    (x1 + (x2 - x1) * 2.0 / 3.0, " stroke-dasharray=\"4 3\"")
                } else {
                    (x2, "")
                };
                let head = if p.dropped_by.is_some() {
                    format!(
                        "<text class=\"dropped\" x=\"{x2}\" y=\"{}\" text-anchor=\"middle\" fill=\"#c0392b\" font-weight=\"bold\">X</text>",
                        y + 8.0
                    )
                } else {
                    String::new()
                };
                let marker = if p.dropped_by.is_some() {
                    ""
                } else {
                    " marker-end=\"url(#arrow)\""
                };
                let _ = writeln!(
                    out,
                    "<line class=\"segment\" x1=\"{x1}\" y1=\"{}\" x2=\"{x2}\" y2=\"{}\" stroke=\"{color}\" stroke-width=\"1.5\"{dash}{marker}/>{head}\
                     <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{color}\">{}</text>",
                    y - 4.0,
                    y + 4.0,
                    (XC + XS) / 2.0,
                    y - 3.0,
                    esc(&ladder::packet_label(p))
                );
            }
            (What::Call(s), side) => {
                // Calls without an actor (faults, sleep, join) sit between
                // the lifelines.
                let (x, anchor_side, tx) = match side {
                    Some(Side::Server) => (XS, "start", XS + 10.0),
                    Some(Side::Client) => (XC, "end", XC - 10.0),
                    None => ((XC + XS) / 2.0, "middle", (XC + XS) / 2.0),
                };
                let bad = s.result.errno.is_some()
                    || s.result.timed_out
                    || s.result.harness_error.is_some();
                let fill = if bad { "#c0392b" } else { "#222" };
                if side.is_some() {
                    let _ = write!(
                        out,
                        "<circle class=\"call\" cx=\"{x}\" cy=\"{y}\" r=\"4\" fill=\"{fill}\"/>"
                    );
                }
                let style = if side.is_none() {
                    " font-style=\"italic\""
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "<text class=\"call-label\" x=\"{tx}\" y=\"{}\" text-anchor=\"{anchor_side}\" fill=\"{fill}\"{style}>{}</text>",
                    y + 4.0,
                    label(&ladder::call_label(s))
                );
            }
            (What::State(st), side) => {
                let (anchor_side, tx) = match side {
                    Some(Side::Server) => ("start", XS + 10.0),
                    _ => ("end", XC - 10.0),
                };
                let _ = writeln!(
                    out,
                    "<text class=\"state-label\" x=\"{tx}\" y=\"{}\" text-anchor=\"{anchor_side}\" font-style=\"italic\" fill=\"#555\">{st}</text>",
                    y + 4.0
                );
            }
        }
    }
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
        let page = html(&[("a.json".into(), r)]);
        assert!(page.contains("<td class=\"pass\"><a href=\"#h0-x-ipv4\">pass</a>"));
        assert!(
            page.contains("<td class=\"does-not-hold\"><b>does not hold</b>: <a href=\"#h0-x-ipv4\">x/ipv4</a>"),
            "{page}"
        );
        assert!(page.contains("id=\"h0-x-ipv4\""));
        assert!(page.contains("a &lt;title&gt; &amp; more"));
        assert_eq!(page.matches("<svg").count(), 1);
        // Self-contained: nothing to fetch.
        assert!(!page.contains("src=") && !page.contains("href=\"http"));
        assert!(!page.contains("<script"));
        insta::assert_snapshot!(page);
    }
}
