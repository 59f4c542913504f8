//! A vector with a free list: O(1) insert and remove by index, and memory bounded by the number
//! of live entries at the high-water mark. Holds a token's callbacks and children.

#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// Stores `value` and returns its index, stable until removed.
    pub(crate) fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(index) => {
                self.entries[index] = Some(value);
                index
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }

    /// The index the next `insert` will return.
    pub(crate) fn next_index(&self) -> usize {
        self.free.last().copied().unwrap_or(self.entries.len())
    }

    /// Takes the value at `index` out, if one is there.
    pub(crate) fn remove(&mut self, index: usize) -> Option<T> {
        let value = self.entries.get_mut(index)?.take()?;
        self.len -= 1;
        if self.len == 0 {
            // Everything is free: give the memory back rather than keep a high-water mark.
            self.entries = Vec::new();
            self.free = Vec::new();
        } else {
            self.free.push(index);
        }
        Some(value)
    }

    /// The value at `index`, if one is there.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.entries.get(index)?.as_ref()
    }

    /// Removes every value, in index order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> {
        self.len = 0;
        self.free.clear();
        std::mem::take(&mut self.entries).into_iter().flatten()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Slab;

    #[test]
    fn reuses_freed_indices_and_shrinks_when_empty() {
        let mut slab = Slab::default();
        let a = slab.insert('a');
        let b = slab.insert('b');
        assert_eq!(slab.remove(a), Some('a'));
        assert_eq!(slab.next_index(), a);
        assert_eq!(slab.insert('c'), a);
        assert_eq!(slab.remove(a), Some('c'));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.len(), 1);
        assert_eq!(slab.remove(b), Some('b'));
        assert_eq!(slab.len(), 0);
        assert_eq!(slab.next_index(), 0);
        assert_eq!(slab.remove(7), None);
    }

    #[test]
    fn drain_empties() {
        let mut slab = Slab::default();
        for i in 0..4 {
            slab.insert(i);
        }
        slab.remove(1);
        assert_eq!(slab.drain().collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(slab.len(), 0);
        assert_eq!(slab.insert(9), 0);
    }
}
