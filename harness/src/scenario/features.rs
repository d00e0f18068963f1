//! The socket API's features a call needs beyond what every stack has, by
//! their C names: what a stack's agent can say it has no mapping for
//! (`Hello::unmapped`), so that a case needing one is `unsupported` before
//! it runs instead of failing on a call the stack cannot make.

use super::{Actor, Call, How, IoctlQuery, Role, SockOpt};

/// `connect()` with `AF_UNSPEC`.
pub(crate) const DISCONNECT: &str = "connect(AF_UNSPEC)";

/// `shutdown()` on a listening socket (Linux stops listening and resets
/// the connections waiting to be accepted).
pub(crate) const LISTENER_SHUTDOWN: &str = "shutdown() on a listener";

pub(crate) fn of_write(more: bool) -> Vec<&'static str> {
    if more { vec!["MSG_MORE"] } else { vec![] }
}

pub(crate) fn of_shutdown(how: How) -> Vec<&'static str> {
    match how {
        How::Read => vec!["SHUT_RD"],
        How::Write | How::Both => vec![],
    }
}

/// Options every stack here has are not features; the others are, by
/// their C names.
pub(crate) fn of_option(opt: SockOpt) -> Vec<&'static str> {
    match opt {
        SockOpt::Cork(_)
        | SockOpt::Linger2(_)
        | SockOpt::KeepCnt(_)
        | SockOpt::RcvLowat(_)
        | SockOpt::ReusePort(_)
        | SockOpt::UserTimeout(_)
        | SockOpt::KeepIdle(_)
        | SockOpt::KeepIntvl(_) => vec![opt.c_name()],
        SockOpt::Linger(_)
        | SockOpt::RcvBuf(_)
        | SockOpt::SndBuf(_)
        | SockOpt::ReuseAddr(_)
        | SockOpt::KeepAlive(_)
        | SockOpt::NoDelay(_)
        | SockOpt::NonBlocking(_) => vec![],
    }
}

pub(crate) fn of_ioctl(query: IoctlQuery) -> Vec<&'static str> {
    match query {
        IoctlQuery::OutQueueNotSent => vec!["SIOCOUTQNSD"],
        IoctlQuery::InQueue | IoctlQuery::OutQueue => vec![],
    }
}

/// What a step's call needs, made by `actor`.
pub fn of(actor: Actor, call: &Call) -> Vec<&'static str> {
    match call {
        Call::Write { more, .. } => of_write(*more),
        Call::Shutdown(how) => {
            let mut uses = of_shutdown(*how);
            if actor.role == Role::Listener {
                uses.push(LISTENER_SHUTDOWN);
            }
            uses
        }
        Call::SetOption(opt) => of_option(*opt),
        Call::Ioctl(query) => of_ioctl(*query),
        Call::Disconnect => vec![DISCONNECT],
        Call::Listen { .. }
        | Call::Bind(_)
        | Call::Connect
        | Call::Accept
        | Call::Read { .. }
        | Call::Close
        | Call::GetOption(_)
        | Call::Wait { .. } => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_needs_what_its_flags_and_options_name() {
        assert_eq!(of_write(true), ["MSG_MORE"]);
        assert!(of_write(false).is_empty());
        let client = Actor::CLIENT;
        assert_eq!(of(client, &Call::Shutdown(How::Read)), ["SHUT_RD"]);
        assert!(of(client, &Call::Shutdown(How::Both)).is_empty());
        let listener = Actor {
            role: Role::Listener,
            index: 1,
        };
        assert_eq!(
            of(listener, &Call::Shutdown(How::Both)),
            [LISTENER_SHUTDOWN]
        );
        assert_eq!(
            of(client, &Call::SetOption(SockOpt::Cork(true))),
            ["TCP_CORK"]
        );
        assert_eq!(of(client, &Call::Disconnect), [DISCONNECT]);
        assert!(of(client, &Call::Close).is_empty());
    }
}
