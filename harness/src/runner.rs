//! Wires the stages together: one case on its own thread and namespace, and
//! a run of many cases on a few worker threads.
//!
//! Per case: sandbox (a namespace, or the bench and its hosts' endpoints) ->
//! stack requirements -> sysctls -> capture + state source -> driver ->
//! capture file -> wire -> analyze -> outcome -> verdict. A case that fails
//! inside the harness (capture, netlink, an agent, a panic) still yields a
//! case report, with verdict `error` and the reason; a case the stack
//! cannot run is `unsupported`, naming what is missing; the run goes on.
//! The runner reads (counters, drop counts) and wires; the rules that turn
//! readings into facts are `outcome`'s, and nothing here decides what a
//! result should be.

pub mod interrupt;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::analyze;
use crate::capture::{self, Capture, Reaper};
use crate::driver::agent::client::{AgentClient, AgentError};
use crate::driver::{self, DriverOutput, Endpoint, Instruments, SysctlError};
use crate::fault::Firewall;
use crate::observe::Observer;
use crate::outcome::{self, Outcome};
use crate::report::{self, BenchHosts, CaseReport, Host, Report, Summary, Timing, Tool};
use crate::sandbox::{self, Hosts, Namespace, SandboxError};
use crate::scenario::{Case, Link};
use crate::stack::{self, CounterScope, HostStack, Reach, SideStack, Stack};
use crate::tcp::{PerSide, Side};
use crate::verdict::{self, Verdict};
use crate::wire;

/// Where a run puts its files, and how it runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `captures/<run_id>/` receives one pcap per case; None = no pcaps.
    pub captures_dir: Option<PathBuf>,
    pub run_id: String,
    /// Cases run at once, each on its own thread and namespace.
    pub jobs: usize,
    /// The stack the cases run on, with its backends.
    pub stack: Stack,
    /// How long each case took before (a baseline's `durations_ms`): the
    /// longest start first. Cases without an estimate start before them,
    /// in their order.
    pub expected_ms: BTreeMap<String, f64>,
    /// Each case on the bench (a client host and a server host joined by a
    /// router that holds the capture and the fault rules) instead of on
    /// one namespace's loopback.
    pub bench: bool,
    /// What each bench host runs, and how the driver reaches it.
    pub hosts: PerSide<HostStack>,
}

/// How long an agent may take to start and say hello: a process in a
/// namespace takes milliseconds, a gVisor sandbox a few hundred (seconds
/// when many start at once on the ptrace platform).
const AGENT_START: Duration = Duration::from_secs(30);

/// Starts `side`'s endpoint on its host: nothing for a host whose calls the
/// harness makes, an agent process (or sandbox) for the others.
fn endpoint(hosts: &Hosts, side: Side, stack: &HostStack) -> Result<Endpoint, String> {
    let what = format!("the {side} host's agent");
    let exe = || driver::agent::client::agent_program().map_err(|e| format!("{what}: {e}"));
    let client = match stack {
        HostStack::Linux => return Ok(Endpoint::InProcess),
        HostStack::LinuxAgent => {
            let mut cmd = sandbox::ProgramCommand::new(exe()?);
            cmd.args(["agent", "--own-stack"]);
            // A child started on the host's thread shares the host's namespace.
            hosts
                .on(side, || AgentClient::spawn(cmd, what, AGENT_START))
                .map_err(|e| e.to_string())?
        }
        HostStack::Gvisor => {
            let Hosts::Bench(bench) = hosts else {
                return Err("a gVisor host needs the bench (--bench)".into());
            };
            bench.hand_over(side).map_err(|e| e.to_string())?;
            let scratch = scratch_dir("gvisor");
            let id = scratch
                .file_name()
                .map_or_else(|| "teardown".into(), |n| n.to_string_lossy().into_owned());
            let netns = bench.namespace_path(side).map_err(|e| e.to_string())?;
            let cmd = stack::gvisor::agent_command(&exe()?, &netns, &scratch, &id);
            let spawned = cmd
                .map_err(|e| AgentError::Start {
                    what: what.clone(),
                    why: e.to_string(),
                })
                .and_then(|cmd| AgentClient::spawn(cmd, what, AGENT_START));
            match spawned {
                Ok(c) => Ok(c.with_scratch(scratch)),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&scratch);
                    Err(e)
                }
            }
        }
        HostStack::Smoltcp | HostStack::Lwip => {
            let Hosts::Bench(bench) = hosts else {
                return Err(format!("a {stack} host needs the bench (--bench)"));
            };
            bench.take_over(side).map_err(|e| e.to_string())?;
            let mut cmd = sandbox::ProgramCommand::new(exe()?);
            cmd.args(["agent".to_string(), format!("--{stack}"), "eth0".into()]);
            for v6 in [false, true] {
                let ip = sandbox::bench::address(side, v6, false);
                let gw = sandbox::bench::address(side, v6, true);
                let prefix = sandbox::bench::prefix_len(ip);
                cmd.arg(format!("--address={ip}/{prefix}"));
                cmd.arg(format!("--gateway={gw}"));
            }
            // Its raw packet socket opens in the host's namespace.
            let agent = hosts
                .on(side, || AgentClient::spawn(cmd, what, AGENT_START))
                .map_err(|e| e.to_string())?;
            if agent.is_ok() {
                bench.await_echo(side).map_err(|e| e.to_string())?;
            }
            agent
        }
        HostStack::Remote(remote) => connect_from_home(remote.control, what),
    };
    client
        .map(|c| Endpoint::Agent(Arc::new(c)))
        .map_err(|e| e.to_string())
}

/// Connects to a remote agent from the network namespace this process was
/// started in (its main thread's), not from the case's: the control
/// connection goes over the user's own network, never through the bench's
/// router, so neither the capture nor a fault rule sees it.
fn connect_from_home(
    control: std::net::SocketAddr,
    what: String,
) -> Result<AgentClient, AgentError> {
    let failed = |why: String| AgentError::Start {
        what: what.clone(),
        why,
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let home = std::fs::File::open("/proc/self/ns/net")
                .map_err(|e| failed(format!("opening this process's network namespace: {e}")))?;
            nix::sched::setns(home, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| failed(format!("entering this process's network namespace: {e}")))?;
            AgentClient::connect(control, what.clone(), AGENT_START)
        })
        .join()
        .unwrap_or_else(|_| Err(failed("the connecting thread panicked".into())))
    })
}

/// The bridge each remote host's link goes into.
fn bridges(hosts: &PerSide<HostStack>) -> Result<PerSide<Option<&sandbox::Bridge>>, String> {
    let mut out = PerSide::default();
    for side in Side::BOTH {
        if let HostStack::Remote(r) = &hosts[side] {
            out[side] = Some(r.bridge.as_ref().ok_or_else(|| {
                format!(
                    "the {side} host is remote: give the bridge its traffic crosses (--{side}-link NETNS/BRIDGE)"
                )
            })?);
        }
    }
    Ok(out)
}

/// Removes the scratch directories (see [`scratch_dir`]) of teardown
/// processes that are gone: a run killed outright (SIGKILL, a crash)
/// leaves its sandboxes' bundles behind, which no one else would remove.
/// A directory whose process id is alive is left alone, whoever has it now.
pub(crate) fn sweep_stale_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix("teardown-gvisor-"))
        else {
            continue;
        };
        let Some((pid, n)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), true) = (pid.parse::<u32>(), n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A directory of its own for something a case starts (`teardown-<what>-
/// <pid>-<n>` in the temporary directory); not created here.
fn scratch_dir(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "teardown-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What the case's two sides run on (see [`reach_of`]).
fn reach(opts: &RunOptions, endpoints: &PerSide<Endpoint>) -> Reach {
    let hellos = endpoints.as_ref().map(|_, e| e.agent().map(|a| a.hello()));
    Reach {
        link: opts.link(),
        ..reach_of(&opts.stack, hellos)
    }
}

/// Each agent host as it introduced itself, the harness's own `stack` for
/// the others; faults go in the harness's own packet filter (on the bench,
/// the router's).
fn reach_of(stack: &Stack, hellos: PerSide<Option<&driver::agent::Hello>>) -> Reach {
    let mut reach = Reach::of(stack);
    for side in Side::BOTH {
        if let Some(hello) = hellos[side] {
            reach.sides[side] = SideStack {
                name: hello.stack.clone(),
                states: hello.states,
                unmapped: hello.unmapped.clone(),
                // The harness starts a program in the host's namespace:
                // on the stack only if that is the namespace's own kernel.
                runs_programs: hello.stack == "linux" && hello.own_stack,
                own_counters: hello.own_stack,
                // Its sockets' states come through the agent, which hears
                // of no socket's destruction.
                announces_destruction: false,
            };
        }
    }
    reach
}

impl RunOptions {
    /// What joins each case's sides.
    pub fn link(&self) -> Link {
        if self.bench {
            Link::Bench
        } else {
            Link::Loopback
        }
    }
}

/// The order cases start in: those without an estimate first, then the
/// longest expected first, so that a long case never starts last and
/// stretches the run by its whole length (on the catalogue, 6.2 s in input
/// order against a longest case of 4.1 s). Equal estimates keep the input
/// order.
pub(crate) fn start_order(cases: &[Case], expected_ms: &BTreeMap<String, f64>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cases.len()).collect();
    let estimate = |i: usize| {
        expected_ms
            .get(&cases[i].id)
            .copied()
            .unwrap_or(f64::INFINITY)
    };
    order.sort_by(|&a, &b| estimate(b).total_cmp(&estimate(a)));
    order
}

/// Cases in flight by default: 16 per CPU. A case spends most of its time
/// waiting, not computing (see `capture::Reaper`). On this 2-core machine
/// the catalogue then takes about 1.1 x its longest case (8 per CPU:
/// 1.6 x, the rest of its cases waiting their turn).
pub fn default_jobs() -> usize {
    16 * cpus()
}

/// Cases in flight by default on the bench with `hosts`: 2 per CPU when a
/// host is a gVisor sandbox, which computes where a namespace waits (on
/// this 2-core machine, the catalogue with gVisor at both ends: the 99th
/// percentile of the harness's delay between two steps 244 ms at 16 in
/// flight, 95 ms at 8, 43 ms at 4, for 30.6, 32.3 and 39.3 s; a delay past
/// 200 ms lets TCP_CORK's timer flush what a scenario wanted held).
pub(crate) fn default_jobs_for(hosts: &PerSide<HostStack>) -> usize {
    if hosts.iter().any(|(_, h)| *h == HostStack::Gvisor) {
        2 * cpus()
    } else {
        default_jobs()
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Raises this process's limit on open files so that `needed` fit: every
/// case in flight holds sockets, a capture, netlink sockets and pipes, a
/// case of 10,000 connections 20,000 sockets, and the soft limit (often
/// 1024) is a default, not a decision. The soft limit goes to the hard
/// one; if that is still short of `needed` and this process may raise
/// the hard limit (CAP_SYS_RESOURCE), it goes up to `needed`, within the
/// kernel's ceiling (`fs.nr_open`). Returns the limit now in force.
pub(crate) fn raise_open_file_limit(needed: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let above_hard = needed.min(ceiling);
    for want in [above_hard, hard] {
        if want > soft && setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_ok() {
            return want;
        }
    }
    soft
}

/// Descriptors one case may hold at once: a few hundred for the case
/// itself (capture, netlink, pipes of `nft`, the sockets of a one-pair
/// case), and two per connection.
fn case_descriptors(case: &Case) -> u64 {
    256 + 2 * u64::from(case.connections())
}

/// Descriptors a run of `cases`, `jobs` at a time, may hold at once.
fn descriptors_needed(cases: &[Case], jobs: usize) -> u64 {
    let mut sizes: Vec<u64> = cases.iter().map(case_descriptors).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.iter().take(jobs.max(1)).sum()
}

/// The descriptor limit shared by the cases in flight: a case starts only
/// when its descriptors fit beside those of the cases already running (or
/// when it runs alone), so that two large cases never starve each other
/// into EMFILE.
struct DescriptorBudget {
    limit: u64,
    in_use: Mutex<u64>,
    freed: Condvar,
}

impl DescriptorBudget {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self, n: u64) {
        let mut in_use = self.in_use.lock().expect("budget");
        while *in_use > 0 && *in_use + n > self.limit {
            in_use = self.freed.wait(in_use).expect("budget");
        }
        *in_use += n;
    }

    fn release(&self, n: u64) {
        *self.in_use.lock().expect("budget") -= n;
        self.freed.notify_all();
    }
}

/// Fails fast, before any case, if this process cannot create a namespace,
/// bring its lo up, or capture in it.
pub fn check_privileges() -> Result<(), SandboxError> {
    std::thread::spawn(|| {
        sandbox::enter_fresh_namespace().and_then(|ns| sandbox::check_capture_permission(&ns))
    })
    .join()
    .unwrap_or_else(|_| Err(SandboxError::Setup("privilege probe panicked".into())))
}

/// The host facts every report carries; `bench`: what a probe of the bench
/// found (see [`probe_bench`]), for a run on the bench.
pub fn host(stack: &Stack, bench: Option<&Result<BenchProbe, String>>) -> Host {
    Host {
        os: std::env::consts::OS.to_string(),
        kernel: sandbox::kernel_release(),
        arch: std::env::consts::ARCH.to_string(),
        stack: stack.info(),
        sysctls: sandbox::teardown_sysctls(),
        bench: bench.map(|probe| {
            let (link, link_unobserved, hellos) = match probe {
                Ok(p) => (Some(p.link.clone()), None, p.hellos.clone()),
                Err(e) => (None, Some(e.clone()), PerSide::default()),
            };
            let info = |side: Side| {
                let mut info = stack.info();
                if let Some(h) = &hellos[side] {
                    info.name = h.stack.clone();
                    info.version = h.stack_version.clone();
                    info.states = h.states.name().to_string();
                    info.detected_by = format!("the agent's hello ({} on {})", h.agent, h.os);
                    info.agent = Some(format!("{}, protocol {}", h.agent, h.protocol));
                }
                info
            };
            BenchHosts {
                client: info(Side::Client),
                server: info(Side::Server),
                link,
                link_unobserved,
            }
        }),
    }
}

/// What a bench and its hosts turned out to be, learned once before a run
/// (or by `teardown check --bench`).
#[derive(Clone, Debug)]
pub struct BenchProbe {
    /// The links, as read back from them.
    pub link: sandbox::LinkReport,
    /// Each agent host's hello; none for a host the harness drives itself.
    pub hellos: PerSide<Option<driver::agent::Hello>>,
    /// Of the sysctls asked about, those each host's stack cannot be given,
    /// each with why (it has no such sysctl, it is read-only there, ...).
    pub unsettable: PerSide<BTreeMap<String, String>>,
}

impl BenchProbe {
    /// What the hosts let the harness do, the router's packet filter (on
    /// `stack`, the harness's own) holding the fault rules.
    pub fn reach(&self, stack: &Stack) -> Reach {
        Reach {
            link: crate::scenario::Link::Bench,
            ..reach_of(stack, self.hellos.as_ref().map(|_, h| h.as_ref()))
        }
    }
}

/// What `teardown check` checks `cases` against, and the sysctls each side
/// cannot be given: `stack` on loopback, with those `local` found absent;
/// or, given `bench` hosts, what a probe of them finds.
pub(crate) fn reach_to_check(
    stack: &Stack,
    bench: Option<PerSide<HostStack>>,
    cases: &[Case],
    local: &crate::catalogue::SysctlCheck,
) -> Result<(Reach, PerSide<BTreeMap<String, String>>), String> {
    if let Some(hosts) = bench {
        let probe = probe_bench(&hosts, &crate::catalogue::sysctl_names(cases))?;
        return Ok((probe.reach(stack), probe.unsettable));
    }
    let absent = match local {
        crate::catalogue::SysctlCheck::Checked { absent } => absent
            .iter()
            .map(|n| (n.clone(), "this kernel has no such sysctl".to_string()))
            .collect(),
        crate::catalogue::SysctlCheck::NotChecked(_) => BTreeMap::new(),
    };
    Ok((Reach::of(stack), PerSide::both(absent)))
}

/// Builds a bench on a thread of its own and starts each host's endpoint,
/// to learn what the hosts run and which of `sysctls` each cannot be given
/// (each is set to the value it has); everything it made is gone when it
/// returns.
pub(crate) fn probe_bench(
    hosts: &PerSide<HostStack>,
    sysctls: &[String],
) -> Result<BenchProbe, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = sandbox::enter_fresh_namespace().map_err(|e| e.to_string())?;
            let bench = sandbox::bench::Bench::build_with(&ns, bridges(hosts)?)
                .map_err(|e| e.to_string())?;
            let link = bench.link.clone();
            let made = Hosts::Bench(bench);
            let mut hellos = PerSide::default();
            let mut unsettable = PerSide::<BTreeMap<String, String>>::default();
            for side in Side::BOTH {
                let endpoint = endpoint(&made, side, &hosts[side])?;
                if let Endpoint::Agent(a) = &endpoint {
                    hellos[side] = Some(a.hello().clone());
                }
                // Set to what it is: a no-op where it can be set at all.
                for name in sysctls {
                    let set = match endpoint.read_sysctl(&made, side, name) {
                        None => Err(SysctlError::Absent),
                        Some(v) => endpoint.write_sysctl(&made, &ns, side, name, &v),
                    };
                    let why = match set {
                        Ok(()) => continue,
                        Err(SysctlError::Absent) => "it has no such sysctl".to_string(),
                        Err(SysctlError::Refused(why) | SysctlError::Failed(why)) => why,
                    };
                    unsettable[side].insert(name.clone(), why);
                }
            }
            Ok(BenchProbe {
                link,
                hellos,
                unsettable,
            })
        })
        .join()
        .unwrap_or_else(|_| Err("building a bench panicked".into()))
    })
}

/// Runs every case, `opts.jobs` at a time; reports keep the input order.
/// `on_done` sees each case report as it finishes (for progress output).
/// Once `stop` is set no further case starts; the cases in flight finish
/// (each is bounded by its own timeouts) and the report lists the rest in
/// `not_run`, with `interrupted` set.
pub fn run_all(
    cases: &[Case],
    opts: &RunOptions,
    stop: &AtomicBool,
    on_done: &(dyn Fn(&CaseReport) + Sync),
) -> Report {
    let started = SystemTime::now();
    let t = Instant::now();
    // What the bench's hosts run, once: if a host cannot be started (no
    // runsc, a remote agent not answering), no case can run.
    if opts.bench {
        sweep_stale_scratch();
    }
    let probe = opts.bench.then(|| probe_bench(&opts.hosts, &[]));
    let unusable = match &probe {
        Some(Err(e)) => Some(format!("the bench's hosts could not be started: {e}")),
        _ => None,
    };
    // A remote host is one machine, with one address and what earlier
    // cases left on it: its cases run one at a time.
    let jobs = if opts
        .hosts
        .iter()
        .any(|(_, h)| matches!(h, HostStack::Remote(_)))
    {
        1
    } else {
        opts.jobs
    };
    let budget = DescriptorBudget::new(raise_open_file_limit(descriptors_needed(cases, jobs)));
    let reaper = Reaper::default();
    let slots: Vec<Mutex<Option<CaseReport>>> = cases.iter().map(|_| Mutex::new(None)).collect();
    // Cases with a program run after the others: starting servers (a
    // Python interpreter, nginx) takes CPU at moments no timing-sensitive
    // case should share (with them mixed in, ephemeral-ports-time-wait
    // failed in 2 of 12 catalogue runs, in 0 of 12 without them).
    let (programs, others): (Vec<usize>, Vec<usize>) = start_order(cases, &opts.expected_ms)
        .into_iter()
        .partition(|&i| cases[i].program.is_some());
    for order in [others, programs] {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..jobs.clamp(1, order.len().max(1)) {
                s.spawn(|| {
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let case = &cases[i];
                        if let Some(why) = &unusable {
                            let r = stopped(case, Stopped::Error(vec![why.clone()]));
                            on_done(&r);
                            *slots[i].lock().expect("slot") = Some(r);
                            continue;
                        }
                        let descriptors = case_descriptors(case);
                        budget.acquire(descriptors);
                        let r = run_case(case, opts, &reaper);
                        budget.release(descriptors);
                        on_done(&r);
                        *slots[i].lock().expect("slot") = Some(r);
                    }
                });
            }
        });
    }
    reaper.wait();
    let mut not_run = Vec::new();
    let mut done = Vec::new();
    for (case, slot) in cases.iter().zip(slots) {
        match slot.into_inner().expect("slot") {
            Some(r) => done.push(r),
            None => not_run.push(case.id.clone()),
        }
    }
    Report {
        schema_version: report::SCHEMA_VERSION,
        tool: Tool {
            name: "teardown".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        host: host(&opts.stack, probe.as_ref()),
        started_at: report::rfc3339(started),
        duration_ms: ms_since(t),
        run_id: opts.run_id.clone(),
        summary: Summary::of(&done),
        // A stop that came after the last case started still interrupted
        // the run: those cases finished, but the user asked to stop.
        interrupted: stop.load(Ordering::SeqCst),
        not_run,
        cases: done,
    }
}

/// Runs one case on a fresh thread (hence a fresh namespace) and waits.
/// A panic inside becomes an `error` verdict.
pub fn run_case(case: &Case, opts: &RunOptions, reaper: &Reaper) -> CaseReport {
    isolated(case, || run_case_here(case, opts, reaper))
}

/// Runs `body` on a thread of its own and turns a panic into an `error`
/// report for `case`. The thread's namespace, sockets and fault rules die
/// with the thread, panic or not.
fn isolated(case: &Case, body: impl FnOnce() -> CaseReport + Send) -> CaseReport {
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(format!("case {}", case.id))
            .spawn_scoped(s, body)
            .map_err(|e| format!("cannot start the case thread: {e}"))?
            .join()
            .map_err(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned());
                format!(
                    "the harness panicked: {}",
                    msg.unwrap_or_else(|| "unknown panic".into())
                )
            })
    });
    let mut r = result.unwrap_or_else(|problem| stopped(case, Stopped::Error(vec![problem])));
    r.duration_ms = ms_since(started);
    r
}

/// Why a case ended before it could observe anything.
enum Stopped {
    Error(Vec<String>),
    Unsupported(Vec<String>),
}

/// The body of a case; must run on a thread of its own.
fn run_case_here(case: &Case, opts: &RunOptions, reaper: &Reaper) -> CaseReport {
    // On loopback what the case needs is known from its steps and the
    // stack; on the bench, once each host has said what it runs.
    if !opts.bench {
        let missing = stack::requirements(case, &Reach::of(&opts.stack));
        if !missing.is_empty() {
            return stopped(case, Stopped::Unsupported(missing));
        }
    }
    let phase = Instant::now();
    // A write that raises SIGPIPE leaves it pending here, for the record.
    if let Err(e) = driver::calls::block_sigpipe() {
        return stopped(case, Stopped::Error(vec![format!("blocking SIGPIPE: {e}")]));
    }
    let ns = match sandbox::enter_fresh_namespace() {
        Ok(ns) => ns,
        Err(e) => return stopped(case, Stopped::Error(vec![e.to_string()])),
    };
    let hosts = if opts.bench {
        let built = bridges(&opts.hosts)
            .and_then(|b| sandbox::bench::Bench::build_with(&ns, b).map_err(|e| e.to_string()));
        match built {
            Ok(b) => Hosts::Bench(b),
            Err(e) => return stopped(case, Stopped::Error(vec![e])),
        }
    } else {
        Hosts::Loopback
    };
    let endpoints = if hosts.is_bench() {
        let made = (
            endpoint(&hosts, Side::Client, &opts.hosts[Side::Client]),
            endpoint(&hosts, Side::Server, &opts.hosts[Side::Server]),
        );
        match made {
            (Ok(c), Ok(s)) => PerSide::new(c, s),
            (Err(e), _) | (_, Err(e)) => return stopped(case, Stopped::Error(vec![e])),
        }
    } else {
        PerSide::default()
    };
    let reach = reach(opts, &endpoints);
    if hosts.is_bench() {
        let missing = stack::requirements(case, &reach);
        if !missing.is_empty() {
            return stopped(case, Stopped::Unsupported(missing));
        }
    }
    for sysctl in &case.sysctls {
        let (name, value) = (&sysctl.name, &sysctl.value);
        // "default" leaves the stack's own value (an axis can include it).
        if value == "default" {
            continue;
        }
        // Each host's stack gets the sysctls for it; on loopback the one
        // stack gets them all.
        for &side in hosts.sides() {
            if hosts.is_bench() && !sysctl.on(side) {
                continue;
            }
            let host = || {
                if hosts.is_bench() {
                    format!("the {side} host's stack ({})", reach.sides[side].name)
                } else {
                    format!("a network namespace of {}", reach.sides[side].name)
                }
            };
            match endpoints[side].write_sysctl(&hosts, &ns, side, name, value) {
                Ok(()) => {}
                Err(SysctlError::Absent) => {
                    return stopped(
                        case,
                        Stopped::Unsupported(vec![format!(
                            "sysctl {name} does not exist in {} (the case sets it in its [sysctl] table)",
                            host()
                        )]),
                    );
                }
                Err(SysctlError::Refused(why)) => {
                    return stopped(
                        case,
                        Stopped::Unsupported(vec![format!(
                            "sysctl {name} cannot be set on {}: {why} (the case sets it in its [sysctl] table)",
                            host()
                        )]),
                    );
                }
                Err(SysctlError::Failed(e)) => {
                    return stopped(
                        case,
                        Stopped::Error(vec![format!(
                            "sysctl {name} on {}: {e} (the case sets it in its [sysctl] table; only per-namespace net.* sysctls can be set)",
                            host()
                        )]),
                    );
                }
            }
        }
    }
    // The values as the stacks have them: each of the case's own from the
    // host it was set on (the server's if on every host), the others from
    // the server's.
    let read = |side: Side, name: &str| {
        endpoints[side]
            .read_sysctl(&hosts, side, name)
            .map(|v| (name.to_string(), v))
    };
    let sysctls: BTreeMap<String, String> = sandbox::TEARDOWN_SYSCTLS
        .iter()
        .filter_map(|name| read(Side::Server, name))
        .chain(
            case.sysctls
                .iter()
                .filter_map(|s| read(s.host.unwrap_or(Side::Server), &s.name)),
        )
        .collect();
    let sandbox_ms = ms_since(phase);
    let phase = Instant::now();
    let buffer = capture::buffer_for(case.connections());
    let point = if hosts.is_bench() {
        capture::Point::Router
    } else {
        capture::Point::Loopback
    };
    let mut capture = match Capture::start(&ns, opts.stack.capture, point, buffer) {
        Ok(c) => c,
        Err(e) => return stopped(case, Stopped::Error(vec![e.to_string()])),
    };
    let by_agent = PerSide::new(
        endpoints.client.agent().is_some(),
        endpoints.server.agent().is_some(),
    );
    // A program may serve both families from one IPv6 socket.
    let both_families = case.program.is_some();
    let observer = Observer::open(
        &ns,
        &hosts,
        case.family,
        opts.stack.states,
        by_agent,
        both_families,
    );
    let mut observer = match observer {
        Ok(o) => o,
        Err(e) => return stopped(case, Stopped::Error(vec![e.to_string()])),
    };
    let observe_setup_ms = ms_since(phase);
    let t0 = Instant::now();
    let t0_wall_us = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));

    let mut firewall = Firewall::new(&ns, &hosts);
    let mut io = Instruments {
        hosts: &hosts,
        endpoints: &endpoints,
        capture: &mut capture,
        observer: &mut observer,
        firewall: &mut firewall,
    };
    let counters_before = tcp_counters(&ns, &hosts, &endpoints);
    let lo_drops_before = link_drops(&ns, &hosts).ok();
    let (out, open_sockets) = driver::run(case, t0, &mut io);
    let counters_after = tcp_counters(&ns, &hosts, &endpoints);
    // Counters shared with cases running at the same time are not this
    // case's. (A bench host's stack is the case's own: a namespace, or a
    // sandbox started for it.)
    let counters_shared =
        !opts.bench && opts.stack.counters == CounterScope::Stack && opts.jobs > 1;
    let loopback_dropped = lo_drops_before
        .zip(link_drops(&ns, &hosts).ok())
        .filter(|_| !counters_shared)
        .map(|(before, after)| after.saturating_sub(before));
    let run_ms = ms_since(t0);
    let phase = Instant::now();
    let mut problems = out.problems.clone();
    // No capture, no wire facts: zeros would claim an observation.
    let captured = capture.finish(reaper).map_err(|e| e.to_string());
    // Only now may leftover sockets close: their FIN/RST is not part of the case.
    drop(open_sockets);
    drop(endpoints);

    let mut capture_file = None;
    let mut findings = Vec::new();
    let mut flows = None;
    // A capture that lost packets cannot vouch for counts.
    let lossy = captured.as_ref().ok().and_then(|c| {
        let link = if hosts.is_bench() {
            "the bench's links"
        } else {
            "the loopback"
        };
        outcome::capture_loss(c.dropped, loopback_dropped, link)
    });
    if let Some(why) = &lossy {
        findings.push(why.clone());
    }
    let analysis = match &captured {
        Ok(captured) => {
            if let Some(dir) = &opts.captures_dir {
                let path = dir
                    .join(&opts.run_id)
                    .join(format!("{}.pcap", case.file_stem()));
                match capture::write_pcap(&path, captured) {
                    Ok(()) => capture_file = Some(path.display().to_string()),
                    Err(e) => problems.push(e.to_string()),
                }
            }
            let (segments, malformed) = wire::segments(captured.linktype, &captured.packets);
            findings.extend(malformed);
            let split = analyze::flows::split(&segments);
            if split.len() > 1 {
                flows = Some(split);
            }
            lossy
                .is_none()
                .then(|| analyze::analyze(&segments, out.ends.pair(), t0_wall_us))
        }
        Err(e) => {
            problems.push(e.clone());
            None
        }
    };
    let no_capture = captured.as_ref().err().cloned().or(lossy.clone());
    let mut outcome = outcome::outcome(
        Some(&out),
        analysis.as_ref(),
        no_capture.as_deref(),
        findings,
        flows.filter(|_| lossy.is_none()),
    );
    if let Ok(c) = &captured {
        outcome.capture_stats = Some(outcome::CaptureStats {
            packets: c.packets.len() as u64,
            dropped: c.dropped,
            loopback_dropped,
        });
    }
    outcome.count(match (counters_before, counters_after) {
        _ if counters_shared => outcome::Counters::Shared(format!(
            "{} keeps its TCP counters for the whole stack, not per namespace, and other cases ran at the same time (run with -j 1 to observe them)",
            opts.stack.name
        )),
        (Ok(before), Ok(after)) => outcome::Counters::Read { before, after },
        (Err(e), _) | (_, Err(e)) => outcome::Counters::Failed(e),
    });
    let spill = opts.captures_dir.as_ref().map(|dir| {
        dir.join(&opts.run_id)
            .join(format!("{}.connections.jsonl", case.file_stem()))
    });
    if let Err(e) = report::spill_connections(&mut outcome, spill.as_deref()) {
        problems.push(e);
    }
    let mut r = case_report(case, Some(&out), outcome, sysctls);
    r.capture = capture_file;
    r.verdict = verdict::judge(case, &reach.name(), opts.link(), &r.facts(), &problems);
    r.timing = Timing {
        sandbox_ms,
        observe_setup_ms,
        run_ms,
        finish_ms: ms_since(phase),
    };
    r
}

/// The TCP counters of every host's stack, summed (one stack on loopback).
fn tcp_counters(
    ns: &Namespace,
    hosts: &Hosts,
    endpoints: &PerSide<Endpoint>,
) -> Result<BTreeMap<String, i64>, String> {
    let mut sum = BTreeMap::new();
    for &side in hosts.sides() {
        for (k, v) in endpoints[side].counters(hosts, ns, side)? {
            *sum.entry(k).or_insert(0) += v;
        }
    }
    Ok(sum)
}

/// Packets dropped before the capture could see them. On loopback, every
/// drop of lo. On the bench, what the router did not take in and what a
/// host could not send; a packet the router could not pass on was captured
/// as it arrived, and its loss is the link's, which the capture shows.
fn link_drops(ns: &Namespace, hosts: &Hosts) -> Result<u64, SandboxError> {
    let here = sandbox::link_drops(ns)?;
    if !hosts.is_bench() {
        return Ok(here.received + here.sent);
    }
    let mut sum = here.received;
    // A remote host's drops are its own machine's, out of sight.
    for &side in hosts.sides().iter().filter(|s| hosts.is_local(**s)) {
        sum += hosts.on(side, || sandbox::link_drops(ns))??.sent;
    }
    Ok(sum)
}

fn ms_since(t: Instant) -> f64 {
    driver::calls::ms(t.elapsed())
}

/// The case report: the case's identity, the driver's records and the
/// outcome. `out` is None when the case stopped before its steps ran.
fn case_report(
    case: &Case,
    out: Option<&DriverOutput>,
    outcome: Outcome,
    sysctls: BTreeMap<String, String>,
) -> CaseReport {
    CaseReport {
        id: case.id.clone(),
        scenario: case.scenario.id.clone(),
        scenario_file: case.scenario.path.display().to_string(),
        title: case.scenario.title.clone(),
        claims: case.scenario.claims.clone(),
        references: case.scenario.references.clone(),
        params: case.params.iter().cloned().collect(),
        capture: None,
        duration_ms: 0.0,
        timing: Timing::default(),
        steps: out.map(|o| o.steps.clone()).unwrap_or_default(),
        faults: out.map(|o| o.faults.clone()).unwrap_or_default(),
        outcome,
        sysctls,
        verdict: Verdict::unsupported(vec![]),
    }
}

/// A report for a case that ended before it could observe anything.
fn stopped(case: &Case, why: Stopped) -> CaseReport {
    let reason = match &why {
        Stopped::Error(_) => "the case stopped before its steps ran",
        Stopped::Unsupported(_) => "the case did not run: the stack lacks what it needs",
    };
    let outcome = outcome::outcome(None, None, Some(reason), vec![], None);
    let mut r = case_report(case, None, outcome, BTreeMap::new());
    r.verdict = match why {
        Stopped::Error(problems) => {
            let empty = crate::facts::CaseFacts {
                steps: &[],
                faults: &[],
                outcome: &r.outcome,
            };
            verdict::judge(case, "", Link::Loopback, &empty, &problems)
        }
        Stopped::Unsupported(missing) => Verdict::unsupported(missing),
    };
    r
}

/// A run id from the start time, to the millisecond so that two runs in
/// the same second do not share a capture folder: `20261121T101500.123Z`.
pub fn run_id(t: SystemTime) -> String {
    let millis = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    let secs = report::rfc3339(t).replace(['-', ':'], "");
    format!("{}.{millis:03}Z", secs.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn cases(text: &str) -> Vec<Case> {
        crate::catalogue::parse(std::path::Path::new("t.toml"), text).unwrap()
    }

    fn opts(stack: Stack) -> RunOptions {
        RunOptions {
            captures_dir: None,
            run_id: "r".into(),
            jobs: 2,
            stack,
            expected_ms: Default::default(),
            bench: false,
            hosts: Default::default(),
        }
    }

    /// A case that stopped before its steps ran claims no observation: no
    /// wire facts, no states, no TIME-WAIT side; the verdict says why.
    #[test]
    fn a_case_that_never_ran_reports_nulls_not_zeros() {
        let c = &cases(
            "title = \"t\"\nsteps = \"client close\"\n[[expect]]\nos = \"linux\"\nfacts = { \"time_wait.side\" = \"none\" }\n",
        )[0];
        let r = stopped(c, Stopped::Error(vec!["libpcap on lo: refused".into()]));
        assert!(r.outcome.wire.is_none() && r.steps.is_empty() && r.capture.is_none());
        assert_eq!(r.outcome.time_wait.side, None);
        assert_eq!(r.outcome.final_state, Default::default());
        assert!(!r.outcome.settled);
        assert_eq!(r.outcome.data.client_to_server.sent, None);
        assert!(r.outcome.unobserved.contains_key("time_wait"));
        assert_eq!(r.verdict.status, verdict::Status::Error);
        assert!(r.verdict.error.as_deref().unwrap().contains("refused"));
    }

    /// A panic inside one case is that case's `error`, with the panic's
    /// message, and does not take the run down.
    #[test]
    fn a_panicking_case_becomes_an_error_report() {
        let c = &cases("title = \"t\"\nsteps = \"client close\"\n")[0];
        let r = isolated(c, || panic!("driver bug"));
        assert_eq!(r.id, c.id);
        assert_eq!(r.verdict.status, verdict::Status::Error);
        let why = r.verdict.error.unwrap();
        assert!(why.contains("the harness panicked: driver bug"), "{why}");
    }

    /// The longest expected cases start first; a case without an estimate
    /// (new since the baseline) before them all; ties in input order.
    #[test]
    fn cases_start_longest_first_and_unknown_ones_before_them() {
        let cs = cases("title = \"t\"\nsteps = \"client close\"\nparams = { n = [1, 2, 3, 4] }\n");
        let ids: Vec<&str> = cs.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids.len(), 8);
        let expected: BTreeMap<String, f64> = [
            ("t/ipv4/n=1", 10.0),
            ("t/ipv4/n=2", 4000.0),
            ("t/ipv4/n=3", 10.0),
            ("t/ipv6/n=1", 1500.0),
            ("t/ipv6/n=2", 4000.0),
            ("t/ipv6/n=3", 10.0),
            ("t/ipv6/n=4", 20.0),
        ]
        .into_iter()
        .map(|(id, ms)| (id.to_string(), ms))
        .collect();
        assert!(
            expected.keys().all(|id| ids.contains(&id.as_str())),
            "{ids:?}"
        );
        let started: Vec<&str> = start_order(&cs, &expected)
            .into_iter()
            .map(|i| ids[i])
            .collect();
        assert_eq!(
            started,
            [
                "t/ipv4/n=4",
                "t/ipv4/n=2",
                "t/ipv6/n=2",
                "t/ipv6/n=1",
                "t/ipv6/n=4",
                "t/ipv4/n=1",
                "t/ipv4/n=3",
                "t/ipv6/n=3",
            ]
        );
        // Without estimates, the input order.
        assert_eq!(
            start_order(&cs, &BTreeMap::new()),
            (0..8).collect::<Vec<_>>()
        );
    }

    /// A stopped run starts nothing and says so, instead of pretending.
    #[test]
    fn a_stopped_run_lists_what_did_not_run() {
        let cs = cases("title = \"t\"\nsteps = \"client close\"\n");
        let stop = AtomicBool::new(true);
        let rep = run_all(&cs, &opts(Stack::linux("test")), &stop, &|_| {
            panic!("no case may run")
        });
        assert!(rep.interrupted);
        assert!(rep.cases.is_empty());
        assert_eq!(rep.not_run, ["t/ipv4", "t/ipv6"]);
    }

    /// A case with a fault step on a stack without a packet filter is
    /// `unsupported`, naming the step, and nothing runs.
    /// A run killed outright leaves its sandboxes' scratch directories; the
    /// next run removes those of processes that are gone, and no other.
    #[test]
    fn scratch_of_dead_runs_is_swept() {
        let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let tmp = std::env::temp_dir();
        let dead = tmp.join(format!("teardown-gvisor-{}-0", pid_max + 1));
        let mine = tmp.join(format!("teardown-gvisor-{}-999999", std::process::id()));
        let other = tmp.join(format!("teardown-gvisor-{}-bench", pid_max + 1));
        for d in [&dead, &mine, &other] {
            std::fs::create_dir_all(d.join("state")).unwrap();
        }
        sweep_stale_scratch();
        assert!(!dead.exists());
        assert!(mine.exists(), "this process's own scratch stays");
        assert!(other.exists(), "only <pid>-<n> names are scratch");
        for d in [&mine, &other] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn a_case_the_stack_cannot_run_is_unsupported() {
        let cs = cases(
            "title = \"t\"\nsteps = '''\ndrop all\nclient close\n'''\nparams = { family = [\"ipv4\"] }\n",
        );
        let r = run_case(&cs[0], &opts(Stack::gvisor("test")), &Reaper::default());
        assert_eq!(r.verdict.status, verdict::Status::Unsupported);
        assert!(r.verdict.unsupported[0].contains("`drop all` needs a packet filter"));
        assert!(r.steps.is_empty());
    }

    #[test]
    fn run_ids_sort_by_time_and_differ_within_a_second() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_258_861_907);
        assert_eq!(run_id(t), "20261121T110101.907Z");
        assert_ne!(run_id(t), run_id(t + Duration::from_millis(1)));
    }
}
