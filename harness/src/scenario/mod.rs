//! Scenario files: parsing, validation and expansion into cases.
//!
//! A scenario is one TOML file in `scenarios/`; its id is the file stem.
//! Parameter axes (address family at least) expand it into [`Case`]s, one per
//! combination, each with its own step list after `${param}` substitution.
//! Every error names the file, line and column and says what was expected;
//! unknown keys are errors, and so are values beyond the [`limits`]. Nothing
//! here touches a socket. Fact paths in expectations are checked against
//! the fact model by `catalogue`, which loads scenarios for the other stages.

pub mod expect;
pub mod features;
pub mod limits;
pub mod program;
pub mod rule;
pub mod steps;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use expect::Matcher;
pub use program::Program;

/// The port the listener binds (and a program listens on unless its
/// table says otherwise). Each case has its own namespace, so a fixed port
/// never collides and keeps captures easy to read.
pub const SERVER_PORT: u16 = 9000;
pub use steps::{
    Actor, Call, Control, GetOpt, Group, How, IoctlQuery, Payload, ReadAmount, Role,
    SegmentPattern, SockOpt, Step, StepKind, Verb, WaitFor, WireEvent,
};

use crate::files::{self, InputError};

/// Address family of a case.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Stacks an expectation can be written for (`os = "..."`): operating
/// systems, and TCP/IP stacks that run on one (gVisor's netstack, smoltcp;
/// Wine's Winsock on its host's kernel).
pub(crate) const STACKS: &[&str] = &[
    "linux", "gvisor", "smoltcp", "lwip", "freebsd", "macos", "windows", "wine",
];

/// A scenario file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read a scenario: {0}")]
    Input(#[from] InputError),
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: names the scenario {name:?}, as {} does; case ids and capture files must be unique, so rename one",
        second.display(),
        first.display()
    )]
    SameName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// What an expectation's facts, when observed, say about a claim.
pub(crate) const CLAIM_OUTCOMES: &[&str] = &["holds", "does not hold", "partly"];

/// What joins a case's two sides: the expectation key `link`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Link {
    /// Both sides on one stack's loopback (the default).
    Loopback,
    /// Two hosts joined by the bench's router (`run --bench`).
    Bench,
}

impl Link {
    pub const ALL: [Link; 2] = [Link::Loopback, Link::Bench];

    pub fn name(self) -> &'static str {
        match self {
            Link::Loopback => "loopback",
            Link::Bench => "bench",
        }
    }
}

/// One expectation block (`[[expect]]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    pub os: String,
    pub claims: Vec<String>,
    /// `claims = { C8 = "does not hold" }`: what observing these facts means
    /// for each claim (one of [`CLAIM_OUTCOMES`]); empty when `claims` is
    /// a plain list (related claims, no judgement).
    pub outcomes: BTreeMap<String, String>,
    pub why: Option<String>,
    /// Applies only to cases whose params have these values.
    pub when: Vec<(String, String)>,
    /// Applies only on this link (`link = "bench"`); None: on every link.
    pub link: Option<Link>,
    pub facts: Vec<Fact>,
}

/// `path = matcher`, with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Fact {
    pub path: String,
    pub matcher: Matcher,
    pub line: usize,
}

/// A parsed scenario file.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub id: String,
    pub path: PathBuf,
    pub title: String,
    pub claims: Vec<String>,
    pub references: Vec<String>,
    /// Parameter axes in file order; `family` always first.
    pub axes: Vec<(String, Vec<String>)>,
    /// Bound on any single wait inside a step (default 5 s).
    pub timeout: Duration,
    /// Bound on the end-of-case wait for transient TCP states (default 2 s).
    pub settle: Duration,
    pub expectations: Vec<Expectation>,
    /// The `[sysctl]` names in file order, each with the line it is on.
    pub sysctl_lines: Vec<(String, usize)>,
    /// A program on one end (`[program.server]`), as written.
    pub program: Option<Program>,
}

/// A scenario with one value per axis: the unit that runs.
#[derive(Clone, Debug)]
pub struct Case {
    /// `scenario/ipv4` or `scenario/ipv6/linger=2`.
    pub id: String,
    pub scenario: Arc<Scenario>,
    pub params: Vec<(String, String)>,
    pub family: Family,
    /// Sysctls set before anything else, in file order, after `${param}`
    /// substitution.
    pub sysctls: Vec<Sysctl>,
    pub steps: Vec<Step>,
    /// The program on one end, with the case's params substituted.
    pub program: Option<Program>,
}

/// A sysctl a case sets, and on which host's stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// `net.ipv4.tcp_fin_timeout`.
    pub name: String,
    pub value: String,
    /// The host it is for (`[sysctl.client]`, `[sysctl.server]`); `None`
    /// (`[sysctl]`): every host. On loopback both sides share one stack,
    /// which gets them all.
    pub host: Option<crate::tcp::Side>,
}

impl Sysctl {
    /// Whether it is set on `side`'s host (on the bench).
    pub fn on(&self, side: crate::tcp::Side) -> bool {
        self.host.is_none_or(|h| h == side)
    }
}

impl Case {
    /// The expectations that apply to this case on `os` over `link`.
    pub(crate) fn expectations_for<'a>(
        &'a self,
        os: &'a str,
        link: Link,
    ) -> impl Iterator<Item = &'a Expectation> + 'a {
        self.scenario.expectations.iter().filter(move |e| {
            e.os == os
                && e.link.is_none_or(|l| l == link)
                && e.when
                    .iter()
                    .all(|(k, v)| self.params.iter().any(|(pk, pv)| pk == k && pv == v))
        })
    }

    /// Whether the server's connect comes before the client's (the mirror
    /// of a simultaneous open): then the server sends connection 1's first
    /// SYN, and a capture's originator, the first SYN's sender, is the
    /// harness's server, not its client.
    pub fn server_connects_first(&self) -> bool {
        self.steps
            .iter()
            .find_map(|s| match &s.kind {
                StepKind::Socket {
                    actor,
                    call: Call::Connect,
                    ..
                } if actor.index == 1 => Some(actor.role == Role::Server),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// How many connections the case may open: the highest connection
    /// number its steps name (1 for a one-pair case).
    pub fn connections(&self) -> u32 {
        self.steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::Socket {
                    group: Some(Group::Range(_, b)),
                    ..
                } => Some(*b),
                StepKind::Socket { actor, .. } => Some(actor.index),
                StepKind::Control(_) => None,
            })
            .max()
            .unwrap_or(1)
    }

    /// The case id with `/` replaced, for file names.
    pub fn file_stem(&self) -> String {
        self.id.replace(['/', '=', ' '], "-")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    title: String,
    #[serde(default)]
    claims: Vec<String>,
    #[serde(default)]
    references: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)] // prose for readers of the file; not used by the harness
    description: Option<String>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    settle: Option<Spanned<String>>,
    steps: Spanned<String>,
    #[serde(default)]
    params: Option<Spanned<toml::Table>>,
    #[serde(default)]
    sysctl: Option<Spanned<toml::Table>>,
    #[serde(default)]
    program: Option<Spanned<program::RawPrograms>>,
    #[serde(default)]
    expect: Vec<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    os: Spanned<String>,
    #[serde(default)]
    claims: Option<Spanned<RawClaims>>,
    #[serde(default)]
    why: Option<String>,
    #[serde(default)]
    when: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    #[serde(default)]
    link: Option<Spanned<String>>,
    facts: Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
}

/// `claims = ["C6"]` or `claims = { C6 = "holds", C8 = "does not hold" }`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawClaims {
    List(Vec<String>),
    Judged(BTreeMap<String, String>),
}

/// Source text plus path, to turn byte offsets into `file:line:column`.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        let (line, column) = self.line_col(span.start);
        ScenarioError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn error_line(&self, line: usize, column: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Reads and parses one scenario file, and expands it into its cases.
pub fn load(path: &Path) -> Result<(Arc<Scenario>, Vec<Case>), ScenarioError> {
    let text = files::read_text(path, limits::MAX_FILE_BYTES, "scenario")?;
    parse(path, &text)
}

/// Parses scenario text as if read from `path` (the id is the file stem).
pub fn parse(path: &Path, text: &str) -> Result<(Arc<Scenario>, Vec<Case>), ScenarioError> {
    let src = Source { path, text };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut message = e.message().trim().to_string();
        if message.contains("missing field `steps`") && text.contains("\nsteps") {
            message.push_str(
                "; `steps` must come before the first [table] header, or it belongs to that table",
            );
        }
        src.error_at(span, message)
    })?;

    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            src.error_line(
                1,
                1,
                "the file name must be a UTF-8 scenario id, e.g. linger-zero.toml",
            )
        })?
        .to_string();

    let duration_field = |field: &Option<Spanned<String>>, default: Duration| match field {
        None => Ok(default),
        Some(s) => match steps::parse_duration(s.get_ref()) {
            None => Err(src.error_at(
                s.span(),
                format!(
                    "expected a duration such as 500ms or 2s, found {:?}",
                    s.get_ref()
                ),
            )),
            Some(d) if d > limits::MAX_STEP_WAIT => Err(src.error_at(
                s.span(),
                format!(
                    "{} is longer than the {} s limit; a run must stay stoppable",
                    s.get_ref(),
                    limits::MAX_STEP_WAIT.as_secs()
                ),
            )),
            Some(d) => Ok(d),
        },
    };
    let timeout = duration_field(&raw.timeout, Duration::from_secs(5))?;
    let settle = duration_field(&raw.settle, Duration::from_secs(2))?;

    let axes = parse_axes(&src, raw.params.as_ref())?;
    let sysctls = parse_sysctls(&src, raw.sysctl.as_ref())?;
    let program = program::parse(&src, raw.program.as_ref())?;

    // Step lines: map each line of the string value back to the file.
    let steps_span = raw.steps.span();
    let delimiter = &text[steps_span.start..(steps_span.start + 3).min(text.len())];
    let (first_line, _) = src.line_col(steps_span.start);
    // A multi-line string drops the newline right after its opening delimiter.
    let first_line = if (delimiter == "'''" || delimiter == "\"\"\"")
        && text[steps_span.start + 3..].starts_with(['\n', '\r'])
    {
        first_line + 1
    } else {
        first_line
    };
    let step_lines: Vec<(usize, &str)> = raw
        .steps
        .get_ref()
        .lines()
        .enumerate()
        .map(|(i, l)| (first_line + i, l))
        .collect();

    let mut expectations = Vec::new();
    for e in &raw.expect {
        expectations.push(parse_expectation(&src, e, &axes)?);
    }

    let scenario = Arc::new(Scenario {
        id: id.clone(),
        path: path.to_path_buf(),
        title: raw.title,
        claims: raw.claims,
        references: raw.references,
        axes: axes.clone(),
        timeout,
        settle,
        expectations,
        program: program.clone(),
        sysctl_lines: sysctls
            .iter()
            .map(|SysctlEntry { name, span, .. }| {
                // The key's own line: the first mention of the name after
                // the table's header (the span covers the header only).
                let rest = &text[span.start.min(text.len())..];
                let at = rest
                    .find(name.as_str())
                    .map_or(span.start, |i| span.start + i);
                (name.clone(), src.line_col(at).0)
            })
            .collect(),
    });

    let count = axes
        .iter()
        .try_fold(1u64, |n, (_, v)| n.checked_mul(v.len() as u64))
        .filter(|n| *n <= limits::MAX_CASES);
    if count.is_none() {
        let span = raw.params.as_ref().map_or(0..0, |p| p.span());
        return Err(src.error_at(
            span,
            format!(
                "the parameter axes expand to more than {} cases ({}); split the scenario",
                limits::MAX_CASES,
                axes.iter()
                    .map(|(n, v)| format!("{n}: {}", v.len()))
                    .collect::<Vec<_>>()
                    .join(" x ")
            ),
        ));
    }

    let mut cases = Vec::new();
    for params in combinations(&axes) {
        let program = program
            .as_ref()
            .map(|p| p.for_case(&params, &src))
            .transpose()?;
        let steps = parse_case_steps(&src, &step_lines, &params, program.as_ref())?;
        let sysctls = sysctls
            .iter()
            .map(|e| {
                substitute(&e.value, &params)
                    .map(|value| Sysctl {
                        name: e.name.clone(),
                        value,
                        host: e.host,
                    })
                    .map_err(|(_, m)| {
                        src.error_at(e.span.clone(), format!("sysctl.{}: {m}", e.name))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let family = match params[0].1.as_str() {
            "ipv6" => Family::Ipv6,
            _ => Family::Ipv4,
        };
        let mut case_id = format!("{id}/{}", params[0].1);
        for (k, v) in &params[1..] {
            case_id.push_str(&format!("/{k}={v}"));
        }
        cases.push(Case {
            id: case_id,
            scenario: Arc::clone(&scenario),
            params,
            family,
            sysctls,
            steps,
            program,
        });
    }

    Ok((scenario, cases))
}

fn parse_axes(
    src: &Source,
    params: Option<&Spanned<toml::Table>>,
) -> Result<Vec<(String, Vec<String>)>, ScenarioError> {
    let mut axes: Vec<(String, Vec<String>)> = Vec::new();
    let span = params.map_or(0..0, |p| p.span());
    if let Some(table) = params {
        for (name, values) in table.get_ref() {
            let err = |m: String| src.error_at(span.clone(), format!("params.{name}: {m}"));
            if name == "steps" {
                return Err(err(
                    "`steps` is inside [params]; move it above the [params] header, or write params = { ... } inline"
                        .into(),
                ));
            }
            if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err("an axis name uses only letters, digits and '_'".into()));
            }
            let toml::Value::Array(items) = values else {
                return Err(err(format!(
                    "expected a list of values, e.g. {name} = [\"a\", \"b\"]"
                )));
            };
            let mut vals = Vec::new();
            for item in items {
                vals.push(match item {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => return Err(err("values must be strings, integers or booleans".into())),
                });
            }
            if vals.is_empty() {
                return Err(err("an axis needs at least one value".into()));
            }
            if vals.len() > limits::MAX_AXIS_VALUES {
                return Err(err(format!(
                    "{} values; an axis has at most {}",
                    vals.len(),
                    limits::MAX_AXIS_VALUES
                )));
            }
            if let Some(dup) = vals
                .iter()
                .enumerate()
                .find(|(i, v)| vals[..*i].contains(v))
                .map(|(_, v)| v)
            {
                return Err(err(format!(
                    "{dup:?} is listed twice; each value makes one case, and case ids must be unique"
                )));
            }
            if name == "family" {
                if let Some(bad) = vals.iter().find(|v| !matches!(v.as_str(), "ipv4" | "ipv6")) {
                    return Err(err(format!(
                        "unknown family {bad:?}; expected \"ipv4\" or \"ipv6\""
                    )));
                }
            }
            axes.push((name.clone(), vals));
        }
    }
    match axes.iter().position(|(n, _)| n == "family") {
        Some(i) => {
            let fam = axes.remove(i);
            axes.insert(0, fam);
        }
        None => axes.insert(0, ("family".into(), vec!["ipv4".into(), "ipv6".into()])),
    }
    Ok(axes)
}

/// `[sysctl]`: per-namespace sysctls (`net.*`) with string or integer
/// values that may use `${param}`, for every host; `[sysctl.client]` and
/// `[sysctl.server]` hold those for one host only.
/// A `[sysctl]` entry as written: its value may still hold `${param}`.
struct SysctlEntry {
    name: String,
    value: String,
    host: Option<crate::tcp::Side>,
    /// The table's span: where errors point.
    span: Range<usize>,
}

fn parse_sysctls(
    src: &Source,
    table: Option<&Spanned<toml::Table>>,
) -> Result<Vec<SysctlEntry>, ScenarioError> {
    use crate::tcp::Side;
    let Some(table) = table else {
        return Ok(Vec::new());
    };
    let span = table.span();
    let mut out = Vec::new();
    let mut add = |name: &String, value: &toml::Value, host: Option<Side>| {
        let at = match host {
            Some(h) => format!("sysctl.{}.{name}", h.name()),
            None => format!("sysctl.{name}"),
        };
        let err = |m: String| src.error_at(span.clone(), format!("{at}: {m}"));
        if value.is_table() {
            return Err(err(format!(
                "quote the whole name, e.g. \"{name}.ipv4.tcp_fin_timeout\" = 1; unquoted dots make nested tables (only [sysctl.client] and [sysctl.server] are tables of their own)"
            )));
        }
        if !name.starts_with("net.") || name.contains(['/', ' ']) || name.contains("..") {
            return Err(err(
                "only per-namespace network sysctls (net.*) can be set in a case, e.g. \"net.ipv4.tcp_fin_timeout\" = 1".into(),
            ));
        }
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            _ => return Err(err("expected a string or an integer".into())),
        };
        if out.iter().any(|e: &SysctlEntry| &e.name == name) {
            return Err(err(
                "set twice: a sysctl goes in [sysctl] (every host) or in one host's table".into(),
            ));
        }
        out.push(SysctlEntry {
            name: name.clone(),
            value,
            host,
            span: span.clone(),
        });
        Ok(())
    };
    for (name, value) in table.get_ref() {
        let host = match name.as_str() {
            "client" => Some(Side::Client),
            "server" => Some(Side::Server),
            _ => None,
        };
        match (host, value) {
            (Some(side), toml::Value::Table(t)) => {
                for (name, value) in t {
                    add(name, value, Some(side))?;
                }
            }
            _ => add(name, value, None)?,
        }
    }
    Ok(out)
}

fn combinations(axes: &[(String, Vec<String>)]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (name, values) in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push((name.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    out
}

/// Replaces `${name}` with the case's param values.
fn substitute(line: &str, params: &[(String, String)]) -> Result<String, (usize, String)> {
    substitute_keeping(line, params, &[])
}

/// Replaces `${name}` with the case's param values, leaving `${k}` for
/// each name in `keep` (filled in later).
fn substitute_keeping(
    line: &str,
    params: &[(String, String)],
    keep: &[&str],
) -> Result<String, (usize, String)> {
    let mut out = String::new();
    let mut rest = line;
    let mut consumed = 0;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let column = line[..consumed + start].chars().count() + 1;
        let Some(end) = after.find('}') else {
            return Err((column, "unterminated ${...}: add a closing '}'".into()));
        };
        let name = &after[..end];
        match params.iter().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None if keep.contains(&name) => out.push_str(&rest[start..start + 2 + end + 1]),
            None => {
                let known: Vec<&str> = params
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .chain(keep.iter().copied())
                    .collect();
                return Err((
                    column,
                    format!(
                        "unknown parameter ${{{name}}}; this scenario has {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        consumed += start + 2 + end + 1;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_case_steps(
    src: &Source,
    lines: &[(usize, &str)],
    params: &[(String, String)],
    program: Option<&Program>,
) -> Result<Vec<Step>, ScenarioError> {
    let mut steps = Vec::new();
    for &(line_no, raw) in lines {
        let line = substitute(raw, params).map_err(|(col, m)| src.error_line(line_no, col, m))?;
        let step = steps::parse_step(&line, Some(line_no)).map_err(|e| {
            // Columns refer to the substituted line; they are exact unless a
            // `${param}` precedes the error, which is rare enough to accept.
            src.error_line(line_no, e.column, e.message)
        })?;
        steps.extend(step);
    }
    if steps.is_empty() {
        let line = lines.first().map_or(1, |l| l.0);
        return Err(src.error_line(line, 1, "the scenario has no steps"));
    }
    if steps.len() > limits::MAX_STEPS {
        let line = lines.first().map_or(1, |l| l.0);
        return Err(src.error_line(
            line,
            1,
            format!(
                "{} steps; a case has at most {}",
                steps.len(),
                limits::MAX_STEPS
            ),
        ));
    }

    // Implicit connection setup unless the scenario connects by itself.
    let connects = steps.iter().any(|s| {
        matches!(
            s.kind,
            StepKind::Socket {
                call: Call::Connect,
                ..
            }
        )
    });
    if !connects {
        // A server program listens and accepts by itself; a client program
        // connects by itself once the listener listens.
        let setup: &[&str] = match program.map(|p| p.side) {
            Some(crate::tcp::Side::Server) => &["client connect"],
            Some(crate::tcp::Side::Client) => &["listener listen", "server accept"],
            None => &["listener listen", "client connect", "server accept"],
        };
        let setup = setup.iter().map(|t| {
            steps::parse_step(t, None)
                .expect("built-in setup parses")
                .expect("non-empty")
        });
        steps.splice(0..0, setup);
    }

    check_program_steps(src, &steps, program)?;
    check_lifecycle(src, &steps, program.map(|p| p.side))?;

    // Labels are unique; joins name an earlier bg step, once; heal names an
    // earlier fault; since names an earlier step that has returned (a bg
    // step only once joined).
    let mut labels: Vec<(&str, bool)> = Vec::new();
    let mut joined: Vec<&str> = Vec::new();
    let mut faults: Vec<&str> = Vec::new();
    for s in &steps {
        let line = s.line.unwrap_or(0);
        match &s.kind {
            StepKind::Control(Control::Fault(_)) => {
                if let Some(l) = &s.label {
                    faults.push(l);
                }
            }
            StepKind::Control(Control::Heal(Some(name))) if !faults.contains(&name.as_str()) => {
                return Err(src.error_line(
                    line,
                    1,
                    format!("no earlier drop or reject step is labelled {name:?}"),
                ));
            }
            StepKind::Control(Control::Join(name)) => {
                match labels.iter().find(|(l, _)| l == name) {
                    Some((_, true)) if !joined.contains(&name.as_str()) => joined.push(name),
                    Some((_, true)) => {
                        return Err(src.error_line(line, 1, format!("{name:?} is joined twice")));
                    }
                    Some((_, false)) => {
                        return Err(src.error_line(
                            line,
                            1,
                            format!("{name:?} is not a bg step; only bg steps can be joined"),
                        ));
                    }
                    None => {
                        return Err(src.error_line(
                            line,
                            1,
                            format!("no earlier bg step is labelled {name:?}"),
                        ));
                    }
                }
            }
            _ => {}
        }
        if let Some(name) = s.since() {
            let returned = match labels.iter().find(|(l, _)| *l == name) {
                Some((_, false)) => true,
                Some((_, true)) => joined.contains(&name),
                None => {
                    return Err(src.error_line(
                        line,
                        1,
                        format!("no earlier step is labelled {name:?}"),
                    ));
                }
            };
            if !returned {
                return Err(src.error_line(
                    line,
                    1,
                    format!("{name:?} runs in the background: `join {name}` before timing a step since it"),
                ));
            }
        }
        if let Some(l) = &s.label {
            if labels.iter().any(|(x, _)| x == l) {
                return Err(src.error_line(line, 1, format!("label {l:?} is used twice")));
            }
            labels.push((l, s.background()));
        }
    }
    Ok(steps)
}

/// With a program on the server end, the harness holds no server or
/// listener socket: those actors may only wait on what the stack's table
/// shows, and a program's bytes cannot be checked against a pattern.
/// `stop server` needs a program to stop.
fn check_program_steps(
    src: &Source,
    steps: &[Step],
    program: Option<&Program>,
) -> Result<(), ScenarioError> {
    for s in steps {
        let error = |why: String| {
            let at = s.line.unwrap_or(1);
            src.error_line(at, 1, format!("`{}`: {why}", s.text))
        };
        match (&s.kind, program) {
            (StepKind::Control(Control::Stop(side)), None) => {
                return Err(error(format!(
                    "there is no program on the {side} end to stop; add a [program.{side}] table"
                )));
            }
            (
                StepKind::Socket {
                    actor,
                    call: Call::Wait { what, .. },
                    ..
                },
                Some(p),
            ) if actor.side() == Some(p.side)
                && matches!(what, WaitFor::State(_) | WaitFor::Timer(_)) => {}
            (StepKind::Socket { actor, .. }, Some(p))
                if actor.side() == Some(p.side)
                    || (actor.role == Role::Listener && p.side == crate::tcp::Side::Server) =>
            {
                return Err(error(format!(
                    "the {} end is a program (line {}), so the harness holds no {} socket; its steps can only wait on a state or a timer (`{} wait state CLOSE-WAIT`)",
                    p.side,
                    p.line,
                    actor.role.name(),
                    p.side
                )));
            }
            (
                StepKind::Socket {
                    actor,
                    group: Some(_),
                    ..
                },
                Some(p),
            ) if p.side == crate::tcp::Side::Client && actor.role != Role::Listener => {
                return Err(error(format!(
                    "a client program (line {}) makes one connection: steps on several sockets need the harness as the client",
                    p.line
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where an actor's socket is in its life, as the steps so far make it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Life {
    None,
    /// Created by an option or a bind, not yet connected or listening
    /// (client, listener, a server socket of its own).
    Created,
    /// Connected (client, a server socket of its own), listening
    /// (listener) or accepted (server).
    Open,
    Closed,
}

/// Checks that every step has the socket it needs, in the order written:
/// no server call before `server accept` (or, for a server socket of its
/// own, `server bind`; then no data call before `server connect`, and that
/// once the client has a socket), no accept before
/// `listener listen`, no data call on the client before `client connect`.
/// A client or listener step that creates a socket after its close opens a
/// new one (a reconnect, a rebind).
fn check_lifecycle(
    src: &Source,
    steps: &[Step],
    program: Option<crate::tcp::Side>,
) -> Result<(), ScenarioError> {
    use std::collections::HashMap;
    let mut life: HashMap<Actor, Life> = HashMap::new();
    for s in steps {
        let StepKind::Socket {
            actor, call, group, ..
        } = &s.kind
        else {
            continue;
        };
        // A program's end has no socket of the harness's to follow: its
        // steps only wait on the stack's table (see check_program_steps).
        if program.is_some() && actor.side() == program {
            continue;
        }
        let error = |why: String| {
            let at = s.line.unwrap_or(1);
            src.error_line(at, 1, format!("`{}`: {why}", s.text))
        };
        let members: Vec<Actor> = match group {
            None => vec![*actor],
            Some(Group::Range(a, b)) => (*a..=*b)
                .map(|index| Actor {
                    role: actor.role,
                    index,
                })
                .collect(),
            Some(Group::Every) => {
                // `every server accept`: the server end of every connection
                // a client made; otherwise every socket of the role open here.
                // A wait on a state watches closed sockets too.
                let (role, alive): (Role, &[Life]) = match call {
                    Call::Accept => (Role::Client, &[Life::Open, Life::Closed]),
                    Call::Wait {
                        what: WaitFor::State(_),
                        ..
                    } => (actor.role, &[Life::Open, Life::Created, Life::Closed]),
                    _ => (actor.role, &[Life::Open, Life::Created]),
                };
                let mut m: Vec<Actor> = life
                    .iter()
                    .filter(|(a, l)| a.role == role && alive.contains(l))
                    .map(|(a, _)| Actor {
                        role: actor.role,
                        index: a.index,
                    })
                    .collect();
                m.sort();
                if m.is_empty() {
                    return Err(error(format!("no {} has a socket here", actor.role.name())));
                }
                m
            }
        };
        for a in &members {
            let next = lifecycle_step(&life, *a, call).map_err(error)?;
            life.insert(*a, next);
        }
    }
    Ok(())
}

/// What `call` makes of `actor`'s socket, or why it cannot be made here.
fn lifecycle_step(
    life: &std::collections::HashMap<Actor, Life>,
    actor: Actor,
    call: &Call,
) -> Result<Life, String> {
    let now = life.get(&actor).copied().unwrap_or(Life::None);
    let listening = life.get(&Actor::LISTENER) == Some(&Life::Open);
    let its_client = Actor {
        role: Role::Client,
        index: actor.index,
    };
    let client_connected = matches!(life.get(&its_client), Some(Life::Open | Life::Closed));
    // A wait on a state or a timer is read from the stack's table, which
    // also shows a socket no descriptor holds.
    let state_wait = matches!(
        call,
        Call::Wait {
            what: WaitFor::State(_) | WaitFor::Timer(_),
            ..
        }
    );
    Ok(match (actor.role, call) {
        // A wait on a state also watches a closed socket (an orphan)...
        _ if state_wait && now != Life::None => now,
        // ... and the server end of a connection nobody accepted (in the
        // accept queue, or half-open in SYN-RECV).
        (Role::Server, _) if state_wait && client_connected => now,
        (Role::Server, Call::Accept) if !listening => {
            return Err("no listener is listening: add `listener listen` before it".into());
        }
        (Role::Server, Call::Accept) => Life::Open,
        // A server socket of its own, for a simultaneous open: made by its
        // bind, or by an option set before it while the case has no
        // listener socket (with one, a server step before `server accept`
        // is a mistake, and the driver decides the same way).
        (Role::Server, Call::Bind(_)) if matches!(now, Life::None | Life::Closed) => Life::Created,
        (Role::Server, Call::SetOption(_))
            if matches!(now, Life::None | Life::Closed)
                && !matches!(life.get(&Actor::LISTENER), Some(Life::Created | Life::Open)) =>
        {
            Life::Created
        }
        (Role::Server, _) if now == Life::None => {
            return Err(format!(
                "the {actor} has no socket yet: add `{actor} accept` (or `{actor} bind` and `{actor} connect`) before it"
            ));
        }
        (Role::Server, Call::Connect) if now != Life::Created => {
            return Err(format!(
                "`{actor} connect` connects a socket of the server's own: add `{actor} bind` before it"
            ));
        }
        // The client's address comes from its connect, or from its bind.
        (Role::Server, Call::Connect) if life.get(&its_client).is_none() => {
            return Err(format!(
                "`{actor} connect` connects to the {its_client}'s address: add `{its_client} connect` (non-blocking, with its SYN dropped) or `{its_client} bind PORT` before it"
            ));
        }
        (Role::Server, Call::Connect) => Life::Open,
        (Role::Server, _)
            if now == Life::Created
                && !matches!(call, Call::SetOption(_) | Call::Bind(_) | Call::Close) =>
        {
            return Err(format!(
                "the {actor} is not connected: add `{actor} connect` before it"
            ));
        }
        (Role::Client | Role::Listener, Call::SetOption(_) | Call::Bind(_)) => match now {
            Life::None | Life::Closed => Life::Created,
            other => other,
        },
        (Role::Client, Call::Connect) => Life::Open,
        (Role::Listener, Call::Listen { .. }) => Life::Open,
        (Role::Client, Call::Close) | (Role::Listener, Call::Close) if now == Life::None => {
            return Err(format!("the {actor} has no socket to close"));
        }
        (Role::Client, _) if now != Life::Open && now != Life::Closed => {
            return Err(format!(
                "the {actor} is not connected: add `{actor} connect` before it"
            ));
        }
        (_, Call::Close) => Life::Closed,
        _ if now == Life::Closed => {
            return Err(format!("the {actor}'s socket was already closed"));
        }
        _ => now,
    })
}

/// Whether an expectation's `os` names a stack, or on the bench two
/// different ones as `client/server` (what a case with hosts on different
/// stacks is looked up as).
fn is_stack_name(os: &str) -> bool {
    match os.split_once('/') {
        Some((c, s)) => c != s && STACKS.contains(&c) && STACKS.contains(&s),
        None => STACKS.contains(&os),
    }
}

fn parse_expectation(
    src: &Source,
    e: &RawExpect,
    axes: &[(String, Vec<String>)],
) -> Result<Expectation, ScenarioError> {
    if !is_stack_name(e.os.get_ref()) {
        return Err(src.error_at(
            e.os.span(),
            format!(
                "unknown os {:?}; expected one of {}, or CLIENT/SERVER for two different ones on the bench (linux/lwip)",
                e.os.get_ref(),
                STACKS.join(", ")
            ),
        ));
    }
    let mut when = Vec::new();
    if let Some(w) = &e.when {
        for (k, v) in w.get_ref() {
            let Some((_, values)) = axes.iter().find(|(n, _)| n == k) else {
                return Err(src.error_at(
                    v.span(),
                    format!("`when` names {k:?}, which is not a parameter axis of this scenario"),
                ));
            };
            let value = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => return Err(src.error_at(v.span(), "expected a parameter value")),
            };
            if !values.contains(&value) {
                return Err(src.error_at(
                    v.span(),
                    format!("{k} has no value {value:?}; it has {}", values.join(", ")),
                ));
            }
            when.push((k.clone(), value));
        }
    }
    let link = match &e.link {
        None => None,
        Some(l) => Some(
            Link::ALL
                .into_iter()
                .find(|k| k.name() == l.get_ref())
                .ok_or_else(|| {
                    src.error_at(
                        l.span(),
                        format!(
                            "unknown link {:?}; expected \"loopback\" or \"bench\" (or no `link`: every link)",
                            l.get_ref()
                        ),
                    )
                })?,
        ),
    };
    let (claims, outcomes) = match &e.claims {
        None => (Vec::new(), BTreeMap::new()),
        Some(c) => match c.get_ref() {
            RawClaims::List(l) => (l.clone(), BTreeMap::new()),
            RawClaims::Judged(m) => {
                if let Some((id, bad)) = m
                    .iter()
                    .find(|(_, o)| !CLAIM_OUTCOMES.contains(&o.as_str()))
                {
                    return Err(src.error_at(
                        c.span(),
                        format!(
                            "claims.{id} = {bad:?}: expected one of \"holds\", \"does not hold\", \"partly\""
                        ),
                    ));
                }
                (m.keys().cloned().collect(), m.clone())
            }
        },
    };
    let mut facts = Vec::new();
    for (path, value) in e.facts.get_ref() {
        let matcher =
            Matcher::from_toml(value.get_ref()).map_err(|m| src.error_at(value.span(), m))?;
        let (line, _) = src.line_col(path.span().start);
        facts.push((
            path.span().start,
            Fact {
                path: path.get_ref().clone(),
                matcher,
                line,
            },
        ));
    }
    if facts.is_empty() {
        return Err(src.error_at(e.facts.span(), "an expectation needs at least one fact"));
    }
    facts.sort_by_key(|(offset, _)| *offset);
    Ok(Expectation {
        os: e.os.get_ref().clone(),
        claims,
        outcomes,
        why: e.why.clone(),
        when,
        link,
        facts: facts.into_iter().map(|(_, f)| f).collect(),
    })
}

/// Finds scenario files: each argument is a file, or a directory whose
/// `*.toml` files are taken in name order. A file reached twice (named
/// and inside a named directory, say) is taken once; two files that name
/// the same scenario are an error, as their cases would share ids.
pub(crate) fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ScenarioError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|source| ScenarioError::Read {
                path: p.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "toml"))
                .collect();
            files.sort();
            out.extend(files);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            return Err(ScenarioError::Read {
                path: p.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file or directory",
                ),
            });
        }
    }
    let mut seen: Vec<(PathBuf, &std::ffi::OsStr, &PathBuf)> = Vec::new();
    let mut keep = vec![true; out.len()];
    for (i, f) in out.iter().enumerate() {
        let real = std::fs::canonicalize(f).unwrap_or_else(|_| f.clone());
        let stem = f.file_stem().unwrap_or_default();
        match seen.iter().find(|(r, s, _)| *r == real || *s == stem) {
            Some((r, _, _)) if *r == real => keep[i] = false,
            Some((_, _, first)) => {
                return Err(ScenarioError::SameName {
                    name: stem.to_string_lossy().into_owned(),
                    first: (*first).clone(),
                    second: f.clone(),
                });
            }
            None => seen.push((real, stem, f)),
        }
    }
    let mut keep = keep.into_iter();
    out.retain(|_| keep.next().unwrap_or(true));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::Side;

    const GOOD: &str = r#"title = "Abortive close"
claims = ["C6"]
references = ["RFC 9293 3.10.4"]
steps = '''
client write 1000
client setsockopt SO_LINGER on ${linger}   # abortive
bg client close as lc
join lc
'''
params = { linger = [0, 2] }

[[expect]]
os = "linux"
claims = ["C6"]
when = { linger = "0" }
facts = { "wire.client.rst" = 1, "steps.lc.errno" = { null = true } }
"#;

    fn parse_err(text: &str) -> String {
        parse(Path::new("scenarios/x.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn expands_family_and_params_into_cases() {
        let (sc, cases) = parse(Path::new("scenarios/abort.toml"), GOOD).unwrap();
        assert_eq!(sc.id, "abort");
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "abort/ipv4/linger=0",
                "abort/ipv4/linger=2",
                "abort/ipv6/linger=0",
                "abort/ipv6/linger=2"
            ]
        );
        assert_eq!(cases[2].family, Family::Ipv6);
        // implicit setup, then the file's steps with their own line numbers
        let c = &cases[1];
        assert_eq!(c.steps[0].text, "listener listen");
        assert_eq!(c.steps[0].line, None);
        assert_eq!(c.steps[3].line, Some(5));
        assert_eq!(c.steps[4].text, "client setsockopt SO_LINGER on 2");
        assert_eq!(c.steps[4].line, Some(6));
        assert_eq!(cases[1].file_stem(), "abort-ipv4-linger-2");
    }

    /// Regression: `check` accepted steps that use the server before any
    /// listener exists, which `run` then refused.
    #[test]
    fn steps_need_their_socket_in_the_order_written() {
        let steps = |s: &str| format!("title = \"t\"\nsteps = '''\n{s}\n'''\n");
        let e = parse_err(&steps("client connect\nserver accept"));
        assert!(
            e.contains(":4:1: `server accept`: no listener is listening"),
            "{e}"
        );
        let e = parse_err(&steps("listener listen\nclient connect\nserver read 1"));
        assert!(
            e.contains(":5:1: `server read 1`: the server has no socket yet: add `server accept`"),
            "{e}"
        );
        let e = parse_err(&steps(
            "client setsockopt SO_LINGER on 0\nclient write 1\nclient connect",
        ));
        assert!(
            e.contains(":4:1: `client write 1`: the client is not connected"),
            "{e}"
        );
        let e = parse_err(&steps(
            "listener listen\nclient connect\nserver accept\nserver close\nserver write 1",
        ));
        assert!(
            e.contains("`server write 1`: the server's socket was already closed"),
            "{e}"
        );
        let e = parse_err(&steps(
            "listener listen\nserver wait state CLOSED\nclient connect",
        ));
        assert!(
            e.contains("`server wait state CLOSED`: the server has no socket yet"),
            "{e}"
        );
        // A server socket of its own: bound, then connected to its
        // client's address once the client has connected.
        let e = parse_err(&steps("client connect\nserver connect"));
        assert!(
            e.contains("`server connect`: the server has no socket yet: add `server accept` (or `server bind` and `server connect`)"),
            "{e}"
        );
        let e = parse_err(&steps("server bind\nserver connect\nclient connect"));
        assert!(
            e.contains(":4:1: `server connect`: `server connect` connects to the client's address: add `client connect`"),
            "{e}"
        );
        for listener in ["listener listen", "listener bind"] {
            let e = parse_err(&steps(&format!(
                "{listener}\nserver setsockopt SO_REUSEADDR on\nclient connect"
            )));
            assert!(
                e.contains("`server setsockopt SO_REUSEADDR on`: the server has no socket yet"),
                "{listener}: {e}"
            );
        }
        let e = parse_err(&steps("client connect\nserver bind\nserver write 1"));
        assert!(
            e.contains(":5:1: `server write 1`: the server is not connected: add `server connect`"),
            "{e}"
        );
        let e = parse_err(&steps(
            "listener listen\nclient connect\nserver accept\nserver connect",
        ));
        assert!(
            e.contains("`server connect` connects a socket of the server's own: add `server bind`"),
            "{e}"
        );
        // Who sends connection 1's first SYN: the server only when its
        // connect comes first.
        let first = |text: &str| {
            parse(Path::new("scenarios/x.toml"), &steps(text))
                .unwrap()
                .1[0]
                .server_connects_first()
        };
        assert!(first(
            "client bind 40000\nserver bind\nserver connect\nclient connect"
        ));
        assert!(!first("client connect\nserver bind\nserver connect"));
        assert!(!first("client write 1"));
        // Reopening a client or listener after close is a new socket; a wait
        // on a state may watch a closed socket (an orphan).
        for ok in [
            "client setsockopt O_NONBLOCK on\nclient connect\nserver bind\nserver setsockopt SO_LINGER on 0\nserver connect\nserver write 1\nserver close",
            "client connect\nserver setsockopt SO_REUSEADDR on\nserver bind\nserver connect",
            // The server's SYN first, to a client bound but not connected yet.
            "client bind 40000\nserver bind\nserver connect\nclient connect",
            "client connect\nserver bind\nserver close",
            "listener listen\nclient connect\nserver accept\nclient close\nclient wait state TIME-WAIT\nclient setsockopt SO_REUSEADDR on\nclient bind 40000\nclient connect",
            "listener listen\nlistener close\nlistener setsockopt SO_REUSEADDR on\nlistener listen",
            "client write 1\nclient close",
            // The server end of a connection nobody accepted.
            "listener listen\nclient connect\nserver wait state SYN-RECV",
        ] {
            assert!(
                parse(Path::new("scenarios/x.toml"), &steps(ok)).is_ok(),
                "{ok}"
            );
        }
    }

    /// A file named twice runs once; two files naming one scenario would
    /// share case ids and capture files, and are refused.
    #[test]
    fn a_scenario_is_discovered_once_and_names_are_unique() {
        let dir = std::env::temp_dir().join(format!("teardown-discover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("other")).unwrap();
        std::fs::write(dir.join("a.toml"), "").unwrap();
        std::fs::write(dir.join("b.toml"), "").unwrap();
        std::fs::write(dir.join("other/a.toml"), "").unwrap();
        let found = discover(&[dir.join("a.toml"), dir.clone(), dir.join("./b.toml")]).unwrap();
        assert_eq!(found, [dir.join("a.toml"), dir.join("b.toml")]);
        let e = discover(&[dir.clone(), dir.join("other/a.toml")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("other/a.toml: names the scenario \"a\""), "{e}");
        assert!(e.contains("rename one"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn duplicate_values_and_huge_axes_are_errors() {
        let e = parse_err("title = \"t\"\nsteps = \"client close\"\nparams = { x = [1, 2, 1] }\n");
        assert!(e.contains("params.x: \"1\" is listed twice"), "{e}");
        let many: Vec<String> = (0..200).map(|i| i.to_string()).collect();
        let text = format!(
            "title = \"t\"\nsteps = \"client close\"\nparams = {{ a = [{0}], b = [{0}], c = [{0}] }}\n",
            many.join(", ")
        );
        let e = parse_err(&text);
        assert!(
            e.contains("expand to more than 1024 cases (family: 2 x a: 200 x b: 200 x c: 200)"),
            "{e}"
        );
        let e = parse_err("title = \"t\"\nsteps = \"client close\"\ntimeout = \"100000000s\"\n");
        assert!(
            e.contains("100000000s is longer than the 600 s limit"),
            "{e}"
        );
    }

    #[test]
    fn expectations_apply_by_os_and_params() {
        let (_, cases) = parse(Path::new("scenarios/abort.toml"), GOOD).unwrap();
        assert_eq!(
            cases[0].expectations_for("linux", Link::Loopback).count(),
            1
        );
        assert_eq!(
            cases[1].expectations_for("linux", Link::Loopback).count(),
            0
        );
        assert_eq!(
            cases[0].expectations_for("freebsd", Link::Loopback).count(),
            0
        );
        let e = cases[0]
            .expectations_for("linux", Link::Loopback)
            .next()
            .unwrap();
        assert_eq!(e.facts[0].path, "wire.client.rst");
        assert_eq!(e.facts[0].line, 16);
    }

    #[test]
    fn unknown_keys_name_file_line_and_column() {
        let e = parse_err("title = \"t\"\nstesp = \"client close\"\n");
        assert!(e.starts_with("scenarios/x.toml:2:1: "), "{e}");
        assert!(e.contains("stesp"), "{e}");
    }

    #[test]
    fn bad_steps_name_their_line() {
        let e =
            parse_err("title = \"t\"\nsteps = '''\nclient write 10\nclient shutdown NOW\n'''\n");
        assert!(
            e.starts_with("scenarios/x.toml:4:17: unknown shutdown mode"),
            "{e}"
        );
    }

    #[test]
    fn steps_after_a_table_header_get_a_hint() {
        let e = parse_err(
            "title = \"t\"\n[params]\nfamily = [\"ipv4\"]\nsteps = '''\nclient close\n'''\n",
        );
        assert!(
            e.starts_with("scenarios/x.toml:1:1: missing field `steps`"),
            "{e}"
        );
        assert!(
            e.contains("must come before the first [table] header"),
            "{e}"
        );
    }

    #[test]
    fn unknown_parameters_and_labels_are_errors() {
        let e =
            parse_err("title = \"t\"\nsteps = '''\nclient setsockopt SO_LINGER on ${lingr}\n'''\n");
        assert!(
            e.starts_with("scenarios/x.toml:3:32: unknown parameter ${lingr}"),
            "{e}"
        );
        let e = parse_err("title = \"t\"\nsteps = '''\njoin x\n'''\n");
        assert!(e.contains("no earlier bg step"), "{e}");
        let e = parse_err(
            "title = \"t\"\nsteps = '''\nclient wait state CLOSED since cc\nclient close as cc\n'''\n",
        );
        assert!(
            e.contains(":3:1: no earlier step is labelled \"cc\""),
            "{e}"
        );
        let e = parse_err(
            "title = \"t\"\nsteps = '''\nbg client close as cc\nclient wait state CLOSED since cc\njoin cc\n'''\n",
        );
        assert!(
            e.contains(":4:1: \"cc\" runs in the background: `join cc`"),
            "{e}"
        );
        let e = parse_err(
            "title = \"t\"\nsteps = '''\nclient close\n'''\n[[expect]]\nos = \"plan9\"\nfacts = { \"wire.client.fin\" = 1 }\n",
        );
        assert!(e.contains(":6:6: unknown os \"plan9\""), "{e}");
        // Two stacks are a bench pairing, client first; one twice is not.
        for bad in ["lwip/lwip", "linux/plan9", "linux/lwip/gvisor"] {
            let e = parse_err(&format!(
                "title = \"t\"\nsteps = '''\nclient close\n'''\n[[expect]]\nos = \"{bad}\"\nfacts = {{ \"wire.client.fin\" = 1 }}\n"
            ));
            assert!(e.contains(&format!("unknown os \"{bad}\"")), "{e}");
        }
    }

    #[test]
    fn an_expectation_can_name_a_pairing_of_two_stacks() {
        let (_, cases) = parse(
            Path::new("scenarios/s.toml"),
            "title = \"t\"\nsteps = '''\nclient close\n'''\n[[expect]]\nos = \"linux/lwip\"\nfacts = { \"wire.client.fin\" = 1 }\n",
        )
        .unwrap();
        let on = |os| cases[0].expectations_for(os, Link::Bench).count();
        assert_eq!((on("linux/lwip"), on("lwip/linux"), on("lwip")), (1, 0, 0));
    }

    #[test]
    fn sysctls_take_params_and_stay_in_net() {
        let (_, cases) = parse(
            Path::new("scenarios/s.toml"),
            "title = \"t\"\nsteps = \"client close\"\nparams = { t = [1, 2] }\n[sysctl]\n\"net.ipv4.tcp_fin_timeout\" = \"${t}\"\n\"net.ipv4.tcp_tw_reuse\" = 0\n",
        )
        .unwrap();
        let every = |name: &str, value: &str| Sysctl {
            name: name.into(),
            value: value.into(),
            host: None,
        };
        assert_eq!(
            cases[1].sysctls,
            [
                every("net.ipv4.tcp_fin_timeout", "2"),
                every("net.ipv4.tcp_tw_reuse", "0")
            ]
        );
        let e =
            parse_err("title = \"t\"\nsteps = \"client close\"\n[sysctl]\n\"kernel.panic\" = 1\n");
        assert!(
            e.contains(":3:1: sysctl.kernel.panic: only per-namespace"),
            "{e}"
        );
        let e = parse_err(
            "title = \"t\"\nsteps = \"client close\"\n[sysctl]\nnet.ipv4.tcp_fin_timeout = 1\n",
        );
        assert!(e.contains("quote the whole name"), "{e}");
    }

    #[test]
    fn a_sysctl_can_be_for_one_host() {
        let (_, cases) = parse(
            Path::new("scenarios/s.toml"),
            "title = \"t\"\nsteps = \"client close\"\n[sysctl]\n\"net.ipv4.tcp_fin_timeout\" = 3\n[sysctl.client]\n\"net.ipv4.tcp_tw_reuse\" = 1\n[sysctl.server]\n\"net.ipv4.tcp_synack_retries\" = 1\n",
        )
        .unwrap();
        let hosts: Vec<(&str, Option<Side>)> = cases[0]
            .sysctls
            .iter()
            .map(|s| (s.name.as_str(), s.host))
            .collect();
        assert_eq!(
            hosts,
            [
                ("net.ipv4.tcp_fin_timeout", None),
                ("net.ipv4.tcp_tw_reuse", Some(Side::Client)),
                ("net.ipv4.tcp_synack_retries", Some(Side::Server)),
            ]
        );
        assert!(cases[0].sysctls[1].on(Side::Client) && !cases[0].sysctls[1].on(Side::Server));
        assert!(cases[0].sysctls[0].on(Side::Server));
        let e = parse_err(
            "title = \"t\"\nsteps = \"client close\"\n[sysctl]\n\"net.ipv4.tcp_tw_reuse\" = 1\n[sysctl.client]\n\"net.ipv4.tcp_tw_reuse\" = 1\n",
        );
        assert!(
            e.contains("sysctl.client.net.ipv4.tcp_tw_reuse: set twice"),
            "{e}"
        );
        let e = parse_err(
            "title = \"t\"\nsteps = \"client close\"\n[sysctl.listener]\n\"net.ipv4.tcp_tw_reuse\" = 1\n",
        );
        assert!(e.contains("quote the whole name"), "{e}");
    }

    #[test]
    fn claims_can_say_what_the_facts_mean() {
        let text = "title = \"t\"\nsteps = \"client close\"\n[[expect]]\nos = \"linux\"\nclaims = { C7 = \"partly\", C8 = \"does not hold\" }\nfacts = { \"wire.client.rst\" = 0 }\n";
        let (sc, _) = parse(Path::new("scenarios/x.toml"), text).unwrap();
        let e = &sc.expectations[0];
        assert_eq!(e.claims, ["C7", "C8"]);
        assert_eq!(e.outcomes["C8"], "does not hold");
        let e = parse_err(&text.replace("partly", "maybe"));
        assert!(
            e.contains(":5:10: claims.C7 = \"maybe\": expected one of"),
            "{e}"
        );
    }

    #[test]
    fn heal_names_an_earlier_fault() {
        let e = parse_err("title = \"t\"\nsteps = '''\nheal lost\ndrop all as lost\n'''\n");
        assert!(
            e.contains(":3:1: no earlier drop or reject step is labelled \"lost\""),
            "{e}"
        );
        let ok = "title = \"t\"\nsteps = '''\ndrop all as lost\nheal lost\n'''\n";
        assert!(parse(Path::new("scenarios/x.toml"), ok).is_ok());
    }

    #[test]
    fn empty_steps_and_bad_axes_are_errors() {
        assert!(parse_err("title = \"t\"\nsteps = '''\n# nothing\n'''\n").contains("no steps"));
        assert!(
            parse_err("title = \"t\"\nsteps = \"client close\"\nparams = { family = [\"ipx\"] }\n")
                .contains("unknown family")
        );
        assert!(
            parse_err("title = \"t\"\nsteps = \"client close\"\nparams = { x = [] }\n")
                .contains("at least one value")
        );
    }
}
