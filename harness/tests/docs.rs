//! The README says what the code does: every fact an expectation can name
//! and every exit code are listed there.

use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

#[test]
fn the_readme_lists_every_fact() {
    let readme = readme();
    let missing: Vec<&str> = teardown::facts::KINDS
        .iter()
        .map(|k| k.pattern)
        .filter(|p| !readme.contains(&format!("| `{p}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's fact table lacks {missing:?} (see `teardown facts`)"
    );
}

#[test]
fn the_readme_lists_every_exit_code() {
    use teardown::cli::exit::*;
    let readme = readme();
    for code in [
        OK,
        MISMATCH,
        USAGE,
        HARNESS_ERROR,
        INVALID_SCENARIO,
        DRIFT,
        BAD_INPUT,
        IO_ERROR,
        NO_PERMISSION,
        INTERRUPTED,
    ] {
        assert!(
            readme.contains(&format!("\n| {code} | ")),
            "exit code {code} is not in the README"
        );
    }
}
