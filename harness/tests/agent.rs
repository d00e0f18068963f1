//! The agent protocol (root: every agent here runs in a namespace of its
//! own, never in the host's):
//!
//! - a line that is not a request, an unknown op, another protocol
//!   version, a call on a closed handle each get an `error` answer naming
//!   what was wrong, and the session goes on;
//! - input cut off in the middle of a line ends the session with an error
//!   that says so, never a hang;
//! - every line of a whole session (hello, requests, answers) is what the
//!   committed schema, `harness/schema/agent.schema.json`, says;
//! - an agent killed in the middle of a case makes that case `error`,
//!   saying how the agent ended, and the run goes on; no agent process is
//!   left behind;
//! - a remote host: an agent listening in another namespace, reached over a
//!   veth from the namespace teardown runs in, its test traffic through a
//!   bridge the bench's router joins, plays the client; what it will not
//!   do on a stack not its own (set sysctls) is `unsupported`, and its
//!   bridge holds no port of the bench afterwards.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::Value;
use teardown::runner::{self, RunOptions};
use teardown::stack::{HostStack, Stack};
use teardown::tcp::{PerSide, Side};
use teardown::verdict::Status;

/// `teardown agent`, started in a fresh network namespace.
fn agent_in_a_namespace() -> std::process::Child {
    std::thread::spawn(|| {
        let _ns = teardown::sandbox::enter_fresh_namespace().expect("root: a fresh namespace");
        Command::new(env!("CARGO_BIN_EXE_teardown"))
            .arg("agent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("teardown agent starts")
    })
    .join()
    .unwrap()
}

/// Sends each line and reads one answer per line (after the hello).
fn converse(lines: &[&str]) -> (Value, Vec<Value>) {
    let mut child = agent_in_a_namespace();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut read = || {
        let mut l = String::new();
        stdout.read_line(&mut l).unwrap();
        serde_json::from_str::<Value>(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"))
    };
    let hello = read();
    let mut answers = Vec::new();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
        answers.push(read());
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    (hello, answers)
}

/// A session with an agent, one request at a time.
struct Session {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    next_id: u64,
    /// Every line both ways, for the schema.
    lines: Vec<Value>,
}

impl Session {
    fn start() -> Session {
        let mut child = agent_in_a_namespace();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut s = Session {
            child,
            stdin,
            stdout,
            next_id: 1,
            lines: Vec::new(),
        };
        s.read();
        s
    }

    fn read(&mut self) -> Value {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        let v: Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
        self.lines.push(v.clone());
        v
    }

    /// Sends `op` (an object without `v` and `id`) and returns the answer.
    fn ask(&mut self, mut op: Value) -> Value {
        op["v"] = 1.into();
        op["id"] = self.next_id.into();
        self.next_id += 1;
        writeln!(self.stdin, "{op}").unwrap();
        self.lines.push(op.clone());
        let answer = self.read();
        assert_eq!(answer["id"], op["id"], "{answer}");
        answer
    }
}

#[test]
fn a_whole_session_moves_data_and_every_line_matches_the_committed_schema() {
    use serde_json::json;
    let mut s = Session::start();
    let listener = s.ask(json!({"op": "socket", "family": "ipv4"}))["handle"].clone();
    let a =
        s.ask(json!({"op": "listen", "handle": listener, "addr": "127.0.0.1:9000", "backlog": 8}));
    assert_eq!(a["result"]["ret"], 0, "{a}");
    let client = s.ask(json!({"op": "socket", "family": "ipv4"}))["handle"].clone();
    let a =
        s.ask(json!({"op": "connect", "handle": client, "to": "127.0.0.1:9000", "bound_ms": 2000}));
    assert_eq!(a["result"]["ret"], 0, "{a}");
    let port = a["result"]["value"]
        .as_u64()
        .expect("connect's value is the local port");
    let a = s.ask(json!({"op": "accept", "handle": listener}));
    let server = a["accepted"]["handle"].clone();
    assert_eq!(a["accepted"]["peer"], format!("127.0.0.1:{port}"), "{a}");
    let stream = |side: &str| json!({"conn": 1, "side": side});
    let write = json!({"call": "write", "payload": {"pattern": 1000}, "nosignal": true, "dontwait": false, "more": false});
    let a = s.ask(json!({"op": "call", "handle": client, "call": write, "stream": stream("client"), "bound_ms": 2000}));
    assert_eq!(a["data"]["result"]["bytes"], 1000, "{a}");
    assert_eq!(a["data"]["stream"]["written"], 1000, "{a}");
    let shut = json!({"call": "shutdown", "how": "write"});
    let a = s.ask(json!({"op": "call", "handle": client, "call": shut, "stream": stream("client"), "bound_ms": 2000}));
    assert_eq!(a["data"]["result"]["ret"], 0, "{a}");
    let read = json!({"call": "read", "amount": "until-eof", "dontwait": false, "peek": false});
    let a = s.ask(json!({"op": "call", "handle": server, "call": read, "stream": stream("server"), "bound_ms": 2000}));
    assert_eq!(
        a["data"]["stream"],
        json!({"written": 0, "read": 1000, "corrupted": 0}),
        "{a}"
    );
    let a = s.ask(json!({"op": "states", "family": "ipv4", "port": 9000}));
    let states: Vec<&str> = a["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    // The server read the client's FIN: CLOSE-WAIT (the client is in
    // FIN-WAIT-1 or -2, as the ACK of its FIN may be delayed).
    assert!(
        states.contains(&"LISTEN") && states.contains(&"CLOSE-WAIT"),
        "{a}"
    );
    assert_eq!(states.len(), 3, "{a}");
    for h in [&client, &server, &listener] {
        assert_eq!(
            s.ask(json!({"op": "close", "handle": h}))["result"]["ret"],
            0
        );
    }
    assert_eq!(s.ask(json!({"op": "bye"}))["bye"], true);
    assert!(s.child.wait().unwrap().success());

    let schema: Value = serde_json::from_str(include_str!("../schema/agent.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for line in &s.lines {
        let errors: Vec<String> = validator.iter_errors(line).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{line}: {errors:#?}");
    }
    // and the schema says no to what is not a line of the protocol
    for wrong in [
        json!({"hello": {"protocol": "one", "agent": "x", "os": "linux", "stack": "linux", "states": "sock-diag"}}),
        json!({"v": 1, "id": 1, "op": "socket", "family": "ipx"}),
        json!({"id": 1, "handle": -1}),
    ] {
        assert!(!validator.is_valid(&wrong), "{wrong}");
    }
}

#[test]
fn bad_requests_get_an_error_naming_what_was_wrong_and_the_session_goes_on() {
    let (hello, a) = converse(&[
        "this is not json",
        r#"{"v":1,"id":2,"op":"frobnicate"}"#,
        r#"{"v":9,"id":3,"op":"socket","family":"ipv4"}"#,
        r#"{"id":4,"op":"socket","family":"ipv4"}"#,
        r#"{"v":1,"id":5,"op":"socket","family":"ipv4"}"#,
    ]);
    assert_eq!(hello["hello"]["protocol"], 1);
    assert_eq!(hello["hello"]["stack"], "linux");
    assert!(a[0]["id"].is_null(), "{}", a[0]);
    assert!(
        a[0]["error"].as_str().unwrap().contains("not a request"),
        "{}",
        a[0]
    );
    assert_eq!(a[1]["id"], 2);
    assert!(
        a[1]["error"]
            .as_str()
            .unwrap()
            .contains("unknown variant `frobnicate`"),
        "{}",
        a[1]
    );
    assert!(
        a[2]["error"]
            .as_str()
            .unwrap()
            .contains("protocol version 9"),
        "{}",
        a[2]
    );
    assert!(
        a[3]["error"]
            .as_str()
            .unwrap()
            .contains("no protocol version"),
        "{}",
        a[3]
    );
    // After all that, a good request is answered.
    assert!(a[4]["handle"].is_u64(), "{}", a[4]);
}

#[test]
fn a_call_on_a_closed_handle_is_refused() {
    let (_, a) = converse(&[r#"{"v":1,"id":1,"op":"socket","family":"ipv6"}"#]);
    let h = a[0]["handle"].as_u64().unwrap();
    let (_, a) = converse(&[
        r#"{"v":1,"id":1,"op":"socket","family":"ipv6"}"#,
        &format!(r#"{{"v":1,"id":2,"op":"close","handle":{h}}}"#),
        &format!(
            r#"{{"v":1,"id":3,"op":"call","handle":{h},"call":{{"call":"shutdown","how":"write"}},"stream":{{"conn":1,"side":"client"}},"bound_ms":100}}"#
        ),
        &format!(r#"{{"v":1,"id":4,"op":"local-addr","handle":{h}}}"#),
    ]);
    assert_eq!(
        a[0]["handle"].as_u64(),
        Some(h),
        "descriptors are reused in order"
    );
    assert_eq!(a[1]["result"]["ret"], 0, "{}", a[1]);
    for answer in &a[2..] {
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .contains(&format!("no open socket has handle {h}")),
            "{answer}"
        );
    }
}

#[test]
fn input_cut_off_in_a_line_ends_the_session_with_an_error() {
    let mut child = agent_in_a_namespace();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(br#"{"v":1,"id":1,"op":"soc"#).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ended in the middle of a line"), "{err}");
}

/// Bench-host agent processes that are children of this process.
fn my_agents() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        // A bench host's agent (`agent --own-stack`), not a listening one
        // another test started.
        if ppid == Some(me.as_str())
            && args.get(1) == Some(&&b"agent"[..])
            && args.get(2) == Some(&&b"--own-stack"[..])
        {
            found.push(pid);
        }
    }
    found
}

/// Whether process `pid` holds a TCP socket: an agent that has made a
/// case's socket. (The report's probe bench starts agents only to read
/// their hello; they hold other sockets, never a TCP one.)
fn holds_a_tcp_socket(pid: i32) -> bool {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    ["tcp", "tcp6"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            // sl local remote st tx:rx tr:when retrnsmt uid timeout inode
            .filter_map(|l| l.split_whitespace().nth(9))
            .any(|inode| inodes.iter().any(|i| i == inode))
    })
}

#[test]
fn an_agent_killed_mid_case_makes_the_case_an_error_and_the_run_goes_on() {
    let scratch = tempfile::Builder::new()
        .prefix("teardown-agent-kill-")
        .tempdir()
        .unwrap();
    let dir = scratch.path().to_path_buf();
    let file = dir.join("slow.toml");
    std::fs::write(
        &file,
        r#"title = "A case long enough to lose its agent in"
steps = '''
client write 100
server read 100
sleep 1500ms
client close
server read until-eof
'''
[[expect]]
os = "linux"
why = "nothing is lost"
facts = { "data.client_to_server.lost" = 0 }
"#,
    )
    .unwrap();
    let cases = teardown::catalogue::load(std::slice::from_ref(&file)).unwrap();
    assert_eq!(cases.len(), 2, "ipv4 and ipv6");
    let opts = RunOptions {
        captures_dir: None,
        run_id: "agent-kill".into(),
        jobs: 1,
        stack: Stack::detect(),
        expected_ms: Default::default(),
        bench: true,
        hosts: PerSide::new(HostStack::LinuxAgent, HostStack::Linux),
    };
    let killer = std::thread::spawn(|| {
        // The first case's agent, once it has made the case's socket:
        // killed while the case sleeps.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(pid) = my_agents().into_iter().find(|p| holds_a_tcp_socket(*p)) {
                std::thread::sleep(Duration::from_millis(300));
                // SAFETY: a plain kill(2) of our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    });
    let report = runner::run_all(&cases, &opts, &AtomicBool::new(false), &|_| {});
    assert!(killer.join().unwrap(), "no agent was seen to kill");
    let first = &report.cases[0];
    assert_eq!(first.verdict.status, Status::Error, "{:#?}", first.verdict);
    let why = format!("{:?}", first.verdict.error);
    assert!(why.contains("the client host's agent ended"), "{why}");
    assert!(why.contains("signal: 9"), "{why}");
    // The run went on: the next case had an agent of its own.
    let second = &report.cases[1];
    assert_eq!(second.verdict.status, Status::Pass, "{:#?}", second.verdict);
    assert!(
        my_agents().is_empty(),
        "agents left running: {:?}",
        my_agents()
    );
}

/// Two named namespaces for the remote-host test, made with `ip` and
/// removed when dropped, whatever happened: `home` (where teardown runs,
/// standing for the user's machine) and `remote` (the remote machine: its
/// agent, and the bridge its bench traffic crosses).
struct Lab {
    home: String,
    remote: String,
    agent: Option<std::process::Child>,
}

impl Lab {
    fn ip(args: &[&str]) {
        let out = Command::new("ip")
            .args(args)
            .output()
            .expect("ip (iproute2)");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Two namespaces: the home one, where teardown runs, and the remote
    /// machine, with its bench address on a bridge for the `side` it plays
    /// and its route to the other side's network through the router.
    fn new(side: Side) -> Lab {
        // Tests run at once in one process: each lab has names of its own.
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let lab = Lab {
            home: format!("tdt-home-{pid}-{n}"),
            remote: format!("tdt-remote-{pid}-{n}"),
            agent: None,
        };
        let (h, r) = (lab.home.as_str(), lab.remote.as_str());
        for n in [h, r] {
            Lab::ip(&["netns", "add", n]);
            Lab::ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        // The management link, over which teardown reaches the agent.
        Lab::ip(&[
            "-n", h, "link", "add", "name", "m0", "type", "veth", "peer", "name", "m1", "netns", r,
        ]);
        Lab::ip(&["-n", h, "addr", "add", "198.18.255.1/30", "dev", "m0"]);
        Lab::ip(&["-n", h, "link", "set", "m0", "up"]);
        Lab::ip(&["-n", r, "addr", "add", "198.18.255.2/30", "dev", "m1"]);
        Lab::ip(&["-n", r, "link", "set", "m1", "up"]);
        // The remote machine's bench address, on the bridge the router joins.
        let (net, other) = match side {
            Side::Client => (("198.18.0", "2001:2:0:1"), ("198.19.0", "2001:2:0:2")),
            Side::Server => (("198.19.0", "2001:2:0:2"), ("198.18.0", "2001:2:0:1")),
        };
        Lab::ip(&["-n", r, "link", "add", "name", "br0", "type", "bridge"]);
        Lab::ip(&["-n", r, "link", "set", "br0", "up"]);
        Lab::ip(&[
            "-n",
            r,
            "addr",
            "add",
            &format!("{}.2/24", net.0),
            "dev",
            "br0",
        ]);
        let v6 = format!("{}::2/64", net.1);
        Lab::ip(&["-n", r, "-6", "addr", "add", &v6, "dev", "br0", "nodad"]);
        let (to, via) = (format!("{}.0/24", other.0), format!("{}.1", net.0));
        Lab::ip(&[
            "-n", r, "route", "add", &to, "via", &via, "dev", "br0", "onlink",
        ]);
        let (to, via) = (format!("{}::/64", other.1), format!("{}::1", net.1));
        Lab::ip(&[
            "-n", r, "-6", "route", "add", &to, "via", &via, "dev", "br0", "onlink",
        ]);
        lab
    }

    /// Starts `teardown agent --listen` in the remote namespace and waits,
    /// bounded, for it to say it listens.
    fn start_agent(&mut self) {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.remote,
                env!("CARGO_BIN_EXE_teardown"),
            ])
            .args(["agent", "--listen", "198.18.255.2:7070"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        self.agent = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the agent says it listens");
        assert!(line.contains("listening on 198.18.255.2:7070"), "{line}");
    }

    /// Runs `scenarios` on a bench whose `side` is the lab's remote
    /// machine, one case at a time, and reads the report.
    fn run(&self, side: Side, scenarios: &[&str]) -> teardown::report::Report {
        let scratch = tempfile::Builder::new()
            .prefix("teardown-remote-")
            .tempdir()
            .unwrap();
        let report = scratch.path().join("remote.json");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.home, env!("CARGO_BIN_EXE_teardown")])
            .args(["run", "--bench"])
            .arg(format!("--{side}-stack"))
            .arg("remote=198.18.255.2:7070")
            .arg(format!("--{side}-link"))
            .arg(format!("{}/br0", self.remote))
            .args(["--quiet", "--no-captures", "--report"])
            .arg(&report)
            .args(scenarios.iter().map(|s| dir.join(format!("{s}.toml"))))
            .output()
            .unwrap();
        teardown::report::load::read(&report).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The links of the remote namespace whose name a bench would give.
    fn bench_ports(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.remote, "-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .filter(|name| name.starts_with("td"))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        for n in [&self.home, &self.remote] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[test]
fn a_remote_agent_plays_the_client_over_a_bridge() {
    let mut lab = Lab::new(Side::Client);
    lab.start_agent();
    let r = lab.run(
        Side::Client,
        &[
            "close-graceful",
            "linger-zero",
            "half-close-thank-you",
            "fin-wait-2-orphan-timeout",
        ],
    );
    let bench = r.host.bench.as_ref().expect("the report names the bench");
    assert!(
        bench
            .client
            .agent
            .as_deref()
            .is_some_and(|a| a.starts_with("teardown "))
    );
    assert_eq!(bench.client.name, "linux");
    for c in &r.cases {
        let id = c.id.as_str();
        if id.starts_with("fin-wait-2-orphan-timeout/") {
            // tcp_fin_timeout is the client's: an agent on a stack not its
            // own does not change its machine's settings.
            assert_eq!(c.verdict.status, Status::Unsupported, "{id}");
            assert!(
                c.verdict.unsupported[0].contains("not its own"),
                "{:?}",
                c.verdict.unsupported
            );
        } else {
            assert_eq!(c.verdict.status, Status::Pass, "{id}: {:?}", c.verdict);
            assert!(
                c.outcome.unobserved.contains_key("netstat"),
                "{id}: counters are the machine's"
            );
        }
    }
    assert!(lab.bench_ports().is_empty(), "{:?}", lab.bench_ports());
}

/// A remote machine as the server, over both families, case after case:
/// the router finds it by neighbour discovery (IPv6 needs a link-local
/// source for that), and each case listens on a port of its own, since the
/// case before leaves its TIME-WAIT on the same machine
/// (half-close-thank-you's server closes first).
#[test]
fn a_remote_agent_plays_the_server_case_after_case() {
    let mut lab = Lab::new(Side::Server);
    lab.start_agent();
    let r = lab.run(
        Side::Server,
        &["half-close-thank-you", "close-graceful", "linger-zero"],
    );
    assert_eq!(r.cases.len(), 6);
    let bench = r.host.bench.as_ref().expect("the report names the bench");
    assert!(bench.server.agent.is_some(), "{:?}", bench.server);
    for c in &r.cases {
        assert_eq!(c.verdict.status, Status::Pass, "{}: {:?}", c.id, c.verdict);
    }
    assert!(lab.bench_ports().is_empty(), "{:?}", lab.bench_ports());
}
