//! The payload of one direction that a capture saw, as byte ranges.
//!
//! Offsets are relative to the direction's ISN+1. The ranges are kept
//! sorted, disjoint and not touching, so that adding a segment costs a
//! binary search however many holes a lossy capture leaves.
//! Almost every connection's payload is a single range: that one is held
//! inline, and only a hole spills the ranges into a vector (a capture keeps
//! one of these per direction of every connection it holds).

/// Byte ranges `[start, end)`, merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Covered {
    /// The only range, while there is one and no hole; `spilled` is empty
    /// then.
    single: Option<(u64, u64)>,
    /// All ranges, once there is a hole between two of them.
    spilled: Vec<(u64, u64)>,
}

impl Covered {
    /// Adds `[start, end)`; returns how many of its bytes were not covered
    /// yet.
    pub fn add(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        match (&mut self.single, self.spilled.is_empty()) {
            (None, true) => {
                self.single = Some((start, end));
                end - start
            }
            // The common case: the next segment extends the range, or
            // repeats part of it.
            (Some(r), _) if start <= r.1 && end >= r.0 => {
                let before = r.1 - r.0;
                *r = (r.0.min(start), r.1.max(end));
                (r.1 - r.0) - before
            }
            _ => {
                if let Some(r) = self.single.take() {
                    self.spilled.push(r);
                }
                insert(&mut self.spilled, start, end)
            }
        }
    }

    /// The ranges, lowest first.
    pub fn ranges(&self) -> &[(u64, u64)] {
        match &self.single {
            Some(r) => std::slice::from_ref(r),
            None => &self.spilled,
        }
    }

    /// The end of the highest range (0 when empty).
    pub(crate) fn extent(&self) -> u64 {
        self.ranges().last().map_or(0, |r| r.1)
    }

    /// Gives back spare capacity.
    pub fn shrink(&mut self) {
        self.spilled.shrink_to_fit();
    }
}

/// Inserts `[start, end)` into sorted, disjoint, non-touching ranges,
/// merging the ones it overlaps or touches; returns the bytes that were new.
fn insert(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) -> u64 {
    // The first range that ends at or after `start`: every range before it
    // lies wholly below and apart.
    let first = ranges.partition_point(|r| r.1 < start);
    // The ranges from `first` that begin at or before `end` touch the new
    // one.
    let last = first + ranges[first..].partition_point(|r| r.0 <= end);
    let touched = &ranges[first..last];
    let merged = (
        touched.first().map_or(start, |r| r.0.min(start)),
        touched.last().map_or(end, |r| r.1.max(end)),
    );
    let had: u64 = touched.iter().map(|r| r.1 - r.0).sum();
    ranges.splice(first..last, [merged]);
    (merged.1 - merged.0) - had
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_contiguous_stream_stays_one_range() {
        let mut c = Covered::default();
        assert_eq!(c.add(0, 100), 100);
        assert_eq!(c.add(100, 200), 100);
        assert_eq!(c.add(50, 150), 0, "a retransmission adds nothing");
        assert_eq!(c.ranges(), &[(0, 200)]);
        assert!(c.spilled.capacity() == 0, "no allocation for one range");
        assert_eq!(c.extent(), 200);
    }

    #[test]
    fn holes_are_kept_and_filled() {
        let mut c = Covered::default();
        c.add(0, 10);
        c.add(20, 30);
        c.add(40, 50);
        assert_eq!(c.ranges(), &[(0, 10), (20, 30), (40, 50)]);
        assert_eq!(c.add(5, 45), 20, "fills both holes");
        assert_eq!(c.ranges(), &[(0, 50)]);
        assert_eq!(c.add(60, 60), 0, "an empty range is nothing");
        assert_eq!(c.ranges(), &[(0, 50)]);
    }

    proptest! {
        /// Against the plainest model: a set of every byte.
        #[test]
        fn it_agrees_with_a_set_of_bytes(adds in prop::collection::vec((0u64..300, 0u64..40), 0..60)) {
            let mut c = Covered::default();
            let mut bytes = BTreeSet::new();
            for (start, len) in adds {
                let before = bytes.len() as u64;
                bytes.extend(start..start + len);
                prop_assert_eq!(c.add(start, start + len), bytes.len() as u64 - before);
            }
            // The model's maximal runs are the ranges.
            let mut runs: Vec<(u64, u64)> = Vec::new();
            for &b in &bytes {
                match runs.last_mut() {
                    Some(r) if r.1 == b => r.1 += 1,
                    _ => runs.push((b, b + 1)),
                }
            }
            prop_assert_eq!(c.ranges(), runs.as_slice());
            prop_assert_eq!(c.extent(), bytes.last().map_or(0, |b| b + 1));
        }
    }
}
