//! Sinks: everything that turns reports into something a person or a CI
//! system reads. Each sink is one file and reads only the report model (and
//! the fact model, to name facts); none computes a fact or a verdict.
//!
//! | sink | output |
//! |---|---|
//! | [`console`] | the run's table, `list`, the summary line |
//! | [`progress`] | progress while a run goes (bar on a terminal, lines in a log) |
//! | [`junit`] | JUnit XML for CI systems |
//! | [`ladder`] | a case as a ladder diagram, as text (`teardown explain`) |
//! | [`html`] | one self-contained page: overview, claims, SVG ladders |
//! | [`compare`] | a comparison of reports as a table or Markdown |
//! | [`terminal`] | not an output: what stdout or stderr can show (colour, width), for the others |
//! | [`analysis`] | `teardown analyze`: a capture's connections as a table, JSON, JSON Lines or Zeek conn.log |
//!
//! The JSON report itself is written by `report::write`. A new output form
//! is a new file here.

pub mod analysis;
pub mod compare;
pub mod console;
pub mod html;
pub mod junit;
pub mod ladder;
pub mod progress;
pub mod terminal;
