//! Data-path tokens: what the metadata exchange hands out and the data-path
//! functions verify without a database round trip.
//!
//! `skvd2.<database id, 32 hex>.<expiry, unix seconds>.<r|w>.<organization id, 32
//! hex>.<organization token id, 32 hex>.<HMAC-SHA256, base64url>`, signed with a key
//! every function derives once per cold start from a KMS HMAC key (`GenerateMac`
//! over a fixed label): the key itself never leaves KMS, and no function stores a
//! secret. A token names one database, whether it may write, the organization
//! token it was exchanged for (so the data path can tell when that one is revoked,
//! issue 15 §2), and expires. Tokens of the first format (`skvd1.<database>.<expiry>`,
//! read and write, no organization token) are still accepted until they expire.

use crate::error::{KvError, KvResult};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

const PREFIX_V1: &str = "skvd1";
const PREFIX: &str = "skvd2";
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

    /// A token for `grant`, valid until `now + ttl` or `not_after` (Unix
    /// seconds: the organization token's own expiry), whichever comes first;
    /// returns it and its expiry.
    pub fn issue(&self, grant: &Grant, now_seconds: i64, not_after: Option<i64>) -> (String, i64) {
        let expires = (now_seconds + self.ttl_seconds).min(not_after.unwrap_or(i64::MAX));
        let (organization, token) = grant.holder.unwrap_or((Uuid::nil(), Uuid::nil()));
        let payload = format!(
            "{PREFIX}.{}.{expires}.{}.{}.{}",
            grant.database.simple(),
            if grant.read_only { "r" } else { "w" },
            organization.simple(),
            token.simple()
        );
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload));
        (format!("{payload}.{sig}"), expires)
    }

    /// What a valid, unexpired token grants.
    pub fn verify(&self, token: &str, now_seconds: i64) -> KvResult<Grant> {
        let invalid = || KvError::Unauthorized(INVALID);
        let (payload, sig) = token.rsplit_once('.').ok_or_else(invalid)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid())?;
        if !bool::from(self.mac(payload).as_slice().ct_eq(&sig)) {
            return Err(invalid());
        }
        let parts: Vec<&str> = payload.split('.').collect();
        let (database, expires, grant_rest) = match parts.as_slice() {
            [PREFIX_V1, db, expires] => (*db, *expires, None),
            [PREFIX, db, expires, access, organization, token] => {
                (*db, *expires, Some((*access, *organization, *token)))
            }
            _ => return Err(invalid()),
        };
        let expires: i64 = expires.parse().map_err(|_| invalid())?;
        if expires <= now_seconds {
            return Err(invalid());
        }
        let database = Uuid::try_parse(database).map_err(|_| invalid())?;
        let Some((access, organization, token)) = grant_rest else {
            return Ok(Grant {
                database,
                read_only: false,
                holder: None,
            });
        };
        let read_only = match access {
            "r" => true,
            "w" => false,
            _ => return Err(invalid()),
        };
        let organization = Uuid::try_parse(organization).map_err(|_| invalid())?;
        let token = Uuid::try_parse(token).map_err(|_| invalid())?;
        Ok(Grant {
            database,
            read_only,
            holder: (!token.is_nil()).then_some((organization, token)),
        })
    }
}

/// What a data-path token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub database: Uuid,
    /// Reads only: writes are refused (403).
    pub read_only: bool,
    /// The organization and the id of the organization token it was exchanged
    /// for; None for tokens of the first format.
    pub holder: Option<(Uuid, Uuid)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(read_only: bool) -> Grant {
        Grant {
            database: Uuid::new_v4(),
            read_only,
            holder: Some((Uuid::new_v4(), Uuid::new_v4())),
        }
    }

    #[test]
    fn tokens_verify_until_they_expire() {
        let signer = TokenSigner::new([7; 32], 60);
        let g = grant(false);
        let (token, expires) = signer.issue(&g, 1000, None);
        assert_eq!(expires, 1060);
        assert_eq!(signer.verify(&token, 1059).unwrap(), g);
        assert!(signer.verify(&token, 1060).is_err());
    }

    #[test]
    fn a_token_never_outlives_its_organization_token() {
        let signer = TokenSigner::new([7; 32], 3600);
        let g = grant(true);
        let (token, expires) = signer.issue(&g, 1000, Some(1030));
        assert_eq!(expires, 1030);
        assert_eq!(signer.verify(&token, 1029).unwrap(), g);
        assert!(signer.verify(&token, 1030).is_err());
    }

    #[test]
    fn first_format_tokens_still_verify_as_read_write() {
        let signer = TokenSigner::new([7; 32], 60);
        let db = Uuid::new_v4();
        let payload = format!("skvd1.{}.2000", db.simple());
        let token = format!("{payload}.{}", URL_SAFE_NO_PAD.encode(signer.mac(&payload)));
        let verified = signer.verify(&token, 1000).unwrap();
        assert_eq!(
            (verified.database, verified.read_only, verified.holder),
            (db, false, None)
        );
    }

    #[test]
    fn forged_or_foreign_tokens_fail() {
        let signer = TokenSigner::new([7; 32], 60);
        let other = TokenSigner::new([8; 32], 60);
        let (token, _) = signer.issue(&grant(true), 0, None);
        assert!(other.verify(&token, 1).is_err());
        let (payload, sig) = token.rsplit_once('.').unwrap();
        // Turning a read-only token into a writing one breaks the signature.
        let widened = payload.replace(".r.", ".w.");
        assert_ne!(widened, payload);
        assert!(signer.verify(&format!("{widened}.{sig}"), 1).is_err());
        let tampered = payload.replace("skvd2.", "skvd2.0");
        assert!(signer.verify(&format!("{tampered}.{sig}"), 1).is_err());
        assert!(signer.verify("", 1).is_err());
        assert!(signer.verify("skvd1.x.y.z", 1).is_err());
        assert!(!format!("{signer:?}").contains("7, 7"));
    }
}
