//! Zeek's connection summary: per-endpoint states, `conn_state` and the
//! `history` letters (base/protocols/conn/main.zeek), so that a report
//! reads the way people who know Zeek expect.
//!
//! The rules are a transition table over the two endpoints' states; the
//! whole table is snapshotted in the tests, so a change to any cell shows
//! in review.

/// Zeek's per-endpoint TCP state, as far as it matters for `conn_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Endpoint {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    /// Seen without its handshake (the capture started mid-connection).
    Partial,
    Established,
    Closed,
    Reset,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::Inactive,
        Endpoint::SynSent,
        Endpoint::SynAckSent,
        Endpoint::Partial,
        Endpoint::Established,
        Endpoint::Closed,
        Endpoint::Reset,
    ];
}

/// What `conn_state` needs to know of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointView {
    pub state: Endpoint,
    /// Sent any payload.
    pub sent_data: bool,
}

/// Zeek's `/\^?S[^HAFGIQ]*R.*/ == history`, on the whole history (both
/// sides' letters): the originator's SYN first, then its RST before any of
/// its H, A, F, G, I or Q.
pub fn syn_then_reset(history: &str) -> bool {
    let h = history.strip_prefix('^').unwrap_or(history);
    h.strip_prefix('S')
        .and_then(|rest| rest.chars().find(|c| "HAFGIQR".contains(*c)))
        == Some('R')
}

/// Zeek's `conn_state` (base/protocols/conn/main.zeek), given the
/// originator's and responder's endpoints and the connection's history.
pub fn conn_state(orig: EndpointView, resp: EndpointView, history: &str) -> &'static str {
    use Endpoint::*;
    let (os, rs) = (orig.state, resp.state);
    let o_inactive = matches!(os, Inactive | Partial);
    let r_inactive = matches!(rs, Inactive | Partial);
    if rs == Reset {
        if matches!(os, SynSent | SynAckSent) || (os == Reset && !orig.sent_data && !resp.sent_data)
        {
            "REJ"
        } else if o_inactive {
            "RSTRH"
        } else {
            "RSTR"
        }
    } else if os == Reset {
        if !r_inactive {
            "RSTO"
        } else if syn_then_reset(history) {
            "RSTOS0"
        } else {
            // Zeek too: a reset from the originator of a connection whose
            // start was not seen is "other".
            "OTH"
        }
    } else if rs == Closed && os == Closed {
        "SF"
    } else if os == Closed {
        if r_inactive { "SH" } else { "S2" }
    } else if rs == Closed {
        if o_inactive { "SHR" } else { "S3" }
    } else if os == SynSent && rs == Inactive {
        "S0"
    } else if os == Established && rs == Established {
        "S1"
    } else {
        "OTH"
    }
}

/// The history letters one side has shown (each counts once): a bit per
/// lowercase ASCII letter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Letters(u32);

impl Letters {
    /// Records `c` (a lowercase ASCII letter) the first time; returns
    /// whether it was new.
    fn mark(&mut self, c: u8) -> bool {
        debug_assert!(c.is_ascii_lowercase(), "history letters are a..z");
        let bit = 1 << (c - b'a');
        let new = self.0 & bit == 0;
        self.0 |= bit;
        new
    }
}

/// Zeek's `history`: each side's letters in the order first seen, the
/// originator's in uppercase, each letter once per side. It is held inline
/// (at most 26 letters a side): a capture keeps one per open connection,
/// and a string would cost each of them an allocation or two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    seen: [Letters; 2],
    text: [u8; 52],
    len: u8,
}

impl Default for History {
    fn default() -> History {
        History {
            seen: [Letters::default(); 2],
            text: [0; 52],
            len: 0,
        }
    }
}

impl History {
    /// Records letter `c` (lowercase ASCII) for the originator or the
    /// responder, the first time that side shows it.
    pub fn mark(&mut self, orig: bool, c: u8) {
        if self.seen[usize::from(orig)].mark(c) {
            self.text[usize::from(self.len)] = if orig { c.to_ascii_uppercase() } else { c };
            self.len += 1;
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever written.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(e: Endpoint) -> &'static str {
        match e {
            Endpoint::Inactive => "inactive",
            Endpoint::SynSent => "syn-sent",
            Endpoint::SynAckSent => "syn-ack-sent",
            Endpoint::Partial => "partial",
            Endpoint::Established => "established",
            Endpoint::Closed => "closed",
            Endpoint::Reset => "reset",
        }
    }

    /// The whole table: originator state x responder state, for three
    /// originator histories: no data and `SR`, data and `SDR`, no data and
    /// `SAR`. Any change to a cell shows up in this snapshot.
    #[test]
    fn conn_state_table() {
        let mut out = String::from("orig \\ resp: SR (no data), SDR (data), SAR (no data)\n");
        for os in Endpoint::ALL {
            for rs in Endpoint::ALL {
                let mut cells = Vec::new();
                for (data, history) in [(false, "SR"), (true, "SDR"), (false, "SAR")] {
                    let o = EndpointView {
                        state: os,
                        sent_data: data,
                    };
                    let r = EndpointView {
                        state: rs,
                        sent_data: false,
                    };
                    cells.push(conn_state(o, r, history));
                }
                out.push_str(&format!(
                    "{:<13} {:<13} {}\n",
                    name(os),
                    name(rs),
                    cells.join(" ")
                ));
            }
        }
        insta::assert_snapshot!(out);
    }

    #[test]
    fn history_letters_count_once_per_side() {
        let mut h = History::default();
        for (orig, c) in [
            (true, b's'),
            (false, b'h'),
            (true, b'a'),
            (true, b's'),
            (false, b's'),
        ] {
            h.mark(orig, c);
        }
        assert_eq!(h.as_str(), "ShAs");
        // Every letter on both sides fits.
        for c in b'a'..=b'z' {
            h.mark(true, c);
            h.mark(false, c);
        }
        assert_eq!(h.as_str().len(), 52);
        assert!(h.as_str().starts_with("ShAs"));
    }

    #[test]
    fn zeeks_rstos0_pattern_reads_the_whole_history() {
        for (h, want) in [
            ("SR", true),
            ("^SR", true),
            ("SdR", true),
            ("ShR", true),
            ("SAR", false),
            ("SFR", false),
            ("DSR", false),
            ("S", false),
        ] {
            assert_eq!(syn_then_reset(h), want, "{h}");
        }
    }
}
