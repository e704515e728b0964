//! Data-path tokens: what the metadata exchange hands out and the data-path
//! functions verify without a database round trip.
//!
//! `skvd1.<database id, 32 hex>.<expiry, unix seconds>.<HMAC-SHA256, base64url>`,
//! signed with a key every function derives once per cold start from a KMS HMAC key
//! (`GenerateMac` over a fixed label): the key itself never leaves KMS, and no
//! function stores a secret. A token names one database and expires.

use crate::error::{KvError, KvResult};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

const PREFIX: &str = "skvd1";
/// What the signing key is derived from (KMS GenerateMac message).
pub const KEY_LABEL: &[u8] = b"subkv data-path token signing key v1";
pub const DEFAULT_TTL_SECONDS: i64 = 3600;

const INVALID: &str = "invalid or expired data-path token: perform the metadata exchange again";

#[derive(Clone)]
pub struct TokenSigner {
    key: [u8; 32],
    ttl_seconds: i64,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    pub fn new(key: [u8; 32], ttl_seconds: i64) -> Self {
        Self { key, ttl_seconds }
    }

    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    fn mac(&self, payload: &str) -> [u8; 32] {
        // HMAC accepts keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A token for `database`, valid until `now + ttl`; returns it and its expiry.
    pub fn issue(&self, database: Uuid, now_seconds: i64) -> (String, i64) {
        let expires = now_seconds + self.ttl_seconds;
        let payload = format!("{PREFIX}.{}.{expires}", database.simple());
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload));
        (format!("{payload}.{sig}"), expires)
    }

    /// The database a valid, unexpired token names.
    pub fn verify(&self, token: &str, now_seconds: i64) -> KvResult<Uuid> {
        let invalid = || KvError::Unauthorized(INVALID);
        let (payload, sig) = token.rsplit_once('.').ok_or_else(invalid)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid())?;
        if !bool::from(self.mac(payload).as_slice().ct_eq(&sig)) {
            return Err(invalid());
        }
        let mut parts = payload.split('.');
        let (Some(PREFIX), Some(db), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let expires: i64 = expires.parse().map_err(|_| invalid())?;
        if expires <= now_seconds {
            return Err(invalid());
        }
        Uuid::try_parse(db).map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_they_expire() {
        let signer = TokenSigner::new([7; 32], 60);
        let db = Uuid::new_v4();
        let (token, expires) = signer.issue(db, 1000);
        assert_eq!(expires, 1060);
        assert_eq!(signer.verify(&token, 1059).unwrap(), db);
        assert!(signer.verify(&token, 1060).is_err());
    }

    #[test]
    fn forged_or_foreign_tokens_fail() {
        let signer = TokenSigner::new([7; 32], 60);
        let other = TokenSigner::new([8; 32], 60);
        let (token, _) = signer.issue(Uuid::new_v4(), 0);
        assert!(other.verify(&token, 1).is_err());
        let (payload, sig) = token.rsplit_once('.').unwrap();
        let tampered = payload.replace("skvd1.", "skvd1.0");
        assert!(signer.verify(&format!("{tampered}.{sig}"), 1).is_err());
        assert!(signer.verify("", 1).is_err());
        assert!(signer.verify("skvd1.x.y.z", 1).is_err());
        assert!(!format!("{signer:?}").contains("7, 7"));
    }
}
