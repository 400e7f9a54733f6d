//! Proactive expiry: a hierarchical timer wheel per shard.
//!
//! # Design
//!
//! Expired entries are never *returned* (every read checks the deadline), but they also have to
//! be *removed* without waiting for traffic on their key, or a cache full of dead entries keeps
//! their memory. Each shard files every entry that has a deadline in a hierarchical timer wheel:
//! six levels of 64 buckets, level `l` covering spans of `64^l` ticks of 2^30 ns (≈ 1.07 s). An
//! entry is filed in the level of the highest 6-bit group in which its deadline tick differs
//! from the wheel's current tick. Advancing the wheel visits only the buckets whose span has
//! been passed; an entry found there is either due (handed back to the shard) or re-filed into a
//! strictly lower level. An entry is therefore touched at most once per level: filing and
//! expiring cost amortized O(1) each, however long the TTL, with no per-entry heap or links.
//!
//! Filings are not withdrawn when an entry is removed or replaced (that would need a back
//! pointer per entry). A stale filing is recognised when its bucket comes up: the slot is empty,
//! or holds an entry with another deadline. So that stale filings cannot pile up under a
//! churn of long-TTL updates, the shard rebuilds the wheel from its live entries when filings
//! outnumber live timed entries by more than 2:1 — O(n) work paid for by the ≥ n stale
//! filings that triggered it.
//!
//! A purge skips a shard in which nothing can be due without taking its write lock: each
//! shard publishes a lower bound on its deadlines in an atomic (see
//! `Shard::earliest_deadline`), lowered by an insert that files an earlier one and raised
//! again by a purge that took the lock: from the wheel ([`TimerWheel::earliest`]) and the exact
//! deadlines of the filings it kept for later in the current tick. A sweep of
//! a busy cache with nothing due used to write-lock every shard, stalling its readers. On an
//! idle cache (50,000 entries due in an hour, 8 shards) a `purge_expired` cost 2,793
//! instructions, now 960 (callgrind, from the difference of 50,000 and 10,000 calls), and
//! 0.67 µs, now 0.25 µs (the fastest of three runs of 2,000,000 calls). A timed insert pays
//! 5 instructions for the bound (an evicting one 1,553–1,555 → 1,559–1,563, three runs each);
//! an untimed one pays nothing.

/// Bits of a [`crate::Timestamp`] below one wheel tick.
pub(super) const TICK_SHIFT: u32 = 30;
/// Bits per level: 64 buckets a level.
const LEVEL_BITS: u32 = 6;
const SLOTS: usize = 1 << LEVEL_BITS;
/// Six levels of six bits cover all 32-bit ticks (≈ 146 years).
const LEVELS: usize = 6;

/// One filing: which slot of the shard's slab, and the deadline tick it was filed for.
#[derive(Clone, Copy, Debug)]
struct Filing {
    slot: u32,
    tick: u32,
}

/// The tick of a deadline in nanoseconds, saturating at the last tick.
pub(super) fn tick_of(nanos: u64) -> u32 {
    u32::try_from(nanos >> TICK_SHIFT).unwrap_or(u32::MAX)
}

#[derive(Debug)]
pub(super) struct TimerWheel {
    levels: Vec<[Vec<Filing>; SLOTS]>,
    /// The tick the wheel has advanced to.
    elapsed: u32,
    /// Number of filings held, live or stale.
    filings: usize,
}

impl TimerWheel {
    pub(super) fn new() -> TimerWheel {
        TimerWheel {
            levels: (0..LEVELS)
                .map(|_| std::array::from_fn(|_| Vec::new()))
                .collect(),
            elapsed: 0,
            filings: 0,
        }
    }

    pub(super) fn filings(&self) -> usize {
        self.filings
    }

    /// Files `slot` to come up when the wheel reaches `tick`.
    pub(super) fn schedule(&mut self, slot: u32, tick: u32) {
        let (level, index) = self.position(tick);
        self.levels[level][index].push(Filing { slot, tick });
        self.filings += 1;
    }

    fn position(&self, tick: u32) -> (usize, usize) {
        if tick <= self.elapsed {
            // Already due (or due within the current tick): the current level-0 bucket, which
            // every advance visits.
            return (0, (self.elapsed as usize) & (SLOTS - 1));
        }
        let differing = (self.elapsed ^ tick) | (SLOTS as u32 - 1);
        let level = ((31 - differing.leading_zeros()) / LEVEL_BITS) as usize;
        let index = (tick >> (LEVEL_BITS * level as u32)) as usize & (SLOTS - 1);
        (level, index)
    }

    /// Advances to `now_tick` and hands every filing whose tick has come to `due`.
    ///
    /// `due(slot, tick)` returns `true` if the filing must stay (its entry lives on within the
    /// current tick); such filings are re-filed in the current bucket.
    pub(super) fn advance(&mut self, now_tick: u32, mut due: impl FnMut(u32, u32) -> bool) {
        let old = self.elapsed;
        let now_tick = now_tick.max(old);
        self.elapsed = now_tick;
        let mut refile = Vec::new();
        // Top down, so that filings moved to a lower level are seen in this same advance.
        for level in (0..LEVELS).rev() {
            let shift = LEVEL_BITS * level as u32;
            let (from, to) = (old >> shift, now_tick >> shift);
            if from == to && level > 0 {
                continue;
            }
            let count = (to - from).saturating_add(1).min(SLOTS as u32);
            for step in 0..count {
                let index = (from.wrapping_add(step)) as usize & (SLOTS - 1);
                let bucket = std::mem::take(&mut self.levels[level][index]);
                self.filings -= bucket.len();
                for filing in bucket {
                    if filing.tick > now_tick {
                        let (l, i) = self.position(filing.tick);
                        self.levels[l][i].push(filing);
                        self.filings += 1;
                    } else if due(filing.slot, filing.tick) {
                        refile.push(filing);
                    }
                }
            }
        }
        for filing in refile {
            self.schedule(filing.slot, filing.tick);
        }
    }

    /// A lower bound on the tick of every filing held outside the current bucket, `None` if
    /// there is none; for the shard to publish after an advance (see `Shard::expire`), when
    /// no filing is for a tick before the wheel's and the current bucket holds just the
    /// filings the advance kept, whose exact deadlines the shard counts itself. A filing in
    /// level `l` has the wheel's tick above that level's 6-bit group (it was filed, or last
    /// re-filed, under the same higher groups: a change there visits this level's buckets),
    /// so its bucket's index and the wheel's higher groups bound its tick from below. The
    /// 384 bucket lengths are read only by a purge that has just taken the shard's write lock
    /// to remove something.
    pub(super) fn earliest(&self) -> Option<u32> {
        let mut earliest = None;
        for (level, buckets) in self.levels.iter().enumerate() {
            let shift = LEVEL_BITS * level as u32;
            let above = shift + LEVEL_BITS;
            let base = if above >= u32::BITS {
                0
            } else {
                (self.elapsed >> above) << above
            };
            // Level 0's current bucket holds filings for ticks up to the wheel's (a filing
            // for a later tick in level 0 differs from it in the low group): the caller's.
            let current = (level == 0).then_some(self.elapsed as usize & (SLOTS - 1));
            if let Some(index) =
                (0..SLOTS).find(|&index| Some(index) != current && !buckets[index].is_empty())
            {
                // The lowest non-empty index gives this level's lowest bound.
                let bound = base | ((index as u32) << shift);
                earliest = Some(earliest.map_or(bound, |e: u32| e.min(bound)));
            }
        }
        earliest
    }

    /// Bytes held for filings; for tests.
    #[cfg(test)]
    pub(super) fn footprint(&self) -> usize {
        let buckets = self.levels.iter().flatten();
        buckets.map(Vec::capacity).sum::<usize>() * std::mem::size_of::<Filing>()
    }

    /// Drops every filing (the shard re-files its live entries after this).
    pub(super) fn clear(&mut self) {
        for level in &mut self.levels {
            for bucket in level.iter_mut() {
                *bucket = Vec::new();
            }
        }
        self.filings = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Files random ticks, advances in random steps, and checks every filing comes up exactly
    /// when its tick is reached, never before.
    #[test]
    fn filings_come_up_exactly_when_due() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut wheel = TimerWheel::new();
        let mut pending = BTreeSet::new();
        let mut now = 0u32;
        for slot in 0..20_000u32 {
            let span = [3u64, 100, 5_000, 300_000, 40_000_000][slot as usize % 5];
            let tick = now.saturating_add((next() % span) as u32);
            wheel.schedule(slot, tick);
            pending.insert((tick, slot));
            if slot % 97 == 0 {
                now = now.saturating_add((next() % 2_000) as u32);
                let mut fired = Vec::new();
                wheel.advance(now, |s, t| {
                    fired.push((t, s));
                    false
                });
                for (t, s) in fired {
                    assert!(t <= now, "filing for tick {t} fired at {now}");
                    assert!(pending.remove(&(t, s)));
                }
                assert!(
                    pending.iter().all(|&(t, _)| t > now),
                    "a due filing was missed"
                );
                // The count the shard's rebuild rule reads: here every filing is live.
                assert_eq!(wheel.filings(), pending.len());
                // The bound a purge publishes: below every filing, and past the wheel's tick
                // (none is due), so that purges skip the shard until then.
                let first = pending.first().map(|&(t, _)| t);
                let earliest = wheel.earliest();
                assert_eq!(earliest.is_some(), first.is_some());
                if let (Some(earliest), Some(first)) = (earliest, first) {
                    assert!(
                        earliest <= first,
                        "bound {earliest} above a filing for {first}"
                    );
                    assert!(earliest > now, "bound {earliest} at or before {now}");
                }
            }
        }
        wheel.advance(u32::MAX, |s, t| {
            assert!(pending.remove(&(t, s)));
            false
        });
        assert!(pending.is_empty());
        assert_eq!(wheel.filings(), 0);
    }

    #[test]
    fn kept_filings_stay_in_the_current_tick() {
        let mut wheel = TimerWheel::new();
        wheel.schedule(7, 5);
        let mut seen = 0;
        wheel.advance(5, |_, _| {
            seen += 1;
            true
        });
        wheel.advance(5, |_, _| {
            seen += 1;
            false
        });
        assert_eq!(seen, 2);
        assert_eq!(wheel.filings(), 0);
    }

    /// Slots fired by advancing `wheel` to `now`.
    fn fired(wheel: &mut TimerWheel, now: u32) -> Vec<u32> {
        let mut fired = Vec::new();
        wheel.advance(now, |slot, _| {
            fired.push(slot);
            false
        });
        fired.sort_unstable();
        fired
    }

    /// One advance over a long idle stretch, of any length, fires every filing it passed,
    /// whichever level it was filed in, and none beyond.
    #[test]
    fn one_long_advance_fires_exactly_what_it_passed() {
        for jump in [63, 64, 4_096, 1 << 18, 1 << 24, 1 << 26, 1 << 30, 1 << 31] {
            let mut wheel = TimerWheel::new();
            let ticks = [
                1,
                100,
                5_000,
                300_000,
                20_000_000,
                1 << 28,
                1 << 31,
                u32::MAX,
            ];
            for (slot, &tick) in ticks.iter().enumerate() {
                wheel.schedule(slot as u32, tick);
            }
            let due: Vec<u32> = (0..ticks.len() as u32)
                .filter(|&slot| ticks[slot as usize] <= jump)
                .collect();
            assert_eq!(fired(&mut wheel, jump), due, "advance to {jump}");
            assert_eq!(wheel.filings(), ticks.len() - due.len());
        }
    }

    /// A deadline tick the wheel has already passed (an insert that read the clock before
    /// another thread's purge advanced the wheel) comes up at the next advance, not when the
    /// wheel comes round again. Ticks near the 32-bit end (saturated deadlines) come up only
    /// there.
    #[test]
    fn past_and_last_ticks_come_up_when_due() {
        let mut wheel = TimerWheel::new();
        assert!(fired(&mut wheel, 1_000).is_empty());
        wheel.schedule(1, 5);
        wheel.schedule(2, 1_000);
        assert_eq!(fired(&mut wheel, 1_001), [1, 2]);

        wheel.schedule(3, u32::MAX);
        wheel.schedule(4, u32::MAX - 1);
        assert_eq!(fired(&mut wheel, u32::MAX - 1), [4]);
        assert_eq!(fired(&mut wheel, u32::MAX), [3]);
    }

    /// `clear` drops every filing: none comes up afterwards.
    #[test]
    fn cleared_filings_never_come_up() {
        let mut wheel = TimerWheel::new();
        for slot in 0..100 {
            wheel.schedule(slot, slot * 1_000);
        }
        wheel.clear();
        assert_eq!(wheel.filings(), 0);
        assert!(fired(&mut wheel, u32::MAX).is_empty());
    }
}
