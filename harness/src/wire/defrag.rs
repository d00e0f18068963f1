//! IP fragments put back together, so a TCP segment (or a tunnel packet
//! that carries one, as GTP-U often is) split by the network is read whole.
//!
//! Fragments are held by (source, destination, identification, protocol)
//! until the datagram is complete: the last fragment seen and every byte
//! from 0 to its end covered. Memory is bounded: at most
//! [`Defrag::MAX_DATAGRAMS`] datagrams wait at once (the oldest is given up
//! when a new one would pass that), each at most 64 KiB, and a datagram
//! not complete [`Defrag::TIMEOUT_US`] of capture time after its first
//! fragment is given up (Linux's `ipfrag_time`). A fragment the snapshot
//! length cut cannot be used: its datagram is given up at once. Given-up
//! fragments are counted, never guessed at.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// One fragment, as its IP header describes it.
pub(crate) struct Piece<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    /// The protocol of the whole datagram's payload.
    pub protocol: u8,
    /// Where this fragment's data goes in the datagram's payload.
    pub offset: usize,
    /// More fragments follow (the last one has this clear).
    pub more: bool,
    pub data: &'a [u8],
    /// The fragment's data is all there (the snapshot length cut none).
    pub whole: bool,
}

/// What a fragment did.
pub enum Outcome {
    /// Held until the rest of its datagram comes.
    Held,
    /// It completed its datagram: an IP packet of its own (a plain
    /// header around the whole payload).
    Complete(Vec<u8>),
    /// It could not be used (cut, or too large), nor its datagram.
    GivenUp,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    protocol: u8,
}

struct Datagram {
    first_us: i64,
    /// (offset, data), in arrival order.
    pieces: Vec<(usize, Vec<u8>)>,
    /// The payload's length, once the last fragment came.
    len: Option<usize>,
}

/// Fragments waiting for the rest of their datagram.
#[derive(Default)]
pub(crate) struct Defrag {
    waiting: HashMap<Key, Datagram>,
    /// Datagrams by their first fragment's time, oldest first (entries of
    /// datagrams already done are skipped when met).
    order: VecDeque<(i64, Key)>,
    /// Fragments given up so far.
    given_up: u64,
}

impl Defrag {
    pub(crate) const MAX_DATAGRAMS: usize = 1024;
    pub(crate) const TIMEOUT_US: i64 = 30_000_000;
    const MAX_LEN: usize = 65_535;

    /// Takes in one fragment that came at `now_us`.
    pub fn push(&mut self, piece: &Piece<'_>, now_us: i64) -> Outcome {
        self.expire(now_us);
        let key = Key {
            src: piece.src,
            dst: piece.dst,
            id: piece.id,
            protocol: piece.protocol,
        };
        let end = piece.offset + piece.data.len();
        if !piece.whole || end > Self::MAX_LEN {
            self.give_up(&key);
            self.given_up += 1;
            return Outcome::GivenUp;
        }
        if !self.waiting.contains_key(&key) {
            if self.waiting.len() >= Self::MAX_DATAGRAMS {
                self.give_up_oldest();
            }
            self.order.push_back((now_us, key));
        }
        let d = self.waiting.entry(key).or_insert_with(|| Datagram {
            first_us: now_us,
            pieces: Vec::new(),
            len: None,
        });
        d.pieces.push((piece.offset, piece.data.to_vec()));
        if !piece.more {
            d.len = Some(end);
        }
        let Some(payload) = d.assemble() else {
            return Outcome::Held;
        };
        self.waiting.remove(&key);
        Outcome::Complete(ip_packet(&key, &payload))
    }

    /// Fragments given up so far, and those still waiting (which, at the
    /// end of a capture, never will be whole).
    pub(crate) fn given_up(&self) -> u64 {
        self.given_up
            + self
                .waiting
                .values()
                .map(|d| d.pieces.len() as u64)
                .sum::<u64>()
    }

    fn give_up(&mut self, key: &Key) {
        if let Some(d) = self.waiting.remove(key) {
            self.given_up += d.pieces.len() as u64;
        }
    }

    fn give_up_oldest(&mut self) {
        while let Some((_, key)) = self.order.pop_front() {
            if self.waiting.contains_key(&key) {
                self.give_up(&key);
                return;
            }
        }
    }

    fn expire(&mut self, now_us: i64) {
        while let Some(&(t, key)) = self.order.front() {
            if now_us - t <= Self::TIMEOUT_US {
                break;
            }
            self.order.pop_front();
            if self.waiting.get(&key).is_some_and(|d| d.first_us == t) {
                self.give_up(&key);
            }
        }
    }
}

impl Datagram {
    /// The payload, if every byte of it has come.
    fn assemble(&mut self) -> Option<Vec<u8>> {
        let len = self.len?;
        self.pieces.sort_by_key(|(offset, _)| *offset);
        let mut covered = 0;
        for (offset, data) in &self.pieces {
            if *offset > covered {
                return None;
            }
            covered = covered.max(offset + data.len());
        }
        if covered < len {
            return None;
        }
        let mut payload = vec![0; len];
        // Later offsets first, so where fragments overlap the earlier
        // one's bytes stand (the first copy wins, as Linux keeps it).
        for (offset, data) in self.pieces.iter().rev() {
            let end = (offset + data.len()).min(len);
            if *offset < end {
                payload[*offset..end].copy_from_slice(&data[..end - offset]);
            }
        }
        Some(payload)
    }
}

/// A plain IP header (no options, no extension headers) around `payload`.
fn ip_packet(key: &Key, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(40 + payload.len());
    match (key.src, key.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + payload.len()) as u16;
            p.extend_from_slice(&[0x45, 0]);
            p.extend_from_slice(&total.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, 64, key.protocol, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            };
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            p.extend_from_slice(&[key.protocol, 64]);
            p.extend_from_slice(&v6(s));
            p.extend_from_slice(&v6(d));
        }
    }
    p.extend_from_slice(payload);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(offset: usize, more: bool, data: &[u8]) -> Piece<'_> {
        Piece {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            id: 7,
            protocol: 6,
            offset,
            more,
            data,
            whole: true,
        }
    }

    fn payload(o: Outcome) -> Vec<u8> {
        match o {
            Outcome::Complete(packet) => packet[20..].to_vec(),
            _ => panic!("not complete"),
        }
    }

    #[test]
    fn fragments_in_any_order_make_the_datagram() {
        let mut d = Defrag::default();
        assert!(matches!(d.push(&piece(16, false, b"cc"), 0), Outcome::Held));
        assert!(matches!(
            d.push(&piece(0, true, b"aaaaaaaa"), 1),
            Outcome::Held
        ));
        let whole = payload(d.push(&piece(8, true, b"bbbbbbbb"), 2));
        assert_eq!(whole, b"aaaaaaaabbbbbbbbcc");
        assert_eq!(d.given_up(), 0);
    }

    #[test]
    fn overlaps_keep_the_first_copy() {
        let mut d = Defrag::default();
        d.push(&piece(0, true, b"aaaaaaaa"), 0);
        let whole = payload(d.push(&piece(0, false, b"xxxxxxxxyy"), 1));
        assert_eq!(whole, b"aaaaaaaayy");
    }

    #[test]
    fn cut_missing_and_old_fragments_are_given_up() {
        let mut d = Defrag::default();
        let mut cut = piece(0, true, b"aaaaaaaa");
        cut.whole = false;
        assert!(matches!(d.push(&cut, 0), Outcome::GivenUp));
        // A gap: never complete; counted when the capture ends.
        d.push(&piece(0, true, b"aaaaaaaa"), 0);
        d.push(&piece(16, false, b"cc"), 1);
        assert_eq!(d.given_up(), 3);
        // Past the timeout, the waiting datagram is dropped, and its
        // missing fragment no longer completes it.
        assert!(matches!(
            d.push(&piece(8, true, b"bbbbbbbb"), Defrag::TIMEOUT_US + 5),
            Outcome::Held
        ));
        assert_eq!(d.given_up(), 4);
    }

    #[test]
    fn the_waiting_datagrams_are_bounded() {
        let mut d = Defrag::default();
        for id in 0..(Defrag::MAX_DATAGRAMS as u32 + 10) {
            let mut p = piece(0, true, b"aaaaaaaa");
            p.id = id;
            d.push(&p, 0);
        }
        assert_eq!(d.waiting.len(), Defrag::MAX_DATAGRAMS);
        assert_eq!(d.given_up(), Defrag::MAX_DATAGRAMS as u64 + 10);
    }
}
