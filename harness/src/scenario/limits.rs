//! Bounds on what a scenario file may ask for. Each is far above anything
//! the catalogue needs and far below what would exhaust the machine or make
//! a run unstoppable; a value beyond one is an error naming the file, line
//! and the limit, found by `teardown check` before anything runs.

use std::time::Duration;

/// A scenario file larger than this is not a scenario (1 MiB).
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 20;

/// Cases one scenario may expand to (the product of its parameter axes).
pub(crate) const MAX_CASES: u64 = 1024;

/// Values one parameter axis may list.
pub(crate) const MAX_AXIS_VALUES: usize = 256;

/// Steps of one case (after expansion).
pub(crate) const MAX_STEPS: usize = 10_000;

/// Connections one case may open (`client#N`, `client#1..N`): each holds
/// two descriptors and a few kilobytes of kernel memory.
pub(crate) const MAX_CONNECTIONS: u32 = 20_000;

/// Bytes one `write` step may hand to the kernel (1 GiB). Writes are
/// streamed in chunks, so this bounds the time a step takes, not memory.
pub(crate) const MAX_WRITE: u64 = 1 << 30;

/// What a `read ... keep` step keeps of the bytes it read, as its `text`.
pub(crate) const MAX_KEPT: usize = 4096;

/// A quoted payload is written out whole; keep it small.
pub(crate) const MAX_TEXT_PAYLOAD: u64 = 64 * 1024;

/// Longest wait of one step (`within`, `sleep`, `TCP_USER_TIMEOUT`) and of
/// a scenario's `timeout` and `settle`: 10 minutes. A run must stay
/// stoppable by SIGTERM within a bounded time.
pub(crate) const MAX_STEP_WAIT: Duration = Duration::from_secs(600);

/// SO_LINGER and TCP_LINGER2 times, in seconds (they bound a blocking
/// close or an orphan's life).
pub(crate) const MAX_LINGER_SECS: i64 = 600;

/// `listen` backlog (the kernel caps it at net.core.somaxconn anyway).
pub(crate) const MAX_BACKLOG: i64 = 1 << 20;
