//! `teardown`: shows, by experiment, what a TCP stack does when a
//! connection ends.
//!
//! Data flows one way through one module per stage; no stage imports a
//! later one:
//!
//! ```text
//! scenario   files -> Scenario -> Case (one per parameter combination)
//! sandbox    a fresh network namespace per case, lo up, sysctls; or the bench
//! capture    libpcap or a raw packet socket, active first
//! wire       link-layer frames -> TCP segments
//! analyze    segments -> connection facts (streaming, per connection)
//! observe    the stack's socket states (sock_diag or TCP_INFO)
//! fault      fault rules in the case's packet filter
//! stack      the stack under test, what it can observe; a bench host's stack
//! driver     runs the steps on real sockets (in process or an agent's)
//! outcome    driver records + connection facts -> a case's Outcome
//! facts      the fact model: every fact's path, meaning and getter
//! catalogue  scenarios loaded for the other stages, fact paths checked
//! verdict    Outcome vs. the scenario's expectations for this stack
//! report     the JSON report model, written atomically; reading it back
//! ```
//!
//! Readers of reports: `baseline` (drift in CI), `compare` (reports side by
//! side). Outputs are sinks, one file each, in `sinks/`. `runner` wires the
//! stages for one case and for a whole run; `cli` parses arguments and
//! dispatches. `tcp` and `files` are shared leaves (TCP vocabulary; atomic
//! writes and bounded reads).
//!
//! A new fact goes in `facts::KINDS` (computed in `analyze` or `outcome`); a new
//! output format is a new file in `sinks/`; a new stack is a `stack::Stack`
//! and, where it needs them, backends in `capture`, `observe` and `fault`.

pub mod analyze;
pub mod baseline;
pub mod capture;
pub mod catalogue;
pub mod cli;
pub mod compare;
pub mod diagnosis;
pub mod driver;
pub mod facts;
pub mod fault;
pub mod files;
pub mod observe;
pub mod outcome;
pub mod report;
#[cfg(target_os = "linux")]
pub mod runner;
pub mod sandbox;
pub mod scenario;
pub mod sinks;
pub mod stack;
pub mod tcp;
pub mod verdict;
pub mod wire;
