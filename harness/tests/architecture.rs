//! The pipeline's shape, checked: data flows one way, so no module may name
//! a module that comes later in the pipeline (its test code aside).
//!
//! Reads the sources; needs nothing else.

use std::path::{Path, PathBuf};

/// The modules in pipeline order. A module may use the ones before it.
const ORDER: &[&str] = &[
    "tcp",
    "files", // shared leaves
    "scenario",
    "sandbox",
    "capture",
    "wire",
    "analyze",
    "observe",
    "fault",
    "stack",
    "driver",
    "outcome",
    "facts",
    "catalogue",
    "verdict",
    "report", // the stages and the report model
    "baseline",
    "compare",
    "diagnosis",
    "sinks", // readers of reports
    "runner",
    "cli", // wiring and the command line
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a source file belongs to: `src/analyze/outcome.rs` -> analyze.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// The top-level modules a line names after `crate::`, including every
/// member of a `crate::{a, b::c}` group.
fn crate_paths(line: &str) -> Vec<String> {
    let ident = |s: &str| {
        s.trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    };
    let mut out = Vec::new();
    for part in line.split("crate::").skip(1) {
        match part.strip_prefix('{') {
            Some(group) => {
                let inner = group.split('}').next().unwrap_or("");
                out.extend(inner.split(',').map(ident).filter(|s| !s.is_empty()));
            }
            None => out.push(ident(part)),
        }
    }
    out
}

#[test]
fn paths_are_found_in_groups_too() {
    assert_eq!(
        crate_paths("use crate::{analyze, capture::Reaper};"),
        ["analyze", "capture"]
    );
    assert_eq!(
        crate_paths("x: crate::report::Report, y: crate::tcp::Side"),
        ["report", "tcp"]
    );
}

#[test]
fn no_stage_names_a_later_one() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut backwards = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(rank) = ORDER.iter().position(|m| *m == module) else {
            assert!(
                ["lib", "main"].contains(&module.as_str()),
                "{}: module {module:?} is not in ORDER",
                file.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        // Unit tests sit at the end of a file and may use anything.
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or("");
            for used in crate_paths(line) {
                if ORDER[rank + 1..].contains(&used.as_str()) {
                    backwards.push(format!(
                        "{}:{}: {module} uses {used}, a later stage",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(backwards.is_empty(), "{}", backwards.join("\n"));
}

/// The stages as a listing names them, in its order: the first word of each
/// unindented line of the first fenced block after `heading` that is a
/// module in ORDER.
fn listed(text: &str, heading: &str) -> Vec<String> {
    let after = &text[text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"))..];
    let block = after.split("```").nth(1).unwrap_or("");
    block
        .lines()
        .map(|l| l.strip_prefix("//! ").unwrap_or(l))
        // A continuation line is indented.
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| ORDER.contains(w))
        .map(str::to_string)
        .collect()
}

/// The pipeline is told three times: the order this test enforces, the
/// crate's doc and the README. They list the same stages in the same order.
#[test]
fn the_docs_give_the_pipeline_in_its_enforced_order() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let stages: Vec<String> = ORDER
        .iter()
        .skip_while(|m| **m != "scenario")
        .take_while(|m| **m != "baseline")
        .map(|m| m.to_string())
        .collect();
    assert_eq!(listed(&lib, "flows one way"), stages, "src/lib.rs");
    assert_eq!(listed(&readme, "## How it works"), stages, "README.md");
}
