//! Where a database's backup lives: the locator item `DB#<db>` / `BACKUP`
//! (organization and backup ids), written and removed by the same transactions
//! that enable and delete the backup, and the two sparse indexes the backup
//! engine's catch-up reads:
//! - [`BACKUPS_INDEX`] over locators, partitioned in [`SWEEP_SLOTS`] slots by
//!   database: each minute's catch-up reads one slot, so every backup is looked
//!   at once an hour whatever else happens (the sweep);
//! - [`DUE_INDEX`] over backup items that carry [`DUE_INDEX_PK`]: the backups the
//!   catch-up visits every minute (pending, retrying a fault, or left with work
//!   by the last pass). An active backup that is caught up is not in it, so an
//!   idle backup costs the catch-up one visit an hour.

use super::records::BackupRecord;
use crate::dynamo::{get_s, s, Item};
use uuid::Uuid;

/// The sparse global secondary index of the control table holding one entry per
/// enabled backup (its locator item): partition key [`BACKUPS_INDEX_PK`].
pub const BACKUPS_INDEX: &str = "backups";
/// The index's partition key attribute; a locator's value is its sweep slot
/// ([`sweep_slot_value`]).
pub const BACKUPS_INDEX_PK: &str = "backupIndex";
/// The sweep's slots: one a minute, so each backup once an hour.
pub const SWEEP_SLOTS: u32 = 60;

/// The sparse global secondary index over backup items (`ORG#<org>` /
/// `BACKUP#<backup>`) that carry [`DUE_INDEX_PK`] (value [`DUE_INDEX_VALUE`]):
/// sort key `sk`, projecting `databaseId`.
pub const DUE_INDEX: &str = "due";
pub const DUE_INDEX_PK: &str = "dueIndex";
pub const DUE_INDEX_VALUE: &str = "due";
/// [`DUE_INDEX_PK`]'s value on restore items (`DB#<db>` / `RESTORE`) while their
/// restore is pending: the restore function's work list (same index, its own
/// partition; projecting `databaseId`).
pub const DUE_INDEX_RESTORE: &str = "restore";
/// [`DUE_INDEX_PK`]'s value on purge items (`DB#<db>` / `PURGE#<deleted at, ms>`):
/// the deleted databases whose storage the purge function still removes.
pub const DUE_INDEX_PURGE: &str = "purge";
/// Sort key prefix of a deleted database's purge item, followed by the time of
/// the deletion (ms, 13 digits), so the work list needs no read of the item.
pub const PURGE_SK_PREFIX: &str = "PURGE#";
/// Sort key of a database's restore item (its partition key is `DB#<db>`).
pub const RESTORE_SK: &str = "RESTORE";

/// The sweep slot of a database (stable: from its id).
pub fn sweep_slot(database_id: Uuid) -> u32 {
    (database_id.as_u128() % u128::from(SWEEP_SLOTS)) as u32
}

/// The [`BACKUPS_INDEX_PK`] value of the locators in `slot`.
pub fn sweep_slot_value(slot: u32) -> String {
    format!("slot#{:02}", slot % SWEEP_SLOTS)
}
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
        (
            BACKUPS_INDEX_PK.into(),
            s(sweep_slot_value(sweep_slot(backup.database_id))),
        ),
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
            snapshot_chunks: None,
        };
        let item = locator_item(&backup);
        assert_eq!(
            get_s(&item, "pk"),
            Some(format!("DB#{}", backup.database_id).as_str())
        );
        assert_eq!(get_s(&item, "sk"), Some(LOCATOR_SK));
        let slot = sweep_slot_value(sweep_slot(backup.database_id));
        assert_eq!(get_s(&item, BACKUPS_INDEX_PK), Some(slot.as_str()));
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

    #[test]
    fn sweep_slots_spread_databases_and_are_stable() {
        let mut seen = std::collections::BTreeMap::<u32, usize>::new();
        for _ in 0..6000 {
            let db = Uuid::new_v4();
            assert_eq!(sweep_slot(db), sweep_slot(db));
            *seen.entry(sweep_slot(db)).or_default() += 1;
        }
        assert_eq!(seen.len(), SWEEP_SLOTS as usize);
        // About 100 per slot: none empty, none with several times its share.
        assert!(seen.values().all(|n| (40..=200).contains(n)), "{seen:?}");
        assert_eq!(sweep_slot_value(7), "slot#07");
        assert_eq!(sweep_slot_value(67), "slot#07");
    }
}
