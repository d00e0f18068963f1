//! An agent whose stack is smoltcp (`teardown agent --smoltcp IFACE`): the
//! protocol of [`super`], served by smoltcp's TCP on a raw packet socket
//! bound to one interface. The host's kernel must not hold the addresses
//! given to smoltcp (on the bench, [`crate::sandbox::bench::Bench::hand_over`]
//! takes them away), or it would answer smoltcp's segments with RSTs.
//!
//! smoltcp has sockets, not descriptors, and no `bind()`, backlog or
//! shutdown of one half; the agent maps the protocol's calls:
//!
//! | call | on smoltcp |
//! |---|---|
//! | `socket`, `bind` | a handle; the port is the agent's to hand out (32768-60999), taken while any of its sockets has it |
//! | `listen(backlog)` | smoltcp sockets in LISTEN, refilled so that at most `backlog` + 1 connections wait for `accept` |
//! | `accept` | the oldest of them past SYN-RECEIVED |
//! | `connect` | smoltcp's connect; blocking ones wait for ESTABLISHED or CLOSED (refused, reset) |
//! | `write`, `read`, `recv(MSG_PEEK)` | `send_slice`, `recv_slice`, `peek_slice`; blocking ones wait for room or data |
//! | `shutdown(WR)`, `shutdown(RDWR)` | `close()`: a FIN (RDWR also ends reading) |
//! | `close()` | `close()` (a FIN, whatever is unread); SO_LINGER {1, 0}: `abort()` (a RST); SO_LINGER {1, n}: `close()`, then waits up to n s for the FIN's ACK |
//! | SO_RCVBUF, SO_SNDBUF | the buffers' sizes, fixed when the socket connects or listens |
//! | SO_KEEPALIVE, TCP_KEEPIDLE/INTVL | `set_keep_alive(idle)` |
//! | TCP_USER_TIMEOUT | `set_timeout` |
//! | TCP_NODELAY | Nagle off |
//! | FIONREAD, SIOCOUTQ | `recv_queue`, `send_queue` |
//! | socket states | smoltcp's own, for every socket the agent made, closed ones until CLOSED; no timers |
//!
//! What has no mapping ([`host::UNMAPPED`]) is said in the hello, so a case
//! that needs it is `unsupported`. smoltcp raises no signals and keeps no
//! counters or sysctls.
//!
//! One thread runs smoltcp: it polls the interface, takes the requests a
//! reader thread passes it, and advances the calls that wait each time the
//! stack has moved, or sleeps until a packet, a request or smoltcp's next
//! timer.

mod host;

use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use super::link::Config;
use super::serve::{Lines, Parsed, ServeError, write_line};
use super::{Answer, Hello, HelloLine, Op, Response};

/// The smoltcp release the agent is built with (checked against
/// Cargo.lock by a test).
pub(crate) const SMOLTCP_VERSION: &str = "0.14.0";

/// What this agent says about itself.
pub fn hello() -> Hello {
    let unmapped = host::UNMAPPED
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Hello::userspace(
        "smoltcp",
        SMOLTCP_VERSION,
        crate::observe::StateSource::StackTable,
        unmapped,
    )
}

/// What the reader thread passes on.
enum Incoming {
    Line(Parsed),
    End(Result<(), ServeError>),
}

/// The longest smoltcp is left without a poll when it names no time.
const IDLE: Duration = Duration::from_millis(100);

/// Serves one session on smoltcp: the hello, then requests from `input`
/// until `bye` or its end; every connection left is then aborted.
pub fn serve(
    input: impl BufRead + Send + 'static,
    mut output: Box<dyn Write + Send>,
    config: &Config,
) -> Result<(), ServeError> {
    let mut host = host::Host::open(config).map_err(|why| ServeError::Start {
        stack: "smoltcp",
        why,
    })?;
    write_line(&mut output, &HelloLine { hello: hello() })?;
    let (wake_read, wake_write) =
        nix::unistd::pipe().map_err(|e| ServeError::Read(std::io::Error::from(e)))?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("agent-reader".into())
        .spawn(move || {
            let mut lines = Lines::new(input);
            loop {
                let (next, last) = match lines.next_request() {
                    Ok(Some(line)) => (Incoming::Line(line), false),
                    Ok(None) => (Incoming::End(Ok(())), true),
                    Err(e) => (Incoming::End(Err(e)), true),
                };
                if tx.send(next).is_err() {
                    return;
                }
                let _ = nix::unistd::write(&wake_write, b"!");
                if last {
                    return;
                }
            }
        })
        .map_err(ServeError::Read)?;
    let mut answer = |id: Option<u64>, answer: Answer| -> Result<(), ServeError> {
        write_line(&mut output, &Response { id, answer })
    };
    let mut waiting: Vec<host::Pending> = Vec::new();
    let ended = loop {
        host.poll();
        let mut end = None;
        while let Ok(incoming) = rx.try_recv() {
            let request = match incoming {
                Incoming::End(r) => {
                    end = Some(r);
                    break;
                }
                Incoming::Line(Err((id, why))) => {
                    answer(id, Answer::Error(why))?;
                    continue;
                }
                Incoming::Line(Ok(r)) => r,
            };
            if let Op::Bye = request.op {
                answer(Some(request.id), Answer::Bye(true))?;
                end = Some(Ok(()));
                break;
            }
            if let Some(why) = host.unknown_handle(&request.op) {
                answer(Some(request.id), Answer::Error(why))?;
                continue;
            }
            let taken = Instant::now();
            match host.start(request.id, &request.op, taken) {
                Ok(Ok(a)) => answer(Some(request.id), took(a, taken))?,
                Ok(Err(p)) => waiting.push(p),
                Err(why) => answer(Some(request.id), Answer::Error(why))?,
            }
        }
        if let Some(end) = end {
            break end;
        }
        let now = Instant::now();
        let mut moved = false;
        let mut i = 0;
        while i < waiting.len() {
            match host.advance(&mut waiting[i], now) {
                Some(a) => {
                    let p = waiting.swap_remove(i);
                    answer(Some(p.id), took(a, p.started))?;
                    moved = true;
                }
                None => i += 1,
            }
        }
        if moved {
            continue;
        }
        let mut sleep = host.delay().unwrap_or(IDLE).min(IDLE);
        for p in &waiting {
            sleep = sleep.min(p.deadline.saturating_duration_since(now));
        }
        if !sleep.is_zero() {
            wait_for(host.device_fd(), wake_read.as_fd().as_raw_fd(), sleep);
            let mut drain = [0u8; 64];
            // The pipe is read only after poll said it had bytes.
            while ready_now(wake_read.as_raw_fd()) {
                if nix::unistd::read(&wake_read, &mut drain).unwrap_or(0) == 0 {
                    break;
                }
            }
        }
    };
    host.abort_all();
    ended
}

/// Every call's time, from when its request was taken.
fn took(mut a: Answer, started: Instant) -> Answer {
    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let set = |r: &mut crate::driver::calls::CallResult| {
        r.took_us.get_or_insert(us);
    };
    match &mut a {
        Answer::Result(r) => set(r),
        Answer::Data(d) => set(&mut d.result),
        Answer::Results(rs) => rs.iter_mut().for_each(set),
        _ => {}
    }
    a
}

/// Sleeps until a packet arrives, a request is passed on, or `at_most`.
fn wait_for(device: i32, wake: i32, at_most: Duration) {
    let mut fds = [
        libc::pollfd {
            fd: device,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = i32::try_from(at_most.as_millis().max(1)).unwrap_or(i32::MAX);
    // SAFETY: two valid pollfd structs; an EINTR just ends the sleep early.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
}

fn ready_now(fd: i32) -> bool {
    crate::driver::calls::poll_now(
        &crate::driver::sockets::OS,
        vec![libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }],
    )[0] & libc::POLLIN
        != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smoltcp_release_named_is_the_one_built() {
        let lock = include_str!("../../../../../Cargo.lock");
        let entry = format!("name = \"smoltcp\"\nversion = \"{SMOLTCP_VERSION}\"");
        assert!(
            lock.contains(&entry),
            "Cargo.lock has another smoltcp than {SMOLTCP_VERSION}"
        );
    }

    /// What the hello announces as unmapped is what makes a case
    /// unsupported: every name is one a step's call can need.
    #[test]
    fn every_unmapped_name_is_a_feature_a_call_can_need() {
        use crate::scenario::{How, IoctlQuery, SockOpt, features};
        let options = [
            SockOpt::Cork(true),
            SockOpt::Linger2(1),
            SockOpt::KeepCnt(1),
            SockOpt::RcvLowat(1),
            SockOpt::ReusePort(true),
        ];
        let mut known = vec![features::DISCONNECT, features::LISTENER_SHUTDOWN];
        known.extend(features::of_write(true));
        known.extend(features::of_shutdown(How::Read));
        known.extend(features::of_ioctl(IoctlQuery::OutQueueNotSent));
        known.extend(options.into_iter().flat_map(features::of_option));
        let unmapped = hello().unmapped;
        assert_eq!(unmapped.len(), known.len(), "{unmapped:?}");
        for (name, why) in unmapped {
            assert!(known.contains(&name.as_str()), "{name}");
            assert!(!why.is_empty());
        }
    }
}
