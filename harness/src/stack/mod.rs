//! The TCP/IP stack a run observes, and what it lets the harness see.
//!
//! Each capability the harness needs from a stack sits behind one seam with
//! a backend per stack:
//!
//! | capability | Linux | gVisor (netstack) |
//! |---|---|---|
//! | capture | libpcap (or a raw packet socket) | raw packet socket, `recvfrom` |
//! | socket states | sock_diag: every socket, timers | TCP_INFO on held descriptors |
//! | faults | nftables in the case namespace | none |
//! | sysctls | per namespace, as the kernel has them | the few netstack has |
//!
//! A stack declares its backends here; what a backend cannot observe is
//! null with a reason in the report (`Outcome::unobserved`), and a case
//! that needs a missing capability is `unsupported` (see [`requirements`]).
//! A FreeBSD, macOS or Windows port adds a [`Stack`] and the backends it
//! has: none of them has sock_diag or network namespaces, all have some
//! form of TCP_INFO.

pub mod gvisor;
#[cfg(windows)]
pub mod wine;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::capture::CaptureBackend;
use crate::observe::StateSource;
use crate::scenario::{Call, Case, Control, StepKind, WaitFor};
use crate::tcp::{PerSide, Side};

/// How fault rules are put in place, if at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FaultBackend {
    /// nftables rules in the case's namespace (the `nft` tool).
    Nftables,
    /// The stack has no packet filter the harness can drive.
    None,
}

impl FaultBackend {
    pub fn name(self) -> &'static str {
        match self {
            FaultBackend::Nftables => "nftables",
            FaultBackend::None => "none",
        }
    }
}

/// Where the stack keeps its TCP and interface counters (/proc/net/netstat,
/// /proc/net/snmp, /proc/net/dev).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CounterScope {
    /// Per network namespace: a case's growth is its own.
    Namespace,
    /// One set for every namespace of the stack: a case's growth is its own
    /// only while no other case runs (`-j 1`).
    Stack,
}

impl CounterScope {
    pub fn name(self) -> &'static str {
        match self {
            CounterScope::Namespace => "namespace",
            CounterScope::Stack => "stack",
        }
    }
}

/// A TCP/IP stack and the backends the harness observes it with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stack {
    /// What expectations call it: `os = "linux"`, `os = "gvisor"`.
    pub name: &'static str,
    /// The stack's own version where known (gVisor: the runsc release).
    pub version: Option<String>,
    /// How the stack was identified.
    pub detected_by: String,
    pub capture: CaptureBackend,
    pub states: StateSource,
    pub faults: FaultBackend,
    pub counters: CounterScope,
    /// Whether a new namespace's `lo` is down and must be brought up.
    pub lo_starts_down: bool,
}

impl Stack {
    /// The Linux kernel's own stack.
    pub fn linux(detected_by: impl Into<String>) -> Stack {
        Stack {
            name: "linux",
            version: None,
            detected_by: detected_by.into(),
            capture: CaptureBackend::Libpcap,
            states: StateSource::SockDiag,
            faults: FaultBackend::Nftables,
            counters: CounterScope::Namespace,
            lo_starts_down: true,
        }
    }

    /// gVisor's netstack, seen from inside the sandbox: no mmap'd packet
    /// ring (so no libpcap live capture), no sock_diag, no netfilter; lo is
    /// up in a new namespace and cannot be set up by ioctl. Its counters
    /// add up every namespace's: two cases at once count each other's
    /// segments (seen here: 402 EstabResets in a case of 100 connections).
    pub fn gvisor(detected_by: impl Into<String>) -> Stack {
        Stack::without_netfilter(
            "gvisor",
            std::env::var("TEARDOWN_STACK_VERSION").ok(),
            detected_by.into(),
        )
    }

    /// Whether this process runs on gVisor.
    pub(crate) fn inside_gvisor() -> bool {
        gvisor_marker().is_some()
    }

    /// Another OS's own stack, where an agent runs (`freebsd`, `macos`,
    /// `windows`): states through TCP_INFO (or the OS's equivalent) on the
    /// descriptors it holds; the harness's instruments are the bench's.
    pub(crate) fn native(detected_by: impl Into<String>) -> Stack {
        Stack::without_netfilter(std::env::consts::OS, None, detected_by.into())
    }

    /// A stack the harness reaches only through sockets: a raw-socket
    /// capture, states through TCP_INFO on descriptors, no packet filter,
    /// counters for the whole stack.
    fn without_netfilter(
        name: &'static str,
        version: Option<String>,
        detected_by: String,
    ) -> Stack {
        Stack {
            name,
            version,
            detected_by,
            capture: CaptureBackend::RawSocket,
            // Windows's descriptors give no state yet; its TCP table does.
            states: if cfg!(windows) {
                StateSource::TcpTable
            } else {
                StateSource::TcpInfo
            },
            faults: FaultBackend::None,
            counters: CounterScope::Stack,
            lo_starts_down: false,
        }
    }

    /// Identifies the stack this process runs on.
    pub fn detect() -> Stack {
        #[cfg(windows)]
        if let Some(v) = wine::version() {
            let by = format!("ntdll exports wine_get_version ({v})");
            return Stack::without_netfilter("wine", Some(v), by);
        }
        if !cfg!(target_os = "linux") {
            return Stack::native(format!("built for {}", std::env::consts::OS));
        }
        match gvisor_marker() {
            Some(m) => Stack::gvisor(format!("kernel log: {m:?}")),
            None => Stack::linux(format!(
                "{} kernel, no gVisor marker in the kernel log",
                std::env::consts::OS
            )),
        }
    }

    /// The stack as the report records it.
    pub fn info(&self) -> StackInfo {
        StackInfo {
            name: self.name.to_string(),
            version: self.version.clone(),
            detected_by: self.detected_by.clone(),
            capture: self.capture.name().to_string(),
            states: self.states.name().to_string(),
            faults: self.faults.name().to_string(),
            counters: self.counters.name().to_string(),
            agent: None,
        }
    }
}

/// What a bench host runs, and how the harness reaches it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum HostStack {
    /// This kernel in the host's namespace; the harness makes its calls.
    #[default]
    Linux,
    /// This kernel in the host's namespace; a `teardown agent` started
    /// there makes its calls (the agent protocol end to end).
    LinuxAgent,
    /// gVisor's netstack on the host's link: `runsc` in the host's
    /// namespace with a `teardown agent` inside (see [`gvisor`]).
    Gvisor,
    /// smoltcp, a userspace stack, on the host's link: a `teardown agent
    /// --smoltcp eth0` in the host's namespace, which has given up the
    /// link's addresses to it.
    Smoltcp,
    /// lwIP, a userspace stack, on the host's link, as smoltcp is: a
    /// `teardown agent --lwip eth0`.
    Lwip,
    /// A stack the harness does not start: an agent already listening at
    /// a control address (`teardown agent --listen`) on a machine the bench
    /// reaches through a bridge.
    Remote(RemoteHost),
}

/// A remote bench host: where its agent listens, reached from the network
/// the harness was started in, and the bridge its test traffic crosses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteHost {
    pub control: std::net::SocketAddr,
    /// Required to run; given separately (`--client-link`).
    pub bridge: Option<crate::sandbox::Bridge>,
}

impl HostStack {
    /// Whether the host's calls go through an agent.
    pub fn is_agent(&self) -> bool {
        !matches!(self, HostStack::Linux)
    }
}

impl std::fmt::Display for HostStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostStack::Linux => f.write_str("linux"),
            HostStack::LinuxAgent => f.write_str("linux-agent"),
            HostStack::Gvisor => f.write_str("gvisor"),
            HostStack::Smoltcp => f.write_str("smoltcp"),
            HostStack::Lwip => f.write_str("lwip"),
            HostStack::Remote(r) => write!(f, "remote={}", r.control),
        }
    }
}

impl std::str::FromStr for HostStack {
    type Err = String;

    fn from_str(s: &str) -> Result<HostStack, String> {
        match s {
            "linux" => Ok(HostStack::Linux),
            "linux-agent" => Ok(HostStack::LinuxAgent),
            "gvisor" => Ok(HostStack::Gvisor),
            "smoltcp" => Ok(HostStack::Smoltcp),
            "lwip" => Ok(HostStack::Lwip),
            _ => match s.strip_prefix("remote=") {
                Some(addr) => addr.parse().map(|control| HostStack::Remote(RemoteHost {
                    control,
                    bridge: None,
                })).map_err(|_| {
                    format!("remote={addr}: expected the agent's control address, ADDR:PORT (e.g. remote=198.18.0.2:7070)")
                }),
                None => Err(format!(
                    "{s:?}: expected linux, linux-agent, gvisor, smoltcp, lwip or remote=ADDR:PORT"
                )),
            },
        }
    }
}

/// What one side's stack lets the harness observe of its sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideStack {
    /// What expectations call it (`linux`, `gvisor`).
    pub name: String,
    pub states: StateSource,
    /// What its calls cannot do, by the C name of the feature (see
    /// `FdCall::uses`), each with why (an agent's `unmapped`).
    pub unmapped: std::collections::BTreeMap<String, String>,
    /// Whether a program the harness starts for this side runs on this
    /// stack: yes where the harness itself runs on it, or the host is a
    /// namespace of Linux's; an agent's userspace stack, sandbox or machine
    /// has a network such a program would not be on.
    pub runs_programs: bool,
    /// Whether the host's TCP counters are the case's own: not on a
    /// machine whose agent runs on a stack not its own (its counters
    /// count every connection there).
    pub own_counters: bool,
    /// Whether the harness hears of each socket's destruction on this
    /// host, with what it held unread (`unread.<side>`): only where it
    /// reads the host's sock_diag itself, not through an agent.
    pub announces_destruction: bool,
}

/// The stacks a case's two sides run on and what the harness can do with
/// them: one stack for both on loopback; on the bench one per host, each
/// as it introduced itself, with the router's packet filter for faults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    pub faults: FaultBackend,
    pub sides: PerSide<SideStack>,
    /// What joins the two sides: expectations may be written for one.
    pub link: crate::scenario::Link,
}

impl Reach {
    /// Both sides on `stack`.
    pub fn of(stack: &Stack) -> Reach {
        let side = SideStack {
            name: stack.name.to_string(),
            states: stack.states,
            unmapped: Default::default(),
            // A program runs where the harness does, on the same stack.
            runs_programs: true,
            own_counters: true,
            announces_destruction: stack.states.sees_destruction(),
        };
        Reach {
            faults: stack.faults,
            sides: PerSide::both(side),
            link: crate::scenario::Link::Loopback,
        }
    }

    /// What expectations are looked up under: the stack's name when both
    /// sides run the same one, else `client/server` (`gvisor/linux`), which
    /// no expectation names unless a scenario writes one for that pairing.
    pub fn name(&self) -> String {
        let (c, s) = (&self.sides.client.name, &self.sides.server.name);
        if c == s {
            c.clone()
        } else {
            format!("{c}/{s}")
        }
    }
}

/// Which stack a command was asked to run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Whatever this process runs on.
    Auto,
    Linux,
    Gvisor,
}

/// Where a command runs for a [`Choice`].
#[derive(Debug)]
pub enum Placement {
    /// In this process, on this stack.
    Here(Stack),
    /// The same command again, inside a gVisor sandbox ([`gvisor::run_inside`]).
    InsideGvisor,
}

/// Decides where a command asked to run on `choice` runs.
pub fn place(choice: Choice) -> Result<Placement, String> {
    match choice {
        Choice::Auto => Ok(Placement::Here(Stack::detect())),
        Choice::Linux if Stack::inside_gvisor() => {
            Err("--stack linux, but this process runs on gVisor".into())
        }
        Choice::Linux => Ok(Placement::Here(Stack::linux("--stack linux"))),
        Choice::Gvisor if Stack::inside_gvisor() => Ok(Placement::Here(Stack::detect())),
        Choice::Gvisor => Ok(Placement::InsideGvisor),
    }
}

/// gVisor's `syslog(2)` greets with "Starting gVisor..."; Linux's kernel
/// log never says that. Returns the line that identifies gVisor. (gVisor
/// runs Linux programs only: elsewhere there is none.)
#[cfg(not(target_os = "linux"))]
fn gvisor_marker() -> Option<String> {
    None
}

#[cfg(target_os = "linux")]
fn gvisor_marker() -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let len = libc::c_int::try_from(buf.len()).ok()?;
    // SAFETY: SYSLOG_ACTION_READ_ALL (3) writes at most `len` bytes.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), len) };
    let n = usize::try_from(n).ok()?;
    let log = String::from_utf8_lossy(&buf[..n.min(buf.len())]);
    log.lines()
        .find(|l| l.contains("Starting gVisor"))
        .map(|l| l.trim().to_string())
}

/// The stack of a report's host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StackInfo {
    /// linux | gvisor | ...: what expectations call it.
    pub name: String,
    /// The stack's own version, where known (gVisor: the runsc release).
    pub version: Option<String>,
    /// How the stack was identified (or "--stack" when given).
    pub detected_by: String,
    /// Capture backend: libpcap | raw-socket.
    pub capture: String,
    /// Socket-state source: sock-diag | tcp-info.
    pub states: String,
    /// Fault backend: nftables | none.
    pub faults: String,
    /// Where the TCP counters are kept: namespace | stack (absent in
    /// reports older than this field).
    #[serde(default)]
    pub counters: String,
    /// The agent the host's calls went through, as it introduced itself
    /// (`teardown 0.1.0, protocol 1`); absent when they were made in the
    /// harness's own process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// Cases that would be `unsupported` on `reach`, each with what it lacks:
/// what [`requirements`] finds in the steps, and `[sysctl]` names that
/// `unsettable` says a side's stack cannot be given (name -> why).
pub fn unsupported<'a>(
    cases: &'a [Case],
    reach: &Reach,
    unsettable: &PerSide<std::collections::BTreeMap<String, String>>,
) -> Vec<(&'a Case, Vec<String>)> {
    cases
        .iter()
        .filter_map(|c| {
            let mut missing = requirements(c, reach);
            for s in &c.sysctls {
                // "default" leaves the stack's own value: nothing to set.
                if s.value == "default" {
                    continue;
                }
                let lacking = unsettable
                    .iter()
                    .find_map(|(side, u)| Some((side, u.get(&s.name)?)).filter(|_| s.on(side)));
                if let Some((side, why)) = lacking {
                    missing.push(format!(
                        "sysctl {} cannot be set on {} (the {side} host): {why}",
                        s.name, reach.sides[side].name
                    ));
                }
            }
            (!missing.is_empty()).then_some((c, missing))
        })
        .collect()
}

/// What a case needs from a stack that the stack lacks, each said in a
/// sentence; empty if the stack can run it. Sysctls are checked when the
/// case runs (only the stack knows which exist); this is what can be known
/// from the steps.
pub(crate) fn requirements(case: &Case, reach: &Reach) -> Vec<String> {
    let mut missing = Vec::new();
    // A program is ready when its socket listens: only a table of every
    // socket shows one the harness holds no descriptor for.
    if let Some(p) = &case.program {
        let side = &reach.sides[p.side];
        if !side.runs_programs {
            missing.push(format!(
                "line {}: a program on the {} end would run beside the {} host's stack ({}), not on it: programs run where the harness does",
                p.line, p.side, p.side, side.name
            ));
        } else if !side.states.sees_orphans() {
            missing.push(format!(
                "line {}: a program on the {} end is watched through the stack's table of every socket; {} shows states only through descriptors ({})",
                p.line,
                p.side,
                side.name,
                side.states.name()
            ));
        }
    }
    // Facts a side's host cannot observe, whatever the steps: the first
    // expectation (for this reach's stacks and link) that names one.
    let name = reach.name();
    let expected = |wanted: &dyn Fn(&str) -> bool| {
        case.expectations_for(&name, reach.link)
            .flat_map(|e| &e.facts)
            .find(|f| wanted(&f.path))
    };
    for side in Side::BOTH {
        let host = &reach.sides[side];
        // The counters are summed over both hosts: one that counts its
        // whole machine leaves the case's own unobservable.
        if !host.own_counters {
            if let Some(f) = expected(&|p| p.starts_with("netstat.")) {
                missing.push(format!(
                    "line {}: expects `{}`, a TCP counter, but the {side} host's agent runs on a stack that is not its own: its counters count every connection of its machine",
                    f.line, f.path
                ));
            }
        }
        // What a socket held unread when it was destroyed is heard only
        // from a stack the harness reads itself.
        if !host.announces_destruction {
            let path = format!("unread.{side}");
            if let Some(f) = expected(&|p| p == path) {
                missing.push(format!(
                    "line {}: expects `{}`, but the {side} host's stack ({}) does not announce a socket's destruction to the harness: an agent reports its sockets' states, not what a destroyed one held",
                    f.line, f.path, host.name
                ));
            }
        }
    }
    let mut closed = Vec::new();
    let mut accepted = false;
    for s in &case.steps {
        let at = s.line.map_or("setup".to_string(), |l| format!("line {l}"));
        if let StepKind::Socket { actor, call, .. } = &s.kind {
            let side = &reach.sides[actor.host()];
            let uses = crate::scenario::features::of(*actor, call);
            for (what, why) in uses.iter().filter_map(|u| side.unmapped.get_key_value(*u)) {
                missing.push(format!(
                    "{at}: `{}` needs {what}, which {} has no mapping for: {why}",
                    s.text, side.name
                ));
            }
        }
        match &s.kind {
            StepKind::Control(Control::Fault(_)) if reach.faults == FaultBackend::None => {
                missing.push(format!(
                    "{at}: `{}` needs a packet filter; {} has none the harness can drive",
                    s.text,
                    reach.name()
                ));
            }
            StepKind::Socket {
                actor,
                call: Call::Wait { what, optional, .. },
                ..
            } => {
                let side = &reach.sides[actor.host()];
                let (name, states) = (&side.name, side.states);
                let through_descriptors = !states.sees_orphans() && !optional;
                let lacks = match what {
                    WaitFor::State(state) if through_descriptors && closed.contains(actor) => {
                        Some(format!(
                            "waits for {state} on a socket the application closed; {name} shows states only through descriptors"
                        ))
                    }
                    // The server end of a connection nobody accepted has
                    // no descriptor to ask.
                    WaitFor::State(state)
                        if through_descriptors
                            && actor.role == crate::scenario::Role::Server
                            && !accepted =>
                    {
                        Some(format!(
                            "waits for {state} on a connection no one accepted; {name} shows states only through descriptors"
                        ))
                    }
                    WaitFor::Timer(timer) if !states.sees_timers() => Some(format!(
                        "waits for the {} timer; {name} shows no timers",
                        timer.name()
                    )),
                    // The accept queue's length is sock_diag's receive
                    // queue of the listening socket; TCP_INFO has none.
                    WaitFor::Queued(_) if !states.sees_accept_queue() => Some(format!(
                        "reads the accept queue, which sock_diag shows and {name}'s state source does not"
                    )),
                    _ => None,
                };
                if let Some(lacks) = lacks {
                    missing.push(format!("{at}: `{}` {lacks} ({})", s.text, states.name()));
                }
            }
            StepKind::Socket {
                call: Call::Accept, ..
            } => accepted = true,
            StepKind::Socket {
                actor,
                call: Call::Close,
                ..
            } => closed.push(*actor),
            // A client or listener step after close opens a new socket.
            StepKind::Socket {
                actor,
                call: Call::Connect | Call::Bind(_) | Call::SetOption(_) | Call::Listen { .. },
                ..
            } => closed.retain(|a| a != actor),
            _ => {}
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn case(steps: &str) -> Case {
        crate::catalogue::parse(
            Path::new("t.toml"),
            &format!("title = \"t\"\nsteps = '''\n{steps}\n'''\n"),
        )
        .unwrap()
        .remove(0)
    }

    /// A client that closes, and a Linux expectation (its `[[expect]]` line
    /// 7, or 8 with `extra` lines before its facts) of its FIN and `fact`.
    fn closing_case(extra: &str, fact: &str) -> Case {
        let text = format!(
            "title = \"t\"\nsteps = '''\nclient close\n'''\n[[expect]]\nos = \"linux\"\n{extra}facts = {{ \"wire.client.fin\" = 1, {fact} }}\n"
        );
        crate::catalogue::parse(Path::new("t.toml"), &text)
            .unwrap()
            .remove(0)
    }

    /// A host whose counters are its machine's cannot vouch for a
    /// `netstat.*` expectation: the case is unsupported, naming the line.
    #[test]
    fn a_counter_expectation_needs_counters_of_the_case_alone() {
        let c = closing_case("", r#""netstat.OutRsts" = 0"#);
        let mut reach = Reach::of(&Stack::linux("test"));
        assert!(requirements(&c, &reach).is_empty());
        reach.sides.client.own_counters = false;
        let missing = requirements(&c, &reach);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with("line 7: expects `netstat.OutRsts`")
                && missing[0].contains("the client host's agent"),
            "{missing:?}"
        );
    }

    /// What a destroyed socket held unread is heard only from a stack the
    /// harness reads itself: an agent host's `unread.<side>` expectation
    /// makes the case unsupported, on the link it was written for.
    #[test]
    fn unread_needs_a_host_that_announces_destruction() {
        let c = closing_case("link = \"bench\"\n", r#""unread.server" = 0"#);
        let mut reach = Reach::of(&Stack::linux("test"));
        reach.link = crate::scenario::Link::Bench;
        assert!(requirements(&c, &reach).is_empty());
        reach.sides.client.announces_destruction = false;
        assert!(requirements(&c, &reach).is_empty(), "only the server's");
        reach.sides.server.announces_destruction = false;
        let missing = requirements(&c, &reach);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(
            missing[0].starts_with("line 8: expects `unread.server`")
                && missing[0].contains("does not announce a socket's destruction"),
            "{missing:?}"
        );
        // Written for the bench only: on loopback there is nothing to miss.
        reach.link = crate::scenario::Link::Loopback;
        assert!(requirements(&c, &reach).is_empty());
    }

    #[test]
    fn gvisor_cannot_run_faults_or_watch_closed_sockets() {
        let gv = Reach::of(&Stack::gvisor("test"));
        let linux = Reach::of(&Stack::linux("test"));
        let c = case(
            "drop all as d\nclient close as c\nclient wait state TIME-WAIT\nserver wait state CLOSE-WAIT",
        );
        assert!(requirements(&c, &linux).is_empty());
        let missing = requirements(&c, &gv);
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(
            missing[0].contains("line 3: `drop all as d` needs a packet filter"),
            "{missing:?}"
        );
        assert!(
            missing[1].contains("line 5") && missing[1].contains("tcp-info"),
            "{missing:?}"
        );
        // A wait on a socket still open is fine on either, and so is one on
        // a client socket opened again after close.
        assert!(requirements(&case("server wait state ESTABLISHED"), &gv).is_empty());
        let reopened = case(
            "client connect\nclient close\nclient connect as again\nclient wait state ESTABLISHED",
        );
        assert!(requirements(&reopened, &gv).is_empty());
        let optional = case("client close\nclient wait state TIME-WAIT optional");
        assert!(requirements(&optional, &gv).is_empty());
        // The server end of a connection in the accept queue has no
        // descriptor yet.
        let queued = case("listener listen\nclient connect\nserver wait state ESTABLISHED");
        assert!(requirements(&queued, &linux).is_empty());
        let missing = requirements(&queued, &gv);
        assert!(
            missing.len() == 1
                && missing[0].contains("line 5")
                && missing[0].contains("no one accepted"),
            "{missing:?}"
        );
    }

    /// Timers and the accept queue are sock_diag's to show: a side whose
    /// stack reads states through TCP_INFO cannot wait for them.
    #[test]
    fn timers_and_the_accept_queue_need_sock_diag() {
        let gv = Reach::of(&Stack::gvisor("test"));
        let linux = Reach::of(&Stack::linux("test"));
        let c = case("client wait timer keep-alive\nlistener wait queued 1");
        assert!(requirements(&c, &linux).is_empty());
        let missing = requirements(&c, &gv);
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].contains("keep-alive timer") && missing[0].contains("no timers"));
        assert!(missing[1].contains("accept queue"));
        // On a bench, per side: a Linux client's timer is in sight even
        // with a gVisor server.
        let mixed = Reach {
            faults: FaultBackend::Nftables,
            sides: PerSide::new(linux.sides.client.clone(), gv.sides.server.clone()),
            link: crate::scenario::Link::Bench,
        };
        let missing = requirements(&c, &mixed);
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].contains("accept queue"));
    }

    #[test]
    fn a_stack_is_chosen_here_or_in_a_sandbox() {
        let inside = Stack::inside_gvisor();
        match place(Choice::Gvisor).unwrap() {
            Placement::InsideGvisor => assert!(!inside),
            Placement::Here(s) => assert!(inside && s.name == "gvisor"),
        }
        match place(Choice::Linux) {
            Ok(Placement::Here(s)) => assert!(!inside && s.name == "linux"),
            Ok(Placement::InsideGvisor) => panic!("linux never runs in a sandbox"),
            Err(e) => assert!(inside && e.contains("runs on gVisor"), "{e}"),
        }
    }

    #[test]
    fn this_machine_is_linux_unless_the_kernel_log_says_gvisor() {
        let s = Stack::detect();
        assert!(s.name == "linux" || s.name == "gvisor");
        assert_eq!(s.info().states, s.states.name());
    }
}
