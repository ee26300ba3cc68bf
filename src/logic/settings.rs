//! The module's settings and the checking of `loadmodule` arguments.
//!
//! `CONFIG SET lock.max-ttl 0` is refused by Redis, which knows each
//! setting's range. Load arguments (`loadmodule liblock.so max-ttl 0`) reach
//! the module as plain strings, so it checks them the same way here: an
//! unknown name, a missing value or a value out of range fails the load
//! with a message that names the setting and what it accepts.

use std::fmt;

/// One numeric setting: `lock.<name>`, an integer in `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub min: i64,
    pub max: i64,
    pub default: i64,
    /// What the number counts (for messages): "ms", "bytes", "clients".
    pub unit: &'static str,
}

/// Why the load arguments were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadArgError {
    /// A name that is not a setting.
    Unknown { name: String, known: String },
    /// A name without a value after it.
    MissingValue { name: &'static str },
    /// Not an integer, or out of range.
    BadValue { setting: Setting, value: String },
    /// The same setting twice.
    Duplicate { name: &'static str },
}

impl fmt::Display for LoadArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadArgError::Unknown { name, known } => write!(
                f,
                "unknown load argument '{name}'; the settings are {known} (as `name value` pairs)"
            ),
            LoadArgError::MissingValue { name } => {
                write!(f, "load argument {name} has no value")
            }
            LoadArgError::BadValue { setting, value } => write!(
                f,
                "load argument {}: '{}' is not accepted; it takes an integer from {} to {} ({})",
                setting.name, value, setting.min, setting.max, setting.unit
            ),
            LoadArgError::Duplicate { name } => write!(f, "load argument {name} is given twice"),
        }
    }
}

/// Matches `name` case-insensitively, with or without the `lock.` prefix
/// (`CONFIG SET` takes `lock.max-ttl`; load arguments traditionally omit it).
fn lookup<'s>(settings: &'s [Setting], name: &[u8]) -> Option<&'s Setting> {
    let bare = match name.get(..5) {
        Some(prefix) if prefix.eq_ignore_ascii_case(b"lock.") => &name[5..],
        _ => name,
    };
    settings
        .iter()
        .find(|s| s.name.as_bytes().eq_ignore_ascii_case(bare))
}

/// A decimal integer, optionally negative, without spaces or a `+`.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.starts_with('+'))?
        .parse()
        .ok()
}

/// Checks `name value` pairs; returns each setting's index and value.
pub fn parse_load_args<B: AsRef<[u8]>>(
    settings: &[Setting],
    args: &[B],
) -> Result<Vec<(usize, i64)>, LoadArgError> {
    let mut out: Vec<(usize, i64)> = Vec::with_capacity(args.len() / 2);
    let mut rest = args.iter();
    while let Some(name) = rest.next() {
        let name = name.as_ref();
        let Some(setting) = lookup(settings, name) else {
            let known: Vec<&str> = settings.iter().map(|s| s.name).collect();
            return Err(LoadArgError::Unknown {
                name: String::from_utf8_lossy(name).into_owned(),
                known: known.join(", "),
            });
        };
        let index = settings.iter().position(|s| s == setting).unwrap_or(0);
        let Some(value) = rest.next() else {
            return Err(LoadArgError::MissingValue { name: setting.name });
        };
        let value = value.as_ref();
        let parsed = parse_i64(value).filter(|v| (setting.min..=setting.max).contains(v));
        let Some(parsed) = parsed else {
            return Err(LoadArgError::BadValue {
                setting: *setting,
                value: String::from_utf8_lossy(value).into_owned(),
            });
        };
        if out.iter().any(|(i, _)| *i == index) {
            return Err(LoadArgError::Duplicate { name: setting.name });
        }
        out.push((index, parsed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: [Setting; 2] = [
        Setting {
            name: "max-ttl",
            min: 1,
            max: 1000,
            default: 10,
            unit: "ms",
        },
        Setting {
            name: "offset",
            min: -5,
            max: 5,
            default: 0,
            unit: "ms",
        },
    ];

    fn parse(args: &[&str]) -> Result<Vec<(usize, i64)>, String> {
        parse_load_args(&SETTINGS, args).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_pairs_in_any_case_with_or_without_prefix() {
        assert_eq!(parse(&[]), Ok(vec![]));
        assert_eq!(parse(&["max-ttl", "5"]), Ok(vec![(0, 5)]));
        assert_eq!(parse(&["MAX-TTL", "5"]), Ok(vec![(0, 5)]));
        assert_eq!(
            parse(&["lock.max-ttl", "1000", "Lock.Offset", "-5"]),
            Ok(vec![(0, 1000), (1, -5)])
        );
    }

    #[test]
    fn refuses_what_config_set_refuses() {
        let e = parse(&["max-ttl", "0"]).unwrap_err();
        assert!(e.contains("max-ttl") && e.contains("1 to 1000"), "{e}");
        assert!(parse(&["max-ttl", "-5"]).is_err());
        assert!(parse(&["max-ttl", "1001"]).is_err());
        assert!(parse(&["max-ttl", "abc"]).unwrap_err().contains("'abc'"));
        assert!(parse(&["max-ttl", "+5"]).is_err());
        assert!(parse(&["max-ttl", " 5"]).is_err());
        assert!(parse(&["max-ttl"]).unwrap_err().contains("no value"));
        let e = parse(&["bogus", "1"]).unwrap_err();
        assert!(
            e.contains("'bogus'") && e.contains("max-ttl, offset"),
            "{e}"
        );
        assert!(parse(&["lock.", "1"]).is_err());
        assert!(parse(&["max-ttl", "5", "max-ttl", "6"])
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn odd_bytes_do_not_panic() {
        let args: [&[u8]; 4] = [b"\xff\xfe", b"1", b"lock", b""];
        assert!(parse_load_args(&SETTINGS, &args).is_err());
        assert_eq!(parse_i64(b"99999999999999999999"), None);
    }
}
