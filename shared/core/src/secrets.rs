//! Tenant secrets: a string type that never prints, and envelope encryption of
//! backup credentials with a KMS key that only the backup engine may decrypt.

use crate::dynamo::is_transient;
use crate::error::{Recovery, StoreError};
use async_trait::async_trait;
use aws_sdk_kms::config::http::HttpResponse;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;

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

/// The encryption context of a `restoreFrom.s3` secret: it opens only for the
/// restore of the database it was given for, and never as a backup's secret.
pub fn restore_context(database_id: &str) -> Vec<(&'static str, String)> {
    vec![("subkv:restoreDatabaseId", database_id.to_string())]
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

#[async_trait]
pub trait SecretOpener: Send + Sync {
    /// Decrypts a sealed secret; fails unless `context` is the one it was sealed
    /// under.
    async fn open(
        &self,
        ciphertext: &[u8],
        context: &[(&'static str, String)],
    ) -> Result<SecretString, StoreError>;
}

/// One KMS key (an id, ARN or `alias/...`): seals with `kms:Encrypt`, opens with
/// `kms:Decrypt` (KMS refuses a ciphertext of another key, or one sealed under
/// another encryption context). Which of the two a function may do is up to its
/// IAM policy.
pub struct KmsKey {
    client: aws_sdk_kms::Client,
    key_id: String,
}

/// What the management API seals with.
pub type KmsSealer = KmsKey;
/// What the backup engine opens with.
pub type KmsOpener = KmsKey;

impl KmsKey {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

/// The encryption context as the KMS request takes it (none when empty).
fn context_map(context: &[(&'static str, String)]) -> Option<HashMap<String, String>> {
    (!context.is_empty()).then(|| {
        context
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    })
}

/// KMS error codes that mean this ciphertext will never decrypt under this
/// encryption context: corrupted, or sealed for another backup (the context
/// names the backup and its database). `IncorrectKeyException` is not one: the
/// ciphertext names its key, so that is the configured key id being wrong, an
/// operator's fix.
const UNDECRYPTABLE: [&str; 1] = ["InvalidCiphertextException"];

/// A failed KMS call; the SDK's error text never holds the plaintext. Throttling,
/// a 5xx or no answer can succeed later ([`Recovery::Retry`]), a ciphertext KMS
/// rejects never will ([`Recovery::Never`]); anything else (access denied, a
/// disabled or missing key, the wrong key) waits for an operator.
fn kms_failure<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let server_error = err
        .raw_response()
        .is_some_and(|r| r.status().is_server_error());
    let code = err.as_service_error().and_then(|e| e.code());
    let recovery = if code.is_some_and(|c| UNDECRYPTABLE.contains(&c)) {
        Recovery::Never
    } else if is_transient(&err, server_error) {
        Recovery::Retry
    } else {
        Recovery::Operator
    };
    StoreError::Kms {
        operation,
        source: DisplayErrorContext(err).to_string().into(),
        recovery,
    }
}

#[async_trait]
impl SecretSealer for KmsKey {
    async fn seal(
        &self,
        secret: &SecretString,
        context: &[(&'static str, String)],
    ) -> Result<Vec<u8>, StoreError> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(secret.expose().as_bytes()))
            .set_encryption_context(context_map(context))
            .send()
            .await
            .map_err(|e| kms_failure("Encrypt", e))?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| StoreError::Malformed("KMS Encrypt returned no ciphertext".into()))
    }
}

#[async_trait]
impl SecretOpener for KmsKey {
    async fn open(
        &self,
        ciphertext: &[u8],
        context: &[(&'static str, String)],
    ) -> Result<SecretString, StoreError> {
        let out = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(context_map(context))
            .send()
            .await
            .map_err(|e| kms_failure("Decrypt", e))?;
        let plaintext = out
            .plaintext
            .map(Blob::into_inner)
            .ok_or_else(|| StoreError::Malformed("KMS Decrypt returned no plaintext".into()))?;
        String::from_utf8(plaintext).map(SecretString).map_err(|_| {
            StoreError::Malformed("KMS Decrypt returned a secret that is not UTF-8".into())
        })
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

#[async_trait]
impl SecretOpener for FakeSealer {
    async fn open(
        &self,
        ciphertext: &[u8],
        context: &[(&'static str, String)],
    ) -> Result<SecretString, StoreError> {
        let suffix: Vec<u8> = context
            .iter()
            .flat_map(|(_, v)| v.as_bytes().iter().copied())
            .collect();
        let reversed = ciphertext.strip_suffix(suffix.as_slice()).ok_or_else(|| {
            // What KMS answers (InvalidCiphertextException): never with this context.
            StoreError::kms(
                "Decrypt",
                Recovery::Never,
                std::io::Error::other("encryption context differs"),
            )
        })?;
        String::from_utf8(reversed.iter().rev().copied().collect())
            .map(SecretString)
            .map_err(|_| StoreError::Malformed("fake ciphertext is not a reversed string".into()))
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

    #[tokio::test]
    async fn fake_sealer_round_trips_under_the_same_context_only() {
        let secret = SecretString::new("wJalr/ü€XUtnFEMI");
        let context = backup_context("backup-1", "database-1");
        let sealed = FakeSealer.seal(&secret, &context).await.unwrap();
        assert_eq!(FakeSealer.open(&sealed, &context).await.unwrap(), secret);
        let other = backup_context("backup-2", "database-1");
        let err = FakeSealer.open(&sealed, &other).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Kms {
                    operation: "Decrypt",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.to_string().contains("wJalr"));
        assert_eq!(
            err.recovery(),
            Recovery::Never,
            "as KMS: InvalidCiphertextException"
        );
    }

    /// A KMS `Decrypt` answered with `status` and error `code`.
    fn decrypt_failed(status: u16, code: &str) -> StoreError {
        use aws_sdk_kms::error::ErrorMetadata;
        use aws_sdk_kms::operation::decrypt::DecryptError;
        let error = DecryptError::generic(ErrorMetadata::builder().code(code).message("m").build());
        let raw = HttpResponse::new(status.try_into().expect("a status"), "".into());
        kms_failure("Decrypt", SdkError::service_error(error, raw))
    }

    #[test]
    fn kms_failures_say_whether_a_retry_can_fix_them() {
        // This ciphertext never opens under this context: the backup's own problem.
        assert_eq!(
            decrypt_failed(400, "InvalidCiphertextException").recovery(),
            Recovery::Never
        );
        // Busy or down: later.
        for (status, code) in [
            (400, "ThrottlingException"),
            (500, "KMSInternalException"),
            (503, "DependencyTimeoutException"),
        ] {
            assert_eq!(
                decrypt_failed(status, code).recovery(),
                Recovery::Retry,
                "{code}"
            );
        }
        // Our configuration: the wrong key configured, no permission, a disabled key.
        for code in [
            "IncorrectKeyException",
            "AccessDeniedException",
            "DisabledException",
            "KMSInvalidStateException",
        ] {
            assert_eq!(
                decrypt_failed(400, code).recovery(),
                Recovery::Operator,
                "{code}"
            );
        }
    }
}
