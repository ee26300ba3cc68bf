//! FIFO queues of clients waiting for a lock, one queue per key.
//!
//! Removal from anywhere (a waiter times out or disconnects) is O(1): the
//! waiter leaves the index at once and its queue slot turns stale, to be
//! skipped when it reaches the head. Stale slots are compacted away once
//! they outnumber live ones, so memory stays proportional to live waiters.
//!
//! A waiter whose wait timed out is *parked*: its slot keeps its place for
//! a short while, and a new wait with the same token takes the slot back.
//! A client that waits in slices (a connection with a response timeout)
//! thus keeps its turn across slices. A parked slot is never granted: when
//! it reaches the head, it is skipped.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A lock key: database number and key bytes.
pub type KeyId = (i32, Box<[u8]>);

/// Most parked slots kept per key.
pub const MAX_PARKED: usize = 1024;

struct Parked {
    token: Box<[u8]>,
    seq: u64,
    until_ms: i64,
}

struct Queue<H> {
    /// Slots in arrival order, by sequence number.
    slots: VecDeque<u64>,
    /// The live waiter of each live slot.
    owner: HashMap<u64, H>,
    /// Slots whose waiter timed out, kept for its return.
    parked: Vec<Parked>,
    /// When a deadline timer is armed for this key: (timer id, at ms).
    timer: Option<(u64, i64)>,
}

impl<H> Queue<H> {
    fn new() -> Self {
        Queue {
            slots: VecDeque::new(),
            owner: HashMap::new(),
            parked: Vec::new(),
            timer: None,
        }
    }

    fn compact(&mut self) {
        let kept = self.owner.len() + self.parked.len();
        if self.slots.len() > 2 * kept + 32 {
            let (owner, parked) = (&self.owner, &self.parked);
            self.slots
                .retain(|seq| owner.contains_key(seq) || parked.iter().any(|p| p.seq == *seq));
        }
    }
}

/// A queued waiter.
pub struct Waiter<W> {
    db: i32,
    key: Box<[u8]>,
    seq: u64,
    /// The token it waits with.
    pub token: Box<[u8]>,
    /// What the caller keeps about it.
    pub data: W,
}

/// Queues of waiters, identified by a handle `H` (the blocked client).
pub struct Queues<H, W> {
    // Per database, so a lookup borrows the key bytes without allocating.
    queues: HashMap<i32, HashMap<Box<[u8]>, Queue<H>>>,
    waiters: HashMap<H, Waiter<W>>,
    next_seq: u64,
}

impl<H: Copy + Eq + Hash, W> Default for Queues<H, W> {
    fn default() -> Self {
        Queues {
            queues: HashMap::new(),
            waiters: HashMap::new(),
            next_seq: 0,
        }
    }
}

impl<H: Copy + Eq + Hash, W> Queues<H, W> {
    /// Live waiters in all queues.
    pub fn total(&self) -> usize {
        self.waiters.len()
    }

    /// Live waiters on one key.
    pub fn waiting(&self, db: i32, key: &[u8]) -> usize {
        self.queue(db, key).map_or(0, |q| q.owner.len())
    }

    fn queue(&self, db: i32, key: &[u8]) -> Option<&Queue<H>> {
        self.queues.get(&db)?.get(key)
    }

    /// Appends a waiter, or puts it back in the slot it parked in with the
    /// same token. `false` (and nothing changes) if `handle` waits already.
    pub fn push(
        &mut self,
        db: i32,
        key: &[u8],
        handle: H,
        token: &[u8],
        data: W,
        now_ms: i64,
    ) -> bool {
        if self.waiters.contains_key(&handle) {
            return false;
        }
        let queue = self
            .queues
            .entry(db)
            .or_default()
            .entry(key.into())
            .or_insert_with(Queue::new);
        queue.parked.retain(|p| p.until_ms > now_ms);
        let seq = match queue.parked.iter().position(|p| *p.token == *token) {
            Some(i) => queue.parked.swap_remove(i).seq,
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                queue.slots.push_back(seq);
                seq
            }
        };
        queue.owner.insert(seq, handle);
        self.waiters.insert(
            handle,
            Waiter {
                db,
                key: key.into(),
                seq,
                token: token.into(),
                data,
            },
        );
        true
    }

    /// Removes a waiter wherever it is. Returns it, and the deadline timer
    /// to stop if its queue is now empty.
    pub fn remove(&mut self, handle: H) -> Option<(Waiter<W>, Option<u64>)> {
        self.take(handle, None)
    }

    /// Removes a waiter whose wait timed out, keeping its slot until
    /// `until_ms` for a new wait with the same token.
    pub fn park(&mut self, handle: H, until_ms: i64) -> Option<(Waiter<W>, Option<u64>)> {
        self.take(handle, Some(until_ms))
    }

    fn take(&mut self, handle: H, park_until: Option<i64>) -> Option<(Waiter<W>, Option<u64>)> {
        let waiter = self.waiters.remove(&handle)?;
        let queue = self.queues.get_mut(&waiter.db)?.get_mut(&waiter.key)?;
        queue.owner.remove(&waiter.seq);
        if let Some(until_ms) = park_until.filter(|_| queue.parked.len() < MAX_PARKED) {
            queue.parked.push(Parked {
                token: waiter.token.clone(),
                seq: waiter.seq,
                until_ms,
            });
        }
        queue.compact();
        let timer = self.drop_if_empty(waiter.db, &waiter.key);
        Some((waiter, timer))
    }

    /// Takes the first live waiter of a key (skipping parked slots), and
    /// the deadline timer to stop if the queue is now empty.
    pub fn pop(&mut self, db: i32, key: &[u8]) -> Option<(H, Waiter<W>, Option<u64>)> {
        let queue = self.queues.get_mut(&db)?.get_mut(key)?;
        while let Some(seq) = queue.slots.pop_front() {
            if let Some(handle) = queue.owner.remove(&seq) {
                let Some(waiter) = self.waiters.remove(&handle) else {
                    continue;
                };
                let timer = self.drop_if_empty(db, key);
                return Some((handle, waiter, timer));
            }
            // A parked slot whose turn came while its client was away.
            queue.parked.retain(|p| p.seq != seq);
        }
        None
    }

    /// Forgets a queue without live waiters (and its parked slots: a client
    /// coming back finds the queue empty, so it is first anyway); returns
    /// its armed timer, to be stopped.
    fn drop_if_empty(&mut self, db: i32, key: &[u8]) -> Option<u64> {
        let per_db = self.queues.get_mut(&db)?;
        if !per_db.get(key)?.owner.is_empty() {
            return None;
        }
        let queue = per_db.remove(key)?;
        if per_db.is_empty() {
            self.queues.remove(&db);
        }
        queue.timer.map(|(id, _)| id)
    }

    /// The armed deadline timer of a key's queue.
    pub fn timer(&self, db: i32, key: &[u8]) -> Option<(u64, i64)> {
        self.queue(db, key)?.timer
    }

    /// Records (or clears) the deadline timer of a key's queue; returns the
    /// one it replaces.
    pub fn set_timer(&mut self, db: i32, key: &[u8], timer: Option<(u64, i64)>) -> Option<u64> {
        let queue = self.queues.get_mut(&db)?.get_mut(key)?;
        std::mem::replace(&mut queue.timer, timer).map(|(id, _)| id)
    }

    /// Every key with waiters.
    pub fn keys(&self) -> Vec<KeyId> {
        self.queues
            .iter()
            .flat_map(|(db, m)| m.keys().map(move |k| (*db, k.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn push<W>(q: &mut Queues<u32, W>, key: &[u8], h: u32, data: W) -> bool {
        q.push(0, key, h, format!("t{h}").as_bytes(), data, 0)
    }

    fn drain<W>(q: &mut Queues<u32, W>, key: &[u8]) -> Vec<u32> {
        std::iter::from_fn(|| q.pop(0, key).map(|(h, _, _)| h)).collect()
    }

    #[test]
    fn fifo_per_key() {
        let mut q: Queues<u32, &str> = Queues::default();
        assert!(push(&mut q, b"a", 1, "first"));
        assert!(push(&mut q, b"a", 2, "second"));
        assert!(push(&mut q, b"b", 3, "other key"));
        assert!(q.push(1, b"a", 4, b"t4", "other db", 0));
        assert!(!push(&mut q, b"a", 1, "again"));
        assert_eq!(q.waiting(0, b"a"), 2);
        let (h, w, _) = q.pop(0, b"a").unwrap();
        assert_eq!((h, w.data, &*w.token), (1, "first", &b"t1"[..]));
        assert_eq!(
            q.pop(0, b"a").map(|(h, w, _)| (h, w.data)),
            Some((2, "second"))
        );
        assert!(q.pop(0, b"a").is_none());
        assert_eq!(q.total(), 2);
    }

    #[test]
    fn removed_waiters_are_skipped() {
        let mut q: Queues<u32, ()> = Queues::default();
        for h in 0..5 {
            push(&mut q, b"k", h, ());
        }
        assert!(q.remove(0).is_some());
        assert!(q.remove(2).is_some());
        assert!(q.remove(2).is_none());
        assert_eq!(drain(&mut q, b"k"), vec![1, 3, 4]);
        assert_eq!(q.total(), 0);
        assert!(q.keys().is_empty());
    }

    #[test]
    fn a_reused_handle_keeps_its_new_place() {
        let mut q: Queues<u32, u8> = Queues::default();
        q.push(0, b"k", 7, b"a", 1, 0);
        q.push(0, b"k", 8, b"b", 2, 0);
        q.remove(7);
        q.push(0, b"k", 7, b"c", 3, 0); // same handle, now behind 8
        let order: Vec<u8> =
            std::iter::from_fn(|| q.pop(0, b"k").map(|(_, w, _)| w.data)).collect();
        assert_eq!(order, vec![2, 3]);
    }

    #[test]
    fn a_parked_waiter_returning_with_its_token_keeps_its_place() {
        let mut q: Queues<u32, ()> = Queues::default();
        push(&mut q, b"k", 1, ());
        push(&mut q, b"k", 2, ());
        push(&mut q, b"k", 3, ());
        assert!(q.park(1, 1_000).is_some());
        assert_eq!(q.waiting(0, b"k"), 2);
        // Back on a new connection (handle 9), with the same token "t1".
        assert!(q.push(0, b"k", 9, b"t1", (), 500));
        assert_eq!(drain(&mut q, b"k"), vec![9, 2, 3]);
    }

    #[test]
    fn a_parked_slot_expires_and_is_never_granted() {
        let mut q: Queues<u32, ()> = Queues::default();
        push(&mut q, b"k", 1, ());
        push(&mut q, b"k", 2, ());
        q.park(1, 1_000);
        // Its turn comes while it is away: skipped.
        assert_eq!(q.pop(0, b"k").map(|(h, _, _)| h), Some(2));
        push(&mut q, b"k", 3, ());
        push(&mut q, b"k", 4, ());
        q.park(3, 1_000);
        // Back too late: joins at the end.
        assert!(q.push(0, b"k", 9, b"t3", (), 1_000));
        assert_eq!(drain(&mut q, b"k"), vec![4, 9]);
    }

    #[test]
    fn empty_queue_returns_its_timer() {
        let mut q: Queues<u32, ()> = Queues::default();
        push(&mut q, b"k", 1, ());
        push(&mut q, b"k", 2, ());
        assert_eq!(q.set_timer(0, b"k", Some((9, 100))), None);
        assert_eq!(q.timer(0, b"k"), Some((9, 100)));
        assert_eq!(q.remove(1).and_then(|r| r.1), None);
        assert_eq!(q.pop(0, b"k").and_then(|(_, _, t)| t), Some(9));
        assert_eq!(q.timer(0, b"k"), None);
    }

    #[test]
    fn stale_and_parked_slots_stay_bounded() {
        let mut q: Queues<u32, ()> = Queues::default();
        q.push(0, b"k", u32::MAX, b"keep", (), 0);
        for h in 0..10_000 {
            push(&mut q, b"k", h, ());
            if h % 2 == 0 {
                q.remove(h);
            } else {
                q.park(h, 1_000);
            }
        }
        let queue = q.queue(0, b"k").unwrap();
        assert!(queue.parked.len() <= MAX_PARKED);
        assert!(
            queue.slots.len() <= 2 * (1 + MAX_PARKED) + 32 + 1,
            "{}",
            queue.slots.len()
        );
    }

    proptest! {
        /// Against a simple model: the queue pops live waiters in push order.
        #[test]
        fn matches_a_vec_model(ops in proptest::collection::vec((0u8..3, 0u32..16), 0..200)) {
            let mut q: Queues<u32, u32> = Queues::default();
            let mut model: Vec<u32> = Vec::new();
            for (op, h) in ops {
                match op {
                    0 => {
                        let pushed = q.push(0, b"k", h, &h.to_be_bytes(), h, 0);
                        prop_assert_eq!(pushed, !model.contains(&h));
                        if pushed { model.push(h); }
                    }
                    1 => {
                        let removed = q.remove(h).map(|r| r.0.data);
                        let pos = model.iter().position(|m| *m == h);
                        prop_assert_eq!(removed, pos.map(|p| model.remove(p)));
                    }
                    _ => {
                        let popped = q.pop(0, b"k").map(|(h, _, _)| h);
                        let expected = (!model.is_empty()).then(|| model.remove(0));
                        prop_assert_eq!(popped, expected);
                    }
                }
                prop_assert_eq!(q.waiting(0, b"k"), model.len());
                prop_assert_eq!(q.total(), model.len());
            }
        }
    }
}
