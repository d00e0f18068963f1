//! The driver: runs a case's steps on real sockets, and what it records.
//!
//! The step interpreter ([`run`], Linux: it drives hosts in network
//! namespaces) owns the client, server and listener sockets, performs each
//! step's calls (see [`calls`]) on each host's endpoint (in this process,
//! or an [`agent`]), records what every call returned and how long it
//! took, and after every step drains the capture and takes a snapshot of
//! the stack's socket states. Waits are on observable events (a TCP state,
//! readability) and always bounded. At the end it waits, bounded, for
//! transient TCP states to resolve, and takes the final snapshot. It never
//! judges a result. The calls and the agent build on every OS the agent
//! does (see `just lint`); the records, for every reader of reports.

pub mod agent;
pub mod calls;
#[cfg(target_os = "linux")]
pub mod endpoint;
#[cfg(target_os = "linux")]
mod interpret;
#[cfg(any(target_os = "freebsd", target_os = "macos"))]
#[path = "bsd.rs"]
mod os;
#[cfg(windows)]
#[path = "windows.rs"]
mod os;
#[cfg(target_os = "linux")]
#[path = "linux.rs"]
mod os;
pub mod pattern;
#[cfg(unix)]
mod posix;
#[cfg(target_os = "linux")]
pub mod program;
pub mod sockets;
#[cfg(windows)]
mod winsock;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use calls::{CallResult, FdCall, GroupResult, StreamLog};
#[cfg(target_os = "linux")]
pub use endpoint::{Endpoint, Handle, Sock, SysctlError};
#[cfg(target_os = "linux")]
pub use interpret::{Instruments, OpenSockets, run};

use crate::fault::FaultRecord;
use crate::observe::{Destroyed, Ends, Snapshot, Timeline};
use crate::scenario::{Actor, Verb};
use crate::tcp::{PerSide, Side};

pub use crate::scenario::SERVER_PORT;

/// One step as it ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StepRecord {
    /// Line in the scenario file (null for the implicit connection setup).
    pub line: Option<usize>,
    /// How facts name this step: its label, `lineN`, or `setupN` for the
    /// implicit connection setup (`steps.KEY.ret`).
    pub key: String,
    /// Who made the call; null for sleep, join and fault steps.
    pub actor: Option<Actor>,
    /// The call made.
    pub verb: Verb,
    /// The step as written.
    pub call: String,
    pub label: Option<String>,
    pub background: bool,
    /// Milliseconds since the case started, when the call began.
    pub start_ms: f64,
    /// How long the call took (for bg steps: until it returned, not until joined).
    pub duration_ms: f64,
    /// What the call returned.
    #[serde(flatten)]
    pub result: CallResult,
}

/// What became of a program a case ran.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProgramRecord {
    /// The end it was.
    pub side: Side,
    /// The command as started (built-ins filled in).
    pub command: Vec<String>,
    /// Milliseconds since the case started, when a socket first listened
    /// on its port; null if it never did.
    pub ready_ms: Option<f64>,
    /// Its exit status, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it (`SIGTERM`), if one did.
    pub signal: Option<String>,
    /// How it ended: `exited` (by itself, before the harness stopped it),
    /// `stopped` (on the harness's SIGTERM), `killed` (SIGKILL after the
    /// grace), `time-limit` (stopped for running past its time limit), or
    /// `lost` (the supervisor died).
    pub ended: Option<String>,
    /// Processes it left behind in its namespace when it exited (a daemon
    /// outside its process group, or one that outlived the SIGTERM), killed
    /// then; not those that had ended by themselves or of the stop's
    /// SIGTERM.
    pub leftovers: u32,
    /// The last bytes it wrote to stdout and stderr, and how many in all.
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

impl ProgramRecord {
    /// The last of what it wrote to stderr, for an error message.
    pub fn stderr_tail(&self) -> String {
        let t = self.stderr.trim_end();
        if t.is_empty() {
            "(its stderr was empty)".into()
        } else {
            format!("its stderr ends: {t}")
        }
    }

    /// A program just started.
    pub fn new(side: Side, command: Vec<String>) -> ProgramRecord {
        ProgramRecord {
            side,
            command,
            ready_ms: None,
            exit_code: None,
            signal: None,
            ended: None,
            leftovers: 0,
            stdout: String::new(),
            stderr: String::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
        }
    }
}

/// Per-direction application-level accounting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounts {
    pub written: u64,
    pub read: u64,
    pub corrupted: u64,
}

/// What the driver knows of one connection, by its number (`client#3`'s).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionApp {
    /// The client addresses it connected from, first one first (a
    /// reconnect adds one).
    pub clients: Vec<SocketAddr>,
    /// Application byte counts, by the side that wrote them.
    pub flows: PerSide<FlowCounts>,
}

/// What the driver observed.
#[derive(Debug)]
pub struct DriverOutput {
    pub steps: Vec<StepRecord>,
    /// Connection 1's addresses: the connection under test of a one-pair
    /// case.
    pub ends: Ends,
    /// Connection 1's application byte counts by the side that wrote them.
    pub flows: PerSide<FlowCounts>,
    /// Every connection a client made, by number.
    pub connections: BTreeMap<u32, ConnectionApp>,
    pub timeline: Timeline,
    /// The stack's socket table at the end of the case.
    pub final_snapshot: Snapshot,
    /// When the final snapshot was asked for, in milliseconds since the
    /// case started: a timer in it runs out that much later than it says.
    pub final_snapshot_ms: f64,
    /// Whether the application closed each side's socket.
    pub closed: PerSide<bool>,
    /// Whether the harness ever held a descriptor for each side (a
    /// connection never accepted has no server descriptor).
    pub held: PerSide<bool>,
    /// Whether every transient state resolved within the settle bound.
    pub settled: bool,
    pub settle_bound: Duration,
    /// Fault rules the steps put in place, with what each matched.
    pub faults: Vec<FaultRecord>,
    /// The same rules, with what they match and when they were in place.
    pub placed: Vec<crate::fault::Placed>,
    /// The program on one end, if the case ran one, and what became of it.
    pub program: Option<ProgramRecord>,
    /// Sockets the stack announced as destroyed (the runner adds those
    /// closed after the steps).
    pub destroyed: Destroyed,
    /// Problems of the harness or of the scenario as written (not of the OS).
    pub problems: Vec<String>,
}
