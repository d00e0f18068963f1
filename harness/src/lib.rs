//! `teardown`: shows, by experiment, what an OS's TCP stack does when a
//! connection ends.
//!
//! Data flows one way through one module per stage:
//!
//! ```text
//! scenario  files -> Scenario -> Case (one per parameter combination)
//! sandbox   a fresh network namespace per case, lo up
//! capture   libpcap on that lo, active before the first socket exists
//! driver    runs the steps on real sockets, records every call
//! observe   sock_diag snapshots of both ends' kernel states
//! wire      link-layer frames -> TCP segments
//! analyze   segments + calls -> Outcome (typed facts, nothing expected)
//! verdict   Outcome vs. the scenario's expectations for this OS
//! report    JSON report, console table; written atomically
//! ```
//!
//! `runner` wires the stages together for one case and for a whole run;
//! `cli` parses arguments and nothing more.

pub mod analyze;
pub mod baseline;
pub mod capture;
pub mod cli;
pub mod compare;
pub mod driver;
pub mod fault;
pub mod junit;
pub mod ladder;
pub mod observe;
pub mod render;
pub mod report;
pub mod runner;
pub mod sandbox;
pub mod scenario;
pub mod tcp;
pub mod verdict;
pub mod wire;
