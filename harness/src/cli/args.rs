//! The command line as clap sees it: arguments only, no behaviour.

use std::path::PathBuf;

use crate::stack::HostStack;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "teardown",
    version,
    about = "Shows, by experiment, what a TCP stack does when a connection ends"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Colour in tables: auto (on a terminal, unless NO_COLOR is set),
    /// always, never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub color: crate::sinks::terminal::ColorChoice,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run scenarios: one namespace, capture and report entry per case.
    Run(RunArgs),
    /// Run the probes (scenarios/probes: HTTP/1.1 clients that end
    /// connections in the ways that lose responses) against your server:
    /// started fresh for each case in the case's namespace, with the
    /// harness on the client end.
    Probe(ProbeArgs),
    /// Compare reports (other stacks, kernels, harness versions) case by
    /// case; exits 1 when anything differs.
    Compare {
        /// Two or more report files; columns A, B, ... in this order.
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: CompareFormat,
        /// Durations that differ by at most this count as equal.
        #[arg(long, default_value_t = 100.0, value_name = "MS")]
        tolerance_ms: f64,
        /// Also compare the facts that measure the machine as much as the
        /// stack: byte counts of buffer fills, FIN transmissions, timers.
        #[arg(long)]
        measurements: bool,
    },
    /// Write one self-contained HTML page for one or more reports: overview
    /// matrix, claims C1-C13, a ladder diagram per case.
    Render {
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where to write the page.
        #[arg(long, short = 'o', default_value = "reports/teardown.html")]
        out: PathBuf,
    },
    /// Print a case's ladder diagram (segments, calls, states) as text; with
    /// --pcap, one connection of any capture.
    Explain {
        /// A case id (`linger-zero/ipv4`), or text that names a few cases;
        /// with --pcap, a connection's number (`12`) or ends
        /// (`127.0.0.1:40000 127.0.0.1:9000`), as `analyze` lists them.
        case: String,
        /// The report to read [default: the newest reports/*.json with the case].
        #[arg(long, conflicts_with = "pcap")]
        report: Option<PathBuf>,
        /// A capture file (pcap or pcapng) to take the connection from.
        #[arg(long)]
        pcap: Option<PathBuf>,
    },
    /// Record or check a baseline: the behaviour CI expects on this stack.
    Baseline {
        #[command(subcommand)]
        action: BaselineAction,
    },
    /// List the cases the scenarios expand to.
    List {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        select: Select,
        /// table, or json (one object per case: id, scenario, title, params).
        #[arg(long, value_enum, default_value = "table")]
        format: RunFormat,
    },
    /// Check scenario files without running them, and say which cases the
    /// stack cannot run (no privileges needed; with them, every [sysctl]
    /// name is also looked up in a fresh namespace of the stack).
    Check {
        #[arg(default_value = "scenarios")]
        paths: Vec<PathBuf>,
        /// The stack to check for: auto (this one), linux, or gvisor (runs
        /// the check inside a gVisor sandbox).
        #[arg(long, value_enum, default_value = "auto")]
        stack: StackArg,
        /// Check for the bench instead: builds one, starts each host's
        /// stack and asks it what it can observe and which sysctls it has.
        #[command(flatten)]
        bench: BenchArgs,
    },
    /// List every fact an expectation can name, with what it means.
    Facts,
    /// Every connection of a capture (pcap or pcapng, gzip-compressed or
    /// not): its wire facts, Zeek conn_state and history, and a diagnosis
    /// of how it ended from the catalogue's observed signatures.
    #[command(after_long_help = crate::wire::ANALYZE_READS)]
    Analyze(AnalyzeArgs),
    /// Derive the diagnosis signatures (reports/signatures.json) from
    /// observed reports and baselines, and the scenarios' titles and whys.
    Signatures {
        /// Reports or baselines, e.g. reports/baseline/linux.json
        /// reports/stacks/gvisor-*.json.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The scenarios the cases came from.
        #[arg(long, default_value = "scenarios")]
        scenarios: PathBuf,
        /// Where to write the signatures.
        #[arg(long, short = 'o', default_value = "reports/signatures.json")]
        out: PathBuf,
    },
    /// Print the JSON Schema of the report (or, with --agent, of the agent
    /// protocol).
    Schema {
        /// The agent protocol's lines instead of the report.
        #[arg(long)]
        agent: bool,
    },
    /// Be an agent: make the socket calls a harness sends, on this machine's
    /// stack (protocol version 1, JSON Lines on stdin and stdout; see
    /// `teardown schema --agent`).
    #[command(group = clap::ArgGroup::new("userspace").args(["smoltcp", "lwip"]))]
    Agent {
        /// Serve harnesses over TCP at this address instead (one session
        /// per control connection), e.g. 198.18.0.2:7070.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<std::net::SocketAddr>,
        /// The network stack this agent runs on was made for it alone (a
        /// namespace or sandbox a harness started it in): let it set
        /// sysctls, and count its TCP counters as the session's. Never on a
        /// machine's own stack.
        #[arg(long)]
        own_stack: bool,
        /// Run smoltcp, a userspace TCP/IP stack, on this interface (a raw
        /// packet socket) instead of the OS's stack. The OS must not hold
        /// the addresses given to smoltcp (see README, "smoltcp").
        #[arg(long, value_name = "INTERFACE", requires = "address")]
        smoltcp: Option<String>,
        /// Run lwIP, a userspace TCP/IP stack (Debian's liblwip), on this
        /// interface (a raw packet socket) instead of the OS's stack. The
        /// OS must not hold the addresses given to lwIP (see README,
        /// "lwIP").
        #[arg(long, value_name = "INTERFACE", requires = "address")]
        lwip: Option<String>,
        /// The userspace stack's address on the interface, ADDR/PREFIX
        /// (once per family), e.g. 198.18.0.2/24.
        #[arg(long, value_name = "ADDR/PREFIX", requires = "userspace", value_parser = parse_cidr)]
        address: Vec<(std::net::IpAddr, u8)>,
        /// The userspace stack's default route, once per family, e.g.
        /// 198.18.0.1.
        #[arg(long, value_name = "ADDR", requires = "userspace")]
        gateway: Vec<std::net::IpAddr>,
    },
    /// Print a shell completion script (e.g. `teardown completions bash >
    /// /etc/bash_completion.d/teardown`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `teardown man | man -l -`.
    Man,
    /// Process 1 of a program's PID namespace (started by the harness for
    /// a `[program.*]` table, never by hand).
    #[command(hide = true)]
    Supervise {
        /// What to run, as JSON.
        spec: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// The capture file.
    pub pcap: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: AnalyzeFormat,
    /// Only connections with this port at either end.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only connections with this address at either end.
    #[arg(long)]
    pub host: Option<std::net::IpAddr>,
    /// Only connections in this Zeek conn_state (SF, RSTO, RSTR, S0, ...).
    #[arg(long)]
    pub state: Option<String>,
    /// Only connections with this diagnosis (a scenario name, `unknown`, `open`).
    #[arg(long)]
    pub diagnosis: Option<String>,
    /// Connections the table lists one by one (its summary counts them all).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// End connections by Zeek's default timeouts (an unanswered attempt
    /// after 5 s, a closed or reset one 5 s after the segment that
    /// completed its close, any after 5 min idle), and time them as Zeek
    /// does (a duration ends when both sides have closed), so the
    /// connections line up with Zeek's conn.log.
    #[arg(long)]
    pub zeek_timeouts: bool,
}

/// How `analyze` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnalyzeFormat {
    /// Counts by conn_state and by diagnosis, then the first connections.
    Table,
    /// One document: file statistics, summary, every connection.
    Json,
    /// One JSON object per connection, as each ends (streams).
    Jsonl,
    /// Zeek conn.log (TSV, with a teardown_diagnosis column).
    Zeek,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Scenario files or directories [default: scenarios]. Naming some,
    /// like -f and -p, narrows a --baseline check to what ran.
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub select: Select,
    /// Where to write the JSON report [default: reports/<run-id>.json]; `-`
    /// prints it on stdout instead (the table then goes to stderr).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// table, or json: the report on stdout (as well as in its file), the
    /// table on stderr, so `teardown run --format json | jq` works.
    #[arg(long, value_enum, default_value = "table")]
    pub format: RunFormat,
    /// Directory for pcaps; each run writes to <DIR>/<run-id>/.
    #[arg(long, default_value = "captures")]
    pub captures: PathBuf,
    /// Do not write pcap files.
    #[arg(long)]
    pub no_captures: bool,
    /// Cases to run at once [default: 16 x CPUs; 2 x CPUs with a gVisor
    /// host; 1 with a remote host]. Cases mostly wait (on protocol timers
    /// and on the kernel's RCU grace periods when a capture ring is set
    /// up), so more cases than cores is efficient; a gVisor sandbox
    /// computes instead.
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Also write the results as JUnit XML, for CI systems.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// After the run, compare it with this baseline; drift exits 5.
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// Print only the final table.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The stack to run on: auto (detect), linux, or gvisor (runs this
    /// command again inside a gVisor sandbox).
    #[arg(long, value_enum, default_value = "auto")]
    pub stack: StackArg,
    /// Capture backend instead of the stack's own: libpcap or raw-socket.
    #[arg(long, value_name = "BACKEND")]
    pub capture: Option<String>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// Your server, as a shell command line: run by `sh -c` with $ADDRESS
    /// and $PORT set, e.g. 'exec nginx -c /etc/my.conf -g "daemon off;"'.
    /// It must stay in the foreground.
    #[arg(long, value_name = "CMD")]
    pub server_command: String,
    /// The port your server listens on (any address).
    #[arg(long, default_value_t = crate::scenario::SERVER_PORT)]
    pub port: u16,
    /// How long it may take to listen, e.g. 30s.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ready_within: std::time::Duration,
    /// Everything `teardown run` takes; the scenarios default to
    /// scenarios/probes.
    #[command(flatten)]
    pub run: RunArgs,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::scenario::steps::parse_duration(s)
        .filter(|d| !d.is_zero() && *d <= crate::scenario::limits::MAX_STEP_WAIT)
        .ok_or_else(|| {
            format!("expected a duration such as 500ms or 30s (at most 600s), found {s:?}")
        })
}

/// Where the two sides of each case run.
#[derive(clap::Args, Debug, Default)]
pub struct BenchArgs {
    /// Run each case on the bench: the client and the server on two hosts
    /// joined by a router, which holds the capture and the fault rules
    /// (198.18.0.0/15 and 2001:2::/48, MTU 1500, offloads off). Without it,
    /// both sides share one namespace's loopback.
    #[arg(long)]
    pub bench: bool,
    /// The client host's stack on the bench: linux (a namespace of this
    /// kernel, driven by the harness), linux-agent (the same, driven by a
    /// `teardown agent` in it), gvisor (gVisor's netstack on the host's
    /// link, `runsc` with an agent inside; `just runsc` fetches it),
    /// smoltcp or lwip (a userspace stack in an agent's process on the
    /// host's link), or remote=ADDR:PORT (an agent already listening
    /// there: see the README).
    #[arg(
        long,
        requires = "bench",
        default_value = "linux",
        value_name = "STACK"
    )]
    pub client_stack: HostStack,
    /// The server host's stack on the bench (as --client-stack).
    #[arg(
        long,
        requires = "bench",
        default_value = "linux",
        value_name = "STACK"
    )]
    pub server_stack: HostStack,
    /// For a remote client host: the bridge, in a named network namespace,
    /// that its test traffic crosses (its NIC or a VM's tap is a port of
    /// it), e.g. lab/br0. Cases then run one at a time.
    #[arg(long, requires = "bench", value_name = "NETNS/BRIDGE")]
    pub client_link: Option<crate::sandbox::Bridge>,
    /// For a remote server host: as --client-link.
    #[arg(long, requires = "bench", value_name = "NETNS/BRIDGE")]
    pub server_link: Option<crate::sandbox::Bridge>,
}

impl BenchArgs {
    /// Each host's stack, for a run on the bench; a remote one with its
    /// bridge.
    pub fn hosts(&self) -> crate::tcp::PerSide<HostStack> {
        let with_link = |stack: &HostStack, link: &Option<crate::sandbox::Bridge>| match stack {
            HostStack::Remote(r) => HostStack::Remote(crate::stack::RemoteHost {
                control: r.control,
                bridge: link.clone(),
            }),
            other => other.clone(),
        };
        crate::tcp::PerSide::new(
            with_link(&self.client_stack, &self.client_link),
            with_link(&self.server_stack, &self.server_link),
        )
    }
}

/// How `run` and `list` print.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunFormat {
    Table,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum StackArg {
    Auto,
    Linux,
    Gvisor,
}

impl From<StackArg> for crate::stack::Choice {
    fn from(a: StackArg) -> Self {
        match a {
            StackArg::Auto => crate::stack::Choice::Auto,
            StackArg::Linux => crate::stack::Choice::Linux,
            StackArg::Gvisor => crate::stack::Choice::Gvisor,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum CompareFormat {
    Table,
    Markdown,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum BaselineAction {
    /// Record a baseline from one or more reports of the same cases; facts
    /// that differ between them are marked `varies` and not checked.
    Record {
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Where to write it.
        #[arg(long, short = 'o', default_value = "reports/baseline/linux.json")]
        out: PathBuf,
    },
    /// Compare a report with a baseline; prints a per-case, per-field diff
    /// and exits 5 when anything drifted.
    Check { baseline: PathBuf, report: PathBuf },
}

#[derive(clap::Args, Debug)]
pub struct Select {
    /// Only cases whose id contains this text, e.g. `linger` or
    /// `linger-zero/ipv6` (repeatable: any may match).
    #[arg(long, short = 'f')]
    pub filter: Vec<String>,
    /// Only cases with this parameter value, e.g. `family=ipv6` or
    /// `linger2=-1` (repeatable: all must match).
    #[arg(long, short = 'p', value_name = "NAME=VALUE", value_parser = param_filter)]
    pub param: Vec<(String, String)>,
}

fn param_filter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, e.g. family=ipv6, found {s:?}"))
}

impl Select {
    pub(crate) fn selection(&self) -> crate::catalogue::Selection {
        crate::catalogue::Selection {
            filters: self.filter.clone(),
            params: self.param.clone(),
        }
    }
}

/// `ADDR/PREFIX`, the prefix within the address's length.
fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected ADDR/PREFIX, e.g. 198.18.0.2/24"))?;
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => Ok((addr, p)),
        _ => Err(format!("{prefix:?}: a prefix length from 0 to {max}")),
    }
}
