//! The job queue's slab: records by slot number, and the allocator that hands out the slots.
//!
//! The two are apart because they sit behind different locks (see *Storage* in the queue's
//! module docs): a submit on the fast path names its record's slot under the queue's intake
//! lock, in the job index, before the record reaches the slab, which is behind the main lock.
//! So the slab does not choose slots: [`Slab::insert_at`] fills the slot the allocator gave
//! out, and [`Slab::remove`] frees one without reusing it; the queue hands freed slots back to
//! the [`Slots`] allocator (after their index entries are gone), which reuses the most
//! recently freed first, as the `slab` crate's free list does, so that a new record lands
//! where a record was just dropped, in cache.
//!
//! [`Slab::remove`] drops the value **in place** and returns nothing: the `slab` crate's
//! removal returns the value, so it moves the whole record (256 bytes) out of its slot
//! only for the queue to drop it, a copy on every finished job pushed out of the retained
//! ring.
//!
//! Only what the queue uses is here.

/// Values by slot number; see the module docs.
pub(super) struct Slab<T> {
    entries: Vec<Option<T>>,
}

impl<T> Default for Slab<T> {
    fn default() -> Slab<T> {
        Slab {
            entries: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// The value in `slot`, if it holds one.
    pub(super) fn get(&self, slot: usize) -> Option<&T> {
        self.entries.get(slot)?.as_ref()
    }

    /// The value in `slot`, if it holds one.
    pub(super) fn get_mut(&mut self, slot: usize) -> Option<&mut T> {
        self.entries.get_mut(slot)?.as_mut()
    }

    /// Stores `value` in `slot`, which [`Slots::take`] gave out and which is vacant. Inline:
    /// out of line, the record was built on the caller's stack and copied in by a call
    /// (callgrind, one thread: about 13 instructions a job more).
    #[inline(always)]
    pub(super) fn insert_at(&mut self, slot: usize, value: T) {
        if slot >= self.entries.len() {
            // Slots are given out in order, so this is usually a push of one.
            self.entries.resize_with(slot + 1, || None);
        }
        match &mut self.entries[slot] {
            // Known vacant, so nothing is dropped, and the value is written straight into
            // the slot (with a possible drop in between, it went through a temporary: a
            // second copy of the record).
            entry @ None => *entry = Some(value),
            Some(_) => unreachable!("slot {slot} was given out while occupied"),
        }
    }

    /// Drops the value in `slot` where it lies, after a last look at it (`last_look`, whose
    /// answer is returned); `None` if the slot held no value. One lookup: a look with
    /// [`Slab::get`] before the removal found the slot twice. The slot is not reused until
    /// it is given back to the allocator ([`Slots::give_back`]).
    #[inline]
    pub(super) fn remove<R>(&mut self, slot: usize, last_look: impl FnOnce(&T) -> R) -> Option<R> {
        let entry = self.entries.get_mut(slot)?;
        let answer = last_look(entry.as_ref()?);
        // The assignment drops the old value in place: nothing is moved out.
        *entry = None;
        Some(answer)
    }

    /// The number of values (a walk: only tests ask).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.iter().count()
    }

    /// The values with their slots, in slot order.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(slot, entry)| Some((slot, entry.as_ref()?)))
    }
}

/// Gives out slot numbers: the most recently given back first, else the next never used.
#[derive(Default)]
pub(super) struct Slots {
    free: Vec<usize>,
    /// The first slot never given out.
    next: usize,
}

impl Slots {
    /// A slot to fill.
    #[inline]
    pub(super) fn take(&mut self) -> usize {
        match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.next += 1;
                self.next - 1
            }
        }
    }

    /// Makes `slot` (vacant in the slab, and named by no index entry) available again.
    pub(super) fn give_back(&mut self, slot: usize) {
        self.free.push(slot);
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::{Slab, Slots};

    #[test]
    fn slots_are_reused_most_recently_given_back_first() {
        let mut slots = Slots::default();
        let taken: Vec<usize> = (0..4).map(|_| slots.take()).collect();
        assert_eq!(taken, [0, 1, 2, 3]);
        slots.give_back(1);
        slots.give_back(2);
        assert_eq!([slots.take(), slots.take(), slots.take()], [2, 1, 4]);
    }

    #[test]
    fn values_go_where_they_are_told_and_removal_frees_in_place() {
        let mut slab = Slab::default();
        slab.insert_at(0, 0);
        slab.insert_at(2, 20);
        assert_eq!((slab.get(1), slab.get(2), slab.len()), (None, Some(&20), 2));
        slab.insert_at(1, 10);
        assert_eq!(slab.remove(1, |&v| v), Some(10));
        assert_eq!(slab.remove(1, |&v| v), None, "already vacant");
        assert_eq!(slab.remove(9, |&v| v), None, "out of range");
        slab.insert_at(1, 11);
        if let Some(v) = slab.get_mut(0) {
            *v = 5;
        }
        let all: Vec<(usize, i32)> = slab.iter().map(|(s, &v)| (s, v)).collect();
        assert_eq!(all, [(0, 5), (1, 11), (2, 20)]);
    }

    #[test]
    #[should_panic(expected = "occupied")]
    fn filling_an_occupied_slot_is_a_bug() {
        let mut slab = Slab::default();
        slab.insert_at(0, 1);
        slab.insert_at(0, 2);
    }

    #[test]
    fn remove_drops_the_value() {
        let value = Rc::new(());
        let mut slab = Slab::default();
        slab.insert_at(0, Rc::clone(&value));
        assert_eq!(Rc::strong_count(&value), 2);
        assert_eq!(slab.remove(0, Rc::strong_count), Some(2));
        assert_eq!(Rc::strong_count(&value), 1);
    }
}
