//! How a connection ended, explained by the catalogue: each connection of a
//! capture is matched against the wire signatures of the cases the harness
//! observed (the baseline, and other stacks' reports), never against
//! hand-written rules.
//!
//! A signature is a handful of the report's own wire facts about the
//! ending ([`SIGNATURE_FACTS`]). `teardown signatures` (`just signatures`)
//! derives the committed `reports/signatures.json` from the observed
//! reports, with each scenario's title and the `why` of its expectation;
//! the binary embeds that file.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use std::net::SocketAddr;
use std::path::Path;

use crate::analyze::file::FileStats;
use crate::analyze::flows::FlowFacts;
use crate::analyze::{FirstFin, PacketRecord};
use crate::capture::CaptureError;
use crate::compare::Input;
use crate::scenario::Case;
use crate::tcp::{PerSide, Side, TimeWaitSide};

/// The wire facts that make up a signature: how the connection ended, not
/// how much it carried.
pub(crate) const SIGNATURE_FACTS: &[&str] = &[
    "wire.conn_state",
    "wire.first_fin",
    "wire.first_rst",
    "wire.time_wait_side",
    "wire.client.reset",
    "wire.server.reset",
    "wire.client.distinct_fins",
    "wire.server.distinct_fins",
    "wire.client.rst_for_data_after_close",
    "wire.server.rst_for_data_after_close",
];

/// The format of the signature file.
pub(crate) const FORMAT: u32 = 1;

/// The committed signature file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Signatures {
    pub format: u32,
    /// The reports and baselines it was derived from.
    pub sources: Vec<String>,
    /// The facts each signature holds, in order.
    pub facts: Vec<String>,
    pub signatures: Vec<Signature>,
    /// Each signature's diagnoses: built once, on first use.
    #[serde(skip)]
    diagnoses: OnceLock<Diagnoses>,
}

/// Diagnoses by ending and by which sides sent payload (client, server).
type Diagnoses =
    std::collections::HashMap<(Ending, [bool; 2]), Arc<Diagnosis>, foldhash::fast::RandomState>;

/// One ending, and the catalogue's cases that end that way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    pub facts: BTreeMap<String, Value>,
    pub matches: Vec<Match>,
}

/// A scenario whose cases, on one stack, ended with a signature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    pub scenario: String,
    pub stack: String,
    pub title: String,
    /// The `why` of the scenario's expectation for that stack, if it has one.
    pub why: Option<String>,
    /// How many steps the scenario takes: the fewer, the plainer the
    /// example of this ending, and the sooner it is named.
    pub steps: usize,
    /// Whether each side of the scenario's cases sent payload
    /// (`wire.<side>.sent_data`), where its cases agree and it was
    /// observed: among the scenarios that end alike, one whose data flowed
    /// as the connection's did is named first.
    #[serde(default)]
    pub sent_data: PerSide<Option<bool>>,
    /// Whether a program (`[program.server]`) was one end: such a
    /// scenario names an ending only where none the harness drives itself
    /// ends that way with data flowing alike (an ordinary close of a
    /// program is not its point).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub program: bool,
    pub cases: Vec<String>,
}

impl Match {
    /// Takes in one more case's `wire.<side>.sent_data` facts: a side's
    /// value stays only while every case agrees on it.
    fn add_sent_data(&mut self, facts: &BTreeMap<String, Value>) {
        let first = self.cases.is_empty();
        for side in Side::BOTH {
            let seen = facts
                .get(&format!("wire.{}.sent_data", side.name()))
                .and_then(Value::as_bool);
            let v = &mut self.sent_data[side];
            *v = if first || *v == seen { seen } else { None };
        }
    }

    /// On how many sides the scenario's data flowed otherwise than `sent`
    /// says (a side it did not observe counts as agreeing).
    fn disagreements(&self, sent: [bool; 2]) -> usize {
        Side::BOTH
            .into_iter()
            .zip(sent)
            .filter(|(side, s)| self.sent_data[*side].is_some_and(|v| v != *s))
            .count()
    }
}

/// A signature's facts as one comparable key: their values in
/// [`SIGNATURE_FACTS`] order (a fact missing from `facts` as null).
fn key(facts: &BTreeMap<String, Value>) -> String {
    use std::fmt::Write as _;
    let mut key = String::with_capacity(64);
    for p in SIGNATURE_FACTS {
        let _ = write!(key, "{}\u{1f}", facts.get(*p).unwrap_or(&Value::Null));
    }
    key
}

/// Derives the signatures from observed reports and baselines, and the
/// scenarios that give their cases a meaning. A case's wire facts describe
/// its first connection: in a case with a few numbered connections (a port
/// reused) that is always the same one, and its signature counts; a case
/// that drives groups has no case-level wire facts in a baseline or a
/// comparison (which of its connections is first is chance), so it gives
/// none. Nor does a case whose server connects first: a signature is in a
/// capture's terms, whose client is the first SYN's sender.
pub fn generate(inputs: &[(String, Input)], cases: &[Case]) -> Signatures {
    let by_id: BTreeMap<&str, &Case> = cases.iter().map(|c| (c.id.as_str(), c)).collect();
    // Signature key -> its facts, and its matches by (scenario, stack).
    type Found = BTreeMap<String, (BTreeMap<String, Value>, BTreeMap<(String, String), Match>)>;
    let mut found = Found::new();
    for (_, input) in inputs {
        let stack = input.stack();
        let link = input.link();
        for (id, facts) in input.observed_facts() {
            let Some(signature) = SIGNATURE_FACTS
                .iter()
                .map(|p| facts.get(*p).map(|v| (p.to_string(), v.clone())))
                .collect::<Option<BTreeMap<_, _>>>()
            else {
                continue;
            };
            let scenario = id.split('/').next().unwrap_or(&id).to_string();
            let case = by_id.get(id.as_str());
            if case.is_some_and(|c| c.server_connects_first()) {
                continue;
            }
            let entry = found
                .entry(key(&signature))
                .or_insert_with(|| (signature, BTreeMap::new()));
            let m = entry
                .1
                .entry((scenario.clone(), stack.clone()))
                .or_insert_with(|| Match {
                    scenario,
                    stack: stack.clone(),
                    title: case.map(|c| c.scenario.title.clone()).unwrap_or_default(),
                    why: case
                        .and_then(|c| c.expectations_for(&stack, link).find_map(|e| e.why.clone())),
                    steps: case.map_or(usize::MAX, |c| c.steps.len()),
                    sent_data: PerSide::default(),
                    program: case.is_some_and(|c| c.program.is_some()),
                    cases: Vec::new(),
                });
            m.add_sent_data(&facts);
            m.cases.push(id.clone());
        }
    }
    Signatures {
        format: FORMAT,
        sources: inputs.iter().map(|(name, _)| name.clone()).collect(),
        facts: SIGNATURE_FACTS.iter().map(|s| s.to_string()).collect(),
        signatures: found
            .into_values()
            .map(|(facts, matches)| Signature {
                facts,
                matches: matches.into_values().collect(),
            })
            .collect(),
        diagnoses: OnceLock::new(),
    }
}

/// The signature file the binary was built with.
pub fn embedded() -> &'static Signatures {
    static SIGNATURES: OnceLock<Signatures> = OnceLock::new();
    SIGNATURES.get_or_init(|| {
        // Checked by a test against what `generate` makes of the committed
        // reports; a damaged file would only mean no diagnosis.
        serde_json::from_str(include_str!("../../reports/signatures.json")).unwrap_or_default()
    })
}

/// A connection's signature, read from its wire facts the way the report
/// names them.
pub(crate) fn signature_of(flow: &FlowFacts) -> BTreeMap<String, Value> {
    match serde_json::to_value(Ending::of(flow)) {
        Ok(Value::Object(facts)) => facts.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

/// The facts of a signature, typed, under the report's names for them: a
/// signature file's facts read into it, and a connection's wire facts are
/// read into it field by field (not through the whole of the wire facts as
/// JSON: this runs once per connection of a capture). Tests check that it
/// holds exactly [`SIGNATURE_FACTS`], and that it reads a connection the
/// way its JSON would.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ending {
    #[serde(rename = "wire.conn_state")]
    conn_state: String,
    #[serde(rename = "wire.first_fin")]
    first_fin: Option<FirstFin>,
    #[serde(rename = "wire.first_rst")]
    first_rst: Option<Side>,
    #[serde(rename = "wire.time_wait_side")]
    time_wait_side: Option<TimeWaitSide>,
    #[serde(rename = "wire.client.reset")]
    client_reset: bool,
    #[serde(rename = "wire.server.reset")]
    server_reset: bool,
    #[serde(rename = "wire.client.distinct_fins")]
    client_distinct_fins: u32,
    #[serde(rename = "wire.server.distinct_fins")]
    server_distinct_fins: u32,
    #[serde(rename = "wire.client.rst_for_data_after_close")]
    client_rst_for_data_after_close: bool,
    #[serde(rename = "wire.server.rst_for_data_after_close")]
    server_rst_for_data_after_close: bool,
}

impl Ending {
    fn of(flow: &FlowFacts) -> Ending {
        let w = &flow.wire;
        let PerSide { client, server } = &w.sides;
        Ending {
            conn_state: w.conn_state.clone(),
            first_fin: w.first_fin,
            first_rst: w.first_rst,
            time_wait_side: w.time_wait_side,
            client_reset: client.rst > 0,
            server_reset: server.rst > 0,
            client_distinct_fins: client.distinct_fins,
            server_distinct_fins: server.distinct_fins,
            client_rst_for_data_after_close: client.rst_for_data_after_close,
            server_rst_for_data_after_close: server.rst_for_data_after_close,
        }
    }

    /// A signature's facts, if they are the facts of an ending (a file
    /// made with other facts, or other values, gives no ending, and
    /// nothing can match it).
    fn from_facts(facts: &BTreeMap<String, Value>) -> Option<Ending> {
        let object = facts.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        serde_json::from_value(Value::Object(object)).ok()
    }
}

/// How one connection ended, in the catalogue's terms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnosis {
    /// The matching scenario whose data flowed as the connection's did,
    /// the plainest (fewest steps) among those; or `open` (the capture
    /// ended first), or `unknown`.
    pub name: String,
    /// One sentence: what the match means, or why there is none.
    pub explanation: String,
    /// Every match, as `scenario on stack`, the first first.
    pub matches: Vec<String>,
}

impl Diagnosis {
    /// Whether `scenario` is among the matches.
    pub fn names(&self, scenario: &str) -> bool {
        self.name == scenario
            || self
                .matches
                .iter()
                .any(|m| m.split(" on ").next() == Some(scenario))
    }
}

impl Signature {
    /// The diagnosis of a connection with this ending, whose sides sent
    /// payload or not as `sent` says (client, server): the matches whose
    /// data flowed the same way first, then scenarios the harness drives at
    /// both ends before those with a program, then the plainest (fewest
    /// steps), Linux before other stacks.
    fn diagnosis(&self, sent: [bool; 2]) -> Diagnosis {
        let mut matches = self.matches.clone();
        matches.sort_by(|a, b| {
            let rank = |m: &Match| {
                (
                    m.disagreements(sent),
                    m.program,
                    m.steps,
                    m.stack != "linux",
                )
            };
            (rank(a), &a.scenario).cmp(&(rank(b), &b.scenario))
        });
        let Some(first) = matches.first() else {
            return unknown(&self.facts);
        };
        let mut explanation = format!(
            "matches {} on {}: {}",
            first.scenario, first.stack, first.title
        );
        if let Some(why) = &first.why {
            explanation.push_str(&format!(" ({why})"));
        }
        // The other matches are in `matches`, not repeated here: a
        // capture's JSON Lines carry this once per connection.
        let named: Vec<String> = matches
            .iter()
            .map(|m| format!("{} on {}", m.scenario, m.stack))
            .collect();
        Diagnosis {
            name: first.scenario.clone(),
            explanation,
            matches: named,
        }
    }
}

fn unknown(signature: &BTreeMap<String, Value>) -> Diagnosis {
    Diagnosis {
        name: "unknown".into(),
        explanation: format!(
            "no case of the catalogue ends like this ({})",
            describe(signature)
        ),
        matches: Vec::new(),
    }
}

impl Signatures {
    /// Matches `flow`'s ending against the signatures. A connection still
    /// open when the capture ended can match too (a SYN nobody answered
    /// ends that way in the catalogue); one that matches nothing is `open`,
    /// not `unknown`: its ending was never captured.
    /// The diagnosis is shared between the connections that end alike.
    pub fn diagnose(&self, flow: &FlowFacts) -> Arc<Diagnosis> {
        static OPEN: OnceLock<Arc<Diagnosis>> = OnceLock::new();
        const SENT: [[bool; 2]; 4] = [[false, false], [false, true], [true, false], [true, true]];
        let diagnoses = self.diagnoses.get_or_init(|| {
            self.signatures
                .iter()
                .filter_map(|s| Some((Ending::from_facts(&s.facts)?, s)))
                .flat_map(|(ending, s)| {
                    SENT.map(|sent| ((ending.clone(), sent), Arc::new(s.diagnosis(sent))))
                })
                .collect()
        });
        let sides = &flow.wire.sides;
        let sent = [sides.client.data_bytes > 0, sides.server.data_bytes > 0];
        match diagnoses.get(&(Ending::of(flow), sent)) {
            Some(d) => Arc::clone(d),
            None if flow.open_at_end => Arc::clone(OPEN.get_or_init(|| {
                Arc::new(Diagnosis {
                    name: "open".into(),
                    explanation: "still open when the capture ended: its ending was not captured"
                        .into(),
                    matches: Vec::new(),
                })
            })),
            None => Arc::new(unknown(&signature_of(flow))),
        }
    }
}

/// A signature in a line: the facts that are set.
fn describe(signature: &BTreeMap<String, Value>) -> String {
    signature
        .iter()
        .filter(|(_, v)| !matches!(v, Value::Null | Value::Bool(false)) && *v != &json!(0))
        .map(|(k, v)| format!("{}={v}", k.trim_start_matches("wire.")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A connection of an analyzed capture, with its diagnosis.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnosed {
    #[serde(flatten)]
    pub flow: FlowFacts,
    pub diagnosis: Arc<Diagnosis>,
}

/// Which connections to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Either end's port.
    pub port: Option<u16>,
    /// Either end's address.
    pub host: Option<std::net::IpAddr>,
    /// Zeek's conn_state (SF, RSTO, ...).
    pub state: Option<String>,
    /// A diagnosis name, or any scenario among its matches.
    pub diagnosis: Option<String>,
}

impl Filter {
    pub fn keeps(&self, c: &Diagnosed) -> bool {
        let ends = [c.flow.client, c.flow.server];
        self.port.is_none_or(|p| ends.iter().any(|a| a.port() == p))
            && self.host.is_none_or(|h| ends.iter().any(|a| a.ip() == h))
            && self
                .state
                .as_ref()
                .is_none_or(|s| c.flow.wire.conn_state.eq_ignore_ascii_case(s))
            && self.diagnosis.as_ref().is_none_or(|d| c.diagnosis.names(d))
    }
}

/// Reads a capture, diagnoses each connection as it ends, and hands the
/// ones `filter` keeps to `on`.
pub fn analyze_file(
    path: &Path,
    signatures: &Signatures,
    filter: &Filter,
    on: impl FnMut(Diagnosed),
) -> Result<FileStats, CaptureError> {
    analyze_file_with(path, signatures, filter, Default::default(), on)
}

/// [`analyze_file`], connections read as `reading` says.
pub(crate) fn analyze_file_with(
    path: &Path,
    signatures: &Signatures,
    filter: &Filter,
    reading: crate::analyze::flows::Reading,
    mut on: impl FnMut(Diagnosed),
) -> Result<FileStats, CaptureError> {
    crate::analyze::file::each_connection_with(path, reading, |flow| {
        let c = Diagnosed {
            diagnosis: signatures.diagnose(&flow),
            flow,
        };
        if filter.keeps(&c) {
            on(c);
        }
    })
}

/// Which connection of a capture `teardown explain --pcap` shows: its
/// number (`12`, `#12`), or its ends (`127.0.0.1:40000 127.0.0.1:9000`;
/// one end is enough when it names a single connection).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Selector {
    Index(usize),
    Ends(Vec<SocketAddr>),
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(i) = s.trim_start_matches('#').parse() {
            return Ok(Selector::Index(i));
        }
        s.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<SocketAddr>())
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|ends| (1..=2).contains(&ends.len()))
            .map(Selector::Ends)
            .ok_or_else(|| {
                format!("`{s}` names no connection: give its number (12) or its ends (127.0.0.1:40000 127.0.0.1:9000)")
            })
    }
}

impl Selector {
    fn picks(&self, f: &FlowFacts) -> bool {
        match self {
            Selector::Index(i) => f.index == *i,
            Selector::Ends(ends) => ends.iter().all(|a| *a == f.client || *a == f.server),
        }
    }
}

/// The connections of a capture `selector` names, each with its segments
/// as a case report lists them (read again from the file, that connection
/// only).
pub(crate) fn explain_file(
    path: &Path,
    signatures: &Signatures,
    selector: &Selector,
) -> Result<Vec<(Diagnosed, Vec<PacketRecord>)>, CaptureError> {
    let mut picked = Vec::new();
    analyze_file(path, signatures, &Filter::default(), |c| {
        if selector.picks(&c.flow) {
            picked.push(c);
        }
    })?;
    picked.sort_by_key(|c| c.flow.index);
    picked
        .into_iter()
        .map(|c| {
            let packets = crate::analyze::file::connection_packets(path, &c.flow)?;
            Ok((c, packets))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::flows::split;
    use crate::wire::Segment;

    fn seg(t: i64, from_client: bool, flags: &str, seq: u32, ack: u32) -> Segment {
        let (c, s) = ("127.0.0.1:40000", "127.0.0.1:9000");
        let (src, dst) = if from_client { (c, s) } else { (s, c) };
        Segment::example(t, src, dst, flags, seq, ack, 0)
    }

    fn graceful() -> FlowFacts {
        let segs = [
            seg(0, true, "S", 100, 0),
            seg(1, false, "S.", 500, 101),
            seg(2, true, ".", 101, 501),
            seg(3, true, "F.", 101, 501),
            seg(4, false, "F.", 501, 102),
            seg(5, true, ".", 102, 502),
        ];
        split(&segs).remove(0)
    }

    fn signatures_with(flow: &FlowFacts, scenario: &str) -> Signatures {
        Signatures {
            format: FORMAT,
            signatures: vec![Signature {
                facts: signature_of(flow),
                matches: vec![Match {
                    scenario: scenario.into(),
                    stack: "linux".into(),
                    title: "A graceful close".into(),
                    why: Some("FIN both ways".into()),
                    steps: 6,
                    sent_data: PerSide::default(),
                    program: false,
                    cases: vec![format!("{scenario}/ipv4")],
                }],
            }],
            ..Default::default()
        }
    }

    /// Scenarios that end alike: the one whose data flowed as the
    /// connection's did is named, however many steps it takes; without
    /// that difference, the plainest.
    #[test]
    fn the_match_whose_data_flowed_alike_is_named_first() {
        let flow = graceful();
        let mut sigs = signatures_with(&flow, "plain");
        let mut talky = sigs.signatures[0].matches[0].clone();
        talky.scenario = "talky".into();
        talky.steps = 12;
        talky.sent_data = PerSide::new(Some(true), Some(true));
        sigs.signatures[0].matches[0].sent_data = PerSide::new(Some(false), Some(false));
        sigs.signatures[0].matches.push(talky);
        // graceful() carries no payload: the plain scenario.
        let d = sigs.diagnose(&flow);
        assert_eq!(d.name, "plain");
        assert_eq!(d.matches, ["plain on linux", "talky on linux"]);
        // The same ending with data both ways: the talky one.
        let mut data = flow.clone();
        data.wire.sides.client.data_bytes = 100;
        data.wire.sides.server.data_bytes = 100;
        let d = sigs.diagnose(&data);
        assert_eq!(d.name, "talky");
        assert_eq!(d.matches, ["talky on linux", "plain on linux"]);
        // Data one way only: one side disagrees with each; fewer steps wins.
        data.wire.sides.server.data_bytes = 0;
        assert_eq!(sigs.diagnose(&data).name, "plain");
        // Among those whose data flowed alike, a scenario the harness
        // drives comes before one with a program, however plain that is.
        let mut sigs = Signatures {
            signatures: sigs.signatures.clone(),
            ..Default::default()
        };
        let mut program = sigs.signatures[0].matches[1].clone();
        program.scenario = "served".into();
        program.steps = 2;
        program.program = true;
        sigs.signatures[0].matches.push(program);
        data.wire.sides.server.data_bytes = 100;
        assert_eq!(sigs.diagnose(&data).name, "talky");
        // Where only the program's data flowed alike, it is named.
        let mut alone = Signatures {
            signatures: sigs.signatures.clone(),
            ..Default::default()
        };
        alone.signatures[0].matches.remove(1);
        assert_eq!(alone.diagnose(&data).name, "served");
    }

    #[test]
    fn a_match_keeps_what_its_cases_agree_on() {
        let mut m = signatures_with(&graceful(), "x").signatures[0].matches[0].clone();
        m.cases.clear();
        let facts = |c: bool, s: bool| {
            BTreeMap::from([
                ("wire.client.sent_data".to_string(), json!(c)),
                ("wire.server.sent_data".to_string(), json!(s)),
            ])
        };
        for (c, s) in [(true, false), (true, true)] {
            m.add_sent_data(&facts(c, s));
            m.cases.push("case".into());
        }
        assert_eq!(m.sent_data, PerSide::new(Some(true), None));
        m.add_sent_data(&BTreeMap::new());
        assert_eq!(m.sent_data, PerSide::new(None, None), "unobserved: unknown");
    }

    #[test]
    fn a_signature_reads_each_fact_as_the_wire_facts_json_names_it() {
        // The slow, general way: the wire facts as JSON, read by path.
        let by_json = |flow: &FlowFacts| -> BTreeMap<String, Value> {
            let wire = serde_json::to_value(&flow.wire).unwrap();
            SIGNATURE_FACTS
                .iter()
                .map(|path| {
                    let parts: Vec<&str> = path.split('.').skip(1).collect();
                    let v = match parts.as_slice() {
                        [side, "reset"] => json!(wire[side]["rst"].as_u64().unwrap() > 0),
                        [side, field] => wire[side][field].clone(),
                        [field] => wire[field].clone(),
                        _ => panic!("{path}"),
                    };
                    (path.to_string(), v)
                })
                .collect()
        };
        let mut reset = graceful();
        reset.wire.sides.server.rst = 2;
        reset.wire.first_rst = Some(crate::tcp::Side::Server);
        reset.wire.sides.client.rst_for_data_after_close = true;
        reset.wire.conn_state = "RSTR".into();
        for flow in [graceful(), reset] {
            assert_eq!(signature_of(&flow), by_json(&flow));
            // A signature file's facts read back into the same ending.
            assert_eq!(Ending::from_facts(&by_json(&flow)), Some(Ending::of(&flow)));
        }
        let names: Vec<String> = signature_of(&graceful()).into_keys().collect();
        let mut want: Vec<String> = SIGNATURE_FACTS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(names, want, "an ending holds exactly the signature facts");
        // Facts of another shape are no ending: nothing matches them.
        let mut other = by_json(&graceful());
        other.insert("wire.something_new".into(), json!(1));
        assert_eq!(Ending::from_facts(&other), None);
        other.remove("wire.something_new");
        other.insert("wire.first_fin".into(), json!("sideways"));
        assert_eq!(Ending::from_facts(&other), None);
    }

    #[test]
    fn every_embedded_signature_is_an_ending_a_connection_can_match() {
        let s = embedded();
        assert!(!s.signatures.is_empty());
        for sig in &s.signatures {
            assert!(Ending::from_facts(&sig.facts).is_some(), "{:?}", sig.facts);
        }
    }

    #[test]
    fn a_signature_uses_the_report_s_fact_names_and_values() {
        let s = signature_of(&graceful());
        assert_eq!(s.len(), SIGNATURE_FACTS.len());
        assert_eq!(s["wire.conn_state"], json!("SF"));
        assert_eq!(s["wire.first_fin"], json!("client"));
        assert_eq!(s["wire.client.reset"], json!(false));
        assert_eq!(s["wire.client.distinct_fins"], json!(1));
        assert_eq!(s["wire.time_wait_side"], json!("client"));
    }

    #[test]
    fn a_matching_ending_names_its_scenario_and_what_it_means() {
        let flow = graceful();
        let d = signatures_with(&flow, "close-graceful").diagnose(&flow);
        assert_eq!(d.name, "close-graceful");
        assert!(
            d.explanation.contains("A graceful close"),
            "{}",
            d.explanation
        );
        assert!(d.explanation.contains("FIN both ways"), "{}", d.explanation);
    }

    #[test]
    fn an_ending_the_catalogue_lacks_is_unknown_and_says_what_it_was() {
        let mut other = graceful();
        other.wire.sides.server.rst = 1;
        let d = signatures_with(&graceful(), "close-graceful").diagnose(&other);
        assert_eq!(d.name, "unknown");
        assert!(
            d.explanation.contains("server.reset=true"),
            "{}",
            d.explanation
        );
    }

    #[test]
    fn an_open_connection_that_matches_nothing_is_open_not_unknown() {
        let mut open = graceful();
        open.open_at_end = true;
        open.wire.first_fin = None;
        let d = signatures_with(&graceful(), "close-graceful").diagnose(&open);
        assert_eq!(d.name, "open");
    }

    #[test]
    fn filters_pick_by_port_host_state_and_diagnosis() {
        let flow = graceful();
        let c = Diagnosed {
            diagnosis: signatures_with(&flow, "close-graceful").diagnose(&flow),
            flow,
        };
        let keeps = |f: Filter| f.keeps(&c);
        assert!(keeps(Filter::default()));
        assert!(keeps(Filter {
            port: Some(9000),
            ..Default::default()
        }));
        assert!(!keeps(Filter {
            port: Some(80),
            ..Default::default()
        }));
        assert!(keeps(Filter {
            host: "127.0.0.1".parse().ok(),
            ..Default::default()
        }));
        assert!(!keeps(Filter {
            host: "::1".parse().ok(),
            ..Default::default()
        }));
        assert!(keeps(Filter {
            state: Some("sf".into()),
            ..Default::default()
        }));
        assert!(!keeps(Filter {
            state: Some("RSTO".into()),
            ..Default::default()
        }));
        assert!(keeps(Filter {
            diagnosis: Some("close-graceful".into()),
            ..Default::default()
        }));
        assert!(!keeps(Filter {
            diagnosis: Some("linger-zero".into()),
            ..Default::default()
        }));
    }
}
