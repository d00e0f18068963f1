//! What `teardown run`'s arguments ask for, worked out once from the raw
//! flags (in the manner of ripgrep's `HiArgs`): which scenarios, whether
//! the run is a subset (checked against the baseline's entries for those
//! only), where the report goes, what stdout carries and which directories
//! must be writable before anything runs. `cli::run` then only carries it
//! out.

use std::path::{Path, PathBuf};

use super::args::{RunArgs, RunFormat};

/// Where the report goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportTo {
    /// A file, written atomically.
    File(PathBuf),
    /// Stdout only (`--report -`): no file.
    Stdout,
}

/// A run, as its arguments describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// The scenario files and directories (`scenarios/` when none given).
    pub paths: Vec<PathBuf>,
    /// Only some scenarios or cases: a baseline is checked for those only.
    pub subset: bool,
    pub report: ReportTo,
    /// Whether stdout carries the report as JSON (`--report -`, `--format
    /// json`); the table then goes to stderr.
    pub json_on_stdout: bool,
    /// Where the pcaps go (a run's own directory below it); none with
    /// `--no-captures`.
    pub captures: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    /// Directories that must exist and be writable before the run starts,
    /// so a long run never ends unable to write its results.
    pub outputs: Vec<PathBuf>,
}

impl RunPlan {
    /// The plan for `a`; `run_id` names the default report
    /// (`reports/<run_id>.json`).
    pub fn new(a: &RunArgs, run_id: &str) -> RunPlan {
        let selection = a.select.selection();
        let subset = !a.paths.is_empty() || !selection.is_empty();
        let paths = if a.paths.is_empty() {
            vec![PathBuf::from("scenarios")]
        } else {
            a.paths.clone()
        };
        let report = match a.report.as_deref() {
            Some(p) if p == Path::new("-") => ReportTo::Stdout,
            Some(p) => ReportTo::File(p.to_path_buf()),
            None => ReportTo::File(Path::new("reports").join(format!("{run_id}.json"))),
        };
        let json_on_stdout = report == ReportTo::Stdout || a.format == RunFormat::Json;
        let captures = (!a.no_captures).then(|| a.captures.clone());
        let parent = |p: &Path| p.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut outputs = Vec::new();
        if let ReportTo::File(p) = &report {
            outputs.push(parent(p));
        }
        outputs.extend(a.junit.as_deref().map(parent));
        outputs.extend(captures.clone());
        RunPlan {
            paths,
            subset,
            report,
            json_on_stdout,
            captures,
            junit: a.junit.clone(),
            outputs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn plan(args: &[&str]) -> RunPlan {
        let cli = Cli::try_parse_from(["teardown", "run"].iter().chain(args)).unwrap();
        let Command::Run(a) = cli.command else {
            panic!("a run")
        };
        RunPlan::new(&a, "RUN")
    }

    #[test]
    fn by_default_the_whole_catalogue_reports_to_a_file_of_its_own() {
        let p = plan(&[]);
        assert_eq!(p.paths, [PathBuf::from("scenarios")]);
        assert!(!p.subset);
        assert_eq!(p.report, ReportTo::File("reports/RUN.json".into()));
        assert!(!p.json_on_stdout);
        assert_eq!(p.captures, Some(PathBuf::from("captures")));
        assert_eq!(p.outputs, [PathBuf::from("reports"), "captures".into()]);
    }

    #[test]
    fn a_report_on_stdout_writes_no_file() {
        let p = plan(&["--report", "-", "--no-captures"]);
        assert_eq!(p.report, ReportTo::Stdout);
        assert!(p.json_on_stdout);
        assert_eq!(p.captures, None);
        assert!(p.outputs.is_empty(), "{:?}", p.outputs);
    }

    #[test]
    fn json_on_stdout_keeps_the_file_too() {
        let p = plan(&["--format", "json", "--report", "out/r.json"]);
        assert_eq!(p.report, ReportTo::File("out/r.json".into()));
        assert!(p.json_on_stdout);
        assert_eq!(p.outputs[0], PathBuf::from("out"));
    }

    #[test]
    fn a_selection_or_named_scenarios_make_a_subset() {
        assert!(plan(&["-f", "linger"]).subset);
        assert!(plan(&["-p", "family=ipv6"]).subset);
        let p = plan(&["scenarios/linger-zero.toml"]);
        assert!(p.subset);
        assert_eq!(p.paths, [PathBuf::from("scenarios/linger-zero.toml")]);
    }

    #[test]
    fn junit_needs_its_directory_writable() {
        let p = plan(&["--junit", "ci/out/junit.xml", "--no-captures"]);
        assert_eq!(p.junit, Some(PathBuf::from("ci/out/junit.xml")));
        assert_eq!(p.outputs, [PathBuf::from("reports"), "ci/out".into()]);
    }
}
