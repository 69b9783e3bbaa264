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
    /// Whole frames queued for writing; the first `sent` bytes are already on the socket.
    write: Vec<u8>,
    /// Bytes of `write` already written (possibly ending inside a frame).
    sent: usize,
    /// Set once the connection must close after its pending bytes are written.
    pub closing: bool,
}

impl Buffers {
    /// Queues whole frames.
    pub(crate) fn queue(&mut self, frames: &[u8]) {
        self.write.extend_from_slice(frames);
    }

    /// Bytes not yet written.
    pub fn pending(&self) -> &[u8] {
        &self.write[self.sent..]
    }

    /// `n` more bytes were written.
    pub(crate) fn consume(&mut self, n: usize) {
        self.sent += n;
        if self.sent == self.write.len() {
            self.write.clear();
            self.sent = 0;
        } else if self.sent >= 64 * 1024 {
            let boundary = self.frame_end_at_or_before(self.sent);
            self.write.drain(..boundary);
            self.sent -= boundary;
        }
    }

    /// Drops every queued frame not yet started, keeping the rest of the one being written,
    /// so the stream stays whole frames (used before a slow consumer's logout).
    pub(crate) fn drop_unsent(&mut self) {
        let keep = self.frame_end_after(self.sent);
        self.write.truncate(keep);
    }

    /// The end of the last whole frame at or before `offset`.
    fn frame_end_at_or_before(&self, offset: usize) -> usize {
        let mut at = 0;
        while let Some(length) = self.frame_length_at(at) {
            if at + length > offset {
                break;
            }
            at += length;
        }
        at
    }

    /// The end of the frame containing `offset` (`offset` itself if a frame starts there).
    fn frame_end_after(&self, offset: usize) -> usize {
        let start = self.frame_end_at_or_before(offset);
        if start == offset {
            return offset;
        }
        start + self.frame_length_at(start).unwrap_or(0)
    }

    fn frame_length_at(&self, at: usize) -> Option<usize> {
        let bytes = self.write.get(at..at + 2)?;
        let length = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
        (length > 0 && at + length <= self.write.len()).then_some(length)
    }
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
        self.get(id).map_or(&[][..], |c| c.buffers().pending())
    }

    /// `n` bytes of the pending output were written.
    pub fn consume_output(&mut self, id: ConnId, n: usize) {
        if let Some(connection) = self.get_mut(id) {
            connection.buffers_mut().consume(n);
            self.unsent -= n;
        }
    }

    /// Queues whole frames on a live connection; returns its unsent bytes after (`None`
    /// for a stale id).
    pub fn queue(&mut self, id: ConnId, frames: &[u8]) -> Option<usize> {
        let buffers = self.get_mut(id)?.buffers_mut();
        buffers.queue(frames);
        let pending = buffers.pending().len();
        self.unsent += frames.len();
        Some(pending)
    }

    /// Drops a connection's queued frames not yet started ([`Buffers::drop_unsent`]).
    pub fn drop_unsent(&mut self, id: ConnId) {
        if let Some(connection) = self.get_mut(id) {
            let buffers = connection.buffers_mut();
            let before = buffers.pending().len();
            buffers.drop_unsent();
            let dropped = before - buffers.pending().len();
            self.unsent -= dropped;
        }
    }

    /// Removes a live id's connection (its unsent bytes go with it).
    pub fn remove(&mut self, id: ConnId) -> Option<T> {
        let connection = self.take(id)?;
        self.unsent -= connection.buffers().pending().len();
        Some(connection)
    }

    /// Unsent bytes over all live connections.
    pub fn unsent_total(&self) -> usize {
        self.unsent
    }

    /// While the connections hold more than `limit` unsent bytes together: drops what the
    /// one holding the most has queued and not started ([`Buffers::drop_unsent`]), and
    /// returns it with whether it was already closing (if not, the caller closes it).
    /// `None` under the limit, or when that frees nothing (all it holds is a frame being
    /// written).
    pub fn shed_over(&mut self, limit: usize) -> Option<(ConnId, bool)> {
        if self.unsent <= limit {
            return None;
        }
        let id = self.most_unsent()?;
        let before = self.unsent;
        self.drop_unsent(id);
        if self.unsent == before {
            return None;
        }
        let closing = self.get(id).is_some_and(|c| c.buffers().closing);
        Some((id, closing))
    }

    /// The connection with the most unsent bytes (closing or not), if any has some.
    pub fn most_unsent(&self) -> Option<ConnId> {
        let mut most: Option<(usize, ConnId)> = None;
        for id in self.ids() {
            let Some(buffers) = self.get(id).map(|c| c.buffers()) else {
                continue;
            };
            let pending = buffers.pending().len();
            if pending > most.map_or(0, |m| m.0) {
                most = Some((pending, id));
            }
        }
        most.map(|(_, id)| id)
    }

    /// Queues a connection's last frame (a logout) and marks it to close once that is
    /// written. No limit is checked: the frame is small, and this is how a connection
    /// dropped for a limit is told why.
    pub fn queue_last(&mut self, id: ConnId, frame: &[u8]) {
        let Some(buffers) = self.get_mut(id).map(|c| c.buffers_mut()) else {
            return;
        };
        if buffers.closing {
            return;
        }
        buffers.queue(frame);
        buffers.closing = true;
        self.unsent += frame.len();
    }

    /// Marks a connection to close once its pending output is written (the peer closed its
    /// side, say).
    pub fn close_after_flush(&mut self, id: ConnId) {
        if let Some(connection) = self.get_mut(id) {
            connection.buffers_mut().closing = true;
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

/// A slab of connections with generations, and the unsent bytes of all of them together
/// (for a port's limit on what its slow readers may hold: [`Slots::most_unsent`]).
#[derive(Debug)]
pub struct Slots<T> {
    entries: Vec<(u32, Option<T>)>,
    free: Vec<u32>,
    open: usize,
    /// Bytes queued on the live connections and not yet written.
    unsent: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            entries: Vec::new(),
            free: Vec::new(),
            open: 0,
            unsent: 0,
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

    /// Takes a live id's value out of its slot.
    fn take(&mut self, id: ConnId) -> Option<T> {
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

    /// A frame of `length` bytes (only the length field matters here).
    fn frame(length: u16, fill: u8) -> Vec<u8> {
        let mut bytes = vec![fill; length as usize];
        bytes[..2].copy_from_slice(&length.to_le_bytes());
        bytes
    }

    #[test]
    fn dropping_unsent_frames_keeps_the_one_being_written_whole() {
        let mut buffers = Buffers::default();
        for fill in 1..=3 {
            buffers.queue(&frame(24, fill));
        }
        buffers.consume(30);
        buffers.drop_unsent();
        // 6 bytes of frame 2 were written; its other 18 stay, frame 3 goes.
        assert_eq!(buffers.pending().len(), 18);
        assert!(buffers.pending().iter().all(|&b| b == 2));
        buffers.queue(&frame(16, 9));
        buffers.consume(18);
        assert_eq!(buffers.pending(), &frame(16, 9)[..]);
        buffers.consume(16);
        assert!(buffers.pending().is_empty());
    }

    #[test]
    fn long_partial_writes_release_whole_frames_only() {
        let mut buffers = Buffers::default();
        for _ in 0..4000 {
            buffers.queue(&frame(40, 7));
        }
        buffers.consume(70_001);
        assert_eq!(buffers.pending().len(), 160_000 - 70_001);
        buffers.drop_unsent();
        assert_eq!(buffers.pending().len(), 70_040 - 70_001);
    }

    /// A connection record for the slab's tests.
    #[derive(Debug, Default)]
    struct Conn {
        name: &'static str,
        buffers: Buffers,
    }

    impl HasBuffers for Conn {
        fn buffers(&self) -> &Buffers {
            &self.buffers
        }
        fn buffers_mut(&mut self) -> &mut Buffers {
            &mut self.buffers
        }
    }

    fn conn(name: &'static str) -> Conn {
        Conn {
            name,
            ..Conn::default()
        }
    }

    #[test]
    fn a_reused_slot_does_not_answer_to_its_old_id() {
        let mut slots = Slots::default();
        let first = slots.insert(conn("a"));
        assert_eq!(slots.remove(first).map(|c| c.name), Some("a"));
        let second = slots.insert(conn("b"));
        assert_eq!(second.slot, first.slot);
        assert_ne!(second.generation, first.generation);
        assert!(slots.get(first).is_none());
        assert_eq!(slots.get(second).map(|c| c.name), Some("b"));
        assert_eq!(slots.len(), 1);
    }

    #[test]
    fn the_unsent_total_follows_queues_writes_drops_and_removals() {
        let mut slots = Slots::default();
        let (a, b, c) = (
            slots.insert(conn("a")),
            slots.insert(conn("b")),
            slots.insert(conn("c")),
        );
        assert_eq!(slots.most_unsent(), None, "nothing queued");
        for _ in 0..3 {
            assert!(slots.queue(a, &frame(24, 1)).is_some());
        }
        assert_eq!(slots.queue(b, &frame(48, 2)), Some(48));
        assert_eq!(slots.unsent_total(), 3 * 24 + 48);
        assert_eq!(slots.most_unsent(), Some(a));
        slots.consume_output(a, 30);
        assert_eq!(slots.unsent_total(), 42 + 48);
        assert_eq!(slots.most_unsent(), Some(b));
        // a keeps the 18 bytes left of the frame being written.
        slots.drop_unsent(a);
        assert_eq!(slots.unsent_total(), 18 + 48);
        slots.close_after_flush(b);
        assert_eq!(slots.most_unsent(), Some(b), "closing or not");
        // Over 60 bytes: b's queue goes (it was closing); then nothing more can be freed.
        assert_eq!(slots.shed_over(60), Some((b, true)));
        assert_eq!(slots.unsent_total(), 18);
        assert_eq!(
            slots.shed_over(10),
            None,
            "a frame being written is not freed"
        );
        assert_eq!(slots.queue(c, &frame(8, 3)), Some(8));
        slots.queue_last(a, &frame(8, 4));
        assert_eq!(slots.unsent_total(), 18 + 8 + 8);
        assert!(slots.remove(b).is_some());
        assert_eq!(slots.unsent_total(), 18 + 8 + 8);
        assert_eq!(
            slots.queue(b, &frame(8, 3)),
            None,
            "a stale id queues nothing"
        );
        assert_eq!(slots.unsent_total(), 34);
        assert!(slots.is_closing(a), "its last frame closes it");
    }
}
