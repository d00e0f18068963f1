//! The flows of a table, side by side in a few large allocations.
//!
//! A capture of many connections at once touches a different flow with
//! almost every packet, so where flows live decides the speed: one
//! allocation each cost a page fault every four flows and scattered them.
//! Here they sit in slots of 32 MiB chunks (only the slots used are ever
//! touched), a slot freed by a connection handed out is the next one's, and
//! on Linux each chunk asks for transparent huge pages: a page fault per
//! 2 MiB. The chunks grow to hold the most connections in the table at once
//! and no further.

/// Where a flow sits in a [`Slab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot(u32);

pub(crate) struct Slab<T> {
    /// Chunks of [`Self::CHUNK`] slots each, never moved once allocated.
    chunks: Vec<Vec<Option<T>>>,
    /// Slots whose value was taken, to be filled first.
    free: Vec<Slot>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            chunks: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    /// Slots per chunk: 32 MiB of them. The allocator maps a chunk on its
    /// own, page-aligned but not huge-page-aligned, so all but its first and
    /// last 2 MiB can be huge pages; only the slots used are ever touched.
    const CHUNK: usize = (32 << 20) / size_of::<Option<T>>();

    fn at(&self, slot: Slot) -> &Option<T> {
        let i = slot.0 as usize;
        &self.chunks[i / Self::CHUNK][i % Self::CHUNK]
    }

    fn at_mut(&mut self, slot: Slot) -> &mut Option<T> {
        let i = slot.0 as usize;
        &mut self.chunks[i / Self::CHUNK][i % Self::CHUNK]
    }

    /// Puts `value` in a free slot, or a new one.
    pub fn insert(&mut self, value: T) -> Slot {
        if let Some(slot) = self.free.pop() {
            *self.at_mut(slot) = Some(value);
            return slot;
        }
        if self.chunks.last().is_none_or(|c| c.len() == Self::CHUNK) {
            let chunk = Vec::with_capacity(Self::CHUNK);
            advise_huge_pages(&chunk);
            self.chunks.push(chunk);
        }
        let full = (self.chunks.len() - 1) * Self::CHUNK;
        let chunk = self.chunks.last_mut().expect("pushed above");
        chunk.push(Some(value));
        // More than 4 billion flows at once cannot fit in memory before.
        Slot(u32::try_from(full + chunk.len() - 1).expect("fewer than 2^32 values at once"))
    }

    /// The value in `slot`, if it holds one.
    pub fn try_get(&self, slot: Slot) -> Option<&T> {
        let i = slot.0 as usize;
        self.chunks
            .get(i / Self::CHUNK)?
            .get(i % Self::CHUNK)?
            .as_ref()
    }

    pub fn get(&self, slot: Slot) -> &T {
        self.at(slot)
            .as_ref()
            .expect("a slot in use: the table removes its key with it")
    }

    pub fn get_mut(&mut self, slot: Slot) -> &mut T {
        self.at_mut(slot)
            .as_mut()
            .expect("a slot in use: the table removes its key with it")
    }

    /// Hands the value in `slot` to `f` where it lies, then drops it there,
    /// so a large value is never copied out; the slot is free from then on.
    pub fn remove_with<R>(&mut self, slot: Slot, f: impl FnOnce(&mut T) -> R) -> R {
        let cell = self.at_mut(slot);
        let r = f(cell
            .as_mut()
            .expect("a slot in use: the table removes its key with it"));
        *cell = None;
        self.free.push(slot);
        r
    }

    /// A hint that `slot` will be used soon: its first cache lines are
    /// fetched now, while the CPU has other work.
    pub fn prefetch(&self, slot: Slot) {
        prefetch(self.at(slot));
    }

    /// Every slot in use, with its value.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &T)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, v)| {
                // Below 2^32: `insert` numbers no more slots than that.
                Some((Slot(i as u32), v.as_ref()?))
            })
    }
}

/// Asks the kernel to back `v`'s buffer with huge pages where it can (the
/// whole 2 MiB pages inside it). Only a hint: without transparent huge
/// pages, or elsewhere than Linux, nothing changes.
fn advise_huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let bytes = v.capacity() * size_of::<T>();
        let start = v.as_ptr() as usize;
        let aligned = start.next_multiple_of(PAGE);
        let end = start + bytes;
        if end > aligned + (2 << 20) {
            // SAFETY: the range lies inside `v`'s own allocation, and
            // MADV_HUGEPAGE changes how it is backed, never its contents.
            unsafe {
                libc::madvise(
                    aligned as *mut libc::c_void,
                    (end - aligned) / PAGE * PAGE,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = v;
}

/// Fetches the cache lines of `value` (up to 1 KiB of it) ahead of use.
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let p = (value as *const T).cast::<i8>();
        for offset in (0..size_of::<T>().min(1024)).step_by(64) {
            // SAFETY: a prefetch never faults and reads nothing into the
            // program; the address is inside `value` all the same.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_slot_is_filled_first_and_values_stay_where_they_were_put() {
        let mut slab = Slab::default();
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove_with(a, |v| *v), "a");
        assert!(slab.try_get(a).is_none(), "free until filled again");
        let c = slab.insert("c");
        assert_eq!(c, a, "the freed slot");
        assert_eq!((*slab.get(b), *slab.get(c)), ("b", "c"));
        *slab.get_mut(b) = "B";
        slab.prefetch(b);
        let mut left: Vec<_> = slab.iter().collect();
        left.sort_by_key(|(s, _)| s.0);
        assert_eq!(left, [(a, &"c"), (b, &"B")]);
    }

    #[test]
    fn a_removed_value_is_dropped_where_it_lay() {
        let shared = std::rc::Rc::new(());
        let mut slab = Slab::default();
        let a = slab.insert(std::rc::Rc::clone(&shared));
        assert_eq!(slab.remove_with(a, |v| std::rc::Rc::strong_count(v)), 2);
        assert_eq!(
            std::rc::Rc::strong_count(&shared),
            1,
            "dropped by the removal"
        );
    }

    #[test]
    fn a_large_slab_keeps_every_value_across_growth() {
        // Past 2 MiB, where the huge-page advice applies.
        let mut slab = Slab::default();
        let slots: Vec<Slot> = (0..300_000u64).map(|i| slab.insert([i; 2])).collect();
        for (i, s) in slots.iter().enumerate() {
            assert_eq!(slab.get(*s)[1], i as u64);
        }
    }
}
