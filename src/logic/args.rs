//! Parsing of the commands' arguments (everything after the key).
//!
//! Parsers take byte slices and never index blindly: any client input ends
//! in a value or an [`ArgError`], never a panic.

use std::fmt;

/// Limits an operator configures (`lock.max-ttl`, `lock.max-token-length`,
/// `lock.max-meta-length`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted lock time-to-live, in milliseconds.
    pub max_ttl_ms: u64,
    /// Largest accepted token, in bytes.
    pub max_token_len: usize,
    /// Largest accepted `META` value, in bytes.
    pub max_meta_len: usize,
}

/// `LOCK.ACQUIRE key token milliseconds [META value] [WAIT timeout-ms]`,
/// after the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acquire<'a> {
    /// The caller's token.
    pub token: &'a [u8],
    /// Requested time-to-live.
    pub ttl_ms: u64,
    /// `WAIT timeout-ms`: `Some(0)` waits without limit.
    pub wait_ms: Option<u64>,
    /// `META value`: stored with the lock when granted (empty: none).
    pub meta: &'a [u8],
}

/// `LOCK.EXTEND key token milliseconds`, after the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extend<'a> {
    /// The caller's token.
    pub token: &'a [u8],
    /// The new time-to-live, from now.
    pub ttl_ms: u64,
}

/// A rejected argument list; `Display` gives the error reply's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// Too few or too many arguments.
    Arity,
    /// `milliseconds` is not a positive integer.
    BadTtl { max: u64 },
    /// `milliseconds` is above `lock.max-ttl`.
    TtlTooLarge { max: u64 },
    /// The token is empty.
    EmptyToken,
    /// The token is longer than `lock.max-token-length`.
    TokenTooLong { max: usize },
    /// An option LOCK.ACQUIRE does not know.
    UnknownOption,
    /// `WAIT` without a value.
    MissingWaitTimeout,
    /// `WAIT`'s value is not a non-negative integer.
    BadWaitTimeout,
    /// `WAIT` given twice.
    DuplicateWait,
    /// `META` without a value.
    MissingMeta,
    /// `META` given twice.
    DuplicateMeta,
    /// The `META` value is longer than `lock.max-meta-length`.
    MetaTooLong { max: usize },
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Arity => f.write_str("ERR wrong number of arguments"),
            ArgError::BadTtl { max } => write!(
                f,
                "ERR milliseconds must be a positive integer (1 to {max}, see lock.max-ttl)"
            ),
            ArgError::TtlTooLarge { max } => write!(
                f,
                "ERR milliseconds is above lock.max-ttl: accepted are 1 to {max}"
            ),
            ArgError::EmptyToken => f.write_str("ERR token must not be empty"),
            ArgError::TokenTooLong { max } => write!(
                f,
                "ERR token is longer than lock.max-token-length ({max} bytes)"
            ),
            ArgError::UnknownOption => f.write_str(
                "ERR syntax error: unknown option, LOCK.ACQUIRE accepts META value and WAIT timeout-ms",
            ),
            ArgError::MissingWaitTimeout => {
                f.write_str("ERR syntax error: WAIT needs a timeout in milliseconds")
            }
            ArgError::BadWaitTimeout => f.write_str(
                "ERR WAIT timeout must be a non-negative integer of milliseconds (0 waits without limit)",
            ),
            ArgError::DuplicateWait => f.write_str("ERR syntax error: WAIT given more than once"),
            ArgError::MissingMeta => f.write_str("ERR syntax error: META needs a value"),
            ArgError::DuplicateMeta => f.write_str("ERR syntax error: META given more than once"),
            ArgError::MetaTooLong { max } => write!(
                f,
                "ERR META value is longer than lock.max-meta-length ({max} bytes)"
            ),
        }
    }
}

/// Largest `WAIT` timeout (about 292 million years; keeps deadlines in i64).
pub const MAX_WAIT_MS: u64 = i64::MAX as u64 / 4;

/// A non-negative decimal integer: ASCII digits only, no sign, no overflow.
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    bytes.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Checks a token against the limits.
pub fn parse_token<'a>(token: &'a [u8], limits: &Limits) -> Result<&'a [u8], ArgError> {
    if token.is_empty() {
        return Err(ArgError::EmptyToken);
    }
    if token.len() > limits.max_token_len {
        return Err(ArgError::TokenTooLong {
            max: limits.max_token_len,
        });
    }
    Ok(token)
}

fn parse_ttl(bytes: &[u8], limits: &Limits) -> Result<u64, ArgError> {
    let max = limits.max_ttl_ms;
    match parse_u64(bytes) {
        Some(0) => Err(ArgError::BadTtl { max }),
        Some(ms) if ms > max => Err(ArgError::TtlTooLarge { max }),
        Some(ms) => Ok(ms),
        // All digits yet unparsable: it overflowed u64.
        None if !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit) => {
            Err(ArgError::TtlTooLarge { max })
        }
        None => Err(ArgError::BadTtl { max }),
    }
}

/// Parses `token milliseconds [META value] [WAIT timeout-ms]`; the
/// options come in any order, each at most once.
pub fn parse_acquire<'a, I>(args: I, limits: &Limits) -> Result<Acquire<'a>, ArgError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut args = args.into_iter();
    let (Some(token), Some(ttl)) = (args.next(), args.next()) else {
        return Err(ArgError::Arity);
    };
    let token = parse_token(token, limits)?;
    let ttl_ms = parse_ttl(ttl, limits)?;
    let mut wait_ms = None;
    let mut meta = None;
    while let Some(option) = args.next() {
        if option.eq_ignore_ascii_case(b"WAIT") {
            if wait_ms.is_some() {
                return Err(ArgError::DuplicateWait);
            }
            let value = args.next().ok_or(ArgError::MissingWaitTimeout)?;
            let ms = parse_u64(value)
                .filter(|ms| *ms <= MAX_WAIT_MS)
                .ok_or(ArgError::BadWaitTimeout)?;
            wait_ms = Some(ms);
        } else if option.eq_ignore_ascii_case(b"META") {
            if meta.is_some() {
                return Err(ArgError::DuplicateMeta);
            }
            let value = args.next().ok_or(ArgError::MissingMeta)?;
            if value.len() > limits.max_meta_len {
                return Err(ArgError::MetaTooLong {
                    max: limits.max_meta_len,
                });
            }
            meta = Some(value);
        } else {
            return Err(ArgError::UnknownOption);
        }
    }
    Ok(Acquire {
        token,
        ttl_ms,
        wait_ms,
        meta: meta.unwrap_or_default(),
    })
}

/// Parses `token milliseconds` of LOCK.EXTEND.
pub fn parse_extend<'a, I>(args: I, limits: &Limits) -> Result<Extend<'a>, ArgError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut args = args.into_iter();
    let (Some(token), Some(ttl), None) = (args.next(), args.next(), args.next()) else {
        return Err(ArgError::Arity);
    };
    Ok(Extend {
        token: parse_token(token, limits)?,
        ttl_ms: parse_ttl(ttl, limits)?,
    })
}

/// Parses the `token` of LOCK.RELEASE and LOCK.CHECK.
pub fn parse_token_only<'a, I>(args: I, limits: &Limits) -> Result<&'a [u8], ArgError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut args = args.into_iter();
    match (args.next(), args.next()) {
        (Some(token), None) => parse_token(token, limits),
        _ => Err(ArgError::Arity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits {
        max_ttl_ms: 86_400_000,
        max_token_len: 16,
        max_meta_len: 8,
    };

    fn acquire(args: &[&str]) -> Result<Acquire<'static>, ArgError> {
        let owned: Vec<&'static [u8]> = args
            .iter()
            .map(|s| &*Box::leak(s.as_bytes().to_vec().into_boxed_slice()))
            .collect();
        parse_acquire(owned, &LIMITS)
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1.5",
            b"1e3",
            b" 1",
            b"18446744073709551616",
            b"0x10",
        ] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plain_acquire() {
        let a = acquire(&["tok", "5000"]).unwrap();
        assert_eq!((a.token, a.ttl_ms, a.wait_ms), (&b"tok"[..], 5000, None));
    }

    #[test]
    fn wait_option_any_case() {
        assert_eq!(acquire(&["t", "10", "wait", "0"]).unwrap().wait_ms, Some(0));
        assert_eq!(
            acquire(&["t", "10", "WAIT", "250"]).unwrap().wait_ms,
            Some(250)
        );
    }

    #[test]
    fn bad_ttls() {
        let max = LIMITS.max_ttl_ms;
        for bad in ["0", "-1", "1.5", "abc", "", "5s"] {
            assert_eq!(acquire(&["t", bad]), Err(ArgError::BadTtl { max }), "{bad}");
        }
        for big in ["86400001", "99999999999999999999999"] {
            assert_eq!(
                acquire(&["t", big]),
                Err(ArgError::TtlTooLarge { max }),
                "{big}"
            );
        }
    }

    #[test]
    fn bad_tokens() {
        assert_eq!(acquire(&["", "10"]), Err(ArgError::EmptyToken));
        assert_eq!(
            acquire(&["0123456789abcdefX", "10"]),
            Err(ArgError::TokenTooLong { max: 16 })
        );
    }

    #[test]
    fn bad_options() {
        assert_eq!(acquire(&["t"]), Err(ArgError::Arity));
        assert_eq!(acquire(&["t", "10", "NX"]), Err(ArgError::UnknownOption));
        assert_eq!(
            acquire(&["t", "10", "WAIT"]),
            Err(ArgError::MissingWaitTimeout)
        );
        assert_eq!(
            acquire(&["t", "10", "WAIT", "-1"]),
            Err(ArgError::BadWaitTimeout)
        );
        assert_eq!(
            acquire(&["t", "10", "WAIT", "1.5"]),
            Err(ArgError::BadWaitTimeout)
        );
        assert_eq!(
            acquire(&["t", "10", "WAIT", "1", "WAIT", "2"]),
            Err(ArgError::DuplicateWait)
        );
    }

    #[test]
    fn meta_option() {
        let a = acquire(&["t", "10", "META", "host=a", "WAIT", "5"]).unwrap();
        assert_eq!((a.meta, a.wait_ms), (&b"host=a"[..], Some(5)));
        let a = acquire(&["t", "10", "wait", "5", "meta", "x"]).unwrap();
        assert_eq!((a.meta, a.wait_ms), (&b"x"[..], Some(5)));
        assert_eq!(acquire(&["t", "10"]).unwrap().meta, b"");
        assert_eq!(acquire(&["t", "10", "META"]), Err(ArgError::MissingMeta));
        assert_eq!(
            acquire(&["t", "10", "META", "a", "META", "b"]),
            Err(ArgError::DuplicateMeta)
        );
        assert_eq!(
            acquire(&["t", "10", "META", "123456789"]),
            Err(ArgError::MetaTooLong { max: 8 })
        );
    }

    #[test]
    fn extend() {
        let e = parse_extend([&b"t"[..], b"10"], &LIMITS).unwrap();
        assert_eq!((e.token, e.ttl_ms), (&b"t"[..], 10));
        assert_eq!(parse_extend([&b"t"[..]], &LIMITS), Err(ArgError::Arity));
        assert_eq!(
            parse_extend([&b"t"[..], b"10", b"WAIT"], &LIMITS),
            Err(ArgError::Arity)
        );
        assert_eq!(
            parse_extend([&b"t"[..], b"0"], &LIMITS),
            Err(ArgError::BadTtl { max: 86_400_000 })
        );
        assert_eq!(
            parse_extend([&b""[..], b"10"], &LIMITS),
            Err(ArgError::EmptyToken)
        );
    }

    #[test]
    fn token_only() {
        assert_eq!(parse_token_only([&b"t"[..]], &LIMITS), Ok(&b"t"[..]));
        assert_eq!(parse_token_only([], &LIMITS), Err(ArgError::Arity));
        assert_eq!(
            parse_token_only([&b"a"[..], b"b"], &LIMITS),
            Err(ArgError::Arity)
        );
        assert_eq!(
            parse_token_only([&b""[..]], &LIMITS),
            Err(ArgError::EmptyToken)
        );
    }

    #[test]
    fn error_texts_are_single_line_errors() {
        for e in [
            ArgError::Arity,
            ArgError::BadTtl { max: 1 },
            ArgError::TtlTooLarge { max: 1 },
            ArgError::EmptyToken,
            ArgError::TokenTooLong { max: 1 },
            ArgError::UnknownOption,
            ArgError::MissingWaitTimeout,
            ArgError::BadWaitTimeout,
            ArgError::DuplicateWait,
            ArgError::MissingMeta,
            ArgError::DuplicateMeta,
            ArgError::MetaTooLong { max: 1 },
        ] {
            let s = e.to_string();
            assert!(s.starts_with("ERR "), "{s}");
            assert!(!s.contains(['\r', '\n', '\0']), "{s}");
        }
    }

    proptest! {
        #[test]
        fn acquire_never_panics(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..8)) {
            let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            if let Ok(a) = parse_acquire(slices.iter().copied(), &LIMITS) {
                prop_assert!(a.ttl_ms >= 1 && a.ttl_ms <= LIMITS.max_ttl_ms);
                prop_assert!(!a.token.is_empty() && a.token.len() <= LIMITS.max_token_len);
            }
            let _ = parse_token_only(slices.iter().copied(), &LIMITS);
            if let Ok(e) = parse_extend(slices.iter().copied(), &LIMITS) {
                prop_assert!(e.ttl_ms >= 1 && e.ttl_ms <= LIMITS.max_ttl_ms);
            }
        }

        #[test]
        fn integers_round_trip(n in any::<u64>()) {
            prop_assert_eq!(parse_u64(n.to_string().as_bytes()), Some(n));
        }
    }
}
