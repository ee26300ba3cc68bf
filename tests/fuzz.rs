//! Fuzzing of the pure logic through `lock::logic`, on stable Rust: random
//! and boundary inputs against reference implementations, with no panic.
//!
//! * `FUZZ_CASES=n`: cases per target (default 20,000; `make torture` runs
//!   1,000,000 in release).
//! * `FUZZ_CASE=i`: replays case `i` of each target alone.
//!
//! Every target draws from its own fixed rng stream, and case `i` from a
//! case state derived from it, so a failure prints the target and index that
//! replay it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::c_void;
use std::time::Instant;

use lock::logic::args::{
    parse_acquire, parse_token_only, parse_u64, ArgError, Limits, MAX_WAIT_MS,
};
use lock::logic::fence::MAX_FENCE;
use lock::logic::queue::{Queues, MAX_PARKED};
use lock::logic::value::{self, LockValue, HEADER_LEN, MAGIC, MAGIC_META, META_HEADER_LEN};

// The module's library installs Redis's allocator as the global allocator
// (everywhere but its own unit tests), and outside a server that allocator
// has no functions to call. Give it the C library's before `main` runs.
unsafe extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
}

#[used]
#[cfg_attr(target_os = "linux", link_section = ".init_array")]
#[cfg_attr(target_os = "macos", link_section = "__DATA,__mod_init_func")]
static USE_LIBC_MALLOC: extern "C" fn() = use_libc_malloc;

extern "C" fn use_libc_malloc() {
    // SAFETY: runs before main, single-threaded, before any allocation.
    unsafe {
        redis_module::raw::RedisModule_Alloc = Some(malloc);
        redis_module::raw::RedisModule_Free = Some(free);
    }
}

const DEFAULT_CASES: u64 = 20_000;

const ARGS_STREAM: u64 = 0x0A56_5A11_0000_0001;
const VALUE_STREAM: u64 = 0x0A56_5A11_0000_0002;
const QUEUE_STREAM: u64 = 0x0A56_5A11_0000_0003;

/// SplitMix64: tiny, fast and good enough to drive a fuzzer.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True once in `n` draws.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// Prints how to replay the case if it panics.
struct Replay {
    target: &'static str,
    case: u64,
    case_start: u64,
}

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fuzz {}: case {} failed (case state {:#018x}); replay with FUZZ_CASE={} cargo test --test fuzz {}",
                self.target, self.case, self.case_start, self.case, self.target
            );
        }
    }
}

/// Runs `check` on `FUZZ_CASES` cases (or the one `FUZZ_CASE`), each with
/// its own generator.
fn fuzz(target: &'static str, stream: u64, check: impl Fn(&mut Rng)) {
    let cases = env_u64("FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let range = match env_u64("FUZZ_CASE") {
        Some(i) => i..i + 1,
        None => 0..cases,
    };
    let count = range.end - range.start;
    let started = Instant::now();
    for case in range {
        let case_start = Rng(stream ^ case.wrapping_mul(0xD6E8_FEB8_6659_FD93)).next();
        let replay = Replay {
            target,
            case,
            case_start,
        };
        check(&mut Rng(case_start));
        std::mem::forget(replay);
    }
    eprintln!(
        "fuzz {target}: {count} cases in {:.2} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------- args

/// `Some(Some(n))` for a plain decimal of at most 20 digits that fits a
/// u64, `Some(None)` for other digit strings (too large), `None` for
/// anything else.
fn decimal(bytes: &[u8]) -> Option<Option<u64>> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 20 {
        return Some(None);
    }
    let n = bytes
        .iter()
        .fold(0u128, |acc, d| acc * 10 + u128::from(d - b'0'));
    Some(u64::try_from(n).ok())
}

/// A parsed LOCK.ACQUIRE: token, milliseconds, WAIT, META.
type ParsedAcquire = (Vec<u8>, u64, Option<u64>, Vec<u8>);

/// What LOCK.ACQUIRE's arguments mean, written from its documentation.
fn reference_acquire(args: &[Vec<u8>], limits: &Limits) -> Result<ParsedAcquire, ArgError> {
    let [token, ttl, options @ ..] = args else {
        return Err(ArgError::Arity);
    };
    reference_token(token, limits)?;
    let max = limits.max_ttl_ms;
    let ttl = match decimal(ttl) {
        None | Some(Some(0)) => return Err(ArgError::BadTtl { max }),
        Some(Some(ms)) if ms <= max => ms,
        Some(_) => return Err(ArgError::TtlTooLarge { max }),
    };
    let mut wait = None;
    let mut meta: Option<Vec<u8>> = None;
    let mut rest = options;
    while let [option, tail @ ..] = rest {
        if option.eq_ignore_ascii_case(b"meta") {
            if meta.is_some() {
                return Err(ArgError::DuplicateMeta);
            }
            let [value, tail @ ..] = tail else {
                return Err(ArgError::MissingMeta);
            };
            if value.len() > limits.max_meta_len {
                return Err(ArgError::MetaTooLong {
                    max: limits.max_meta_len,
                });
            }
            meta = Some(value.clone());
            rest = tail;
            continue;
        }
        if !option.eq_ignore_ascii_case(b"wait") {
            return Err(ArgError::UnknownOption);
        }
        if wait.is_some() {
            return Err(ArgError::DuplicateWait);
        }
        let [value, tail @ ..] = tail else {
            return Err(ArgError::MissingWaitTimeout);
        };
        match decimal(value) {
            Some(Some(ms)) if ms <= MAX_WAIT_MS => wait = Some(ms),
            _ => return Err(ArgError::BadWaitTimeout),
        }
        rest = tail;
    }
    Ok((token.clone(), ttl, wait, meta.unwrap_or_default()))
}

fn reference_token(token: &[u8], limits: &Limits) -> Result<(), ArgError> {
    if token.is_empty() {
        return Err(ArgError::EmptyToken);
    }
    if token.len() > limits.max_token_len {
        return Err(ArgError::TokenTooLong {
            max: limits.max_token_len,
        });
    }
    Ok(())
}

fn random_limits(rng: &mut Rng) -> Limits {
    Limits {
        max_ttl_ms: *rng.pick(&[
            1,
            2,
            10,
            1_000,
            86_400_000,
            315_360_000_000,
            MAX_WAIT_MS,
            u64::MAX - 1,
            u64::MAX,
        ]),
        max_token_len: *rng.pick(&[1, 2, 3, 16, 40, 256, 65_536, usize::MAX]),
        max_meta_len: *rng.pick(&[0, 1, 2, 16, 1024, usize::MAX]),
    }
}

/// `WAIT` or `META` in random letter case, sometimes slightly wrong.
fn option_name(rng: &mut Rng) -> Vec<u8> {
    let word: &[u8] = if rng.one_in(3) { b"meta" } else { b"wait" };
    let mut name: Vec<u8> = word
        .iter()
        .map(|c| {
            if rng.one_in(2) {
                c.to_ascii_uppercase()
            } else {
                *c
            }
        })
        .collect();
    match rng.below(8) {
        0 => name.push(*rng.pick(&[b'S', b'\0', b' ', 0xff])),
        1 => {
            let at = rng.index(name.len());
            name.remove(at);
        }
        2 => {
            name = rng
                .pick(&[&b"NX"[..], b"PX", b"EX", b"KEEPTTL", b"", b"W"])
                .to_vec()
        }
        3 => {
            // A non-ASCII byte that folds to nothing in ASCII.
            let at = rng.index(name.len());
            name[at] = *rng.pick(&[0xc1, 0xd7, 0xf7]);
        }
        _ => {}
    }
    name
}

/// A decimal near a boundary of the limits, sometimes malformed.
fn number(rng: &mut Rng, limits: &Limits) -> Vec<u8> {
    let n = *rng.pick(&[
        0,
        1,
        2,
        9,
        10,
        limits.max_ttl_ms.saturating_sub(1),
        limits.max_ttl_ms,
        limits.max_ttl_ms.saturating_add(1),
        MAX_WAIT_MS - 1,
        MAX_WAIT_MS,
        MAX_WAIT_MS + 1,
        u64::MAX / 10,
        u64::MAX - 1,
        u64::MAX,
    ]);
    let mut s = match rng.below(10) {
        0 => b"18446744073709551616".to_vec(),
        1 => b"99999999999999999999".to_vec(),
        2 => b"100000000000000000000".to_vec(),
        3 => (rng.below(u64::MAX) % 1_000_000).to_string().into_bytes(),
        _ => n.to_string().into_bytes(),
    };
    match rng.below(12) {
        0 => {
            let zeros = rng.index(24);
            s.splice(0..0, std::iter::repeat_n(b'0', zeros));
        }
        1 => s.insert(0, *rng.pick(b"+- 0")),
        2 => s.push(*rng.pick(b" .es\0\n")),
        3 => {
            let at = rng.index(s.len());
            s[at] = *rng.pick(&[b'/', b':', b'a', 0xd9]);
        }
        4 => s = "\u{661}\u{662}".as_bytes().to_vec(), // Arabic-Indic digits
        5 => s.clear(),
        _ => {}
    }
    s
}

/// A token-like byte string, with lengths around the limit.
fn token(rng: &mut Rng, limits: &Limits) -> Vec<u8> {
    let max = limits.max_token_len.min(70_000);
    let len = match rng.below(8) {
        0 => 0,
        1 => max.saturating_sub(1),
        2 if max < 70_000 => max,
        3 if max < 70_000 => max + 1,
        _ => rng.index(24),
    };
    if len <= 64 {
        return rng.bytes(len);
    }
    // Long: the length is what matters; a few random bytes suffice.
    let mut long = vec![b'x'; len];
    for _ in 0..8 {
        let at = rng.index(len);
        long[at] = rng.next() as u8;
    }
    long
}

fn argument(rng: &mut Rng, limits: &Limits) -> Vec<u8> {
    match rng.below(5) {
        0 => option_name(rng),
        1 | 2 => number(rng, limits),
        3 => token(rng, limits),
        _ => {
            let len = rng.index(24);
            rng.bytes(len)
        }
    }
}

fn arguments(rng: &mut Rng, limits: &Limits) -> Vec<Vec<u8>> {
    if rng.one_in(3) {
        let n = rng.index(8);
        return (0..n).map(|_| argument(rng, limits)).collect();
    }
    // Shaped like a real call, then perhaps disturbed.
    let mut args = vec![token(rng, limits), number(rng, limits)];
    for _ in 0..rng.below(4) {
        args.push(option_name(rng));
        args.push(number(rng, limits));
    }
    for _ in 0..rng.below(3) {
        match rng.below(3) {
            0 if !args.is_empty() => {
                let at = rng.index(args.len());
                args.remove(at);
            }
            1 => {
                let at = rng.index(args.len() + 1);
                let arg = argument(rng, limits);
                args.insert(at, arg);
            }
            _ => {
                let arg = argument(rng, limits);
                args.push(arg);
            }
        }
    }
    args
}

fn check_error_text(e: ArgError) {
    let text = e.to_string();
    assert!(text.starts_with("ERR "), "{text}");
    assert!(!text.contains(['\r', '\n', '\0']), "{text}");
}

#[test]
fn args() {
    fuzz("args", ARGS_STREAM, |rng| {
        let limits = random_limits(rng);

        // Any argument list: the parser agrees with the reference.
        let args = arguments(rng, &limits);
        let parsed = parse_acquire(args.iter().map(Vec::as_slice), &limits)
            .map(|a| (a.token.to_vec(), a.ttl_ms, a.wait_ms, a.meta.to_vec()));
        assert_eq!(
            parsed,
            reference_acquire(&args, &limits),
            "LOCK.ACQUIRE k {args:?} with {limits:?}"
        );
        if let Err(e) = parsed {
            check_error_text(e);
        }
        let token_only = parse_token_only(args.iter().map(Vec::as_slice), &limits);
        let expected = match &args[..] {
            [token] => reference_token(token, &limits).map(|()| token.as_slice()),
            _ => Err(ArgError::Arity),
        };
        assert_eq!(
            token_only, expected,
            "LOCK.RELEASE k {args:?} with {limits:?}"
        );

        // A valid call, in any letter case, round-trips what it was given.
        let max_len = limits.max_token_len.min(300);
        let token_len = 1 + rng.index(max_len);
        let token = rng.bytes(token_len);
        let ttl = match rng.below(3) {
            0 => limits.max_ttl_ms,
            1 => 1,
            _ => 1 + rng.below(limits.max_ttl_ms),
        };
        let any_wait = rng.below(MAX_WAIT_MS);
        let wait = rng
            .one_in(2)
            .then(|| *rng.pick(&[0, 1, MAX_WAIT_MS, any_wait]));
        let mut call = vec![token.clone(), ttl.to_string().into_bytes()];
        if let Some(ms) = wait {
            let name = b"wait"
                .iter()
                .map(|c| {
                    if rng.one_in(2) {
                        c.to_ascii_uppercase()
                    } else {
                        *c
                    }
                })
                .collect();
            call.extend([name, ms.to_string().into_bytes()]);
        }
        let a = parse_acquire(call.iter().map(Vec::as_slice), &limits)
            .unwrap_or_else(|e| panic!("{call:?} with {limits:?}: {e}"));
        assert_eq!((a.token, a.ttl_ms, a.wait_ms), (&token[..], ttl, wait));

        // Integers: exactly the decimals that fit.
        let n = rng.next() >> rng.below(64);
        assert_eq!(parse_u64(n.to_string().as_bytes()), Some(n));
        let s = number(rng, &limits);
        assert_eq!(parse_u64(&s), decimal(&s).flatten(), "{s:?}");
    });
}

// --------------------------------------------------------------- value

/// What a stored value decodes to, from the documented layout.
fn reference_decode(bytes: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    if bytes.len() < HEADER_LEN {
        return None;
    }
    let fence = u64::from_be_bytes(bytes[MAGIC.len()..HEADER_LEN].try_into().ok()?);
    if !(1..=MAX_FENCE).contains(&fence) {
        return None;
    }
    if bytes[..MAGIC.len()] == MAGIC {
        return (bytes.len() > HEADER_LEN).then_some((fence, &bytes[HEADER_LEN..], &[][..]));
    }
    if bytes[..MAGIC.len()] != MAGIC_META || bytes.len() < META_HEADER_LEN {
        return None;
    }
    let len = u32::from_be_bytes(bytes[HEADER_LEN..META_HEADER_LEN].try_into().ok()?) as usize;
    let body = &bytes[META_HEADER_LEN..];
    // A token of at least one byte, then metadata of at least one byte.
    (len >= 1 && len < body.len()).then(|| (fence, &body[..len], &body[len..]))
}

fn fence(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => *rng.pick(&[1, 2, MAX_FENCE - 1, MAX_FENCE, 1_700_000_000_000_000]),
        _ => 1 + rng.below(MAX_FENCE),
    }
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    match rng.below(9) {
        0 if !bytes.is_empty() => {
            let at = rng.index(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        1 if !bytes.is_empty() => {
            let at = rng.index(bytes.len());
            bytes[at] = rng.next() as u8;
        }
        2 => {
            let len = rng.index(bytes.len() + 1);
            bytes.truncate(len);
        }
        3 => {
            let extra = rng.index(8);
            bytes.extend(rng.bytes(extra));
        }
        4 if bytes.len() >= HEADER_LEN => {
            let f = *rng.pick(&[0, MAX_FENCE + 1, u64::MAX, 1, MAX_FENCE]);
            bytes[MAGIC.len()..HEADER_LEN].copy_from_slice(&f.to_be_bytes());
        }
        5 if !bytes.is_empty() => {
            let at = rng.index(bytes.len().min(MAGIC.len()));
            bytes[at] = *rng.pick(&[0xC1, b'L', b'K', 0x01, 0x02, 0x00]);
        }
        6 => bytes.truncate(HEADER_LEN),
        _ => {}
    }
}

#[test]
fn value() {
    fuzz("value", VALUE_STREAM, |rng| {
        // Encoding round-trips.
        let f = fence(rng);
        let len = match rng.below(1_000) {
            0 => 65_536,
            _ => 1 + rng.index(64),
        };
        let token = rng.bytes(len);
        let meta = if rng.one_in(2) {
            Vec::new()
        } else {
            let len = 1 + rng.index(32);
            rng.bytes(len)
        };
        let encoded = value::encode(f, &token, &meta);
        assert_eq!(encoded.len(), value::encoded_len(token.len(), meta.len()));
        let mut into = vec![0xAA; value::encoded_len(token.len(), meta.len())];
        value::encode_into(&mut into, f, &token, &meta);
        assert_eq!(into, encoded);
        assert_eq!(
            value::decode(&encoded),
            Some(LockValue {
                fence: f,
                token: &token,
                meta: &meta,
            })
        );

        // Mutated encodings and random bytes: decoding agrees with the
        // layout, never panics, and what decodes re-encodes to itself.
        let mut bytes = if rng.one_in(4) {
            let len = rng.index(40);
            let mut b = rng.bytes(len);
            match rng.below(3) {
                0 => drop(b.splice(0..0, MAGIC)),
                1 => drop(b.splice(0..0, MAGIC_META)),
                _ => {}
            }
            b
        } else {
            let mut b = encoded;
            b.truncate(HEADER_LEN + rng.index(24));
            b
        };
        for _ in 0..1 + rng.below(4) {
            mutate(rng, &mut bytes);
        }
        let decoded = value::decode(&bytes);
        assert_eq!(
            decoded.map(|v| (v.fence, v.token, v.meta)),
            reference_decode(&bytes),
            "{bytes:?}"
        );
        if let Some(v) = decoded {
            assert_eq!(value::encode(v.fence, v.token, v.meta), bytes);
        }
    });
}

// --------------------------------------------------------------- queue

#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    Live { h: usize, token: u8 },
    Parked { token: u8, until: i64 },
}

#[derive(Default)]
struct ModelQueue {
    slots: Vec<Slot>,
    timer: Option<(u64, i64)>,
    /// The latest time a push to this key saw.
    horizon: i64,
}

impl ModelQueue {
    fn live(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Live { .. }))
            .count()
    }

    fn parked(&self, token: u8) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| matches!(s, Slot::Parked { token: t, .. } if *t == token))
    }
}

type ModelKey = (i32, u8);

/// The documented semantics, naively: per key, the slots in arrival order.
#[derive(Default)]
struct Model {
    queues: BTreeMap<ModelKey, ModelQueue>,
    /// Handle -> (its key, the data pushed with it).
    live: HashMap<usize, (ModelKey, u64)>,
}

impl Model {
    fn push(&mut self, key: ModelKey, h: usize, token: u8, data: u64, now: i64) -> bool {
        if self.live.contains_key(&h) {
            return false;
        }
        let q = self.queues.entry(key).or_insert_with(|| ModelQueue {
            horizon: i64::MIN,
            ..ModelQueue::default()
        });
        q.horizon = q.horizon.max(now);
        let horizon = q.horizon;
        q.slots
            .retain(|s| !matches!(s, Slot::Parked { until, .. } if *until <= horizon));
        let live = Slot::Live { h, token };
        match q.parked(token) {
            Some(i) => q.slots[i] = live,
            None => q.slots.push(live),
        }
        self.live.insert(h, (key, data));
        true
    }

    /// Removes or parks `h`: its data and token, and the timer to stop.
    fn take(&mut self, h: usize, park_until: Option<i64>) -> Option<(u64, u8, Option<u64>)> {
        let (key, data) = self.live.remove(&h)?;
        let q = self.queues.get_mut(&key)?;
        let i = q
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Live { h: x, .. } if *x == h))?;
        let Slot::Live { token, .. } = q.slots[i] else {
            unreachable!()
        };
        match (park_until, q.parked(token)) {
            (None, _) => {
                q.slots.remove(i);
            }
            (Some(until), Some(j)) => {
                let Slot::Parked { until: other, .. } = q.slots[j] else {
                    unreachable!()
                };
                if other > q.horizon {
                    // One parked slot per token: the earlier place, the later deadline.
                    q.slots[i.min(j)] = Slot::Parked {
                        token,
                        until: until.max(other),
                    };
                    q.slots.remove(i.max(j));
                } else {
                    // The other one expired: gone.
                    q.slots[i] = Slot::Parked { token, until };
                    q.slots.remove(j);
                }
            }
            (Some(until), None) => {
                let parked = q.slots.len() - q.live();
                if parked < MAX_PARKED {
                    q.slots[i] = Slot::Parked { token, until };
                } else {
                    q.slots.remove(i);
                }
            }
        }
        Some((data, token, self.drop_if_empty(key)))
    }

    fn pop(&mut self, key: ModelKey) -> Option<(usize, u64, u8, Option<u64>)> {
        let q = self.queues.get_mut(&key)?;
        let i = q
            .slots
            .iter()
            .position(|s| matches!(s, Slot::Live { .. }))?;
        let Slot::Live { h, token } = q.slots[i] else {
            unreachable!()
        };
        q.slots.drain(..=i);
        let (_, data) = self.live.remove(&h)?;
        Some((h, data, token, self.drop_if_empty(key)))
    }

    fn drop_if_empty(&mut self, key: ModelKey) -> Option<u64> {
        if self.queues.get(&key)?.live() > 0 {
            return None;
        }
        self.queues.remove(&key)?.timer.map(|(id, _)| id)
    }
}

const DBS: i32 = 2;
const KEYS: [&[u8]; 3] = [b"k", b"", b"k\0\xff"];
const HANDLES: u64 = 16;

fn key_bytes(key: ModelKey) -> &'static [u8] {
    KEYS[usize::from(key.1)]
}

const TOKENS: [&[u8]; 6] = [b"t0", b"t1", b"t2", b"t3", b"t4", b"\xff\x00"];

fn token_bytes(token: u8) -> &'static [u8] {
    TOKENS[usize::from(token)]
}

fn check_all(q: &Queues<usize, u64>, model: &Model, log: &impl std::fmt::Debug) {
    for db in 0..DBS {
        for k in 0..KEYS.len() as u8 {
            let mq = model.queues.get(&(db, k));
            let kb = key_bytes((db, k));
            assert_eq!(q.waiting(db, kb), mq.map_or(0, ModelQueue::live), "{log:?}");
            assert_eq!(q.timer(db, kb), mq.and_then(|m| m.timer), "{log:?}");
        }
    }
    let keys: BTreeSet<(i32, Vec<u8>)> =
        q.keys().into_iter().map(|(db, k)| (db, k.into())).collect();
    let want: BTreeSet<(i32, Vec<u8>)> = model
        .queues
        .keys()
        .map(|&k| (k.0, key_bytes(k).to_vec()))
        .collect();
    assert_eq!(keys, want, "{log:?}");
}

#[test]
fn queue() {
    fuzz("queue", QUEUE_STREAM, |rng| {
        // Time as the server makes it (`until` = now + a constant, now never
        // going back), or disordered: deadlines out of order, a clock
        // stepped back.
        let ordered = !rng.one_in(4);
        let park_ms = 1 + rng.below(20) as i64;
        let n_ops = match rng.below(20) {
            0 => 200 + rng.index(200),
            _ => rng.index(64),
        };
        let mut q: Queues<usize, u64> = Queues::default();
        let mut model = Model::default();
        let mut now = rng.below(1_000) as i64;
        let mut log = Vec::new();
        for stamp in 0..n_ops as u64 {
            let key = (rng.below(DBS as u64) as i32, rng.index(KEYS.len()) as u8);
            let (db, kb) = (key.0, key_bytes(key));
            let h = rng.below(HANDLES) as usize;
            let op = rng.below(16);
            log.push((op, key, h, now));
            match op {
                0..=4 => {
                    let token = rng.index(TOKENS.len()) as u8;
                    let pushed = q.push(db, kb, h, token_bytes(token), stamp, now);
                    assert_eq!(pushed, model.push(key, h, token, stamp, now), "{log:?}");
                }
                5 | 6 => {
                    let got = q.remove(h).map(|(w, t)| (w.data, w.token, t));
                    let want = model
                        .take(h, None)
                        .map(|(d, t, timer)| (d, Box::from(token_bytes(t)), timer));
                    assert_eq!(got, want, "{log:?}");
                }
                7..=9 => {
                    let until = if ordered {
                        now + park_ms
                    } else {
                        now + rng.below(60) as i64 - 20
                    };
                    let got = q.park(h, until).map(|(w, t)| (w.data, w.token, t));
                    let want = model
                        .take(h, Some(until))
                        .map(|(d, t, timer)| (d, Box::from(token_bytes(t)), timer));
                    assert_eq!(got, want, "{log:?}");
                }
                10..=12 => {
                    let got = q.pop(db, kb).map(|(h, w, t)| (h, w.data, w.token, t));
                    let want = model
                        .pop(key)
                        .map(|(h, d, tok, timer)| (h, d, Box::from(token_bytes(tok)), timer));
                    assert_eq!(got, want, "{log:?}");
                }
                13 => {
                    let timer = (!rng.one_in(4)).then(|| (rng.below(1_000), now));
                    let old = q.set_timer(db, kb, timer);
                    let want = model
                        .queues
                        .get_mut(&key)
                        .and_then(|mq| std::mem::replace(&mut mq.timer, timer).map(|(id, _)| id));
                    assert_eq!(old, want, "{log:?}");
                }
                _ => {
                    now += if ordered {
                        rng.below(6) as i64
                    } else {
                        rng.below(20) as i64 - 8
                    };
                }
            }
            // What the operation touched agrees; everything, now and then.
            assert_eq!(q.total(), model.live.len(), "{log:?}");
            let mq = model.queues.get(&key);
            assert_eq!(q.waiting(db, kb), mq.map_or(0, ModelQueue::live), "{log:?}");
            assert_eq!(q.timer(db, kb), mq.and_then(|m| m.timer), "{log:?}");
            if stamp % 8 == 7 {
                check_all(&q, &model, &log);
            }
        }
        check_all(&q, &model, &log);
        // Drained, the queues hold nothing.
        for (db, key) in q.keys() {
            while q.pop(db, &key).is_some() {}
        }
        assert_eq!((q.total(), q.keys().len()), (0, 0));
    });
}
