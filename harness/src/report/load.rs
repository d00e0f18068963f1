//! Reading reports back: one file, several, or "the newest report that has
//! this case". Every error names the file and says what to do; a report of
//! another schema version is refused, not misread.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::{CaseReport, Report, SCHEMA_VERSION};
use crate::files::{self, InputError};

/// Reports are read whole; this bounds what a wrong path can cost.
pub(crate) const MAX_REPORT_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("{}: a pcap capture, not a report; analyze it with `teardown analyze {}`", path.display(), path.display())]
    Capture { path: PathBuf },
    #[error("{}:{line}:{column}: not a teardown report: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{}: a report of schema_version {found}; this teardown reads version {SCHEMA_VERSION}: run the cases again with this teardown (`teardown run`)",
        path.display()
    )]
    Version { path: PathBuf, found: u64 },
    #[error("no report {where_} has a case {query:?}; run it first: teardown run -f {query}")]
    NoCase { query: String, where_: String },
    #[error("{count} cases in {} match {query:?}; name one: {ids}", path.display())]
    Ambiguous {
        query: String,
        path: PathBuf,
        count: usize,
        ids: String,
    },
}

/// Reads one report.
pub fn read(path: &Path) -> Result<Report, LoadError> {
    let file = files::open_input(path, MAX_REPORT_BYTES, "report")?;
    let mut magic = [0u8; 4];
    if std::io::Read::read_exact(&mut &file, &mut magic).is_ok()
        && matches!(
            u32::from_le_bytes(magic),
            0xa1b2_c3d4 | 0xd4c3_b2a1 | 0xa1b2_3c4d | 0x4d3c_b2a1 | 0x0a0d_0d0a
        )
    {
        return Err(LoadError::Capture {
            path: path.to_path_buf(),
        });
    }
    drop(file);
    let text = files::read_text(path, MAX_REPORT_BYTES, "report")?;
    parse(path, &text)
}

/// Parses report text as if read from `path`.
pub fn parse(path: &Path, text: &str) -> Result<Report, LoadError> {
    let json = |e: serde_json::Error| LoadError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    };
    /// Just the version, read first: a report of another version is
    /// refused by name, not by the first field that does not fit.
    #[derive(Deserialize)]
    struct Version {
        schema_version: u64,
    }
    let v: Version = serde_json::from_str(text).map_err(json)?;
    if v.schema_version != u64::from(SCHEMA_VERSION) {
        return Err(LoadError::Version {
            path: path.to_path_buf(),
            found: v.schema_version,
        });
    }
    serde_json::from_str(text).map_err(json)
}

/// Every report, with the path it came from; stops at the first bad one.
pub(crate) fn read_all(paths: &[PathBuf]) -> Result<Vec<(String, Report)>, LoadError> {
    paths
        .iter()
        .map(|p| read(p).map(|r| (p.display().to_string(), r)))
        .collect()
}

/// The cases matching `query` (an exact id, else ids containing it; at
/// most `max`) in `report`, or in the newest report under `dir` that has
/// any. Returns the report's path, the report and the cases' indexes.
pub(crate) fn find_cases(
    query: &str,
    report: Option<&Path>,
    dir: &Path,
    max: usize,
) -> Result<(PathBuf, Report, Vec<usize>), LoadError> {
    let candidates: Vec<PathBuf> = match report {
        Some(p) => vec![p.to_path_buf()],
        None => newest_first(dir),
    };
    for path in candidates {
        let r = match read(&path) {
            Ok(r) => r,
            // An explicit report must be readable; a stale file among the
            // newest ones is passed over.
            Err(e) if report.is_some() => return Err(e),
            Err(_) => continue,
        };
        let exact: Vec<usize> = matching(&r.cases, |c| c.id == query);
        let found = if exact.is_empty() {
            matching(&r.cases, |c| c.id.contains(query))
        } else {
            exact
        };
        match found.len() {
            0 => continue,
            n if n > max => {
                let ids: Vec<&str> = found.iter().map(|i| r.cases[*i].id.as_str()).collect();
                return Err(LoadError::Ambiguous {
                    query: query.into(),
                    path,
                    count: n,
                    ids: ids.join(", "),
                });
            }
            _ => return Ok((path, r, found)),
        }
    }
    Err(LoadError::NoCase {
        query: query.into(),
        where_: report.map_or(format!("in {}/", dir.display()), |p| {
            p.display().to_string()
        }),
    })
}

fn matching(cases: &[CaseReport], keep: impl Fn(&CaseReport) -> bool) -> Vec<usize> {
    cases
        .iter()
        .enumerate()
        .filter(|(_, c)| keep(c))
        .map(|(i, _)| i)
        .collect()
}

/// `dir/*.json`, newest first.
fn newest_first(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    files.sort();
    files.into_iter().rev().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixture::report;

    #[test]
    fn other_schema_versions_are_refused_by_name() {
        let p = Path::new("r.json");
        let e = parse(p, "{\"schema_version\": 1, \"cases\": []}").unwrap_err();
        assert!(
            e.to_string()
                .contains("schema_version 1; this teardown reads version 2"),
            "{e}"
        );
        let e = parse(p, "{\"schema_version\": 2, \"cases\": [").unwrap_err();
        assert!(e.to_string().starts_with("r.json:1:"), "{e}");
        let good = serde_json::to_string(&report("a", 1, None)).unwrap();
        assert_eq!(parse(p, &good).unwrap().run_id, "a");
    }

    #[test]
    fn a_capture_is_not_a_report() {
        let dir = std::env::temp_dir().join(format!("teardown-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.pcap");
        std::fs::write(&p, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(
            e.contains("a pcap capture, not a report; analyze it with `teardown analyze"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cases_are_found_exactly_or_by_part() {
        let dir = std::env::temp_dir().join(format!("teardown-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = report("a", 1, None);
        let mut y = r.cases[0].clone();
        y.id = "x/ipv6".into();
        r.cases.push(y);
        super::super::write(&dir.join("r.json"), &r).unwrap();
        let (_, _, found) = find_cases("x/ipv4", None, &dir, 1).unwrap();
        assert_eq!(found, [0]);
        let e = find_cases("x/", None, &dir, 1).unwrap_err().to_string();
        assert!(
            e.contains("2 cases") && e.contains("name one: x/ipv4, x/ipv6"),
            "{e}"
        );
        let e = find_cases("nope", None, &dir, 1).unwrap_err().to_string();
        assert!(e.contains("teardown run -f nope"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
