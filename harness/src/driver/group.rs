//! Steps on several connections' sockets at once: `client#1..100 connect`,
//! `every server close`.
//!
//! Connects are started together and waited for together, and so are
//! accepts; every other call is made on each socket in turn, all within the
//! step's one bound. The step's record says what the calls agree on, and
//! how many ended which way ([`GroupResult`]).

use std::collections::BTreeMap;
use std::time::Instant;

use super::calls::{self, CallResult, GroupResult};
use super::{Backoff, Driver};
use crate::scenario::{Actor, Call, Group, Role, WaitFor};
use crate::tcp::{Side, TcpState};

/// Folds the results of one call per socket into the step's result.
pub(crate) fn aggregate(target: String, results: &[CallResult]) -> CallResult {
    fn same<T: Clone + PartialEq>(xs: impl Iterator<Item = T>) -> Option<T> {
        let mut it = xs;
        let first = it.next()?;
        it.all(|x| x == first).then_some(first)
    }
    let mut g = GroupResult {
        target,
        sockets: u32::try_from(results.len()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    for r in results {
        let failed = r
            .errno
            .as_deref()
            .filter(|e| *e != "EINPROGRESS")
            .or(r.so_error.as_deref().filter(|e| *e != "0"));
        match (r.timed_out, failed, &r.harness_error) {
            (_, _, Some(_)) => {}
            (true, _, _) => g.timed_out += 1,
            (false, Some(e), _) => *g.errnos.entry(e.to_string()).or_default() += 1,
            (false, None, None) => g.ok += 1,
        }
    }
    let errors: Vec<&str> = results
        .iter()
        .filter_map(|r| r.harness_error.as_deref())
        .collect();
    let note = {
        let mut parts = vec![format!("{} of {} ok", g.ok, g.sockets)];
        if g.timed_out > 0 {
            parts.push(format!("{} timed out", g.timed_out));
        }
        parts.extend(g.errnos.iter().map(|(e, n)| format!("{n} {e}")));
        if !errors.is_empty() {
            parts.push(format!("{} could not be attempted", errors.len()));
        }
        parts.join(", ")
    };
    CallResult {
        ret: same(results.iter().map(|r| r.ret)).flatten(),
        errno: same(results.iter().map(|r| r.errno.clone())).flatten(),
        bytes: results
            .iter()
            .map(|r| r.bytes)
            .try_fold(0u64, |sum, b| b.map(|b| sum + b)),
        value: same(results.iter().map(|r| r.value)).flatten(),
        so_error: same(results.iter().map(|r| r.so_error.clone())).flatten(),
        signal: same(results.iter().map(|r| r.signal.clone())).flatten(),
        tcp_state: same(results.iter().map(|r| r.tcp_state)).flatten(),
        timed_out: g.timed_out > 0,
        partial: results.iter().any(|r| r.partial),
        note: Some(note),
        text: None,
        harness_error: errors.first().map(|e| {
            if errors.len() > 1 {
                format!("{e} (and {} more like it)", errors.len() - 1)
            } else {
                e.to_string()
            }
        }),
        unobserved: results.iter().find_map(|r| r.unobserved.clone()),
        group: Some(g),
        // Timed by an agent: the group took until its last call ended.
        took_us: results
            .iter()
            .map(|r| r.took_us)
            .collect::<Option<Vec<u64>>>()
            .and_then(|t| t.into_iter().max()),
    }
}

impl Driver<'_, '_> {
    /// The members of a group, as connection numbers, at this point:
    /// `every` is every socket the role holds open.
    fn members(&self, role: Role, group: Group) -> Vec<u32> {
        match group {
            Group::Range(a, b) => (a..=b).collect(),
            Group::Every => self
                .sockets
                .keys()
                .filter(|a| a.role == role)
                .map(|a| a.index)
                .collect(),
        }
    }

    /// Runs `call` on every socket of `group`.
    pub(super) fn group_call(
        &mut self,
        actor: Actor,
        group: Group,
        call: &Call,
        deadline: Instant,
    ) -> CallResult {
        let target = group.describe(actor.role);
        let results = match call {
            Call::Connect => {
                let members = self.members(Role::Client, group);
                self.connect_all(&members, deadline)
            }
            Call::Accept => {
                // `every server accept`: every connection a client made.
                let members = match group {
                    Group::Every => self.conns.numbers(),
                    range => self.members(Role::Server, range),
                };
                self.accept_all(&members, deadline)
            }
            Call::Wait {
                what: WaitFor::State(want),
                ..
            } => {
                // A state wait watches closed sockets too.
                let members = match group {
                    Group::Every => {
                        let mut m: Vec<u32> = self
                            .sockets
                            .keys()
                            .chain(&self.closed)
                            .filter(|a| a.role == actor.role)
                            .map(|a| a.index)
                            .collect();
                        m.sort_unstable();
                        m.dedup();
                        m
                    }
                    range => self.members(actor.role, range),
                };
                self.wait_state_all(actor.role, &members, *want, deadline)
            }
            Call::Close => {
                let members = self.members(actor.role, group);
                self.close_all(actor.role, &members)
            }
            other => {
                let members = self.members(actor.role, group);
                members
                    .iter()
                    .enumerate()
                    .map(|(i, &index)| {
                        calls::pace(i);
                        let a = Actor {
                            role: actor.role,
                            index,
                        };
                        self.socket_call(a, other, deadline).unwrap_or_else(|e| *e)
                    })
                    .collect()
            }
        };
        aggregate(target, &results)
    }

    /// Starts every connect at once, then waits for all, bounded together
    /// (see [`calls::connect_many`]).
    fn connect_all(&mut self, members: &[u32], deadline: Instant) -> Vec<CallResult> {
        let mut results: Vec<Option<CallResult>> = vec![None; members.len()];
        let mut handles = Vec::new();
        let mut which = Vec::new();
        for (i, &index) in members.iter().enumerate() {
            let actor = Actor {
                role: Role::Client,
                index,
            };
            match self.ensure_socket(actor) {
                Ok(h) => {
                    handles.push(h);
                    which.push(i);
                }
                Err(r) => results[i] = Some(*r),
            }
        }
        let done =
            self.io.endpoints[Side::Client].connect_many(&handles, self.ends.server, deadline);
        for (i, r) in which.into_iter().zip(done) {
            self.note_connected(Actor {
                role: Role::Client,
                index: members[i],
            });
            results[i] = Some(r);
        }
        results.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Closes every socket of `members`, in order, on their host's endpoint
    /// at once.
    fn close_all(&mut self, role: Role, members: &[u32]) -> Vec<CallResult> {
        let mut results: Vec<Option<CallResult>> = vec![None; members.len()];
        let mut socks = Vec::new();
        let mut which = Vec::new();
        for (i, &index) in members.iter().enumerate() {
            match self.socket_to_close(Actor { role, index }) {
                Ok(s) => {
                    socks.push(s);
                    which.push(i);
                }
                Err(r) => results[i] = Some(*r),
            }
        }
        let side = Actor { role, index: 0 }.host();
        let done = self.io.endpoints[side].close_many(socks);
        for (i, r) in which.into_iter().zip(done) {
            results[i] = Some(r);
        }
        results.into_iter().map(Option::unwrap_or_default).collect()
    }

    /// Accepts until every connection of `members` is accepted, or the
    /// bound runs out. Connections of others that come first are accepted
    /// too, under their own numbers.
    fn accept_all(&mut self, members: &[u32], deadline: Instant) -> Vec<CallResult> {
        let wanted: std::collections::BTreeSet<u32> = members.iter().copied().collect();
        let mut results: BTreeMap<u32, CallResult> = BTreeMap::new();
        let mut backoff = Backoff::new();
        while results.len() < wanted.len() {
            match self.accept_one() {
                Ok(Some((index, r))) => {
                    if wanted.contains(&index) {
                        results.insert(index, r);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(r) => {
                    for &index in members {
                        results.entry(index).or_insert_with(|| (*r).clone());
                    }
                    break;
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            backoff.sleep(deadline);
        }
        members
            .iter()
            .map(|index| {
                results.remove(index).unwrap_or_else(|| CallResult {
                    timed_out: true,
                    note: Some("not accepted before the step's bound ran out".into()),
                    ..Default::default()
                })
            })
            .collect()
    }

    /// Waits until every member's `role` side is in `want` (CLOSED: gone),
    /// bounded together; each member's result says whether it got there.
    fn wait_state_all(
        &mut self,
        role: Role,
        members: &[u32],
        want: TcpState,
        deadline: Instant,
    ) -> Vec<CallResult> {
        let side = match role {
            Role::Client => crate::tcp::Side::Client,
            _ => crate::tcp::Side::Server,
        };
        let mut backoff = Backoff::new();
        // Whether the last look found every member there, some of them by
        // their absence: a dump can miss a socket in the middle of its move
        // to a TIME-WAIT mini-socket, so absence counts once a second look
        // agrees.
        let mut absent_once = false;
        loop {
            self.observe();
            let states: Vec<Option<TcpState>> =
                members.iter().map(|&i| self.state_of(i, side)).collect();
            let sees_all = self.last_snapshot.sees_orphans[side];
            let reached = |s: &Option<TcpState>| {
                *s == Some(want) || (s.is_none() && sees_all && want == TcpState::Closed)
            };
            let all = states.iter().all(reached);
            if all && states.iter().any(Option::is_none) && !absent_once {
                absent_once = true;
                continue;
            }
            absent_once = false;
            if all || Instant::now() >= deadline {
                return states
                    .iter()
                    .map(|s| {
                        if reached(s) {
                            CallResult::ok(0)
                        } else {
                            CallResult {
                                timed_out: true,
                                note: Some(match s {
                                    Some(s) => format!("still {s}"),
                                    None => "out of sight of the stack's state source".into(),
                                }),
                                ..Default::default()
                            }
                        }
                    })
                    .collect();
            }
            backoff.sleep(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_result_says_what_all_agree_on_and_counts_the_rest() {
        let ok = CallResult::ok(0);
        let refused = CallResult {
            ret: Some(-1),
            errno: Some("ECONNREFUSED".into()),
            ..Default::default()
        };
        let late = CallResult {
            timed_out: true,
            ..Default::default()
        };
        let r = aggregate(
            "client#1..4".into(),
            &[ok.clone(), refused.clone(), late, ok.clone()],
        );
        let g = r.group.as_ref().unwrap();
        assert_eq!((g.sockets, g.ok, g.timed_out), (4, 2, 1));
        assert_eq!(g.errnos["ECONNREFUSED"], 1);
        assert_eq!(r.ret, None, "the calls disagree");
        assert!(r.timed_out);
        assert_eq!(
            r.note.as_deref(),
            Some("2 of 4 ok, 1 timed out, 1 ECONNREFUSED")
        );
        let all = aggregate("every client".into(), &[ok.clone(), ok]);
        assert_eq!(all.ret, Some(0));
        assert!(!all.timed_out);
        // A non-blocking connect that failed later counts by its SO_ERROR.
        let nb = calls::connected(true, Some("ECONNREFUSED".into()));
        let g = aggregate("client#1..1".into(), &[nb]).group.unwrap();
        assert_eq!(g.errnos["ECONNREFUSED"], 1);
    }
}
