//! [`ConnTable`]: the driver's connections, indexed by quinn-proto's
//! connection handle.
//!
//! quinn-proto hands out handles as dense slab indexes that it reuses, so a
//! vector of boxed connections is the natural map: a lookup is one index,
//! and growing the table moves pointers, never the connections. (A hash map
//! would store the kilobytes-large connections inline, and each resize
//! would copy every one of them at once: a stall long enough to time out
//! handshakes on a busy driver.)

/// A set of connection handles (to drive, stalled, blocked on send). The
/// handles are numbers the driver's endpoint picks itself, so they are
/// hashed with foldhash rather than SipHash (cheaper on this per-packet
/// path) and with a fixed seed: a set made afresh each turn then costs no
/// seed generation.
pub type HandleSet = std::collections::HashSet<usize, foldhash::fast::FixedState>;

/// Connections by handle.
pub struct ConnTable<T> {
    slots: Vec<Option<Box<T>>>,
    len: usize,
}

impl<T> Default for ConnTable<T> {
    fn default() -> Self {
        ConnTable {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ConnTable<T> {
    /// Stores `conn` under `handle`, returning what was there.
    pub fn insert(&mut self, handle: usize, conn: T) -> Option<T> {
        if handle >= self.slots.len() {
            self.slots.resize_with(handle + 1, || None);
        }
        let old = self.slots[handle].replace(Box::new(conn));
        if old.is_none() {
            self.len += 1;
        }
        old.map(|boxed| *boxed)
    }

    /// Removes and returns the connection under `handle`.
    pub fn remove(&mut self, handle: usize) -> Option<T> {
        let old = self.slots.get_mut(handle)?.take();
        if old.is_some() {
            self.len -= 1;
        }
        old.map(|boxed| *boxed)
    }

    /// The connection under `handle`, mutably.
    pub fn get_mut(&mut self, handle: usize) -> Option<&mut T> {
        self.slots.get_mut(handle)?.as_deref_mut()
    }

    /// Number of connections held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every connection with its handle.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(handle, slot)| Some((handle, slot.as_deref_mut()?)))
    }

    /// Every handle in use.
    pub fn handles(&self) -> Vec<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(handle, slot)| slot.as_ref().map(|_| handle))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::ConnTable;

    #[test]
    fn inserts_looks_up_and_removes_by_handle() {
        let mut table = ConnTable::default();
        assert_eq!(table.insert(3, "c"), None);
        assert_eq!(table.insert(0, "a"), None);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get_mut(3), Some(&mut "c"));
        assert_eq!(table.get_mut(1), None);
        assert_eq!(table.get_mut(99), None);
        assert_eq!(table.insert(3, "c2"), Some("c"));
        assert_eq!(table.len(), 2);
        *table.get_mut(0).unwrap() = "a2";
        assert_eq!(table.handles(), vec![0, 3]);
        let seen: Vec<_> = table.iter_mut().map(|(h, c)| (h, *c)).collect();
        assert_eq!(seen, vec![(0, "a2"), (3, "c2")]);
        assert_eq!(table.remove(3), Some("c2"));
        assert_eq!(table.remove(3), None);
        assert_eq!(table.len(), 1);
    }
}
