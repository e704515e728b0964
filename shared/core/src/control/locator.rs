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
