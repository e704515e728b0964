//! Tenant secrets: a string type that never prints, and envelope encryption of
//! backup credentials with a KMS key that only the backup engine may decrypt.

use crate::error::StoreError;
use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use serde::{Deserialize, Deserializer};

/// A secret string: `Debug` and `Display` never show it, and it cannot be serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only to validate or encrypt it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

/// The encryption context binds a ciphertext to its backup: a ciphertext copied
/// onto another backup's item does not decrypt.
pub fn backup_context(backup_id: &str, database_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("subkv:backupId", backup_id.to_string()),
        ("subkv:databaseId", database_id.to_string()),
    ]
}

#[async_trait]
pub trait SecretSealer: Send + Sync {
    /// Encrypts a secret under the given encryption context.
    async fn seal(
        &self,
        secret: &SecretString,
        context: &[(&'static str, String)],
    ) -> Result<Vec<u8>, StoreError>;
}

/// Encrypts with `kms:Encrypt` on one key (an id, ARN or `alias/...`).
pub struct KmsSealer {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsSealer {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

#[async_trait]
impl SecretSealer for KmsSealer {
    async fn seal(
        &self,
        secret: &SecretString,
        context: &[(&'static str, String)],
    ) -> Result<Vec<u8>, StoreError> {
        let mut request = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(secret.expose().as_bytes()));
        for (k, v) in context {
            request = request.encryption_context(*k, v);
        }
        let out = request.send().await.map_err(|e| StoreError::Kms {
            operation: "Encrypt",
            source: aws_sdk_kms::error::DisplayErrorContext(e)
                .to_string()
                .into(),
        })?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| StoreError::Malformed("KMS Encrypt returned no ciphertext".into()))
    }
}

/// Used where no KMS key is configured: every seal fails (500), so a
/// misconfigured deployment never stores a secret in the clear.
pub struct NoSealer;

#[async_trait]
impl SecretSealer for NoSealer {
    async fn seal(
        &self,
        _secret: &SecretString,
        _context: &[(&'static str, String)],
    ) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::Malformed(
            "SUBKV_BACKUP_KMS_KEY_ID is not set: cannot encrypt backup secrets".into(),
        ))
    }
}

/// A reversible stand-in for unit tests and benchmarks: NOT encryption.
pub struct FakeSealer;

#[async_trait]
impl SecretSealer for FakeSealer {
    async fn seal(
        &self,
        secret: &SecretString,
        context: &[(&'static str, String)],
    ) -> Result<Vec<u8>, StoreError> {
        let mut out: Vec<u8> = secret.expose().bytes().rev().collect();
        for (_, v) in context {
            out.extend_from_slice(v.as_bytes());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = SecretString::new("wJalrXUtnFEMI");
        assert!(!format!("{s:?}").contains("wJal"));
        let parsed: SecretString = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(parsed.expose(), "abc");
    }
}
