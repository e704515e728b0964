//! Leases of open watches, which cap how many a database and a deployment hold
//! (each holds a Lambda execution for up to `SUBKV_WATCH_MAX_SECONDS`).
//!
//! A lease is an item of the data table in one partition, `pk` = `#watches`,
//! `sk` = the database id (16 bytes) then the watch id (16 bytes), with the
//! time it lapses (`until`, ms) and a DynamoDB TTL (`ttl`). A watch takes one
//! when it opens, if the live leases of its database and of the deployment are
//! under their caps, and gives it back when it ends; a function that dies keeps
//! it until it lapses (the watch's longest life and a minute).

use crate::items::{dynamo, PK, SK, TTL};
use crate::{now_ms, DynamoKv};
use aws_sdk_dynamodb::types::{AttributeValue, Select};
use subkv_core::dynamo::{b, n};
use subkv_kv::error::{KvError, KvResult};
use uuid::Uuid;

/// The partition of the data table that holds the leases (no database id, and
/// no database's head, `<id>#head`, can be it).
const WATCHES: &str = "#watches";
const UNTIL: &str = "until";
/// The organization whose watch it is (leases taken by versions before issue 15
/// §4, or with a data-path token of the first format, have none).
const ORGANIZATION: &str = "org";

/// An organization's own cap on its open watches (`limits.watches`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrganizationWatches {
    pub organization: Uuid,
    pub limit: Option<u64>,
}

/// How many watches may be open at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchCaps {
    pub per_database: usize,
    pub per_deployment: usize,
}

fn lease_key(database: Uuid, watch: Uuid) -> Vec<u8> {
    [database.as_bytes().as_slice(), watch.as_bytes()].concat()
}

impl DynamoKv {
    /// Live leases of one database, of one organization, or of the deployment,
    /// counted consistently.
    async fn live_leases(
        &self,
        database: Option<Uuid>,
        organization: Option<Uuid>,
        now: i64,
    ) -> KvResult<usize> {
        let mut count = 0;
        let mut start = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.data_table)
                .expression_attribute_values(":pk", AttributeValue::S(WATCHES.into()))
                .expression_attribute_names("#until", UNTIL)
                .expression_attribute_values(":now", n(now))
                .select(Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            query = match database {
                Some(database) => query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :db)")
                    .expression_attribute_values(":db", b(database.as_bytes().to_vec())),
                None => query.key_condition_expression("pk = :pk"),
            };
            query = match organization {
                Some(organization) => query
                    .filter_expression("#until > :now AND #org = :org")
                    .expression_attribute_names("#org", ORGANIZATION)
                    .expression_attribute_values(
                        ":org",
                        AttributeValue::S(organization.to_string()),
                    ),
                None => query.filter_expression("#until > :now"),
            };
            let page = query.send().await.map_err(|e| dynamo("Query", e))?;
            count += page.count as usize;
            match page.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(count),
            }
        }
    }

    /// Takes a lease for watch `watch` of `database` until `until_ms`, if the
    /// database and the deployment hold fewer live leases than `caps` (else a
    /// 429 naming the cap) and the organization fewer than its own limit (else
    /// a 403 naming `limits.watches`). Concurrent opens may each see room for
    /// one: the caps can be passed by the number of watches opened at the same
    /// moment.
    pub async fn open_watch(
        &self,
        database: Uuid,
        watch: Uuid,
        until_ms: i64,
        caps: WatchCaps,
        organization: Option<OrganizationWatches>,
    ) -> KvResult<()> {
        let now = now_ms();
        let limited = organization.and_then(|o| o.limit.map(|limit| (o.organization, limit)));
        let of_organization = async {
            match limited {
                Some((organization, _)) => self.live_leases(None, Some(organization), now).await,
                None => Ok(0),
            }
        };
        let (of_database, of_deployment, of_organization) = futures_util::future::try_join3(
            self.live_leases(Some(database), None, now),
            self.live_leases(None, None, now),
            of_organization,
        )
        .await?;
        if let Some((_, limit)) = limited {
            if of_organization as u64 >= limit {
                return Err(KvError::Forbidden(format!(
                    "too many open watches for this organization: {of_organization} are open and \
                     its limit is {limit} (limits.watches); close one, or watch more keys in one \
                     watch"
                )));
            }
        }
        if of_database >= caps.per_database {
            return Err(KvError::TooManyRequests(format!(
                "too many open watches on this database (the limit is {} per database); \
                 close one, or watch more keys in one watch",
                caps.per_database
            )));
        }
        if of_deployment >= caps.per_deployment {
            return Err(KvError::TooManyRequests(format!(
                "too many open watches on this server (the limit is {}); retry later",
                caps.per_deployment
            )));
        }
        let mut lease = self
            .client
            .put_item()
            .table_name(&self.data_table)
            .item(PK, AttributeValue::S(WATCHES.into()))
            .item(SK, b(lease_key(database, watch)))
            .item(UNTIL, n(until_ms))
            .item(TTL, n(until_ms / 1000 + 1));
        if let Some(o) = organization {
            lease = lease.item(ORGANIZATION, AttributeValue::S(o.organization.to_string()));
        }
        lease.send().await.map_err(|e| dynamo("PutItem", e))?;
        Ok(())
    }

    /// Gives the lease of a watch that ended back.
    pub async fn close_watch(&self, database: Uuid, watch: Uuid) -> KvResult<()> {
        self.client
            .delete_item()
            .table_name(&self.data_table)
            .key(PK, AttributeValue::S(WATCHES.into()))
            .key(SK, b(lease_key(database, watch)))
            .send()
            .await
            .map_err(|e| dynamo("DeleteItem", e))?;
        Ok(())
    }

    /// Live leases of one database's watches (for tests and operators).
    pub async fn open_watches(&self, database: Uuid) -> KvResult<usize> {
        self.live_leases(Some(database), None, now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_sorts_under_its_database() {
        let db = Uuid::from_u128(7);
        let key = lease_key(db, Uuid::from_u128(9));
        assert_eq!(key.len(), 32);
        assert!(key.starts_with(db.as_bytes()));
        assert!(!WATCHES.contains('-'), "no database id is the partition");
    }
}
