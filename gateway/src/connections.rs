//! Connection slots shared by the order-entry and market-data state machines: the bytes read
//! but not yet framed, the bytes to write, and whether the connection is to be closed.
//!
//! The state machines own these buffers; the socket shell only moves bytes between them and
//! the sockets (`receive` in, `pending_output`/`consume_output` out).

/// Identifies a connection slot: the slot index and a generation that changes when the slot is
/// reused, so a stale id never reaches a newer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    /// Index in the slot table.
    pub slot: u32,
    /// Reuse counter of the slot.
    pub generation: u32,
}

/// Buffers of one connection.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Received bytes not yet framed (never more than one partial frame after handling).
    pub read: Vec<u8>,
    /// Bytes waiting to be written.
    pub write: Vec<u8>,
    /// Set once the connection must close after its pending bytes are written.
    pub closing: bool,
}

/// A connection record that owns [`Buffers`].
pub trait HasBuffers {
    /// Its buffers.
    fn buffers(&self) -> &Buffers;
    /// Its buffers, mutably.
    fn buffers_mut(&mut self) -> &mut Buffers;
}

impl<T: HasBuffers> Slots<T> {
    /// Bytes waiting to be written on a connection (empty for a stale id).
    pub fn pending_output(&self, id: ConnId) -> &[u8] {
        self.get(id).map_or(&[][..], |c| &c.buffers().write[..])
    }

    /// `n` bytes of the pending output were written.
    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        if let Some(connection) = self.get_mut(id) {
            connection.buffers_mut().write.drain(..n);
        }
    }

    /// True once the connection should be closed (after its pending output).
    pub fn is_closing(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|c| c.buffers().closing)
    }
}

/// Sorts and dedups a dirty list into `into`.
pub fn take_dirty(dirty: &mut Vec<ConnId>, into: &mut Vec<ConnId>) {
    dirty.sort_unstable();
    dirty.dedup();
    into.append(dirty);
}

/// A slab of connections with generations.
#[derive(Debug)]
pub struct Slots<T> {
    entries: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    open: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            open: 0,
        }
    }
}

impl<T> Slots<T> {
    /// Stores `value` in a free slot and returns its id.
    pub fn insert(&mut self, value: T) -> ConnId {
        self.open += 1;
        if let Some(slot) = self.free.pop() {
            let entry = &mut self.entries[slot as usize];
            entry.0 = entry.0.wrapping_add(1);
            entry.1 = Some(value);
            return ConnId {
                slot,
                generation: entry.0,
            };
        }
        self.entries.push((0, Some(value)));
        ConnId {
            slot: (self.entries.len() - 1) as u32,
            generation: 0,
        }
    }

    /// The value of a live id.
    pub fn get(&self, id: ConnId) -> Option<&T> {
        match self.entries.get(id.slot as usize) {
            Some((generation, Some(value))) if *generation == id.generation => Some(value),
            _ => None,
        }
    }

    /// The value of a live id, mutably.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut T> {
        match self.entries.get_mut(id.slot as usize) {
            Some((generation, Some(value))) if *generation == id.generation => Some(value),
            _ => None,
        }
    }

    /// Removes a live id's value.
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let entry = self.entries.get_mut(id.slot as usize)?;
        if entry.0 != id.generation || entry.1.is_none() {
            return None;
        }
        self.free.push(id.slot);
        self.open -= 1;
        entry.1.take()
    }

    /// Number of live entries.
    pub fn len(&self) -> usize {
        self.open
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.open == 0
    }

    /// Every live id, in slot order.
    pub fn ids(&self) -> Vec<ConnId> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, (_, value))| value.is_some())
            .map(|(slot, (generation, _))| ConnId {
                slot: slot as u32,
                generation: *generation,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_id() {
        let mut slots = Slots::default();
        let first = slots.insert("a");
        assert_eq!(slots.remove(first), Some("a"));
        let second = slots.insert("b");
        assert_eq!(second.slot, first.slot);
        assert_ne!(second.generation, first.generation);
        assert_eq!(slots.get(first), None);
        assert_eq!(slots.get(second), Some(&"b"));
        assert_eq!(slots.len(), 1);
    }
}
