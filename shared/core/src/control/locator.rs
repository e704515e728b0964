//! Where a database's backup lives: the locator item `DB#<db>` / `BACKUP`
//! (organization and backup ids), written and removed by the same transactions
//! that enable and delete the backup, and the sparse index [`BACKUPS_INDEX`] over
//! locators, which lists every backup for the backup engine's catch-up.

use super::records::BackupRecord;
use crate::dynamo::{get_s, s, Item};
use uuid::Uuid;

/// The sparse global secondary index of the control table holding one entry per
/// enabled backup (its locator item): partition key [`BACKUPS_INDEX_PK`].
pub const BACKUPS_INDEX: &str = "backups";
/// The index's partition key attribute; every locator has the value [`BACKUPS_INDEX_VALUE`].
pub const BACKUPS_INDEX_PK: &str = "backupIndex";
pub const BACKUPS_INDEX_VALUE: &str = "backup";
/// Sort key of a database's backup locator (its partition key is `DB#<db>`).
pub const LOCATOR_SK: &str = "BACKUP";

/// Where a database's backup lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Locator {
    pub database_id: Uuid,
    pub organization_id: Uuid,
    pub backup_id: Uuid,
}

/// Reads a locator item back (`None` if it lacks either id).
pub fn locator_of(database_id: Uuid, item: &Item) -> Option<Locator> {
    Some(Locator {
        database_id,
        organization_id: Uuid::parse_str(get_s(item, "organizationId")?).ok()?,
        backup_id: Uuid::parse_str(get_s(item, "backupId")?).ok()?,
    })
}

/// The locator item of a backup (written with the backup by the API).
pub fn locator_item(backup: &BackupRecord) -> Item {
    Item::from([
        ("pk".into(), s(format!("DB#{}", backup.database_id))),
        ("sk".into(), s(LOCATOR_SK)),
        (
            "organizationId".into(),
            s(backup.organization_id.to_string()),
        ),
        ("backupId".into(), s(backup.id.to_string())),
        (BACKUPS_INDEX_PK.into(), s(BACKUPS_INDEX_VALUE)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::records::BackupStatus;

    #[test]
    fn a_locator_item_reads_back_and_is_in_the_index() {
        let backup = BackupRecord {
            id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            database_id: Uuid::new_v4(),
            kind: "s3".into(),
            endpoint: "https://s3.amazonaws.com".into(),
            bucket_name: "b".into(),
            bucket_region: "us-east-1".into(),
            access_key_id: "AKIA".into(),
            secret_access_key_ciphertext: vec![1, 2, 3],
            prefix: "backup/".into(),
            status: BackupStatus::Pending,
            created_at: "2026-12-01T00:00:00.000Z".into(),
            last_backed_up_at: None,
            last_versionstamp: None,
            last_error: None,
        };
        let item = locator_item(&backup);
        assert_eq!(
            get_s(&item, "pk"),
            Some(format!("DB#{}", backup.database_id).as_str())
        );
        assert_eq!(get_s(&item, "sk"), Some(LOCATOR_SK));
        assert_eq!(get_s(&item, BACKUPS_INDEX_PK), Some(BACKUPS_INDEX_VALUE));
        // Only ids: the secret never reaches the locator.
        assert_eq!(item.len(), 5);
        assert_eq!(
            locator_of(backup.database_id, &item),
            Some(Locator {
                database_id: backup.database_id,
                organization_id: backup.organization_id,
                backup_id: backup.id,
            })
        );
        let mut broken = item.clone();
        broken.remove("backupId");
        assert_eq!(locator_of(backup.database_id, &broken), None);
    }
}
