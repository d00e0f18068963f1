//! The `teardown` binary as a user meets it: exit codes and error messages.

use std::path::Path;
use std::process::{Command, Output};

fn teardown(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_teardown"))
        .args(args)
        .output()
        .expect("run teardown")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The case ids in `teardown list`'s output (the first column, under the
/// header).
fn listed_ids(out: &str) -> Vec<&str> {
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// A file NAME holding TEXT in a directory of its own, removed on drop.
struct TempFile {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl std::ops::Deref for TempFile {
    type Target = std::path::PathBuf;
    fn deref(&self) -> &Self::Target {
        &self.path
    }
}

fn temp_file(name: &str, text: &str) -> TempFile {
    let dir = tempfile::Builder::new()
        .prefix("teardown-cli-")
        .tempdir()
        .unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    TempFile { _dir: dir, path }
}

#[test]
fn the_committed_catalogue_checks() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let o = teardown(&["check", scenarios.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("ok: "));
}

#[test]
fn a_bad_step_names_file_line_and_column_and_exits_4() {
    let p = temp_file(
        "bad-step.toml",
        "title = \"t\"\nsteps = '''\nclient write 10\nclient shutdown SIDEWAYS\n'''\n",
    );
    let o = teardown(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    let e = stderr(&o);
    assert!(
        e.contains("bad-step.toml:4:17: unknown shutdown mode \"SIDEWAYS\""),
        "{e}"
    );
}

#[test]
fn an_unknown_key_is_an_error() {
    let p = temp_file(
        "unknown-key.toml",
        "title = \"t\"\nsteps = \"client close\"\ntimout = \"1s\"\n",
    );
    let o = teardown(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains("unknown-key.toml:3:1:"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn an_unknown_option_exits_2() {
    let o = teardown(&["run", "--frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--frobnicate"));
}

#[test]
fn a_filter_matching_nothing_exits_2() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let o = teardown(&[
        "list",
        scenarios.to_str().unwrap(),
        "--filter",
        "no-such-case",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no case to run"), "{}", stderr(&o));
}

#[test]
fn a_truncated_pcap_exits_65_naming_the_file() {
    let good = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/close-graceful-ipv4.pcap"),
    )
    .unwrap();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-cli-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let p = dir.join("short.pcap");
    std::fs::write(&p, &good[..200]).unwrap();
    let o = teardown(&["analyze", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("short.pcap"), "{}", stderr(&o));
}

/// Regression: a capture of a link type teardown cannot decode (here
/// USER0, 147, private to whoever wrote it) gave exit 0 and all-zero
/// facts, as if it held nothing.
#[test]
fn a_pcap_of_an_undecodable_link_type_exits_65() {
    let mut pcap = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/close-graceful-ipv4.pcap"),
    )
    .unwrap();
    // The link type is the global header's last field (offset 20, little-endian).
    assert_eq!(
        &pcap[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian pcap"
    );
    pcap[20..24].copy_from_slice(&147u32.to_le_bytes());
    let scratch = tempfile::Builder::new()
        .prefix("teardown-cli-lt-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let p = dir.join("user0.pcap");
    std::fs::write(&p, &pcap).unwrap();
    let o = teardown(&["analyze", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(65), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("user0.pcap: link type 147 is not one teardown decodes"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty(), "no facts printed");
}

/// Frames all in a layer teardown does not decode (here GRE carrying an
/// unknown protocol) once gave "0 TCP segments" and nothing else: now
/// stderr says how many were skipped and why, and the JSON counts them.
#[test]
fn analyze_says_which_frames_it_skipped_and_why() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/close-graceful-ipv4.pcap");
    let c = teardown::capture::read_pcap(&src).unwrap();
    let packets = c
        .packets
        .iter()
        .map(|p| {
            let gre = [&[0u8, 0, 0x12, 0x34][..], &p.data[14..]].concat();
            let mut ip = vec![
                0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
            ];
            ip[2..4].copy_from_slice(&((20 + gre.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&gre);
            let frame = [&p.data[..14], &ip].concat();
            teardown::capture::RawPacket {
                ts_us: p.ts_us,
                orig_len: frame.len() as u32,
                data: frame,
            }
        })
        .collect();
    let scratch = tempfile::Builder::new()
        .prefix("teardown-cli-gre-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let p = dir.join("gre.pcap");
    let captured = teardown::capture::Captured {
        linktype: teardown::capture::linktype::ETHERNET,
        packets,
        dropped: None,
    };
    teardown::capture::write_pcap(&p, &captured).unwrap();
    let o = teardown(&["analyze", "--format", "json", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let n = c.packets.len();
    assert!(
        stderr(&o).contains(&format!(
            "warning: {}: packets in layers teardown does not decode were skipped (any TCP inside them is not analyzed): {n} GRE carrying a protocol teardown does not decode",
            p.display()
        )),
        "{}",
        stderr(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stats"]["segments"], 0);
    assert_eq!(
        v["stats"]["skipped"]["GRE carrying a protocol teardown does not decode"],
        n
    );
}

#[test]
fn analyze_prints_the_wire_facts_and_the_scenario_that_ends_alike() {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/close-unread-data-ipv4.pcap");
    let o = teardown(&["analyze", "--format", "json", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["stats"]["connections"], 1);
    let c = &v["connections"][0];
    assert_eq!(c["wire"]["server"]["rst"], 1);
    assert_eq!(c["wire"]["conn_state"], "RSTR");
    let matches = c["diagnosis"]["matches"].as_array().unwrap();
    assert!(
        matches.iter().any(|m| m == "close-unread-data on linux"),
        "{c:#}"
    );
}

/// Without CAP_NET_ADMIN the run stops before any case, with exit 77 and
/// what to do. Dropping privileges needs root (and setpriv) to begin with.
#[test]
fn missing_privileges_exit_77_with_advice() {
    let is_root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let setpriv = Path::new("/usr/bin/setpriv");
    // Outputs are checked first (exit 74): put the report where anyone may write.
    let report = std::env::temp_dir().join(format!("teardown-priv-{}.json", std::process::id()));
    let report = report.to_str().unwrap();
    if !is_root || !setpriv.exists() {
        // A non-root user already lacks the privilege: run directly.
        let o = teardown(&["run", "--no-captures", "--report", report]);
        assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
        return;
    }
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let o = Command::new(setpriv)
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_teardown"))
        .args(["run", "--no-captures", "--report", report])
        .arg(scenarios)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(77), "{}", stderr(&o));
    assert!(stderr(&o).contains("CAP_NET_ADMIN"), "{}", stderr(&o));
}

/// Regression: `teardown run | head` panicked on the broken pipe (and, since
/// the table was printed first, lost the report). Output to a reader that
/// has gone away now just stops.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::process::Stdio;
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut child = Command::new(env!("CARGO_BIN_EXE_teardown"))
        .args(["list", scenarios.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader leaves before anything is written
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn list_selects_by_parameter_and_id() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let o = teardown(&[
        "list",
        scenarios.to_str().unwrap(),
        "-p",
        "family=ipv6",
        "-f",
        "linger",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let ids = listed_ids(&out);
    assert!(!ids.is_empty());
    assert!(
        ids.iter()
            .all(|id| id.contains("linger") && id.contains("/ipv6")),
        "{ids:?}"
    );
    let o = teardown(&["list", scenarios.to_str().unwrap(), "-p", "family"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected NAME=VALUE"), "{}", stderr(&o));
    let o = teardown(&["list", scenarios.to_str().unwrap(), "-p", "family=ipx"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no case to run"), "{}", stderr(&o));
}

#[test]
fn baseline_check_names_a_bad_file_and_exits_65() {
    let o = teardown(&[
        "baseline",
        "check",
        "/nonexistent/b.json",
        "/nonexistent/r.json",
    ]);
    assert_eq!(o.status.code(), Some(65));
    assert!(stderr(&o).contains("/nonexistent/b.json"), "{}", stderr(&o));
    let b = temp_file("not-a-baseline.json", "{\"kind\": \"something else\"}\n");
    let o = teardown(&[
        "baseline",
        "check",
        b.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("not a teardown baseline"),
        "{}",
        stderr(&o)
    );
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/baseline/linux.json");
    let truncated = temp_file(
        "truncated-report.json",
        "{\"schema_version\": 1, \"cases\": [",
    );
    let o = teardown(&[
        "baseline",
        "check",
        committed.to_str().unwrap(),
        truncated.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(65));
    assert!(
        stderr(&o).contains("truncated-report.json:1:"),
        "{}",
        stderr(&o)
    );
}

/// The committed kernel-matrix reports, oldest kernel first.
fn kernel_reports() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/kernels");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_string())
        .filter(|p| p.ends_with(".json") && !p.contains("/host-"))
        .collect();
    files.sort_by_key(|p| {
        let name = p.rsplit('/').next().unwrap();
        name.split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse::<u32>().unwrap_or(0))
            .collect::<Vec<_>>()
    });
    files
}

/// The committed kernel-matrix reports: the oldest and the newest kernel
/// differ (buffer accounting, SYN retransmission timing; see README); a
/// report compared with itself differs nowhere.
#[test]
fn compare_shows_what_differs_and_exits_1() {
    let kernels = kernel_reports();
    let (a, b) = (&kernels[0], kernels.last().unwrap());
    let cases = teardown::report::load::read(Path::new(b))
        .unwrap()
        .cases
        .len();
    let same = teardown(&["compare", b, b]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert!(String::from_utf8_lossy(&same.stdout).contains(&format!("0 of {cases} cases differ")));

    let o = teardown(&["compare", "--format", "json", a, b]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kernel = |p: &str| {
        p.rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".json")
            .to_string()
    };
    assert_eq!(v["columns"][0]["kernel"], kernel(a));
    assert_eq!(v["columns"][1]["kernel"], kernel(b));
    let first = &v["cases"][0];
    let (id, field) = (
        first["id"].as_str().unwrap(),
        first["differences"][0]["field"].as_str().unwrap(),
    );

    // The table says the same: the hosts, and each differing case with its fields.
    let o = teardown(&["compare", a, b]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains(&format!("A: linux {} x86_64", kernel(a))),
        "{out}"
    );
    assert!(out.contains(id) && out.contains(field), "{out}");

    let o = teardown(&["compare", a]);
    assert_eq!(o.status.code(), Some(2), "one report is a usage error");

    // The committed baseline is an input too, told apart by its kind.
    let baseline = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/baseline/linux.json");
    let o = teardown(&["compare", "--format", "json", baseline.to_str().unwrap(), b]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["columns"][0]["started_at"]
            .as_str()
            .unwrap()
            .starts_with("baseline of")
    );
}

#[test]
fn explain_prints_a_ladder_or_says_what_to_run() {
    let host = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports/kernels"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("host-")
        })
        .unwrap();
    let o = teardown(&[
        "explain",
        "last-ack-lost/ipv4",
        "--report",
        host.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.contains("last-ack-lost/ipv4: The passive side"),
        "{out}"
    );
    assert!(out.contains("[LAST-ACK]"), "{out}");
    // Every segment is an arrow: delivered, or cut short with an X where
    // the fault rule dropped it (two ACKs here).
    let dropped = out.matches("X |").count() + out.matches("| X").count();
    assert_eq!(dropped, 2, "{out}");
    assert_eq!(
        out.matches("|<-").count() + out.matches("->|").count() + dropped,
        out.lines().filter(|l| l.contains(" seq=")).count()
    );
    assert!(
        out.contains("verdict: pass; FIN/RST client 1/0 server 3/0"),
        "{out}"
    );

    let o = teardown(&[
        "explain",
        "no-such-case",
        "--report",
        host.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("teardown run -f no-such-case"),
        "{}",
        stderr(&o)
    );
    let o = teardown(&["explain", "ipv4", "--report", host.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("name one"), "{}", stderr(&o));
}

/// Regression: an unwritable captures directory gave exit 3 after the whole
/// run, case by case. Outputs are checked before anything runs (exit 74),
/// and temporary files that a killed run left beside the report are removed.
#[test]
fn unwritable_outputs_stop_the_run_before_it_starts_with_exit_74() {
    let scratch = tempfile::Builder::new()
        .prefix("teardown-outputs-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    // PID 2^22 + 1 is above Linux's pid_max: a temp file no live process owns.
    let stale = dir.join(".r.json.4194305.0.tmp");
    std::fs::write(&stale, "{").unwrap();
    let not_a_dir = dir.join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let report = dir.join("r.json");
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/close-graceful.toml");
    let o = teardown(&[
        "run",
        scenario.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--captures",
        not_a_dir.join("captures").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(74), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "cannot write {}",
            not_a_dir.join("captures").display()
        )),
        "{}",
        stderr(&o)
    );
    assert!(!report.exists(), "no run, no report");
    assert!(!stale.exists(), "a dead run's temp file is removed");
}

/// Regression: `check` accepted a sysctl that exists only in the host's
/// initial namespace, which `run` then refused case by case. Looking it up
/// needs a namespace; without the privilege, check says it did not look.
#[test]
fn check_refuses_a_sysctl_no_namespace_has() {
    let p = temp_file(
        "orphans.toml",
        "title = \"t\"\nsteps = \"client close\"\n\n[sysctl]\n\"net.ipv4.tcp_fin_timeout\" = 2\n\"net.ipv4.tcp_max_orphans\" = 10\n",
    );
    let o = teardown(&["check", p.to_str().unwrap()]);
    // CAP_SYS_ADMIN (bit 21) makes namespaces.
    let privileged = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0);
    if privileged {
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("orphans.toml:6:1: sysctl.net.ipv4.tcp_max_orphans: this kernel has it only in the host's initial network namespace"),
            "{}",
            stderr(&o)
        );
    } else {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            out.contains("note: [sysctl] names were not checked"),
            "{out}"
        );
    }
}

/// Regression: running out of file descriptors was reported as "needs root
/// or CAP_NET_RAW". With a hard limit of 6 descriptors the cases fail, and
/// each says it was the descriptor limit, and what to do.
#[test]
fn running_out_of_descriptors_says_so() {
    let report = std::env::temp_dir().join(format!("teardown-emfile-{}.json", std::process::id()));
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/close-graceful.toml");
    // Without CAP_SYS_RESOURCE, so that the limit stays where it was set.
    let o = Command::new("setpriv")
        .args([
            "--bounding-set=-sys_resource",
            "--inh-caps=-sys_resource",
            "sh",
            "-c",
        ])
        .arg(r#"ulimit -n 6 && exec "$0" run --no-captures --report "$1" "$2""#)
        .arg(env!("CARGO_BIN_EXE_teardown"))
        .arg(&report)
        .arg(&scenario)
        .output()
        .unwrap();
    if o.status.code() == Some(77) {
        // Not root: the privilege check comes first, and says so.
        assert!(stderr(&o).contains("CAP_NET_ADMIN"), "{}", stderr(&o));
        return;
    }
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let r = teardown::report::load::read(&report).unwrap();
    let _ = std::fs::remove_file(&report);
    for c in &r.cases {
        let why = c.verdict.error.as_deref().unwrap_or_default();
        assert!(
            why.contains("ran out of file descriptors"),
            "{}: {why}",
            c.id
        );
        assert!(!why.contains("CAP_NET_RAW"), "{}: {why}", c.id);
    }
}

/// `analyze --format zeek` is conn.log: a #fields header, and every line
/// with as many tab-separated values as it names; jsonl is one object per
/// connection.
#[test]
fn analyze_writes_zeek_conn_log_and_json_lines() {
    let p =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/close-unread-data-ipv4.pcap");
    let o = teardown(&["analyze", "--format", "zeek", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let fields = text
        .lines()
        .find_map(|l| l.strip_prefix("#fields\t"))
        .expect("a #fields line")
        .split('\t')
        .count();
    let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert_eq!(rows[0].split('\t').count(), fields, "{text}");
    assert!(rows[0].contains("\tRSTR\t"), "{text}");
    assert!(text.ends_with("#close\n"), "{text}");

    let o = teardown(&["analyze", "--format", "jsonl", p.to_str().unwrap()]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["wire"]["conn_state"], "RSTR");
}

/// What `teardown ARGS` writes to a terminal: stdout and stderr on the
/// slave side of a fresh pseudo-terminal (80 columns), read from the master
/// until the child is gone.
fn on_a_terminal(args: &[&str], env: &[(&str, &str)]) -> String {
    use nix::pty::{Winsize, openpty};
    use std::io::Read;
    let size = Winsize {
        ws_row: 40,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = openpty(Some(&size), None).expect("a pseudo-terminal");
    // Not inherited by other tests' children, which would keep the
    // terminal open after this child is gone.
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_teardown"));
    cmd.args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("COLUMNS")
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null())
        .stdout(pty.slave.try_clone().unwrap())
        .stderr(pty.slave.try_clone().unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run teardown");
    // Only the child may hold the slave now (the Command keeps its copies).
    drop(cmd);
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // The master reads EIO once the child and every copy of the slave are
    // gone: that is the end of the output.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    child.wait().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Colour on a terminal, none when NO_COLOR is set, none in a pipe unless
/// asked for; and on a terminal the table fits its width.
#[test]
fn tables_are_coloured_on_a_terminal_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let linux = root.join("reports/kernels/6.1.0-50-amd64.json");
    let gvisor = root.join("reports/stacks/gvisor-20240729.0.json");
    let args = ["compare", linux.to_str().unwrap(), gvisor.to_str().unwrap()];
    let esc = '\u{1b}';

    let tty = on_a_terminal(&args, &[]);
    assert!(tty.contains(esc), "no colour on a terminal:\n{tty}");
    // Table rows (two spaces of indent) stay within the 80 columns.
    let plain_tty = on_a_terminal(&args, &[("NO_COLOR", "1")]);
    assert!(!plain_tty.contains(esc), "NO_COLOR=1 still coloured");
    let rows = plain_tty
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("  not observed"));
    for row in rows {
        assert!(row.trim_end().chars().count() <= 80, "too wide: {row}");
    }

    let piped = teardown(&args);
    assert_eq!(piped.status.code(), Some(1), "the stacks differ");
    assert!(!String::from_utf8_lossy(&piped.stdout).contains(esc));
    let mut forced = args.to_vec();
    forced.extend(["--color", "always"]);
    let forced = teardown(&forced);
    assert!(String::from_utf8_lossy(&forced.stdout).contains(esc));
    let never = on_a_terminal(&[&args[..], &["--color", "never"]].concat(), &[]);
    assert!(!never.contains(esc));
}

/// Every id `list` prints selects that case with `-f`.
#[test]
fn listed_ids_select_their_case() {
    let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let o = teardown(&["list", scenarios.to_str().unwrap(), "-f", "linger-zero"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let ids = listed_ids(&out);
    assert!(ids.len() >= 2, "{out}");
    for id in ids {
        let o = teardown(&["list", scenarios.to_str().unwrap(), "-f", id]);
        let again = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            again
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == Some(id)),
            "-f {id} does not select it:\n{again}"
        );
    }
}

#[test]
fn bench_options_need_the_bench_and_an_unknown_link_is_named() {
    let o = teardown(&["run", "--client-stack", "linux", "x.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--bench"), "{}", stderr(&o));
    let o = teardown(&["run", "--bench", "--stack", "gvisor", "x.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--client-stack"), "{}", stderr(&o));
    let p = temp_file(
        "bad-link.toml",
        "title = \"t\"\nsteps = \"client connect\"\n[[expect]]\nos = \"linux\"\nlink = \"wifi\"\nfacts = { \"wire.client.syn\" = 1 }\n",
    );
    let o = teardown(&["check", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        stderr(&o).contains("bad-link.toml:5:8: unknown link \"wifi\""),
        "{}",
        stderr(&o)
    );
}
