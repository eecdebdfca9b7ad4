//! Which seqs of one (agent, stream) the server holds, as ranges.
//!
//! Kept per stream in memory and persisted with every delivery, so that
//! deduplication on seq and the high-water need no per-event lookups.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Held seqs of one stream: stored, duplicates of a stored id, or rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSeqs {
    /// Inclusive ranges, start → end, never touching each other.
    ranges: BTreeMap<u64, u64>,
}

impl HeldSeqs {
    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq <= end)
    }

    /// Mark `seq` held; returns false if it already was.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        let before = self
            .ranges
            .range(..seq)
            .next_back()
            .filter(|&(_, &end)| end + 1 == seq)
            .map(|(&start, _)| start);
        let after = seq
            .checked_add(1)
            .and_then(|next| self.ranges.get(&next).map(|&end| (next, end)));
        let start = before.unwrap_or(seq);
        let end = match after {
            Some((next, end)) => {
                self.ranges.remove(&next);
                end
            }
            None => seq,
        };
        self.ranges.insert(start, end);
        true
    }

    /// Mark every seq from `first` to `last` held, joining the runs it
    /// touches.
    pub fn insert_range(&mut self, first: u64, last: u64) {
        if first > last {
            return;
        }
        let mut start = first;
        let mut end = last;
        // A run that reaches into or touches the range from below.
        if let Some((&s, &e)) = self.ranges.range(..=first).next_back()
            && e.saturating_add(1) >= first
        {
            start = s;
            end = end.max(e);
        }
        // Runs that begin inside it or right after it.
        let inside: Vec<u64> = self
            .ranges
            .range(start..=end.saturating_add(1))
            .map(|(&s, _)| s)
            .collect();
        for s in inside {
            if let Some(e) = self.ranges.remove(&s) {
                end = end.max(e);
            }
        }
        self.ranges.insert(start, end);
    }

    /// The parts of `first..=last` not held yet, as inclusive ranges.
    pub fn missing_within(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut parts = Vec::new();
        let mut next = first;
        if let Some((_, &end)) = self.ranges.range(..=first).next_back()
            && end >= first
        {
            next = end.saturating_add(1);
        }
        for (&start, &end) in self.ranges.range(first..=last) {
            if start > next {
                parts.push((next, start - 1));
            }
            next = next.max(end.saturating_add(1));
        }
        if next <= last && next >= first {
            parts.push((next, last));
        }
        parts
    }

    /// Whether holding `first..=last` would add a separate run.
    pub fn range_opens_run(&self, first: u64, last: u64) -> bool {
        let below = first
            .checked_sub(1)
            .is_some_and(|before| self.contains(before));
        let above = last
            .checked_add(1)
            .is_some_and(|after| self.contains(after));
        let within = self.ranges.range(first..=last).next().is_some() || self.contains(first);
        !(below || above || within)
    }

    /// Whether holding `seq` would add a separate run: neither it nor a
    /// neighbour is held.
    pub fn opens_range(&self, seq: u64) -> bool {
        !self.contains(seq)
            && seq
                .checked_sub(1)
                .is_none_or(|before| !self.contains(before))
            && seq.checked_add(1).is_none_or(|after| !self.contains(after))
    }

    /// The high-water reported on register: every seq from the lowest held
    /// one up to it is held (0 when nothing is). The lowest held seq is
    /// where the server joined the stream; nothing below it is expected.
    pub fn high_water(&self) -> u64 {
        self.ranges.first_key_value().map_or(0, |(_, &end)| end)
    }

    /// The lowest seq held (0 when none): where this server joined the
    /// stream.
    pub fn first(&self) -> u64 {
        self.ranges.first_key_value().map_or(0, |(&start, _)| start)
    }

    /// The held ranges, inclusive, in order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&start, &end)| (start, end))
    }

    /// How many separate ranges (gaps + 1); shown for diagnosis.
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges_join_what_they_touch() {
        let mut held = HeldSeqs::default();
        held.insert(1);
        held.insert(10);
        held.insert(20);
        assert!(held.range_opens_run(13, 15));
        assert!(!held.range_opens_run(2, 5));
        held.insert_range(2, 9);
        assert_eq!(held.ranges().collect::<Vec<_>>(), [(1, 10), (20, 20)]);
        held.insert_range(12, 25);
        assert_eq!(held.ranges().collect::<Vec<_>>(), [(1, 10), (12, 25)]);
        held.insert_range(11, 11);
        assert_eq!(held.ranges().collect::<Vec<_>>(), [(1, 25)]);
        assert_eq!(held.high_water(), 25);
        held.insert_range(5, 3);
        assert_eq!(held.range_count(), 1);
        assert!(held.missing_within(3, 20).is_empty());
        held.insert(40);
        assert_eq!(held.missing_within(20, 45), [(26, 39), (41, 45)]);
    }

    #[test]
    fn ranges_merge_as_gaps_fill() {
        let mut held = HeldSeqs::default();
        assert_eq!(held.high_water(), 0);
        for seq in [5, 6, 7, 10, 9] {
            assert!(held.insert(seq));
        }
        assert_eq!(held.high_water(), 7);
        assert_eq!(held.range_count(), 2);
        assert!(!held.insert(6));
        assert!(held.insert(8));
        assert_eq!(held.high_water(), 10);
        assert_eq!(held.range_count(), 1);
        // Older events (a catch-up) move the start down.
        assert!(held.insert(4));
        assert_eq!(held.high_water(), 10);
        assert!(held.insert(1));
        assert_eq!(held.high_water(), 1);
    }

    proptest! {
        #[test]
        fn agrees_with_a_plain_set(seqs in proptest::collection::vec(1u64..200, 0..300)) {
            let mut held = HeldSeqs::default();
            let mut set = std::collections::BTreeSet::new();
            for seq in seqs {
                prop_assert_eq!(held.insert(seq), set.insert(seq));
            }
            for seq in 0..205 {
                prop_assert_eq!(held.contains(seq), set.contains(&seq));
                let near = |s: Option<u64>| s.is_some_and(|s| set.contains(&s));
                prop_assert_eq!(
                    held.opens_range(seq),
                    !set.contains(&seq) && !near(seq.checked_sub(1)) && !near(Some(seq + 1))
                );
            }
            let expected = set.first().map_or(0, |&first| {
                let mut end = first;
                while set.contains(&(end + 1)) { end += 1; }
                end
            });
            prop_assert_eq!(held.high_water(), expected);
        }
    }
}
