//! The step language: one line per socket call, read like a protocol trace.
//!
//! ```text
//! client setsockopt SO_RCVBUF 4KiB
//! listener listen
//! client connect
//! server accept
//! server write 64KiB
//! server shutdown WR
//! client read until-eof
//! client write "Thank you"
//! bg client close as lclose       # runs on its own thread; may block
//! server wait state CLOSE-WAIT within 2s
//! join lclose
//! ```
//!
//! This module turns text into [`Step`]s; it knows nothing about sockets.

use std::fmt;
use std::time::Duration;

use crate::fault::{Direction, FlagMatch, Rule, Verdict};
use crate::tcp::TcpState;

/// Who performs a step. The listener accepts; `server` is the accepted socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    Client,
    Server,
    Listener,
}

impl Actor {
    pub fn name(self) -> &'static str {
        match self {
            Actor::Client => "client",
            Actor::Server => "server",
            Actor::Listener => "listener",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `shutdown(2)`'s `how`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum How {
    Read,
    Write,
    Both,
}

/// What a write puts into the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// `n` bytes of the deterministic pattern (see `driver::pattern`).
    Pattern(usize),
    /// Literal bytes, written as a quoted string.
    Text(Vec<u8>),
}

impl Payload {
    pub fn len(&self) -> usize {
        match self {
            Payload::Pattern(n) => *n,
            Payload::Text(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How much a read asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAmount {
    /// Exactly `n` bytes, or fewer if EOF or an error comes first.
    Exactly(usize),
    /// Until `read()` returns 0 or fails.
    UntilEof,
    /// Whatever is queued now, without waiting.
    Available,
}

/// A socket option or file-status flag a step can set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockOpt {
    /// `SO_LINGER`: `None` = off, `Some(secs)` = on with that timeout.
    Linger(Option<u32>),
    RcvBuf(usize),
    SndBuf(usize),
    ReuseAddr(bool),
    ReusePort(bool),
    KeepAlive(bool),
    NoDelay(bool),
    /// `TCP_LINGER2`: orphaned FIN-WAIT-2 lifetime in seconds (may be -1).
    Linger2(i32),
    /// `TCP_USER_TIMEOUT` in milliseconds.
    UserTimeout(u32),
    /// `O_NONBLOCK` via `fcntl(2)`.
    NonBlocking(bool),
}

/// `ioctl(2)` queries on a connected socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoctlQuery {
    /// Bytes queued for reading (`FIONREAD`/`SIOCINQ`).
    InQueue,
    /// Bytes not yet acknowledged by the peer (`SIOCOUTQ`).
    OutQueue,
    /// Bytes not yet sent (`SIOCOUTQNSD`).
    OutQueueNotSent,
}

/// An observable event a step can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// The actor's socket (found by sock_diag, fd or not) is in this state.
    State(TcpState),
    Readable,
    Writable,
}

/// What a step does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Listen {
        backlog: i32,
    },
    Connect,
    /// `bind()` to this local port before connect (client only).
    Bind(u16),
    /// `connect()` with `AF_UNSPEC`: dissolve the association.
    Disconnect,
    Accept,
    Write {
        payload: Payload,
        nosignal: bool,
        dontwait: bool,
    },
    Read {
        amount: ReadAmount,
        dontwait: bool,
    },
    Shutdown(How),
    Close,
    SetOption(SockOpt),
    Ioctl(IoctlQuery),
    Wait(WaitFor),
    Sleep(Duration),
    Join(String),
    /// Put a packet filter rule in place (`drop ...`, `reject ...`).
    Fault(Rule),
    /// Remove the fault labelled so, or every fault (`heal`).
    Heal(Option<String>),
}

/// One parsed step line.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Line in the scenario file; `None` for the implicit connection setup.
    pub line: Option<usize>,
    /// The step as written (after parameter substitution, comment removed).
    pub text: String,
    /// `None` for `sleep`, `join` and fault steps.
    pub actor: Option<Actor>,
    pub action: Action,
    /// `as NAME`: lets expectations and `join` refer to this step.
    pub label: Option<String>,
    /// `bg ...`: run on a separate thread; `join` waits for it.
    pub background: bool,
    /// `within DUR`: bound on any waiting this step does.
    pub within: Option<Duration>,
    /// `since LABEL` (wait steps): the step's clock - its duration and its
    /// `within` bound - starts when step LABEL returned, not when the wait
    /// began. A protocol timer starts at the call that armed it; measuring
    /// from there keeps a descheduled harness thread out of the number.
    pub since: Option<String>,
}

/// A parse error inside one step line: column (1-based, in characters) and
/// what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError {
    pub column: usize,
    pub message: String,
}

impl StepError {
    fn at(column: usize, message: impl Into<String>) -> Self {
        StepError {
            column,
            message: message.into(),
        }
    }
}

/// A token of a step line with the 1-based column where it starts.
#[derive(Clone, Debug, PartialEq)]
struct Token {
    column: usize,
    kind: TokenKind,
}

#[derive(Clone, Debug, PartialEq)]
enum TokenKind {
    Word(String),
    Quoted(Vec<u8>),
}

/// Splits a line into words and quoted strings; `#` outside quotes starts a
/// comment. Returns the tokens and the line text without the comment.
fn tokenize(line: &str) -> Result<(Vec<Token>, String), StepError> {
    let chars: Vec<char> = line.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut end = chars.len();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            end = i;
            break;
        } else if c == '"' {
            let column = i + 1;
            let mut bytes = Vec::new();
            i += 1;
            loop {
                let Some(&c) = chars.get(i) else {
                    return Err(StepError::at(
                        column,
                        "unterminated string: add a closing '\"'",
                    ));
                };
                i += 1;
                match c {
                    '"' => break,
                    '\\' => {
                        let esc = chars.get(i).copied();
                        i += 1;
                        match esc {
                            Some('n') => bytes.push(b'\n'),
                            Some('r') => bytes.push(b'\r'),
                            Some('t') => bytes.push(b'\t'),
                            Some('0') => bytes.push(0),
                            Some('\\') => bytes.push(b'\\'),
                            Some('"') => bytes.push(b'"'),
                            other => {
                                return Err(StepError::at(
                                    i,
                                    format!(
                                        "unknown escape \\{}; use \\n \\r \\t \\0 \\\\ or \\\"",
                                        other.map(String::from).unwrap_or_default()
                                    ),
                                ));
                            }
                        }
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            tokens.push(Token {
                column,
                kind: TokenKind::Quoted(bytes),
            });
        } else {
            let column = i + 1;
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '#' && chars[i] != '"'
            {
                i += 1;
            }
            tokens.push(Token {
                column,
                kind: TokenKind::Word(chars[start..i].iter().collect()),
            });
        }
    }
    let text: String = chars[..end].iter().collect();
    Ok((tokens, text.trim().to_string()))
}

/// A cursor over a line's tokens that produces "expected X, found Y" errors.
struct Cursor {
    tokens: Vec<Token>,
    pos: usize,
    end_column: usize,
}

impl Cursor {
    fn peek_word(&self) -> Option<&str> {
        match self.tokens.get(self.pos) {
            Some(Token {
                kind: TokenKind::Word(w),
                ..
            }) => Some(w),
            _ => None,
        }
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.end_column, |t| t.column)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    fn word(&mut self, expected: &str) -> Result<(usize, String), StepError> {
        match self.tokens.get(self.pos) {
            Some(Token {
                column,
                kind: TokenKind::Word(w),
            }) => {
                self.pos += 1;
                Ok((*column, w.clone()))
            }
            Some(Token {
                column,
                kind: TokenKind::Quoted(_),
            }) => Err(StepError::at(
                *column,
                format!("expected {expected}, found a quoted string"),
            )),
            None => Err(StepError::at(
                self.end_column,
                format!("expected {expected}, found end of line"),
            )),
        }
    }

    fn eat(&mut self, word: &str) -> bool {
        if self
            .peek_word()
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
        {
            self.pos += 1;
            true
        } else {
            false
        }
    }
}

/// Parses one step line. `Ok(None)` for blank and comment-only lines.
pub fn parse_step(line: &str, line_no: Option<usize>) -> Result<Option<Step>, StepError> {
    let (tokens, text) = tokenize(line)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    let end_column = text.chars().count() + 1;
    let mut cur = Cursor {
        tokens,
        pos: 0,
        end_column,
    };

    let background = cur.eat("bg");
    let (col, head) = cur.word(
        "an actor (client, server, listener), sleep, join, or a fault (drop, reject, heal)",
    )?;
    let (actor, action) = match head.as_str() {
        "sleep" => (None, Action::Sleep(duration(&mut cur)?)),
        "join" => (None, Action::Join(cur.word("the label of a bg step")?.1)),
        "drop" => (None, Action::Fault(fault(Verdict::Drop, &mut cur)?)),
        "reject" => (None, Action::Fault(fault(Verdict::Reject, &mut cur)?)),
        "heal" => {
            // `heal` alone removes every fault; `heal LABEL` one of them.
            let label = match cur.peek_word() {
                Some(w) if !MODIFIERS.contains(&w) => Some(cur.word("a fault's label")?.1),
                _ => None,
            };
            (None, Action::Heal(label))
        }
        "client" | "server" | "listener" => {
            let actor = match head.as_str() {
                "client" => Actor::Client,
                "server" => Actor::Server,
                _ => Actor::Listener,
            };
            (Some(actor), action(actor, &mut cur)?)
        }
        other => {
            return Err(StepError::at(
                col,
                format!(
                    "unknown actor {other:?}; a step starts with client, server, listener, bg, sleep, join, drop, reject or heal"
                ),
            ));
        }
    };

    let mut within = None;
    let mut label = None;
    let mut since = None;
    while !cur.at_end() {
        let expected = "`within DURATION`, `since LABEL` or `as LABEL`";
        let (col, w) = cur.word(expected)?;
        match w.as_str() {
            "within" if within.is_none() => within = Some(duration(&mut cur)?),
            "as" if label.is_none() => label = Some(label_word(&mut cur)?),
            "since" if since.is_none() => {
                if !matches!(action, Action::Wait(_)) {
                    return Err(StepError::at(
                        col,
                        "only a wait step can be timed `since` another step",
                    ));
                }
                since = Some(label_word(&mut cur)?);
            }
            other => {
                return Err(StepError::at(
                    col,
                    format!("unexpected {other:?}; expected {expected}"),
                ));
            }
        }
    }
    if background && label.is_none() {
        return Err(StepError::at(
            end_column,
            "a bg step needs a label to join it: add `as NAME`",
        ));
    }
    if background
        && !matches!(
            action,
            Action::Write { .. }
                | Action::Read { .. }
                | Action::Shutdown(_)
                | Action::Close
                | Action::SetOption(_)
                | Action::Ioctl(_)
                | Action::Disconnect
                | Action::Wait(WaitFor::Readable | WaitFor::Writable)
        )
    {
        return Err(StepError::at(
            1,
            "only write, read, shutdown, close, setsockopt, ioctl, connect AF_UNSPEC and wait readable/writable can run in the background",
        ));
    }
    Ok(Some(Step {
        line: line_no,
        text,
        actor,
        action,
        label,
        background,
        within,
        since,
    }))
}

/// The words that may follow a step's call.
const MODIFIERS: [&str; 3] = ["within", "since", "as"];

fn label_word(cur: &mut Cursor) -> Result<String, StepError> {
    let (col, name) = cur.word("a label")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(StepError::at(
            col,
            "a label uses only letters, digits, '_' and '-'",
        ));
    }
    Ok(name)
}

fn action(actor: Actor, cur: &mut Cursor) -> Result<Action, StepError> {
    let (col, verb) = cur.word(
        "a call (connect, accept, write, read, shutdown, close, setsockopt, ioctl, wait, listen)",
    )?;
    let only = |allowed: &[Actor]| -> Result<(), StepError> {
        if allowed.contains(&actor) {
            Ok(())
        } else {
            let names: Vec<&str> = allowed.iter().map(|a| a.name()).collect();
            Err(StepError::at(
                col,
                format!(
                    "`{verb}` is a {} step, not a {actor} step",
                    names.join(" or ")
                ),
            ))
        }
    };
    let data_side = [Actor::Client, Actor::Server];
    let action = match verb.as_str() {
        "listen" => {
            only(&[Actor::Listener])?;
            let backlog = if cur.eat("backlog") {
                int(cur, "a backlog length")? as i32
            } else {
                16
            };
            Action::Listen { backlog }
        }
        "connect" => {
            only(&[Actor::Client])?;
            if cur.eat("AF_UNSPEC") {
                Action::Disconnect
            } else {
                Action::Connect
            }
        }
        "accept" => {
            only(&[Actor::Server])?;
            Action::Accept
        }
        "bind" => {
            only(&[Actor::Client])?;
            let port = int(cur, "a local port number")?;
            Action::Bind(
                u16::try_from(port).map_err(|_| {
                    StepError::at(cur.column(), format!("port {port} is above 65535"))
                })?,
            )
        }
        "write" => {
            only(&data_side)?;
            let payload = match cur.tokens.get(cur.pos) {
                Some(Token {
                    kind: TokenKind::Quoted(bytes),
                    ..
                }) => {
                    let p = Payload::Text(bytes.clone());
                    cur.pos += 1;
                    p
                }
                _ => Payload::Pattern(size(cur)?),
            };
            let (mut nosignal, mut dontwait) = (false, false);
            loop {
                if cur.eat("nosignal") || cur.eat("MSG_NOSIGNAL") {
                    nosignal = true;
                } else if cur.eat("dontwait") || cur.eat("MSG_DONTWAIT") {
                    dontwait = true;
                } else {
                    break;
                }
            }
            Action::Write {
                payload,
                nosignal,
                dontwait,
            }
        }
        "read" => {
            only(&data_side)?;
            let amount = if cur.eat("until-eof") {
                ReadAmount::UntilEof
            } else if cur.eat("available") {
                ReadAmount::Available
            } else {
                ReadAmount::Exactly(size(cur).map_err(|e| StepError {
                    message: format!("{}; or until-eof, available", e.message),
                    ..e
                })?)
            };
            let dontwait = cur.eat("dontwait") || cur.eat("MSG_DONTWAIT");
            Action::Read { amount, dontwait }
        }
        "shutdown" => {
            only(&data_side)?;
            let (col, how) = cur.word("RD, WR or RDWR")?;
            let how = match how.to_ascii_uppercase().trim_start_matches("SHUT_") {
                "RD" => How::Read,
                "WR" => How::Write,
                "RDWR" => How::Both,
                _ => {
                    return Err(StepError::at(
                        col,
                        format!("unknown shutdown mode {how:?}; expected RD, WR or RDWR"),
                    ));
                }
            };
            Action::Shutdown(how)
        }
        "close" => Action::Close,
        "setsockopt" => Action::SetOption(sockopt(cur)?),
        "ioctl" => {
            only(&data_side)?;
            let (col, q) = cur.word("FIONREAD, SIOCINQ, SIOCOUTQ or SIOCOUTQNSD")?;
            Action::Ioctl(match q.to_ascii_uppercase().as_str() {
                "FIONREAD" | "SIOCINQ" => IoctlQuery::InQueue,
                "SIOCOUTQ" => IoctlQuery::OutQueue,
                "SIOCOUTQNSD" => IoctlQuery::OutQueueNotSent,
                _ => {
                    return Err(StepError::at(
                        col,
                        format!(
                            "unknown ioctl {q:?}; expected FIONREAD, SIOCINQ, SIOCOUTQ or SIOCOUTQNSD"
                        ),
                    ));
                }
            })
        }
        "wait" => {
            let (col, what) = cur.word("state STATE, readable or writable")?;
            Action::Wait(match what.as_str() {
                "state" => {
                    let (col, name) = cur.word("a TCP state such as FIN-WAIT-2")?;
                    WaitFor::State(name.parse().map_err(|e| StepError::at(col, e))?)
                }
                "readable" => WaitFor::Readable,
                "writable" => WaitFor::Writable,
                other => {
                    return Err(StepError::at(
                        col,
                        format!(
                            "cannot wait for {other:?}; expected state STATE, readable or writable"
                        ),
                    ));
                }
            })
        }
        other => {
            return Err(StepError::at(
                col,
                format!(
                    "unknown call {other:?}; expected one of listen, connect, accept, write, read, shutdown, close, setsockopt, ioctl, wait"
                ),
            ));
        }
    };
    Ok(action)
}

fn sockopt(cur: &mut Cursor) -> Result<SockOpt, StepError> {
    const NAMES: &str = "SO_LINGER, SO_RCVBUF, SO_SNDBUF, SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE, TCP_NODELAY, TCP_LINGER2, TCP_USER_TIMEOUT or O_NONBLOCK";
    let (col, name) = cur.word(&format!("an option: {NAMES}"))?;
    Ok(match name.to_ascii_uppercase().as_str() {
        "SO_LINGER" => {
            if cur.eat("off") {
                SockOpt::Linger(None)
            } else if cur.eat("on") {
                SockOpt::Linger(Some(int(cur, "the linger time in seconds")? as u32))
            } else {
                return Err(StepError::at(
                    cur.column(),
                    "expected `on SECONDS` or `off`",
                ));
            }
        }
        "SO_RCVBUF" => SockOpt::RcvBuf(size(cur)?),
        "SO_SNDBUF" => SockOpt::SndBuf(size(cur)?),
        "SO_REUSEADDR" => SockOpt::ReuseAddr(flag(cur)?),
        "SO_REUSEPORT" => SockOpt::ReusePort(flag(cur)?),
        "SO_KEEPALIVE" => SockOpt::KeepAlive(flag(cur)?),
        "TCP_NODELAY" => SockOpt::NoDelay(flag(cur)?),
        "TCP_LINGER2" => {
            let (col, w) = cur.word("seconds (may be -1)")?;
            SockOpt::Linger2(
                w.parse()
                    .map_err(|_| StepError::at(col, format!("expected seconds, found {w:?}")))?,
            )
        }
        "TCP_USER_TIMEOUT" => SockOpt::UserTimeout(duration(cur)?.as_millis() as u32),
        "O_NONBLOCK" => SockOpt::NonBlocking(flag(cur)?),
        _ => {
            return Err(StepError::at(
                col,
                format!("unknown option {name:?}; expected {NAMES}"),
            ));
        }
    })
}

/// `DIRECTION [flags FLAGS|=FLAGS] [first N]` after `drop` or `reject`.
fn fault(verdict: Verdict, cur: &mut Cursor) -> Result<Rule, StepError> {
    const DIRS: &str = "client->server, server->client, both or all";
    let (col, dir) = cur.word(&format!("a direction: {DIRS}"))?;
    let direction = match dir.as_str() {
        "client->server" => Direction::ClientToServer,
        "server->client" => Direction::ServerToClient,
        "both" | "all" => Direction::Both,
        other => {
            return Err(StepError::at(
                col,
                format!("unknown direction {other:?}; expected {DIRS}"),
            ));
        }
    };
    let mut rule = Rule {
        verdict,
        direction,
        flags: FlagMatch::Any,
        first: None,
    };
    if cur.eat("flags") {
        let (col, spec) = cur.word("flags such as FIN, FIN,ACK or =ACK (exactly)")?;
        rule.flags = match spec.strip_prefix('=') {
            Some(exact) => crate::fault::parse_flags(exact).map(FlagMatch::Exactly),
            None => crate::fault::parse_flags(&spec).map(FlagMatch::AllOf),
        }
        .map_err(|m| StepError::at(col, m))?;
    }
    if cur.eat("first") {
        let n = int(cur, "how many matching segments (first N)")?;
        rule.first = Some(u32::try_from(n).map_err(|_| {
            StepError::at(
                cur.column(),
                format!("first {n} is too many; at most 4294967295"),
            )
        })?);
    }
    Ok(rule)
}

fn flag(cur: &mut Cursor) -> Result<bool, StepError> {
    let (col, w) = cur.word("on or off")?;
    match w.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" => Ok(true),
        "off" | "0" | "false" => Ok(false),
        _ => Err(StepError::at(
            col,
            format!("expected on or off, found {w:?}"),
        )),
    }
}

fn int(cur: &mut Cursor, what: &str) -> Result<u64, StepError> {
    let (col, w) = cur.word(what)?;
    w.parse()
        .map_err(|_| StepError::at(col, format!("expected {what}, found {w:?}")))
}

fn size(cur: &mut Cursor) -> Result<usize, StepError> {
    let (col, w) = cur.word("a byte count such as 1000, 64KiB or 1MiB")?;
    parse_size(&w).ok_or_else(|| {
        StepError::at(
            col,
            format!("expected a byte count such as 1000, 64KiB or 1MiB, found {w:?}"),
        )
    })
}

fn duration(cur: &mut Cursor) -> Result<Duration, StepError> {
    let (col, w) = cur.word("a duration such as 200ms or 2s")?;
    parse_duration(&w).ok_or_else(|| {
        StepError::at(
            col,
            format!("expected a duration such as 200ms or 2s, found {w:?}"),
        )
    })
}

/// `1000`, `64KiB`, `1MiB`, `2KB` (decimal kilo) -> bytes.
pub fn parse_size(s: &str) -> Option<usize> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `200ms`, `2s`, `1.5s`, `500us` -> Duration.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" | "min" => n * 60.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(line: &str) -> Step {
        parse_step(line, Some(1)).unwrap().unwrap()
    }

    fn err(line: &str) -> StepError {
        parse_step(line, Some(1)).unwrap_err()
    }

    #[test]
    fn parses_the_seed_trace() {
        assert_eq!(
            step("server write 100KiB").action,
            Action::Write {
                payload: Payload::Pattern(100 * 1024),
                nosignal: false,
                dontwait: false
            }
        );
        assert_eq!(
            step("server shutdown WR").action,
            Action::Shutdown(How::Write)
        );
        assert_eq!(
            step("client read until-eof").action,
            Action::Read {
                amount: ReadAmount::UntilEof,
                dontwait: false
            }
        );
        assert_eq!(
            step(r#"client write "Thank you""#).action,
            Action::Write {
                payload: Payload::Text(b"Thank you".to_vec()),
                nosignal: false,
                dontwait: false
            }
        );
        assert_eq!(
            step("server read 9").action,
            Action::Read {
                amount: ReadAmount::Exactly(9),
                dontwait: false
            }
        );
        assert_eq!(step("client close").action, Action::Close);
    }

    #[test]
    fn parses_background_labels_and_bounds() {
        let s = step("client wait state CLOSED since lc within 4s as gone");
        assert_eq!(s.since.as_deref(), Some("lc"));
        assert_eq!(s.label.as_deref(), Some("gone"));
        assert_eq!(s.within, Some(Duration::from_secs(4)));
        let e = err("client close since lc");
        assert_eq!(e.column, 14, "{e:?}");
        assert!(e.message.contains("only a wait step"), "{e:?}");
        let s = step("bg client close as lc within 3s   # linger close blocks");
        assert!(s.background);
        assert_eq!(s.label.as_deref(), Some("lc"));
        assert_eq!(s.within, Some(Duration::from_secs(3)));
        assert_eq!(s.text, "bg client close as lc within 3s");
        assert_eq!(step("join lc").action, Action::Join("lc".into()));
    }

    #[test]
    fn parses_options_waits_and_ioctls() {
        assert_eq!(
            step("client setsockopt SO_LINGER on 0").action,
            Action::SetOption(SockOpt::Linger(Some(0)))
        );
        assert_eq!(
            step("client setsockopt SO_LINGER off").action,
            Action::SetOption(SockOpt::Linger(None))
        );
        assert_eq!(
            step("client setsockopt SO_RCVBUF 4KiB").action,
            Action::SetOption(SockOpt::RcvBuf(4096))
        );
        assert_eq!(
            step("client setsockopt TCP_LINGER2 -1").action,
            Action::SetOption(SockOpt::Linger2(-1))
        );
        assert_eq!(
            step("client setsockopt TCP_USER_TIMEOUT 500ms").action,
            Action::SetOption(SockOpt::UserTimeout(500))
        );
        assert_eq!(
            step("server setsockopt O_NONBLOCK on").action,
            Action::SetOption(SockOpt::NonBlocking(true))
        );
        assert_eq!(
            step("client wait state FIN_WAIT2").action,
            Action::Wait(WaitFor::State(TcpState::FinWait2))
        );
        assert_eq!(
            step("server ioctl FIONREAD").action,
            Action::Ioctl(IoctlQuery::InQueue)
        );
        assert_eq!(step("client connect AF_UNSPEC").action, Action::Disconnect);
        assert_eq!(
            step("listener listen backlog 1").action,
            Action::Listen { backlog: 1 }
        );
        assert_eq!(
            step("sleep 10ms").action,
            Action::Sleep(Duration::from_millis(10))
        );
    }

    #[test]
    fn blank_and_comment_lines_are_not_steps() {
        assert_eq!(parse_step("   ", Some(1)).unwrap(), None);
        assert_eq!(parse_step("  # just a comment", Some(1)).unwrap(), None);
    }

    #[test]
    fn parses_faults_heal_and_bind() {
        use crate::fault::flags::{ACK, FIN};
        let s = step("drop client->server flags FIN first 1 as lost");
        assert_eq!(s.actor, None);
        assert_eq!(s.label.as_deref(), Some("lost"));
        assert_eq!(
            s.action,
            Action::Fault(Rule {
                verdict: Verdict::Drop,
                direction: Direction::ClientToServer,
                flags: FlagMatch::AllOf(FIN),
                first: Some(1),
            })
        );
        assert_eq!(
            step("reject server->client flags =ACK").action,
            Action::Fault(Rule {
                verdict: Verdict::Reject,
                direction: Direction::ServerToClient,
                flags: FlagMatch::Exactly(ACK),
                first: None,
            })
        );
        let all = step("drop all");
        assert!(matches!(
            all.action,
            Action::Fault(Rule {
                direction: Direction::Both,
                flags: FlagMatch::Any,
                ..
            })
        ));
        assert_eq!(step("heal").action, Action::Heal(None));
        assert_eq!(step("heal lost").action, Action::Heal(Some("lost".into())));
        assert_eq!(step("heal as h").action, Action::Heal(None));
        assert_eq!(step("client bind 40000").action, Action::Bind(40000));

        let e = err("drop sideways");
        assert_eq!(e.column, 6);
        assert!(e.message.contains("client->server"), "{}", e.message);
        let e = err("drop both flags FIN,ECE");
        assert_eq!(e.column, 17);
        assert!(
            e.message.contains("unknown TCP flag \"ECE\""),
            "{}",
            e.message
        );
        assert!(err("client bind 70000").message.contains("above 65535"));
        assert!(err("server bind 1").message.contains("client step"));
        assert!(err("bg drop all as x").message.contains("background"));
    }

    #[test]
    fn errors_point_at_the_offending_column() {
        let e = err("client wrtie 10");
        assert_eq!(e.column, 8);
        assert!(
            e.message.contains("unknown call \"wrtie\""),
            "{}",
            e.message
        );

        let e = err("client shutdown SIDEWAYS");
        assert_eq!(e.column, 17);
        assert!(e.message.contains("RD, WR or RDWR"), "{}", e.message);

        let e = err("listener write 10");
        assert!(e.message.contains("not a listener step"), "{}", e.message);

        let e = err("bg client close");
        assert!(e.message.contains("needs a label"), "{}", e.message);
        let e = err("bg client wait state TIME-WAIT as w");
        assert!(
            e.message.contains("can run in the background"),
            "{}",
            e.message
        );

        let e = err(r#"client write "unterminated"#);
        assert_eq!(e.column, 14);

        let e = err("client read 10 extra");
        assert_eq!(e.column, 16);

        let e = err("client wait state FIN-WAIT-3");
        assert!(e.message.contains("unknown TCP state"), "{}", e.message);
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("2KB"), Some(2000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1GiB"), None);
        assert_eq!(parse_size("KiB"), None);
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), None);
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// The parser never panics and, on failure, points inside the line
            /// (or just past its end).
            #[test]
            fn never_panics_and_columns_are_in_range(line in "[ -~]{0,60}") {
                if let Err(e) = parse_step(&line, Some(1)) {
                    prop_assert!(e.column >= 1 && e.column <= line.chars().count() + 1,
                        "column {} for {:?}", e.column, line);
                }
            }

            /// Written sizes survive a round trip through the step text.
            #[test]
            fn write_sizes_round_trip(n in 0usize..10_000_000) {
                let s = parse_step(&format!("client write {n}"), None).unwrap().unwrap();
                prop_assert_eq!(s.action, Action::Write { payload: Payload::Pattern(n), nosignal: false, dontwait: false });
            }
        }
    }
}
