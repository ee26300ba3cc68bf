//! Random lock tokens: 16 bytes from the thread-local CSPRNG (initialised from the
//! operating system), base64url-encoded with padding as bsm/redis-lock does:
//! 24 characters, after the configured prefix.

use rand::RngCore;

/// The length of the random part of a token.
pub const TOKEN_LEN: usize = 24;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A new token: `prefix` followed by 24 random base64url characters.
///
/// ```
/// let token = redis_fenced_lock::new_token("host-42-");
/// assert_eq!(token.len(), "host-42-".len() + redis_fenced_lock::TOKEN_LEN);
/// assert!(token.starts_with("host-42-"));
/// ```
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut token = String::with_capacity(prefix.len() + TOKEN_LEN);
    token.push_str(prefix);
    encode_base64url(&bytes, &mut token);
    token
}

/// Standard base64url (RFC 4648 §5) with `=` padding, appended to `out`.
fn encode_base64url(bytes: &[u8], out: &mut String) {
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[*s as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> String {
        let mut s = String::new();
        encode_base64url(b, &mut s);
        s
    }

    #[test]
    fn rfc4648_vectors() {
        assert_eq!(enc(b""), "");
        assert_eq!(enc(b"f"), "Zg==");
        assert_eq!(enc(b"fo"), "Zm8=");
        assert_eq!(enc(b"foo"), "Zm9v");
        assert_eq!(enc(b"foob"), "Zm9vYg==");
        assert_eq!(enc(b"fooba"), "Zm9vYmE=");
        assert_eq!(enc(b"foobar"), "Zm9vYmFy");
        assert_eq!(enc(&[0xfb, 0xff]), "-_8=");
    }

    #[test]
    fn tokens_are_24_url_safe_chars_and_differ() {
        let a = new_token("");
        let b = new_token("");
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert!(a.ends_with("=="));
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'='));
        assert_eq!(new_token("p-").len(), 26);
    }
}
