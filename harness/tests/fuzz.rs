//! Hostile input: mutated scenario files, pcaps and reports fed through
//! what `check`, `analyze`, `compare`, `render` and `explain` do with them.
//! Whatever the bytes, the answer is a result or an error that names the
//! file; never a panic, an abort or a hang.
//!
//! The seeds are the committed catalogue, the test fixtures' pcaps and a
//! committed report. Mutations are chosen to reach past the first parser:
//! hostile values put in place of numbers, durations and words of a valid
//! scenario; bytes flipped, cut or repeated in a valid pcap; leaves of a
//! valid report's JSON replaced, and arrays cut or repeated.
//!
//! `TEARDOWN_FUZZ_CASES` sets how many inputs of each kind (default 200,
//! quick enough for `just test`); `TEARDOWN_PROPTEST_SEED` picks them as in
//! the other property tests (fixed unless told otherwise). `just fuzz` runs a
//! long randomised round. No root needed.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::Value;

#[path = "support/seed.rs"]
mod seed;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cases_from_env() -> u32 {
    std::env::var("TEARDOWN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Runs `property` on `cases` inputs from `strategy`; a failure names the
/// seed, and the input (shrunk by proptest) is in the message. `property`
/// says whether the input got past the parser (`Ok(true)`): at least one in
/// twenty must, or the mutations only ever test the first check.
fn fuzz<S: Strategy>(name: &str, strategy: S, property: impl Fn(S::Value) -> Result<bool, String>)
where
    S::Value: std::fmt::Debug,
{
    use std::sync::atomic::{AtomicU32, Ordering};
    let accepted = AtomicU32::new(0);
    let seed = seed::seed_from_env();
    let cases = cases_from_env();
    eprintln!("{name}: {cases} inputs, TEARDOWN_PROPTEST_SEED={seed}");
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        // Shrinking a panic can take long; the first failing input and the
        // seed are enough to reproduce it.
        max_shrink_iters: 64,
        ..Config::default()
    });
    let result = runner.run(&strategy, |v| {
        let deep = property(v).map_err(TestCaseError::fail)?;
        accepted.fetch_add(u32::from(deep), Ordering::Relaxed);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e} (TEARDOWN_PROPTEST_SEED={seed})");
    }
    let accepted = accepted.into_inner();
    eprintln!("{name}: {accepted} of {cases} inputs got past the parser");
    assert!(
        accepted * 20 >= cases,
        "{name}: only {accepted} of {cases} mutated inputs were accepted; the mutations are too coarse"
    );
}

/// A unique scratch file for one input, removed when dropped.
fn scratch(name: &str, bytes: &[u8]) -> tempfile::TempPath {
    let mut file = tempfile::Builder::new()
        .prefix("teardown-fuzz-")
        .suffix(&format!("-{name}"))
        .tempfile()
        .unwrap();
    std::io::Write::write_all(&mut file, bytes).unwrap();
    file.into_temp_path()
}

// ---- scenario files -------------------------------------------------------

fn scenario_texts() -> &'static Vec<(String, String)> {
    static T: OnceLock<Vec<(String, String)>> = OnceLock::new();
    T.get_or_init(|| {
        let mut v: Vec<(String, String)> = std::fs::read_dir(root().join("scenarios"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .collect();
        v.sort();
        v
    })
}

/// Values that have broken parsers before: overflowing, negative, absurd,
/// empty, non-ASCII, unterminated.
const HOSTILE: &[&str] = &[
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "0",
    "1e30s",
    "1.8e19s",
    "100000000s",
    "99999999MiB",
    "18446744073709551615KiB",
    "4294967297",
    "nan",
    "inf",
    "-0ms",
    "${nope}",
    "${family",
    "\"",
    "'''",
    "[",
    "",
    "é",
    "\u{0}",
    "as",
    "within",
    "since",
    "client",
    "#",
    "stop",
    "keep",
    "timer",
    "queued",
    "since",
    "${address}",
    "[program.client]",
    "command",
];

#[derive(Debug, Clone)]
enum TextEdit {
    /// Replace the n-th word (a run of non-space characters) by a hostile value.
    Word(usize, &'static str),
    /// Delete the n-th line.
    DeleteLine(usize),
    /// Repeat the n-th line.
    RepeatLine(usize),
    /// Cut the text at a byte offset (per mille of its length).
    Cut(u16),
    /// Put a byte at an offset (per mille).
    Insert(u16, u8),
}

fn text_edit() -> impl Strategy<Value = TextEdit> {
    prop_oneof![
        6 => (any::<usize>(), prop::sample::select(HOSTILE)).prop_map(|(n, v)| TextEdit::Word(n, v)),
        1 => any::<usize>().prop_map(TextEdit::DeleteLine),
        1 => any::<usize>().prop_map(TextEdit::RepeatLine),
        1 => (0u16..1000).prop_map(TextEdit::Cut),
        1 => ((0u16..1000), any::<u8>()).prop_map(|(at, b)| TextEdit::Insert(at, b)),
    ]
}

fn apply_text(text: &str, edit: &TextEdit) -> Vec<u8> {
    let at = |per_mille: u16| {
        let mut i = text.len() * usize::from(per_mille) / 1000;
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    match edit {
        TextEdit::Word(n, v) => {
            let words: Vec<(usize, &str)> = text
                .split_inclusive(char::is_whitespace)
                .scan(0, |off, w| {
                    let start = *off;
                    *off += w.len();
                    Some((start, w.trim_end()))
                })
                .filter(|(_, w)| !w.is_empty())
                .collect();
            let Some(&(start, w)) = words.get(n % words.len().max(1)) else {
                return text.as_bytes().to_vec();
            };
            format!("{}{v}{}", &text[..start], &text[start + w.len()..]).into_bytes()
        }
        TextEdit::DeleteLine(n) | TextEdit::RepeatLine(n) => {
            let lines: Vec<&str> = text.lines().collect();
            let i = n % lines.len().max(1);
            let mut out: Vec<&str> = Vec::new();
            for (j, l) in lines.iter().enumerate() {
                if j != i || matches!(edit, TextEdit::RepeatLine(_)) {
                    out.push(l);
                }
                if j == i && matches!(edit, TextEdit::RepeatLine(_)) {
                    out.push(l);
                }
            }
            out.join("\n").into_bytes()
        }
        TextEdit::Cut(p) => text.as_bytes()[..at(*p)].to_vec(),
        TextEdit::Insert(p, b) => {
            let mut v = text.as_bytes().to_vec();
            v.insert(at(*p), *b);
            v
        }
    }
}

/// `check`: a mutated scenario file is accepted or refused with an error
/// naming the file; every case it accepts has valid fact paths (the
/// catalogue checks them) and its report-facing names render.
#[test]
fn mutated_scenarios_are_accepted_or_refused_by_name() {
    let texts = scenario_texts();
    let strategy = (0..texts.len(), prop::collection::vec(text_edit(), 1..4));
    fuzz("scenarios", strategy, |(i, edits)| {
        let (name, text) = &texts[i];
        let mut bytes = text.clone().into_bytes();
        for e in &edits {
            bytes = apply_text(&String::from_utf8_lossy(&bytes), e);
        }
        let path = scratch(name, &bytes);
        let result = teardown::catalogue::load_file(&path);
        match result {
            Ok(cases) => {
                for c in &cases {
                    if c.steps.is_empty() || c.id.is_empty() {
                        return Err(format!("{}: a case without steps or id", c.id));
                    }
                }
                Ok(true)
            }
            Err(e) => {
                let msg = e.to_string();
                if msg.contains(&path.display().to_string()) {
                    Ok(false)
                } else {
                    Err(format!("the error does not name the file: {msg}"))
                }
            }
        }
    });
}

// ---- pcaps ----------------------------------------------------------------

fn pcaps() -> &'static Vec<(String, Vec<u8>)> {
    static P: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    P.get_or_init(|| {
        let dir = root().join("harness/tests/fixtures");
        let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "pcap"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        v.sort();
        // Each also gzip-compressed: mutations then hit the decompressor.
        let compressed: Vec<(String, Vec<u8>)> = v
            .iter()
            .map(|(name, data)| {
                use std::io::Write;
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(data).unwrap();
                (format!("{name}.gz"), gz.finish().unwrap())
            })
            .collect();
        v.extend(compressed);
        v
    })
}

#[derive(Debug, Clone)]
enum ByteEdit {
    /// Set the byte at an offset (per 10,000 of the length; offsets in the
    /// 24-byte file header and the first record header are likelier).
    Set(u16, u8),
    /// Set a 32-bit little-endian word (caplen, len, link type...) at an
    /// offset to an extreme value.
    Word(u16, u32),
    Cut(u16),
    /// Repeat a slice: (start, length), per 10,000.
    Repeat(u16, u16),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let extreme = prop::sample::select(vec![
        0u32,
        1,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0xffff_ffff,
        105,
        276,
        113,
        127,
        239,
        10,
        0x0800,
        0x86dd,
    ]);
    prop_oneof![
        3 => ((0u16..10_000), any::<u8>()).prop_map(|(o, b)| ByteEdit::Set(o, b)),
        2 => ((0u16..64), any::<u8>()).prop_map(|(o, b)| ByteEdit::Set(o | 0x8000, b)),
        3 => ((0u16..10_000), extreme).prop_map(|(o, w)| ByteEdit::Word(o, w)),
        1 => (0u16..10_000).prop_map(ByteEdit::Cut),
        1 => ((0u16..10_000), (0u16..2_000)).prop_map(|(s, l)| ByteEdit::Repeat(s, l)),
    ]
}

fn apply_bytes(data: &mut Vec<u8>, edit: &ByteEdit) {
    let at = |per: u16, len: usize| len * usize::from(per) / 10_000;
    let len = data.len();
    match *edit {
        ByteEdit::Set(o, b) if o & 0x8000 != 0 => {
            let i = usize::from(o & 0x7fff);
            if i < len {
                data[i] = b;
            }
        }
        ByteEdit::Set(o, b) => {
            if len > 0 {
                data[at(o, len).min(len - 1)] = b;
            }
        }
        ByteEdit::Word(o, w) => {
            let i = at(o, len);
            if i + 4 <= len {
                data[i..i + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
        ByteEdit::Cut(o) => data.truncate(at(o, len)),
        ByteEdit::Repeat(s, l) => {
            let s = at(s, len);
            let e = (s + at(l, len)).min(len);
            let chunk = data[s..e].to_vec();
            data.splice(e..e, chunk);
        }
    }
}

/// `analyze`: a mutated capture gives facts or an error naming the file.
#[test]
fn mutated_pcaps_are_analysed_or_refused_by_name() {
    let pcaps = pcaps();
    let strategy = (0..pcaps.len(), prop::collection::vec(byte_edit(), 1..6));
    fuzz("pcaps", strategy, |(i, edits)| {
        let (name, data) = &pcaps[i];
        let mut data = data.clone();
        for e in &edits {
            apply_bytes(&mut data, e);
        }
        let path = scratch(name, &data);
        let mut connections = Vec::new();
        let result = teardown::diagnosis::analyze_file(
            &path,
            teardown::diagnosis::embedded(),
            &teardown::diagnosis::Filter::default(),
            |c| connections.push(c),
        );
        match result {
            Ok(stats) if stats.connections != connections.len() as u64 => Err(format!(
                "{} connections counted, {} handed out",
                stats.connections,
                connections.len()
            )),
            Ok(_) => serde_json::to_string(&connections)
                .map(|_| true)
                .map_err(|e| format!("connections do not serialise: {e}")),
            Err(e) if e.to_string().contains(&path.display().to_string()) => Ok(false),
            Err(e) => Err(format!("the error does not name the file: {e}")),
        }
    });
}

// ---- reports --------------------------------------------------------------

/// A committed report cut to a few cases of different kinds, as JSON.
fn report_seed() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let dir = root().join("reports/kernels");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut v: Value =
            serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
        let keep = [
            "linger-zero/ipv4",
            "last-ack-lost/ipv4",
            "simultaneous-close/ipv6",
            "close-unread-data/ipv4",
        ];
        let cases = v["cases"].as_array_mut().unwrap();
        cases.retain(|c| keep.contains(&c["id"].as_str().unwrap_or("")));
        assert!(!cases.is_empty(), "the seed report holds the chosen cases");
        v
    })
}

#[derive(Debug, Clone)]
enum JsonEdit {
    /// Replace the n-th leaf (number, string, bool or null).
    Leaf(usize, HostileJson),
    /// Drop the n-th object member.
    DropKey(usize),
    /// Empty, or double, the n-th array.
    Array(usize, bool),
}

#[derive(Debug, Clone)]
enum HostileJson {
    Int(i64),
    Big(u64),
    Float(f64),
    Text(&'static str),
    Long(usize),
    Null,
    Bool(bool),
    Empty,
}

impl HostileJson {
    fn value(&self) -> Value {
        match self {
            HostileJson::Int(i) => Value::from(*i),
            HostileJson::Big(u) => Value::from(*u),
            HostileJson::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            HostileJson::Text(s) => Value::from(*s),
            HostileJson::Long(n) => Value::from("x".repeat(*n)),
            HostileJson::Null => Value::Null,
            HostileJson::Bool(b) => Value::from(*b),
            HostileJson::Empty => Value::Object(Default::default()),
        }
    }
}

fn hostile_json() -> impl Strategy<Value = HostileJson> {
    prop_oneof![
        prop::sample::select(vec![i64::MIN, -1, 0, 1, i64::MAX]).prop_map(HostileJson::Int),
        Just(HostileJson::Big(u64::MAX)),
        prop::sample::select(vec![-1e308, -0.0, 1e-300, 1e308]).prop_map(HostileJson::Float),
        prop::sample::select(HOSTILE).prop_map(HostileJson::Text),
        prop::sample::select(vec![
            "CLOSED", "ipv4", "client", "FP.", "R", "<script>", "a/b/c"
        ])
        .prop_map(HostileJson::Text),
        (0usize..20_000).prop_map(HostileJson::Long),
        Just(HostileJson::Null),
        any::<bool>().prop_map(HostileJson::Bool),
        Just(HostileJson::Empty),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        6 => (any::<usize>(), hostile_json()).prop_map(|(n, h)| JsonEdit::Leaf(n, h)),
        2 => any::<usize>().prop_map(JsonEdit::DropKey),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(n, d)| JsonEdit::Array(n, d)),
    ]
}

/// Visits every node depth-first, calling `f` with a running index.
fn visit(v: &mut Value, n: &mut usize, f: &mut dyn FnMut(usize, &mut Value) -> bool) -> bool {
    if f(*n, v) {
        return true;
    }
    *n += 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|x| visit(x, n, f)),
        Value::Object(o) => o.values_mut().any(|x| visit(x, n, f)),
        _ => false,
    }
}

fn count(v: &Value, pick: fn(&Value) -> bool) -> usize {
    let here = usize::from(pick(v));
    here + match v {
        Value::Array(a) => a.iter().map(|x| count(x, pick)).sum(),
        Value::Object(o) => o.values().map(|x| count(x, pick)).sum(),
        _ => 0,
    }
}

fn apply_json(v: &mut Value, edit: &JsonEdit) {
    let leaf = |x: &Value| !x.is_array() && !x.is_object();
    let pick: fn(&Value) -> bool = match edit {
        JsonEdit::Leaf(..) => |x| !x.is_array() && !x.is_object(),
        JsonEdit::DropKey(_) => |x| x.as_object().is_some_and(|o| !o.is_empty()),
        JsonEdit::Array(..) => Value::is_array,
    };
    let total = count(v, pick);
    if total == 0 {
        return;
    }
    let target = match edit {
        JsonEdit::Leaf(n, _) | JsonEdit::DropKey(n) | JsonEdit::Array(n, _) => n % total,
    };
    let mut seen = 0;
    let mut i = 0;
    visit(v, &mut i, &mut |_, x| {
        if !pick(x) {
            return false;
        }
        if seen < target {
            seen += 1;
            return false;
        }
        match edit {
            JsonEdit::Leaf(_, h) if leaf(x) => *x = h.value(),
            JsonEdit::DropKey(k) => {
                let o = x.as_object_mut().unwrap();
                let key = o.keys().nth(k % o.len()).unwrap().clone();
                o.remove(&key);
            }
            JsonEdit::Array(_, double) => {
                let a = x.as_array_mut().unwrap();
                if *double {
                    let copy = a.clone();
                    a.extend(copy);
                } else {
                    a.clear();
                }
            }
            _ => {}
        }
        true
    });
}

/// `compare`, `render`, `explain` and a baseline: a mutated report is
/// refused with an error naming the file, or every one of them works on it.
#[test]
fn mutated_reports_are_refused_by_name_or_rendered_whole() {
    let strategy = prop::collection::vec(json_edit(), 1..5);
    fuzz("reports", strategy, |edits| {
        let mut v = report_seed().clone();
        for e in &edits {
            apply_json(&mut v, e);
        }
        let text = serde_json::to_string(&v).unwrap();
        let path = Path::new("fuzzed-report.json");
        let report = match teardown::report::load::parse(path, &text) {
            Ok(r) => r,
            Err(e) if e.to_string().contains("fuzzed-report.json") => return Ok(false),
            Err(e) => return Err(format!("the error does not name the file: {e}")),
        };
        let loaded = vec![
            ("a.json".to_string(), report.clone()),
            ("b.json".to_string(), report.clone()),
        ];
        let c = teardown::compare::compare(&loaded, 100.0, true);
        let _ = teardown::sinks::compare::table(&c, &teardown::sinks::terminal::Terminal::PLAIN);
        let _ = teardown::sinks::compare::markdown(&c);
        let _ = teardown::sinks::html::html(
            &loaded,
            &teardown::compare::compare(&loaded, 100.0, false),
        );
        for case in &report.cases {
            let _ = teardown::sinks::ladder::text(case);
        }
        let _ = teardown::baseline::Baseline::record(&[report]);
        Ok(true)
    });
}

/// The mutators themselves reach the inputs: a word edit changes a
/// scenario, a byte edit a pcap, a leaf edit a report.
#[test]
fn the_mutators_change_their_inputs() {
    let (_, text) = &scenario_texts()[0];
    assert_ne!(apply_text(text, &TextEdit::Word(3, "-1")), text.as_bytes());
    let mut data = pcaps()[0].1.clone();
    apply_bytes(&mut data, &ByteEdit::Word(0, 0xffff_ffff));
    assert_ne!(data, pcaps()[0].1);
    let mut v = report_seed().clone();
    apply_json(&mut v, &JsonEdit::Leaf(5, HostileJson::Long(3)));
    assert_ne!(&v, report_seed());
}
