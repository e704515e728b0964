//! Bearer tokens: generation, hashing, and who a request comes from.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use lambda_http::http::{header::AUTHORIZATION, HeaderMap};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Every token subkv mints starts with this, so secret scanners can find leaked ones.
pub const TOKEN_PREFIX: &str = "skv_";
/// Random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Longer bearer values are refused before any hashing or lookup.
pub const MAX_TOKEN_LEN: usize = 512;

/// A newly minted token: the plaintext is shown once, only the hash is stored.
pub struct NewToken {
    pub plaintext: String,
    pub sha256_hex: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("sha256_hex", &self.sha256_hex)
            .finish_non_exhaustive()
    }
}

/// Mints a token from the operating system's CSPRNG-seeded generator.
pub fn mint_token() -> NewToken {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let plaintext = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let sha256_hex = token_sha256_hex(&plaintext);
    NewToken {
        plaintext,
        sha256_hex,
    }
}

pub fn token_sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Tokens are 256 random bits, so a plain SHA-256 is a sound way to store them:
/// there is nothing to brute-force that a slow hash would protect.
pub fn token_sha256_hex(token: &str) -> String {
    hex(&token_sha256(token))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses 64 hex digits into a SHA-256.
pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

/// The bearer token of a request, if it has a well-formed one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.len() <= MAX_TOKEN_LEN)
        .then_some(token)
}

/// Compares a presented token with the admin token's hash in constant time.
pub fn is_admin(token: &str, admin_sha256: Option<&[u8; 32]>) -> bool {
    admin_sha256.is_some_and(|want| bool::from(token_sha256(token).ct_eq(want)))
}

/// Who a request comes from, once its token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Organization {
        organization_id: Uuid,
        token_id: Uuid,
        scope: crate::control::records::TokenScope,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;

    #[test]
    fn minted_tokens_are_long_random_and_hash_as_stored() {
        let a = mint_token();
        let b = mint_token();
        assert_ne!(a.plaintext, b.plaintext);
        assert!(a.plaintext.starts_with(TOKEN_PREFIX));
        assert_eq!(a.plaintext.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(a.sha256_hex, token_sha256_hex(&a.plaintext));
        assert_eq!(a.sha256_hex.len(), 64);
        assert!(!format!("{a:?}").contains(&a.plaintext));
    }

    #[test]
    fn bearer_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer   abc "));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&headers), None);
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&long).unwrap());
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn admin_check() {
        let hash = token_sha256("admin-secret");
        assert!(is_admin("admin-secret", Some(&hash)));
        assert!(!is_admin("admin-secreT", Some(&hash)));
        assert!(!is_admin("admin-secret", None));
        assert_eq!(parse_sha256_hex(&hex(&hash)), Some(hash));
        assert_eq!(parse_sha256_hex("zz"), None);
    }
}
