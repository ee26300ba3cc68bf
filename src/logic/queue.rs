//! FIFO queues of clients waiting for a lock, one queue per key.
//!
//! Every operation is O(1) amortised, however many clients wait:
//! * a waiter that leaves (times out, disconnects) leaves the indexes at
//!   once; its slot in the arrival-order deque turns stale and is skipped
//!   when it reaches the head;
//! * stale slots are compacted away once they outnumber kept ones, so a
//!   compaction's cost is paid for by the removals that made the slots
//!   stale, and memory stays proportional to live waiters (tables shrink
//!   too when mostly empty).
//!
//! A waiter whose wait timed out is *parked*: its slot keeps its place for
//! a short while, and a new wait with the same token takes the slot back.
//! A client that waits in slices (a connection with a response timeout)
//! thus keeps its turn across slices. A parked slot is never granted: when
//! it reaches the head, it is skipped. Parked slots are indexed by sequence
//! number and by token, and expire through a FIFO in parking order (each
//! park is "now + a constant", so deadlines come in order and expired slots
//! leave from its front; one out of order is still never taken back once a
//! push has seen its deadline pass).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// A lock key: database number and key bytes.
pub type KeyId = (i32, Box<[u8]>);

/// Most parked slots kept per key.
pub const MAX_PARKED: usize = 1024;

/// Hashes numbers no client chooses: the sequence numbers the queue hands
/// out and the server's client handles. Flooding a table with colliding
/// values is out of a client's reach, so a multiplicative hash is safe, and
/// saves SipHash's cost on every operation. (Tokens and key names, chosen
/// by clients, keep the standard hasher.)
#[derive(Clone, Copy, Default)]
struct IdHasher(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let x = self.0.wrapping_mul(GOLDEN);
        x ^ (x >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(23).wrapping_mul(GOLDEN) ^ n;
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Stale entries tolerated before a compaction, so small queues never
/// compact.
const SLACK: usize = 32;

struct Parked {
    token: Box<[u8]>,
    until_ms: i64,
    /// Identifies this park's entry in `Queue::expiry` (older entries for
    /// the same slot are stale).
    park_id: u64,
}

/// An entry of `Queue::expiry`.
struct Expiry {
    until_ms: i64,
    seq: u64,
    park_id: u64,
}

struct Queue<H> {
    /// Slots in arrival order, by sequence number: live, parked or stale.
    slots: VecDeque<u64>,
    /// The live waiter of each live slot.
    owner: IdMap<u64, H>,
    /// Slots whose waiter timed out, kept for its return.
    parked: IdMap<u64, Parked>,
    /// The parked slot of each token (one per token).
    parked_by_token: HashMap<Box<[u8]>, u64>,
    /// Parks in the order they happened; entries of slots since unparked or
    /// parked again are stale and skipped.
    expiry: VecDeque<Expiry>,
    next_park_id: u64,
    /// The latest time a push saw: parked slots whose deadline it passed
    /// are gone, wherever they are in `expiry`.
    horizon_ms: i64,
    /// When a deadline timer is armed for this key: (timer id, at ms).
    timer: Option<(u64, i64)>,
}

impl<H> Queue<H> {
    fn new() -> Self {
        Queue {
            slots: VecDeque::new(),
            owner: IdMap::default(),
            parked: IdMap::default(),
            parked_by_token: HashMap::new(),
            expiry: VecDeque::new(),
            next_park_id: 0,
            horizon_ms: i64::MIN,
            timer: None,
        }
    }

    fn is_current(&self, e: &Expiry) -> bool {
        self.parked
            .get(&e.seq)
            .is_some_and(|p| p.park_id == e.park_id)
    }

    /// Takes a slot out of the parked indexes (its `expiry` entry turns
    /// stale; its place in `slots` too, unless a waiter takes it back).
    fn unpark(&mut self, seq: u64) -> Option<Parked> {
        let parked = self.parked.remove(&seq)?;
        if self.parked_by_token.get(&parked.token) == Some(&seq) {
            self.parked_by_token.remove(&parked.token);
        }
        Some(parked)
    }

    /// Keeps `seq` for a return with `token` until `until_ms`. A token has
    /// one parked slot: parked twice (two waits with one token timed out),
    /// it keeps the earlier place until the later deadline.
    fn park(&mut self, seq: u64, token: &[u8], until_ms: i64) {
        let (mut seq, mut until_ms) = (seq, until_ms);
        let token: Box<[u8]> = match self.parked_by_token.get(token).copied() {
            Some(other) => match self.unpark(other) {
                Some(p) => {
                    // Unless a push saw it expire (it is gone then).
                    if p.until_ms > self.horizon_ms {
                        seq = seq.min(other);
                        until_ms = until_ms.max(p.until_ms);
                    }
                    p.token
                }
                None => token.into(),
            },
            None => token.into(),
        };
        if self.parked.len() >= MAX_PARKED {
            return;
        }
        let park_id = self.next_park_id;
        self.next_park_id += 1;
        self.parked_by_token.insert(token.clone(), seq);
        self.parked.insert(
            seq,
            Parked {
                token,
                until_ms,
                park_id,
            },
        );
        self.expiry.push_back(Expiry {
            until_ms,
            seq,
            park_id,
        });
    }

    /// Moves the horizon to `now_ms` (never back: a clock stepped back
    /// revives no expired slot) and forgets parked slots expired by then
    /// (and stale entries) from the front of `expiry`. Returns the entries
    /// visited.
    fn expire(&mut self, now_ms: i64) -> usize {
        self.horizon_ms = self.horizon_ms.max(now_ms);
        let now_ms = self.horizon_ms;
        let mut visited = 0;
        while let Some(front) = self.expiry.front() {
            if self.is_current(front) {
                if front.until_ms > now_ms {
                    break;
                }
                let seq = front.seq;
                self.unpark(seq);
            }
            self.expiry.pop_front();
            visited += 1;
        }
        visited
    }

    /// The slot a returning waiter with `token` takes back, if parked and
    /// not expired at the horizon.
    fn reclaim(&mut self, token: &[u8]) -> Option<u64> {
        let seq = *self.parked_by_token.get(token)?;
        let parked = self.unpark(seq)?;
        // Expired but not yet at the front of `expiry`: gone all the same.
        (parked.until_ms > self.horizon_ms).then_some(seq)
    }

    /// Drops stale entries once they outnumber kept ones, and shrinks
    /// tables left mostly empty. Each compaction costs at most twice the
    /// stale entries it drops, so this is O(1) amortised per operation that
    /// made an entry stale. Returns the entries visited.
    fn compact(&mut self) -> usize {
        let mut visited = 0;
        let kept = self.owner.len() + self.parked.len();
        if self.slots.len() > 2 * kept + SLACK {
            visited += self.slots.len();
            let (owner, parked) = (&self.owner, &self.parked);
            self.slots
                .retain(|seq| owner.contains_key(seq) || parked.contains_key(seq));
        }
        if self.expiry.len() > 2 * self.parked.len() + SLACK {
            visited += self.expiry.len();
            let mut expiry = std::mem::take(&mut self.expiry);
            expiry.retain(|e| self.is_current(e));
            self.expiry = expiry;
        }
        visited += shrink_deque(&mut self.slots)
            + shrink_deque(&mut self.expiry)
            + shrink_map(&mut self.owner)
            + shrink_map(&mut self.parked)
            + shrink_map(&mut self.parked_by_token);
        visited
    }
}

/// Shrinks a map holding less than a quarter of its capacity; O(1)
/// amortised (it took that many removals since it last grew or shrank).
/// Returns the capacity visited.
fn shrink_map<K: Eq + Hash, V, S: BuildHasher>(map: &mut HashMap<K, V, S>) -> usize {
    let capacity = map.capacity();
    if capacity <= 4 * map.len() + SLACK {
        return 0;
    }
    map.shrink_to(map.len());
    capacity
}

fn shrink_deque<T>(deque: &mut VecDeque<T>) -> usize {
    let capacity = deque.capacity();
    if capacity <= 4 * deque.len() + SLACK {
        return 0;
    }
    deque.shrink_to(deque.len());
    capacity
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
    waiters: IdMap<H, Waiter<W>>,
    next_seq: u64,
    /// Entries visited by expiry, skips, compactions and shrinks: lets
    /// tests bound the amortised cost of the operations.
    work: u64,
}

impl<H: Copy + Eq + Hash, W> Default for Queues<H, W> {
    fn default() -> Self {
        Queues {
            queues: HashMap::new(),
            waiters: IdMap::default(),
            next_seq: 0,
            work: 0,
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
        let mut work = queue.expire(now_ms);
        let seq = match queue.reclaim(token) {
            Some(seq) => seq,
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                queue.slots.push_back(seq);
                seq
            }
        };
        queue.owner.insert(seq, handle);
        work += queue.compact();
        self.work += work as u64;
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
        if let Some(until_ms) = park_until {
            queue.park(waiter.seq, &waiter.token, until_ms);
        }
        let work = queue.compact() + shrink_map(&mut self.waiters);
        self.work += work as u64;
        let timer = self.drop_if_empty(waiter.db, &waiter.key);
        Some((waiter, timer))
    }

    /// Takes the first live waiter of a key (skipping parked slots), and
    /// the deadline timer to stop if the queue is now empty.
    pub fn pop(&mut self, db: i32, key: &[u8]) -> Option<(H, Waiter<W>, Option<u64>)> {
        let queue = self.queues.get_mut(&db)?.get_mut(key)?;
        while let Some(seq) = queue.slots.pop_front() {
            self.work += 1;
            let Some(handle) = queue.owner.remove(&seq) else {
                // A parked slot whose turn came while its client was away,
                // or a stale one.
                queue.unpark(seq);
                continue;
            };
            let Some(waiter) = self.waiters.remove(&handle) else {
                continue;
            };
            let work = queue.compact() + shrink_map(&mut self.waiters);
            self.work += work as u64;
            let timer = self.drop_if_empty(db, key);
            return Some((handle, waiter, timer));
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
        // Dropping it frees at most MAX_PARKED parked slots and the stale
        // entries compaction allows: paid for by the parks and removals.
        self.work += (queue.slots.len() + queue.expiry.len()) as u64;
        if per_db.is_empty() {
            self.queues.remove(&db);
        } else {
            self.work += shrink_map(per_db) as u64;
        }
        self.work += shrink_map(&mut self.queues) as u64;
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
    fn a_token_parked_twice_keeps_its_earlier_place_until_the_later_deadline() {
        let mut q: Queues<u32, ()> = Queues::default();
        q.push(0, b"k", 1, b"same", (), 0);
        push(&mut q, b"k", 2, ());
        q.push(0, b"k", 3, b"same", (), 0);
        push(&mut q, b"k", 4, ());
        q.park(3, 1_000);
        q.park(1, 1_500);
        assert_eq!(q.queue(0, b"k").unwrap().parked.len(), 1);
        // Back after the first deadline, before the second: the first place.
        assert!(q.push(0, b"k", 8, b"same", (), 1_200));
        // A second return with the token finds no parked slot: at the end.
        assert!(q.push(0, b"k", 9, b"same", (), 1_200));
        assert_eq!(drain(&mut q, b"k"), vec![8, 2, 4, 9]);
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
        // Parking the last waiter empties the queue too.
        push(&mut q, b"k", 3, ());
        q.set_timer(0, b"k", Some((10, 100)));
        assert_eq!(q.park(3, 1_000).and_then(|r| r.1), Some(10));
        assert!(q.keys().is_empty());
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
            queue.slots.len() <= 2 * (1 + MAX_PARKED) + SLACK + 1,
            "{}",
            queue.slots.len()
        );
    }

    /// A client parking and coming back over and over (one slice after
    /// another, within one millisecond) leaves no trail of stale entries.
    #[test]
    fn parking_and_returning_again_and_again_stays_bounded() {
        let mut q: Queues<u32, ()> = Queues::default();
        q.push(0, b"k", u32::MAX, b"keep", (), 0);
        for h in 0..100_000 {
            assert!(q.push(0, b"k", h, b"slices", (), 0));
            assert!(q.park(h, 1_000).is_some());
        }
        let queue = q.queue(0, b"k").unwrap();
        assert_eq!((queue.parked.len(), queue.owner.len()), (1, 1));
        assert!(queue.slots.len() <= 2 * 2 + SLACK, "{}", queue.slots.len());
        assert!(queue.expiry.len() <= 2 + SLACK, "{}", queue.expiry.len());
        // The client kept its first place, right behind "keep".
        assert!(q.push(0, b"k", 7, b"slices", (), 999));
        assert!(q.push(0, b"k", 8, b"late", (), 999));
        assert_eq!(drain(&mut q, b"k"), vec![u32::MAX, 7, 8]);
    }

    /// 200,000 waiters on one key: half of them time out (the first
    /// MAX_PARKED keep their slot and come back), a quarter disconnect,
    /// then all are drained. Every operation is O(1) amortised: the
    /// entries visited stay within a small multiple of the operations.
    #[test]
    fn two_hundred_thousand_waiters_cost_o1_each() {
        const N: u32 = 200_000;
        let mut q: Queues<u32, ()> = Queues::default();
        let mut ops = 0u64;
        for h in 0..N {
            assert!(push(&mut q, b"k", h, ()));
            ops += 1;
        }
        // Even handles time out; every fourth handle disconnects.
        for h in (0..N).filter(|h| h % 2 == 0) {
            assert!(q.park(h, 1_000).is_some());
            ops += 1;
        }
        for h in (1..N).step_by(4) {
            assert!(q.remove(h).is_some());
            ops += 1;
        }
        assert_eq!(q.waiting(0, b"k"), N as usize / 4);
        assert_eq!(q.queue(0, b"k").unwrap().parked.len(), MAX_PARKED);
        // The parked ones come back on new handles, with their tokens.
        let returned = 2 * MAX_PARKED as u32;
        for h in (0..returned).step_by(2) {
            assert!(q.push(0, b"k", N + h, format!("t{h}").as_bytes(), (), 500));
            ops += 1;
        }
        // Timed out without a parked slot: back at the end.
        assert!(q.push(0, b"k", 2 * N, format!("t{}", N - 2).as_bytes(), (), 500));
        ops += 1;
        let order = drain(&mut q, b"k");
        ops += order.len() as u64 + 1;
        let expected: Vec<u32> = (0..N)
            .filter_map(|h| match h % 4 {
                0 | 2 if h < returned => Some(N + h),
                3 => Some(h),
                _ => None,
            })
            .chain([2 * N])
            .collect();
        assert_eq!(order.len(), expected.len());
        assert!(order == expected, "not in arrival order");
        assert_eq!(q.total(), 0);
        assert!(q.keys().is_empty());
        assert!(
            q.work <= 8 * ops,
            "{} entries visited for {ops} operations",
            q.work
        );
    }

    /// Parked slots expire in order as time passes, whatever their number.
    #[test]
    fn parked_slots_expire_as_time_passes() {
        let mut q: Queues<u32, ()> = Queues::default();
        q.push(0, b"k", u32::MAX, b"keep", (), 0);
        let mut ops = 1u64;
        for round in 0..200i64 {
            let now = round * 100;
            for i in 0..1_000u32 {
                let h = round as u32 * 1_000 + i;
                q.push(0, b"k", h, format!("t{h}").as_bytes(), (), now);
                q.park(h, now + 1_000);
                ops += 2;
            }
            let queue = q.queue(0, b"k").unwrap();
            assert!(queue.parked.len() <= MAX_PARKED);
            assert!(queue.expiry.len() <= 2 * MAX_PARKED + SLACK);
        }
        // Past every deadline: the next arrival finds nothing parked.
        assert!(q.push(0, b"k", 0, b"t199999", (), 1_000_000));
        let queue = q.queue(0, b"k").unwrap();
        assert_eq!((queue.parked.len(), queue.expiry.len()), (0, 0));
        assert_eq!(drain(&mut q, b"k"), vec![u32::MAX, 0]);
        assert!(
            q.work <= 8 * ops,
            "{} entries visited for {ops} operations",
            q.work
        );
    }

    /// Tables shrink back as waiters leave: memory follows live waiters.
    #[test]
    fn memory_follows_live_waiters() {
        let mut q: Queues<u32, ()> = Queues::default();
        for h in 0..100_000 {
            push(&mut q, b"k", h, ());
        }
        for h in 0..99_990 {
            q.remove(h);
        }
        let queue = q.queue(0, b"k").unwrap();
        assert!(queue.owner.capacity() <= 4 * 10 + SLACK);
        assert!(queue.slots.capacity() <= 4 * 10 + SLACK);
        assert!(q.waiters.capacity() <= 4 * 10 + SLACK);
    }

    /// What a model op does.
    #[derive(Clone, Debug)]
    enum Op {
        Push { h: u32, token: u8 },
        Remove { h: u32 },
        Park { h: u32 },
        Pop,
        Tick { ms: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..12, 0u8..6).prop_map(|(h, token)| Op::Push { h, token }),
            1 => (0u32..12).prop_map(|h| Op::Remove { h }),
            2 => (0u32..12).prop_map(|h| Op::Park { h }),
            2 => Just(Op::Pop),
            1 => (0i64..4).prop_map(|ms| Op::Tick { ms }),
        ]
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Slot {
        Live { h: u32, token: u8 },
        Parked { token: u8, until: i64 },
    }

    const PARK: i64 = 5;

    /// The documented semantics, naively: slots in arrival order.
    #[derive(Default)]
    struct Model {
        slots: Vec<Slot>,
    }

    impl Model {
        fn live(&self) -> usize {
            self.slots
                .iter()
                .filter(|s| matches!(s, Slot::Live { .. }))
                .count()
        }

        fn parked(&self) -> usize {
            self.slots.len() - self.live()
        }

        fn find_live(&self, h: u32) -> Option<usize> {
            self.slots
                .iter()
                .position(|s| matches!(s, Slot::Live { h: x, .. } if *x == h))
        }

        fn find_parked(&self, token: u8) -> Option<usize> {
            self.slots
                .iter()
                .position(|s| matches!(s, Slot::Parked { token: t, .. } if *t == token))
        }

        /// A queue without live waiters is forgotten, parked slots too.
        fn drop_if_empty(&mut self) {
            if self.live() == 0 {
                self.slots.clear();
            }
        }

        fn push(&mut self, h: u32, token: u8, now: i64) -> bool {
            if self.find_live(h).is_some() {
                return false;
            }
            self.slots
                .retain(|s| !matches!(s, Slot::Parked { until, .. } if *until <= now));
            let live = Slot::Live { h, token };
            match self.find_parked(token) {
                Some(i) => self.slots[i] = live,
                None => self.slots.push(live),
            }
            true
        }

        fn take(&mut self, h: u32, park_until: Option<i64>) -> Option<u8> {
            let i = self.find_live(h)?;
            let Slot::Live { token, .. } = self.slots[i] else {
                unreachable!()
            };
            match (park_until, self.find_parked(token)) {
                (None, _) => {
                    self.slots.remove(i);
                }
                // One parked slot per token: the earlier place, the later
                // deadline.
                (Some(until), Some(j)) => {
                    let Slot::Parked { until: other, .. } = self.slots[j] else {
                        unreachable!()
                    };
                    let until = until.max(other);
                    self.slots[i.min(j)] = Slot::Parked { token, until };
                    self.slots.remove(i.max(j));
                }
                (Some(until), None) if self.parked() < MAX_PARKED => {
                    self.slots[i] = Slot::Parked { token, until };
                }
                (Some(_), None) => {
                    self.slots.remove(i);
                }
            }
            self.drop_if_empty();
            Some(token)
        }

        fn pop(&mut self) -> Option<u32> {
            let i = self
                .slots
                .iter()
                .position(|s| matches!(s, Slot::Live { .. }))?;
            let Slot::Live { h, .. } = self.slots[i] else {
                unreachable!()
            };
            self.slots.drain(..=i);
            self.drop_if_empty();
            Some(h)
        }
    }

    proptest! {
        /// Against a naive model of slots in arrival order: pops, returns
        /// of parked waiters, expiry and removals all agree.
        #[test]
        fn matches_a_vec_model(ops in proptest::collection::vec(op(), 0..300)) {
            let mut q: Queues<u32, u32> = Queues::default();
            let mut model = Model::default();
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Push { h, token } => {
                        let pushed = q.push(0, b"k", h, &[token], h, now);
                        prop_assert_eq!(pushed, model.push(h, token, now));
                    }
                    Op::Remove { h } => {
                        let removed = q.remove(h).map(|r| (r.0.data, r.0.token[0]));
                        prop_assert_eq!(removed, model.take(h, None).map(|t| (h, t)));
                    }
                    Op::Park { h } => {
                        let parked = q.park(h, now + PARK).map(|r| (r.0.data, r.0.token[0]));
                        prop_assert_eq!(parked, model.take(h, Some(now + PARK)).map(|t| (h, t)));
                    }
                    Op::Pop => {
                        let popped = q.pop(0, b"k").map(|(h, w, _)| (h, w.data));
                        prop_assert_eq!(popped, model.pop().map(|h| (h, h)));
                    }
                    Op::Tick { ms } => now += ms,
                }
                prop_assert_eq!(q.waiting(0, b"k"), model.live());
                prop_assert_eq!(q.total(), model.live());
                let parked = q.queue(0, b"k").map_or(0, |queue| queue.parked.len());
                prop_assert_eq!(parked, model.parked());
            }
        }
    }
}
