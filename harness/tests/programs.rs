//! A program on the server end (`[program.server]`), end to end through the
//! teardown binary: a small server of the tests' own (Python, always
//! installed where the tests run) started, watched and stopped; and every
//! way a program can go wrong gives a clear error or an observation, with
//! nothing of it left running. Needs root, as the other end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn tiny_server() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/tiny_server.py")
}

fn require_privileges() {
    if let Err(e) = teardown::runner::check_privileges() {
        panic!("these tests run real sockets in network namespaces: {e}");
    }
}

/// A word no other process has in its command line.
fn mark(name: &str) -> String {
    format!("teardown-test-{name}-{}", std::process::id())
}

/// Processes whose command line holds `mark`.
fn marked(mark: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.contains(mark) {
            found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
        }
    }
    found
}

/// Writes scenario `text` as NAME.toml and runs it; the report's one
/// case (IPv4 only) and teardown's stderr.
fn run(name: &str, text: &str) -> (Value, String) {
    require_privileges();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-programs-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let report = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_teardown"))
        .args([
            "run",
            "--quiet",
            "--no-captures",
            "-p",
            "family=ipv4",
            "--report",
        ])
        .arg(&report)
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json: Value = serde_json::from_slice(
        &std::fs::read(&report).unwrap_or_else(|e| panic!("{name}: no report ({e}): {stderr}")),
    )
    .unwrap();
    (json["cases"][0].clone(), stderr)
}

fn server(options: &str, extra: &str, steps: &str) -> String {
    format!(
        r#"title = "t"
steps = '''
{steps}
'''

[program.server]
command = ["python3", "{}", "${{address}}", "${{port}}", {options}]
{extra}
"#,
        tiny_server().display()
    )
}

const CONVERSE: &str =
    "client write \"hi\\n\" as ask\nclient read until-eof keep as answer\nclient close";

#[test]
fn a_program_server_is_started_watched_and_stopped() {
    let m = mark("converse");
    let text = server(&format!("\"{m}\""), "", CONVERSE)
        + r#"
[[expect]]
os = "linux"
facts = { "steps.answer.text" = "HTTP/1.0 200 OK\r\n\r\nhello\n", "wire.server.reset" = false, "unread.server" = 0, "program.ended" = "stopped", "program.signal" = "SIGTERM", "final_state.server" = "TIME-WAIT" }
"#;
    let (case, stderr) = run("converse", &text);
    assert_eq!(case["verdict"]["status"], "pass", "{case:#}\n{stderr}");
    let program = &case["program"];
    assert_eq!(program["command"][2], "127.0.0.1", "{program:#}");
    assert_eq!(program["command"][3], "9000");
    assert!(program["ready_ms"].as_f64().is_some(), "{program:#}");
    assert_eq!(program["stdout"], "listening\n");
    // What the program wrote and read is not the harness's to count.
    assert!(
        case["unobserved"]["data.server_to_client.written"]
            .as_str()
            .is_some_and(|w| w.contains("program")),
        "{:#}",
        case["unobserved"]
    );
    assert!(marked(&m).is_empty(), "{:?}", marked(&m));
}

/// What the harness says of a program that cannot serve: an error naming
/// the scenario line of its command, with its stderr; and nothing left.
#[test]
fn a_program_that_cannot_serve_is_an_error_naming_its_line() {
    let cases = [
        (
            "missing",
            r#"command = ["teardown-no-such-program-anywhere"]"#,
            "was not found on PATH",
        ),
        (
            "dies",
            r#"command = ["sh", "-c", "echo doomed >&2; exit 3"]"#,
            "exited with status 3 before it listened on port 9000; its stderr ends: doomed",
        ),
        (
            "idle",
            r#"command = ["sh", "-c", "echo waiting >&2; sleep 30", "MARK"]
ready_within = "300ms""#,
            "did not listen on port 9000 within 300ms (ready_within); its stderr ends: waiting",
        ),
    ];
    for (name, program, says) in cases {
        let m = mark(name);
        let text = format!(
            "title = \"t\"\nsteps = '''\nclient close\n'''\n\n[program.server]\n{}\n",
            program.replace("MARK", &m)
        );
        let (case, stderr) = run(name, &text);
        assert_eq!(case["verdict"]["status"], "error", "{name}: {case:#}");
        let error = case["verdict"]["error"].as_str().unwrap_or_default();
        assert!(error.contains("line 7: "), "{name}: {error}\n{stderr}");
        assert!(error.contains(says), "{name}: {error}");
        assert!(marked(&m).is_empty(), "{name}: {:?}", marked(&m));
    }
}

/// A program that ignores SIGTERM is killed after its grace; one that
/// floods stdout keeps a bounded tail; one that leaves a daemon behind
/// (a session of its own, SIGTERM ignored) has it killed with it. Each is
/// an observation, not an error, and nothing is left running.
#[test]
fn a_misbehaving_program_is_observed_and_nothing_outlives_the_case() {
    let m = mark("stubborn");
    let text = server(
        &format!("\"{m}\", \"ignore-term\", \"flood\", \"daemon\""),
        "stop_grace = \"300ms\"",
        CONVERSE,
    );
    let before = marked(&m);
    assert!(before.is_empty(), "{before:?}");
    let (case, stderr) = run("stubborn", &text);
    assert_ne!(case["verdict"]["status"], "error", "{case:#}\n{stderr}");
    let program = &case["program"];
    assert_eq!(program["ended"], "killed", "{program:#}");
    assert_eq!(program["signal"], "SIGKILL");
    assert!(program["leftovers"].as_u64() >= Some(1), "{program:#}");
    let tail = program["stdout"].as_str().unwrap();
    assert!(tail.len() <= teardown::driver::program::TAIL_BYTES);
    assert!(
        program["stdout_bytes"].as_u64().unwrap() > 10 * tail.len() as u64,
        "{}",
        program["stdout_bytes"]
    );
    assert_eq!(case["steps"][2]["text"], "HTTP/1.0 200 OK\r\n\r\nhello\n");
    assert!(marked(&m).is_empty(), "{:?}", marked(&m));
}

/// A program on the client end: it connects to the harness's listener
/// once that listens, and the harness drives the server with steps.
#[test]
fn a_program_client_connects_and_the_harness_serves_it() {
    let m = mark("client");
    let text = format!(
        r#"title = "t"
steps = '''
server read 5 keep as got
server write "bye" as answer
server read until-eof as rest
server close
'''

[program.client]
command = ["python3", "-c", "import socket, sys; s = socket.create_connection((sys.argv[1], int(sys.argv[2]))); s.sendall(b'hello'); print(s.recv(100).decode(), flush=True); s.close()", "${{address}}", "${{port}}", "{m}"]

[[expect]]
os = "linux"
facts = {{ "steps.got.text" = "hello", "program.ended" = "exited", "program.exit_code" = 0, "program.stdout" = "bye\n", "wire.client.distinct_fins" = 1, "final_state.client" = "TIME-WAIT", "unread.client" = 0, "unread.server" = 0 }}
"#
    );
    let (case, stderr) = run("client", &text);
    assert_eq!(case["verdict"]["status"], "pass", "{case:#}\n{stderr}");
    assert_eq!(case["program"]["side"], "client");
    assert!(
        case["unobserved"]["data.client_to_server.written"]
            .as_str()
            .is_some_and(|w| w.contains("the client is a program")),
        "{:#}",
        case["unobserved"]
    );
    assert!(marked(&m).is_empty(), "{:?}", marked(&m));
}

/// A program's table and its steps are checked before anything runs.
#[test]
fn a_scenario_that_misuses_a_program_is_refused_with_its_line() {
    let scratch = tempfile::Builder::new()
        .prefix("teardown-programs-check-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let cases = [
        (
            "both",
            "steps = '''\nserver close\n'''\n[program.client]\ncommand = [\"x\"]\n[program.server]\ncommand = [\"y\"]\n",
            ":5:",
            "a program on each end leaves the harness nothing to drive",
        ),
        (
            "clientstep",
            "steps = '''\nclient write 10\n'''\n[program.client]\ncommand = [\"x\"]\n",
            ":3:",
            "the client end is a program (line 6)",
        ),
        (
            "serverstep",
            "steps = '''\nserver read 10\n'''\n[program.server]\ncommand = [\"x\"]\n",
            ":3:",
            "the server end is a program (line 6)",
        ),
        (
            "stop",
            "steps = '''\nclient close\nstop server\n'''\n",
            ":4:",
            "no program on the server end",
        ),
        (
            "empty",
            "steps = '''\nclient close\n'''\n[program.server]\ncommand = []\n",
            ":6:",
            "`command` is empty",
        ),
        (
            "port",
            "steps = '''\nclient close\n'''\n[program.server]\ncommand = [\"x\"]\nport = 70000\n",
            ":7:",
            "not a TCP port",
        ),
        (
            "param",
            "steps = '''\nclient close\n'''\n[program.server]\ncommand = [\"x\", \"${nope}\"]\n",
            "",
            "unknown parameter ${nope}",
        ),
    ];
    for (name, body, at, says) in cases {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, format!("title = \"t\"\n{body}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_teardown"))
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: accepted");
        assert!(
            stderr.contains(&format!("{name}.toml{at}")) && stderr.contains(says),
            "{name}: {stderr}"
        );
    }
}

/// `teardown probe` puts a server of the user's on the probes' server
/// end: here the tests' own, which answers a request and closes, so the
/// graceful probe passes and the early-response probe catches its reset.
#[test]
fn probe_runs_the_probes_against_a_users_server() {
    require_privileges();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-probe-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let report = dir.join("probe.json");
    let probes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/probes");
    let m = mark("probe");
    let out = Command::new(env!("CARGO_BIN_EXE_teardown"))
        .args(["probe", "--port", "8080", "--server-command"])
        .arg(format!(
            "exec python3 {} \"$ADDRESS\" \"$PORT\" {m}",
            tiny_server().display()
        ))
        .args(["--quiet", "--no-captures", "-p", "family=ipv4", "--report"])
        .arg(&report)
        .arg(probes.join("graceful.toml"))
        .arg(probes.join("early-response.toml"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let case = |id: &str| {
        json["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .unwrap_or_else(|| panic!("{id}: {stdout}"))
            .clone()
    };
    let graceful = case("graceful/ipv4");
    assert_eq!(graceful["verdict"]["status"], "pass", "{graceful:#}");
    assert_eq!(graceful["endpoints"]["server"], "127.0.0.1:8080");
    // It reads 1 KiB of the request and closes: the body left unread makes
    // its kernel reset, which the probe names.
    let early = case("early-response/ipv4");
    assert_eq!(early["verdict"]["status"], "fail", "{early:#}");
    assert!(early["unread"]["server"].as_u64() > Some(0), "{early:#}");
    assert!(
        stdout.contains("wire.server.reset: expected false, observed true"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(marked(&m).is_empty(), "{:?}", marked(&m));

    // A scenario whose server the harness drives cannot take one.
    let out = Command::new(env!("CARGO_BIN_EXE_teardown"))
        .args(["probe", "--server-command", "true"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/close-graceful.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr
            .contains("close-graceful.toml:1:1: the harness drives this scenario's server itself"),
        "{stderr}"
    );
}

/// `analyze` names the reset problem in a capture of it, from the
/// catalogue's reset-problem scenarios; and an ordinary close of the same
/// server by a scenario the harness drives at both ends.
#[test]
fn analyze_names_the_reset_problem_in_a_capture_of_it() {
    require_privileges();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-reset-problem-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let scenario =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/reset-problem-python.toml");
    let report = dir.join("r.json");
    let out = Command::new(env!("CARGO_BIN_EXE_teardown"))
        .args(["run", "--quiet", "-p", "family=ipv4", "--report"])
        .arg(&report)
        .arg("--captures")
        .arg(dir.join("captures"))
        .arg(&scenario)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for case in json["cases"].as_array().unwrap() {
        let pcap = case["capture"].as_str().unwrap();
        let analysed = Command::new(env!("CARGO_BIN_EXE_teardown"))
            .args(["analyze", "--format", "json", pcap])
            .output()
            .unwrap();
        let a: Value = serde_json::from_slice(&analysed.stdout).unwrap();
        let name = a["connections"][0]["diagnosis"]["name"]
            .as_str()
            .unwrap_or_default();
        let reset = case["id"].as_str().unwrap().ends_with("junk=50000");
        assert_eq!(
            name.starts_with("reset-problem-"),
            reset,
            "{}: diagnosed {name}: {:#}",
            case["id"],
            a["connections"][0]["diagnosis"]
        );
    }
}
