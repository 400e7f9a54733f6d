//! The job queue's slab: records by slot number, with the vacant slots chained into a free
//! list, so a slot is reused by the next insert.
//!
//! It is the layout of the `slab` crate (a `Vec` of occupied-or-vacant entries, the free
//! list threaded through the vacant ones, the most recently freed slot reused first), with
//! one difference the queue needs: [`Slab::remove`] drops the value **in place** and returns
//! nothing. The `slab` crate's removal returns the value, so it moves the whole record (some
//! 280 bytes) out of its slot only for the queue to drop it: a copy on every finished job
//! pushed out of the retained ring. Overwriting the entry with a vacant one runs the record's
//! destructor where it lies and writes only the entry's tag and the free-list link.
//!
//! Only what the queue uses is here.

/// One slot: a value, or a link to the next vacant slot.
enum Entry<T> {
    Vacant(usize),
    Occupied(T),
}

/// Values by slot number; see the module docs.
pub(super) struct Slab<T> {
    entries: Vec<Entry<T>>,
    /// The first vacant slot; `entries.len()` when none is (the next insert pushes).
    next: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Slab<T> {
        Slab {
            entries: Vec::new(),
            next: 0,
        }
    }
}

impl<T> Slab<T> {
    /// The value in `slot`, if it holds one.
    pub(super) fn get(&self, slot: usize) -> Option<&T> {
        match self.entries.get(slot) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    /// The value in `slot`, if it holds one.
    pub(super) fn get_mut(&mut self, slot: usize) -> Option<&mut T> {
        match self.entries.get_mut(slot) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    /// The slot the next [`Slab::insert`] fills.
    pub(super) fn vacant_key(&self) -> usize {
        self.next
    }

    /// Stores `value` in the slot [`Slab::vacant_key`] names and returns that slot. Inline:
    /// out of line, the record was built on the caller's stack and copied in by a call
    /// (callgrind, one thread: about 13 instructions a job more).
    #[inline(always)]
    pub(super) fn insert(&mut self, value: T) -> usize {
        let slot = self.next;
        match self.entries.get_mut(slot) {
            Some(entry) => {
                let Entry::Vacant(next) = *entry else {
                    unreachable!("the free list named occupied slot {slot}");
                };
                self.next = next;
                // Known vacant, so nothing is dropped, and the value is written straight
                // into the slot (with a possible drop in between, it went through a
                // temporary: a second copy of the record).
                *entry = Entry::Occupied(value);
            }
            None => {
                self.entries.push(Entry::Occupied(value));
                self.next = self.entries.len();
            }
        }
        slot
    }

    /// Drops the value in `slot` where it lies, freeing the slot; false if it held none.
    pub(super) fn remove(&mut self, slot: usize) -> bool {
        match self.entries.get_mut(slot) {
            Some(entry @ Entry::Occupied(_)) => {
                // The assignment drops the old value in place: nothing is moved out.
                *entry = Entry::Vacant(self.next);
                self.next = slot;
                true
            }
            _ => false,
        }
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
            .filter_map(|(slot, entry)| match entry {
                Entry::Occupied(value) => Some((slot, value)),
                Entry::Vacant(_) => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::Slab;

    #[test]
    fn slots_are_reused_most_recently_freed_first() {
        let mut slab = Slab::default();
        assert_eq!((slab.vacant_key(), slab.len()), (0, 0));
        let slots: Vec<usize> = (0..4).map(|v| slab.insert(v)).collect();
        assert_eq!(slots, [0, 1, 2, 3]);
        assert!(slab.remove(1));
        assert!(slab.remove(2));
        assert!(!slab.remove(2), "already vacant");
        assert!(!slab.remove(9), "out of range");
        assert_eq!((slab.get(1), slab.get(2), slab.len()), (None, None, 2));
        assert_eq!(slab.vacant_key(), 2);
        assert_eq!(slab.insert(20), 2);
        assert_eq!(slab.insert(10), 1);
        assert_eq!(slab.vacant_key(), 4);
        assert_eq!(slab.insert(40), 4);
        if let Some(v) = slab.get_mut(0) {
            *v = 5;
        }
        let all: Vec<(usize, i32)> = slab.iter().map(|(s, &v)| (s, v)).collect();
        assert_eq!(all, [(0, 5), (1, 10), (2, 20), (3, 3), (4, 40)]);
        assert_eq!(slab.len(), 5);
    }

    #[test]
    fn remove_drops_the_value() {
        let value = Rc::new(());
        let mut slab = Slab::default();
        let slot = slab.insert(Rc::clone(&value));
        assert_eq!(Rc::strong_count(&value), 2);
        assert!(slab.remove(slot));
        assert_eq!(Rc::strong_count(&value), 1);
    }
}
