//! The catalogue: scenario files loaded for the later stages, with every
//! expectation's fact path checked against the fact model.
//!
//! `scenario` parses a file's syntax; this module adds what can only be
//! checked once the fact model is known (does `steps.lclose.errno` name a
//! real fact of a real step?), so that `teardown check` catches everything
//! that can be known without running. Everything that runs or checks
//! scenarios loads them through here.

use std::path::{Path, PathBuf};

use crate::facts::{FactPath, Keys};
use crate::scenario::{self, Case, Control, ScenarioError, StepKind};

/// Scenario files that could not be used, each with its own error.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct LoadError {
    pub errors: Vec<ScenarioError>,
}

/// The step and fault keys a case defines, for checking fact paths.
pub fn keys(case: &Case) -> Keys {
    let mut k = Keys::default();
    for (i, s) in case.steps.iter().enumerate() {
        k.steps.push(s.key(i));
        if let Some(l) = &s.label {
            k.labels.push(l.clone());
        }
        if matches!(s.kind, StepKind::Control(Control::Fault(_))) {
            k.faults.push(s.key(i));
        }
        if matches!(s.kind, StepKind::Socket { group: Some(_), .. }) {
            k.groups.push(s.key(i));
        }
    }
    k
}

/// Checks every fact path of the expectations that apply to `case`.
pub(crate) fn check_facts(case: &Case) -> Result<(), ScenarioError> {
    let keys = keys(case);
    for e in &case.scenario.expectations {
        for f in &e.facts {
            FactPath::parse(&f.path, &keys).map_err(|message| ScenarioError::Invalid {
                path: case.scenario.path.clone(),
                line: f.line,
                column: 1,
                message,
            })?;
        }
    }
    Ok(())
}

/// Parses scenario text as if read from `path`, and checks its facts.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Case>, ScenarioError> {
    let (_, cases) = scenario::parse(path, text)?;
    cases.iter().try_for_each(check_facts)?;
    Ok(cases)
}

/// Loads one scenario file and checks its facts.
pub fn load_file(path: &Path) -> Result<Vec<Case>, ScenarioError> {
    let (_, cases) = scenario::load(path)?;
    cases.iter().try_for_each(check_facts)?;
    Ok(cases)
}

/// The cases with `server` on their server end in place of the program
/// their scenario names (`teardown probe`); a case whose harness drives its
/// own server cannot take one, and is an error naming its file.
pub fn with_server(cases: Vec<Case>, server: &scenario::Program) -> Result<Vec<Case>, LoadError> {
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for mut c in cases {
        match &c.program {
            Some(p) => {
                let line = p.line;
                c.program = Some(scenario::Program {
                    line,
                    ..server.clone()
                });
                out.push(c);
            }
            None if !errors.iter().any(|e: &ScenarioError| {
                e.to_string()
                    .contains(&c.scenario.path.display().to_string())
            }) =>
            {
                errors.push(ScenarioError::Invalid {
                    path: c.scenario.path.clone(),
                    line: 1,
                    column: 1,
                    message: "the harness drives this scenario's server itself; a server of yours goes on scenarios with a [program.server] table (scenarios/probes)".into(),
                });
            }
            None => {}
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(LoadError { errors })
    }
}

/// Every case of the scenario files under `paths` (files, or directories
/// whose `*.toml` files are taken in name order). All files are read; the
/// error lists every bad one.
pub fn load(paths: &[PathBuf]) -> Result<Vec<Case>, LoadError> {
    let files = scenario::discover(paths).map_err(|e| LoadError { errors: vec![e] })?;
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        match load_file(f) {
            Ok(c) => cases.extend(c),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(LoadError { errors })
    }
}

/// What `check` could learn about the `[sysctl]` tables from this stack.
#[derive(Debug, PartialEq, Eq)]
pub enum SysctlCheck {
    /// Every name was looked up in a fresh namespace; those this stack does
    /// not have at all are listed (cases setting them will be unsupported).
    Checked { absent: Vec<String> },
    /// The lookup needs a namespace, and this process may not make one.
    NotChecked(String),
}

/// Every sysctl name the cases set, once each.
pub fn sysctl_names(cases: &[Case]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for s in cases.iter().flat_map(|c| &c.sysctls) {
        if !names.contains(&s.name) {
            names.push(s.name.clone());
        }
    }
    names
}

/// Checks that every sysctl the cases set exists in a network namespace of
/// this stack. One that exists only in the host's initial namespace (such
/// as net.ipv4.tcp_max_orphans) is an error naming its file and line: no
/// case can set it without changing the host.
#[cfg(target_os = "linux")]
pub(crate) fn check_sysctls(cases: &[Case]) -> Result<SysctlCheck, LoadError> {
    use crate::sandbox::{self, SandboxError, SysctlScope};
    let mut names: Vec<(&str, &Path, usize)> = Vec::new();
    for c in cases {
        for (name, line) in &c.scenario.sysctl_lines {
            if !names
                .iter()
                .any(|(n, p, _)| n == name && *p == c.scenario.path)
            {
                names.push((name, &c.scenario.path, *line));
            }
        }
    }
    if names.is_empty() {
        return Ok(SysctlCheck::Checked { absent: vec![] });
    }
    let list: Vec<String> = names.iter().map(|(n, _, _)| n.to_string()).collect();
    let scopes = match sandbox::sysctl_scopes(&list) {
        Ok(s) => s,
        Err(e @ SandboxError::NotPermitted(_)) => {
            return Ok(SysctlCheck::NotChecked(e.to_string()));
        }
        Err(e) => return Ok(SysctlCheck::NotChecked(e.to_string())),
    };
    let mut errors = Vec::new();
    let mut absent = Vec::new();
    for ((name, path, line), scope) in names.iter().zip(scopes) {
        match scope {
            SysctlScope::PerNamespace => {}
            SysctlScope::InitialOnly => errors.push(ScenarioError::Invalid {
                path: path.to_path_buf(),
                line: *line,
                column: 1,
                message: format!(
                    "sysctl.{name}: this kernel has it only in the host's initial network namespace, so a case cannot set it without changing the host; remove it"
                ),
            }),
            SysctlScope::Absent => {
                if !absent.iter().any(|a| a == name) {
                    absent.push(name.to_string());
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(SysctlCheck::Checked { absent })
    } else {
        Err(LoadError { errors })
    }
}

/// Which cases to run: by id text and by parameter value.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selection {
    /// Keep cases whose id contains any of these.
    pub filters: Vec<String>,
    /// Keep cases with all of these parameter values.
    pub params: Vec<(String, String)>,
}

/// A selection that does not fit the catalogue.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("-p {name}=...: no scenario has a parameter {name:?}; parameters here: {known}")]
    UnknownParam { name: String, known: String },
    #[error("no case to run: {files} scenario file(s), {cases} case(s), none matches{what}")]
    Nothing {
        files: usize,
        cases: usize,
        what: String,
    },
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.params.is_empty()
    }

    pub fn selects(&self, c: &Case) -> bool {
        (self.filters.is_empty() || self.filters.iter().any(|f| c.id.contains(f.as_str())))
            && self
                .params
                .iter()
                .all(|(k, v)| c.params.iter().any(|(pk, pv)| pk == k && pv == v))
    }

    /// The selected cases; an unknown parameter name or an empty result is
    /// an error that says what exists.
    pub fn apply(&self, cases: Vec<Case>) -> Result<Vec<Case>, SelectError> {
        let mut names: Vec<&str> = cases
            .iter()
            .flat_map(|c| c.params.iter().map(|(k, _)| k.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        if let Some((name, _)) = self
            .params
            .iter()
            .find(|(k, _)| !names.contains(&k.as_str()))
        {
            return Err(SelectError::UnknownParam {
                name: name.clone(),
                known: names.join(", "),
            });
        }
        let files = {
            let mut ids: Vec<&str> = cases.iter().map(|c| c.scenario.id.as_str()).collect();
            ids.dedup();
            ids.len()
        };
        let total = cases.len();
        let kept: Vec<Case> = cases.into_iter().filter(|c| self.selects(c)).collect();
        if kept.is_empty() {
            let mut what = String::new();
            if !self.filters.is_empty() {
                what.push_str(&format!(" -f {}", self.filters.join(" -f ")));
            }
            for (k, v) in &self.params {
                what.push_str(&format!(" -p {k}={v}"));
            }
            return Err(SelectError::Nothing {
                files,
                cases: total,
                what,
            });
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("scenarios/x.toml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn fact_paths_are_checked_with_file_and_line() {
        let e = err(
            "title = \"t\"\nsteps = '''\nclient close\n'''\n[[expect]]\nos = \"linux\"\nfacts = { \"steps.nope.ret\" = 0 }\n",
        );
        assert!(
            e.contains("scenarios/x.toml:7:1: no step is labelled \"nope\""),
            "{e}"
        );
        let e = err(
            "title = \"t\"\nsteps = '''\nclient close\n'''\n[[expect]]\nos = \"linux\"\nfacts = { \"wire.clinet.rst\" = 0 }\n",
        );
        assert!(e.contains(":7:1: unknown fact \"wire.clinet.rst\""), "{e}");
        let ok = "title = \"t\"\nsteps = '''\nclient write 1\nclient close as c\ndrop all as d\n'''\n[[expect]]\nos = \"linux\"\nfacts = { \"steps.c.ret\" = 0, \"steps.line3.errno\" = { null = true }, \"faults.d.matched\" = 0, \"steps.setup2.ret\" = 0 }\n";
        assert!(parse(Path::new("scenarios/x.toml"), ok).is_ok());
    }

    #[test]
    fn selections_name_what_exists() {
        let cases = parse(
            Path::new("scenarios/x.toml"),
            "title = \"t\"\nsteps = \"client close\"\nparams = { linger = [0, 1] }\n",
        )
        .unwrap();
        let sel = |f: &[&str], p: &[(&str, &str)]| Selection {
            filters: f.iter().map(|s| s.to_string()).collect(),
            params: p
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let kept = sel(&[], &[("family", "ipv6")])
            .apply(cases.clone())
            .unwrap();
        assert_eq!(kept.len(), 2);
        let e = sel(&[], &[("famly", "ipv6")])
            .apply(cases.clone())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "-p famly=...: no scenario has a parameter \"famly\"; parameters here: family, linger"
        );
        let e = sel(&["nope"], &[]).apply(cases).unwrap_err();
        assert!(
            e.to_string().contains("4 case(s), none matches -f nope"),
            "{e}"
        );
    }

    #[test]
    fn every_bad_file_is_reported() {
        let dir = std::env::temp_dir().join(format!("teardown-cat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.toml"), "title = 1\n").unwrap();
        std::fs::write(dir.join("b.toml"), "steps = \"client close\"\n").unwrap();
        std::fs::write(
            dir.join("c.toml"),
            "title = \"ok\"\nsteps = \"client close\"\n",
        )
        .unwrap();
        let e = load(std::slice::from_ref(&dir)).unwrap_err();
        assert_eq!(e.errors.len(), 2, "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
