//! `[program.server]`: a program of the user's on one end of a case.
//!
//! ```toml
//! [program.server]
//! command = ["python3", "-m", "http.server", "--bind", "${address}", "${port}"]
//! env = { PYTHONUNBUFFERED = "1" }
//! port = 9000            # where it listens (default 9000)
//! ready_within = "30s"   # until a socket listens on that port
//! time_limit = "60s"     # stopped if it runs longer
//! stop_grace = "1s"      # SIGTERM, then SIGKILL after this
//! ```
//!
//! The harness drives the other side with ordinary steps; the program's
//! side has no steps of its own but waits on its socket's state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Source, limits, steps};
use crate::tcp::Side;

/// Names `${...}` in a program's command and environment may use besides
/// the case's params, filled in when it starts: the server's address in
/// the case's family, the port, a scratch directory made for the case and
/// removed after it, and the scenario file's directory.
pub(crate) const BUILT_INS: &[&str] = &["address", "port", "work", "dir"];

/// How long a program may take to listen, unless its table says: a bound,
/// not a wait (readiness is watched for), so a generous one costs nothing.
pub(crate) const DEFAULT_READY_WITHIN: Duration = Duration::from_secs(30);

/// A program on one end of a case, as the scenario gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// The end it is. A server program listens on `port`; a client
    /// program connects there (`${address}:${port}`), to the harness's
    /// listener, once that listens.
    pub side: Side,
    /// argv, after `${param}` substitution; the [`BUILT_INS`] are filled
    /// in when it starts.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The port the server listens on (the program's, or the harness's
    /// listener for a client program).
    pub port: u16,
    /// How long a server program may take to listen on `port`.
    pub ready_within: Duration,
    /// How long it may run at all.
    pub time_limit: Duration,
    /// How long after SIGTERM it is killed.
    pub stop_grace: Duration,
    /// The line of its `command`, for errors about it.
    pub line: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProgram {
    command: Spanned<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    port: Option<Spanned<i64>>,
    #[serde(default)]
    ready_within: Option<Spanned<String>>,
    #[serde(default)]
    time_limit: Option<Spanned<String>>,
    #[serde(default)]
    stop_grace: Option<Spanned<String>>,
}

/// The `[program]` table: at most one program, the server's.
pub(super) type RawPrograms = BTreeMap<Spanned<String>, Spanned<RawProgram>>;

/// Checks a `[program.*]` table; `${param}`s are substituted per case by
/// [`Program::for_case`].
pub(super) fn parse(
    src: &Source,
    raw: Option<&Spanned<RawPrograms>>,
) -> Result<Option<Program>, super::ScenarioError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let mut out = None;
    if raw.get_ref().len() > 1 {
        return Err(src.error_at(
            raw.span(),
            "a program on each end leaves the harness nothing to drive: give one of [program.server] and [program.client]",
        ));
    }
    for (name, p) in raw.get_ref() {
        let side = match name.get_ref().as_str() {
            "server" => Side::Server,
            "client" => Side::Client,
            other => {
                return Err(src.error_at(
                    name.span(),
                    format!(
                        "unknown end {other:?}; a program is [program.server] or [program.client]"
                    ),
                ));
            }
        };
        let p = p.get_ref();
        let line = src.line_col(p.command.span().start).0;
        if p.command.get_ref().is_empty() || p.command.get_ref()[0].trim().is_empty() {
            return Err(src.error_at(
                p.command.span(),
                "`command` is empty; give the program and its arguments, e.g. [\"python3\", \"server.py\", \"${port}\"]",
            ));
        }
        for k in p.env.keys() {
            if k.is_empty() || k.contains(['=', '\0']) {
                return Err(src.error_at(
                    p.command.span(),
                    format!("env: {k:?} is not a variable name"),
                ));
            }
        }
        let port = match &p.port {
            None => super::SERVER_PORT,
            Some(s) => u16::try_from(*s.get_ref())
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    src.error_at(
                        s.span(),
                        format!("port {} is not a TCP port (1-65535)", s.get_ref()),
                    )
                })?,
        };
        let duration = |field: &Option<Spanned<String>>, name: &str, default: Duration| {
            let Some(s) = field else {
                return Ok(default);
            };
            match steps::parse_duration(s.get_ref()) {
                Some(d) if d > Duration::ZERO && d <= limits::MAX_STEP_WAIT => Ok(d),
                Some(_) => Err(src.error_at(
                    s.span(),
                    format!(
                        "{name} = {:?}: give more than 0 and at most {} s",
                        s.get_ref(),
                        limits::MAX_STEP_WAIT.as_secs()
                    ),
                )),
                None => Err(src.error_at(
                    s.span(),
                    format!(
                        "{name}: expected a duration such as 500ms or 2s, found {:?}",
                        s.get_ref()
                    ),
                )),
            }
        };
        out = Some(Program {
            side,
            command: p.command.get_ref().clone(),
            env: p.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            port,
            ready_within: duration(&p.ready_within, "ready_within", DEFAULT_READY_WITHIN)?,
            time_limit: duration(&p.time_limit, "time_limit", Duration::from_secs(60))?,
            stop_grace: duration(&p.stop_grace, "stop_grace", Duration::from_secs(1))?,
            line,
        });
    }
    Ok(out)
}

impl Program {
    /// A user's server given as a shell command line (`teardown probe
    /// --server-command`), listening on `port`: run by `sh -c`, with
    /// `$ADDRESS` and `$PORT` in its environment.
    pub(crate) fn user_server(command: &str, port: u16, ready_within: Duration) -> Program {
        Program {
            side: Side::Server,
            command: vec!["sh".into(), "-c".into(), command.into()],
            env: vec![
                ("ADDRESS".into(), "${address}".into()),
                ("PORT".into(), "${port}".into()),
            ],
            port,
            ready_within,
            time_limit: Duration::from_secs(60),
            stop_grace: Duration::from_secs(1),
            line: 0,
        }
    }

    /// The program with the case's `${param}`s substituted (built-ins are
    /// kept for the start).
    pub(super) fn for_case(
        &self,
        params: &[(String, String)],
        src: &Source,
    ) -> Result<Program, super::ScenarioError> {
        let sub = |text: &str| {
            super::substitute_keeping(text, params, BUILT_INS)
                .map_err(|(_, m)| src.error_line(self.line, 1, format!("program: {m}")))
        };
        Ok(Program {
            command: self
                .command
                .iter()
                .map(|a| sub(a))
                .collect::<Result<_, _>>()?,
            env: self
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), sub(v)?)))
                .collect::<Result<_, super::ScenarioError>>()?,
            ..self.clone()
        })
    }

    /// `text` with the built-ins filled in.
    pub fn fill(text: &str, values: &[(&str, String)]) -> String {
        let mut out = text.to_string();
        for (name, value) in values {
            out = out.replace(&format!("${{{name}}}"), value);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Result<Vec<crate::scenario::Case>, String> {
        crate::scenario::parse(Path::new("p.toml"), text)
            .map(|(_, cases)| cases)
            .map_err(|e| e.to_string())
    }

    const STEPS: &str = "title = \"t\"\nsteps = '''\nclient close\n'''\nparams = { family = [\"ipv4\"], n = [\"1\"] }\n";

    #[test]
    fn params_are_filled_at_parse_and_built_ins_at_start() {
        let cases = parse(&format!(
            "{STEPS}[program.server]\ncommand = [\"srv\", \"${{address}}:${{port}}\", \"-n\", \"${{n}}\"]\nenv = {{ DIR = \"${{work}}/x\" }}\nport = 8080\nready_within = \"2s\"\n"
        ))
        .unwrap();
        let p = cases[0].program.as_ref().unwrap();
        assert_eq!(p.command, ["srv", "${address}:${port}", "-n", "1"]);
        assert_eq!(p.port, 8080);
        assert_eq!(p.ready_within, Duration::from_secs(2));
        assert_eq!(p.time_limit, Duration::from_secs(60));
        assert_eq!(p.line, 7);
        let filled = Program::fill(
            &p.command[1],
            &[("address", "127.0.0.1".into()), ("port", "8080".into())],
        );
        assert_eq!(filled, "127.0.0.1:8080");
        assert_eq!(p.env, [("DIR".to_string(), "${work}/x".to_string())]);
        // The harness drives only the client: setup is its connect.
        assert_eq!(cases[0].steps[0].text, "client connect");
        assert_eq!(cases[0].steps.len(), 2);
    }

    #[test]
    fn a_bad_program_table_names_its_line() {
        for (table, says) in [
            (
                "command = [\"x\"]\nport = 0",
                ":8:8: port 0 is not a TCP port",
            ),
            (
                "command = [\"x\"]\nready_within = \"0s\"",
                ":8:16: ready_within = \"0s\": give more than 0",
            ),
            (
                "command = [\"x\"]\nstop_grace = \"soon\"",
                ":8:14: stop_grace: expected a duration",
            ),
            (
                "command = [\"x\", \"${nope}\"]",
                ":7:1: program: unknown parameter ${nope}",
            ),
            (
                "command = [\"x\"]\nenv = { \"A=B\" = \"1\" }",
                "env: \"A=B\" is not a variable name",
            ),
            ("command = [\"x\"]\nuser = \"root\"", "unknown field `user`"),
        ] {
            let e = parse(&format!("{STEPS}[program.server]\n{table}\n")).unwrap_err();
            assert!(e.contains(says), "{table}: {e}");
        }
        let e = parse(&format!("{STEPS}[program.proxy]\ncommand = [\"x\"]\n")).unwrap_err();
        assert!(e.contains("unknown end \"proxy\""), "{e}");
    }

    #[test]
    fn a_users_server_runs_under_sh_with_address_and_port() {
        let p = Program::user_server("exec srv $PORT", 8080, Duration::from_secs(3));
        assert_eq!(p.command, ["sh", "-c", "exec srv $PORT"]);
        assert_eq!(p.port, 8080);
        let env: Vec<_> = p.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(env, ["ADDRESS=${address}", "PORT=${port}"]);
    }
}
