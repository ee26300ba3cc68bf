//! FIFO queues of clients waiting for a lock, one queue per key.
//!
//! Removal from anywhere (a waiter times out or disconnects) is O(1): the
//! waiter leaves the index at once and its queue slot turns stale, to be
//! skipped when it reaches the head. Stale slots are compacted away once
//! they outnumber live ones, so memory stays proportional to live waiters.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// A lock key: database number and key bytes.
pub type KeyId = (i32, Box<[u8]>);

struct Queue<H> {
    /// Waiters in arrival order, as (handle, sequence number).
    slots: VecDeque<(H, u64)>,
    /// Live waiters among `slots`.
    live: usize,
    /// When a deadline timer is armed for this key: (timer id, at ms).
    timer: Option<(u64, i64)>,
}

struct Waiter<W> {
    db: i32,
    key: Box<[u8]>,
    seq: u64,
    data: W,
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
        self.queue(db, key).map_or(0, |q| q.live)
    }

    fn queue(&self, db: i32, key: &[u8]) -> Option<&Queue<H>> {
        self.queues.get(&db)?.get(key)
    }

    /// Appends a waiter; `false` (and nothing changes) if `handle` waits already.
    pub fn push(&mut self, db: i32, key: &[u8], handle: H, data: W) -> bool {
        if self.waiters.contains_key(&handle) {
            return false;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let queue = self
            .queues
            .entry(db)
            .or_default()
            .entry(key.into())
            .or_insert_with(|| Queue {
                slots: VecDeque::new(),
                live: 0,
                timer: None,
            });
        queue.slots.push_back((handle, seq));
        queue.live += 1;
        self.waiters.insert(
            handle,
            Waiter {
                db,
                key: key.into(),
                seq,
                data,
            },
        );
        true
    }

    /// Removes a waiter wherever it is. Returns its key, its data and the
    /// deadline timer to stop if its queue is now empty.
    pub fn remove(&mut self, handle: H) -> Option<Removed<W>> {
        let waiter = self.waiters.remove(&handle)?;
        let queue = self.queues.get_mut(&waiter.db)?.get_mut(&waiter.key)?;
        queue.live -= 1;
        if queue.slots.len() > 2 * queue.live + 32 {
            let waiters = &self.waiters;
            queue
                .slots
                .retain(|(h, seq)| waiters.get(h).is_some_and(|w| w.seq == *seq));
        }
        let timer = self.drop_if_empty(waiter.db, &waiter.key);
        Some(Removed {
            key: (waiter.db, waiter.key),
            data: waiter.data,
            timer,
        })
    }

    /// Takes the first live waiter of a key.
    pub fn pop(&mut self, db: i32, key: &[u8]) -> Option<(H, W, Option<u64>)> {
        let queue = self.queues.get_mut(&db)?.get_mut(key)?;
        while let Some((handle, seq)) = queue.slots.pop_front() {
            let live = self.waiters.get(&handle).is_some_and(|w| w.seq == seq);
            if live {
                let waiter = self.waiters.remove(&handle)?;
                queue.live -= 1;
                let timer = self.drop_if_empty(db, key);
                return Some((handle, waiter.data, timer));
            }
        }
        None
    }

    /// Forgets an empty queue; returns its armed timer, to be stopped.
    fn drop_if_empty(&mut self, db: i32, key: &[u8]) -> Option<u64> {
        let per_db = self.queues.get_mut(&db)?;
        if per_db.get(key)?.live > 0 {
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

    /// Every key with waiters in one database.
    pub fn keys_in(&self, db: i32) -> Vec<KeyId> {
        self.queues
            .get(&db)
            .map(|m| m.keys().map(|k| (db, k.clone())).collect())
            .unwrap_or_default()
    }
}

/// What [`Queues::remove`] took out.
pub struct Removed<W> {
    pub key: KeyId,
    pub data: W,
    /// The key's deadline timer, when its queue became empty.
    pub timer: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fifo_per_key() {
        let mut q: Queues<u32, &str> = Queues::default();
        assert!(q.push(0, b"a", 1, "first"));
        assert!(q.push(0, b"a", 2, "second"));
        assert!(q.push(0, b"b", 3, "other key"));
        assert!(q.push(1, b"a", 4, "other db"));
        assert!(!q.push(0, b"a", 1, "again"));
        assert_eq!(q.waiting(0, b"a"), 2);
        assert_eq!(q.pop(0, b"a").map(|(h, w, _)| (h, w)), Some((1, "first")));
        assert_eq!(q.pop(0, b"a").map(|(h, w, _)| (h, w)), Some((2, "second")));
        assert!(q.pop(0, b"a").is_none());
        assert_eq!(q.total(), 2);
    }

    #[test]
    fn removed_waiters_are_skipped() {
        let mut q: Queues<u32, ()> = Queues::default();
        for h in 0..5 {
            q.push(0, b"k", h, ());
        }
        assert!(q.remove(0).is_some());
        assert!(q.remove(2).is_some());
        assert!(q.remove(2).is_none());
        let order: Vec<u32> = std::iter::from_fn(|| q.pop(0, b"k").map(|(h, _, _)| h)).collect();
        assert_eq!(order, vec![1, 3, 4]);
        assert_eq!(q.total(), 0);
        assert!(q.keys().is_empty());
    }

    #[test]
    fn a_reused_handle_keeps_its_new_place() {
        let mut q: Queues<u32, u8> = Queues::default();
        q.push(0, b"k", 7, 1);
        q.push(0, b"k", 8, 2);
        q.remove(7);
        q.push(0, b"k", 7, 3); // same handle, now behind 8
        let order: Vec<u8> = std::iter::from_fn(|| q.pop(0, b"k").map(|(_, w, _)| w)).collect();
        assert_eq!(order, vec![2, 3]);
    }

    #[test]
    fn empty_queue_returns_its_timer() {
        let mut q: Queues<u32, ()> = Queues::default();
        q.push(0, b"k", 1, ());
        q.push(0, b"k", 2, ());
        assert_eq!(q.set_timer(0, b"k", Some((9, 100))), None);
        assert_eq!(q.timer(0, b"k"), Some((9, 100)));
        assert_eq!(q.remove(1).and_then(|r| r.timer), None);
        assert_eq!(q.pop(0, b"k").and_then(|(_, _, t)| t), Some(9));
        assert_eq!(q.timer(0, b"k"), None);
    }

    #[test]
    fn stale_slots_are_compacted() {
        let mut q: Queues<u32, ()> = Queues::default();
        q.push(0, b"k", u32::MAX, ());
        for h in 0..10_000 {
            q.push(0, b"k", h, ());
            q.remove(h);
        }
        let slots = q.queue(0, b"k").map(|x| x.slots.len()).unwrap_or(0);
        assert!(slots <= 2 + 32, "{slots} slots for 1 live waiter");
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
                        let pushed = q.push(0, b"k", h, h);
                        prop_assert_eq!(pushed, !model.contains(&h));
                        if pushed { model.push(h); }
                    }
                    1 => {
                        let removed = q.remove(h).map(|r| r.data);
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
