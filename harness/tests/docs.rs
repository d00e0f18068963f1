//! The README says what the code does: every fact an expectation can name
//! and every exit code are listed there.

use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// The README's fact table is the fact model's, row for row, in its order
/// and with its words: a fact added, renamed or reworded shows up here.
#[test]
fn the_readme_fact_table_is_the_fact_model() {
    let table: String = teardown::facts::KINDS
        .iter()
        .map(|k| format!("| `{}` | {} | {} |\n", k.pattern, k.used_as.name(), k.doc))
        .collect();
    assert!(
        readme().contains(&format!("|---|---|---|\n{table}\n")),
        "README's fact table differs from the fact model; it should read:\n\n{table}"
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

/// The scenario the README shows under "Writing a scenario" is one the
/// harness accepts, fact paths included.
#[test]
fn the_readme_example_scenario_is_valid() {
    let readme = readme();
    let start = readme
        .find("## Writing a scenario")
        .and_then(|s| readme[s..].find("```toml\n").map(|i| s + i + 8))
        .expect("README has a toml example under 'Writing a scenario'");
    let end = start + readme[start..].find("```").unwrap();
    let cases = teardown::catalogue::parse(Path::new("README.md"), &readme[start..end])
        .unwrap_or_else(|e| panic!("README's example scenario is invalid: {e}"));
    assert_eq!(cases.len(), 2, "the example has one case per family");
}

/// The signatures `teardown analyze` embeds are what `just signatures`
/// derives from the committed baseline and reference reports: a baseline
/// re-recorded without them would leave the diagnosis describing old runs.
#[test]
fn the_committed_signatures_are_derived_from_the_committed_reports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut inputs = vec![root.join("reports/baseline/linux.json")];
    let mut stacks: Vec<_> = std::fs::read_dir(root.join("reports/stacks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    stacks.sort();
    inputs.extend(stacks);
    // smoltcp's and lwIP's endings, from the bench with each at both ends.
    inputs.push(root.join("reports/bench/smoltcp-smoltcp.json"));
    inputs.push(root.join("reports/bench/lwip-lwip.json"));
    let read = teardown::compare::read_inputs(&inputs).unwrap();
    let cases = teardown::catalogue::load(&[root.join("scenarios")]).unwrap();
    let mut derived = teardown::diagnosis::generate(&read, &cases);
    let committed = teardown::diagnosis::embedded();
    // Sources are named as the recipe names them, relative to the root.
    derived.sources = committed.sources.clone();
    assert!(
        committed.signatures == derived.signatures && committed.facts == derived.facts,
        "reports/signatures.json is stale: run `just signatures`"
    );
    assert!(
        committed.signatures.len() > 5,
        "too few signatures to diagnose anything"
    );
}

/// The README's account of what `analyze` reads is the decoder's own list
/// of link types and layers: one added shows up here.
#[test]
fn the_readme_lists_every_link_type_and_layer_analyze_reads() {
    let readme = readme();
    let linktypes: Vec<&str> = teardown::wire::DECODED_LINKTYPES
        .iter()
        .map(|(_, name)| *name)
        .collect();
    let linktypes = format!("link types {}", linktypes.join(", "));
    let flat = readme.replace('\n', " ");
    assert!(flat.contains(&linktypes), "README should say: {linktypes}");
    let layers = teardown::wire::DECODED_LAYERS;
    assert!(flat.contains(layers), "README should say: {layers}");
}
