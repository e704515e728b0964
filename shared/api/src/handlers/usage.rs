//! Usage for billing (issue 15 §3; docs/usage.md):
//! `GET /v1/databases/{databaseId}/usage` and
//! `GET /v1/organizations/{organizationId}/usage`, both with
//! `?from=&to=&granularity=hour|day`.

use crate::error::{ApiError, ApiResult, Resource};
use crate::http::Reply;
use crate::pipeline::Ctx;
use chrono::{DateTime, Duration, DurationRound, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use subkv_core::storage::Stored;
use subkv_core::usage::{Counts, Row};
use uuid::Uuid;

/// The longest window one call covers.
pub const MAX_WINDOW_DAYS: i64 = 92;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    fn step(self) -> Duration {
        match self {
            Granularity::Hour => Duration::hours(1),
            Granularity::Day => Duration::days(1),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    /// The start of the period holding `at`.
    fn floor(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.step()).unwrap_or(at)
    }

    /// The first period boundary at or after `at`.
    fn ceil(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let floor = self.floor(at);
        if floor == at {
            at
        } else {
            floor + self.step()
        }
    }
}

/// The periods a call covers: `[from, to)`, whole periods of `granularity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub granularity: Granularity,
}

fn instant(name: &str, text: &str) -> ApiResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::InvalidQuery(format!(
                "{name} must be an RFC 3339 time, e.g. 2026-12-01T00:00:00Z (got {text:?})"
            ))
        })
}

/// The window of a query: `granularity` `hour` (default) or `day` (UTC days);
/// `to` defaults to now, `from` to the start of `to`'s UTC day; `from` is
/// rounded down and `to` up to whole periods; at most [`MAX_WINDOW_DAYS`].
pub fn window(pairs: &[(String, String)], now: DateTime<Utc>) -> ApiResult<Window> {
    let (mut from, mut to, mut granularity) = (None, None, Granularity::Hour);
    for (key, value) in pairs {
        match key.as_str() {
            "from" => from = Some(instant("from", value)?),
            "to" => to = Some(instant("to", value)?),
            "granularity" => {
                granularity = match value.as_str() {
                    "hour" => Granularity::Hour,
                    "day" => Granularity::Day,
                    other => {
                        return Err(ApiError::InvalidQuery(format!(
                            "granularity must be \"hour\" or \"day\" (got {other:?})"
                        )))
                    }
                }
            }
            other => {
                return Err(ApiError::InvalidQuery(format!(
                    "unknown query parameter {other:?}: usage takes from, to and granularity"
                )))
            }
        }
    }
    let to = to.unwrap_or(now);
    let from = from.unwrap_or_else(|| Granularity::Day.floor(to));
    if from >= to {
        return Err(ApiError::InvalidQuery(
            "from must be earlier than to".to_string(),
        ));
    }
    let window = Window {
        from: granularity.floor(from),
        to: granularity.ceil(to),
        granularity,
    };
    if window.to - window.from > Duration::days(MAX_WINDOW_DAYS) {
        return Err(ApiError::InvalidQuery(format!(
            "the window is longer than {MAX_WINDOW_DAYS} days: ask for it in parts"
        )));
    }
    Ok(window)
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Period {
    start: String,
    #[serde(flatten)]
    counts: Counts,
    /// Stored bytes and keys at the end of the period.
    #[serde(flatten)]
    stored: Stored,
}

/// The window's counts, and what was stored at its end.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Total {
    #[serde(flatten)]
    counts: Counts,
    #[serde(flatten)]
    stored: Stored,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OfDatabase {
    database_id: Uuid,
    #[serde(flatten)]
    total: Total,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    #[serde(skip_serializing_if = "Option::is_none")]
    organization_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database_id: Option<Uuid>,
    from: String,
    to: String,
    granularity: &'static str,
    total: Total,
    /// Every period of the window, oldest first (zero where nothing was used).
    periods: Vec<Period>,
    /// Per database (the organization's usage): every database with usage in
    /// the window, deleted ones included.
    #[serde(skip_serializing_if = "Option::is_none")]
    databases: Option<Vec<OfDatabase>>,
}

/// Each database's stored bytes and keys as recorded at the end of hours in
/// which they changed, oldest first, from the last such hour before the window
/// (`StorageStore::hours`).
type StorageHours = BTreeMap<Uuid, Vec<(DateTime<Utc>, Stored)>>;

/// What a database stored at the end of each period: its value after the last
/// change before the period's end (nothing before its first).
fn stored_by_period(window: &Window, hours: &[(DateTime<Utc>, Stored)]) -> Vec<Stored> {
    let mut out = Vec::new();
    let (mut start, mut next, mut value) = (window.from, 0, Stored::default());
    while start < window.to {
        let end = start + window.granularity.step();
        while let Some((_, stored)) = hours.get(next).filter(|(hour, _)| *hour < end) {
            value = *stored;
            next += 1;
        }
        out.push(value);
        start = end;
    }
    out
}

/// The answer for `rows` and `storage` (already only the database's, for a
/// database).
fn summarize(
    window: &Window,
    rows: &[Row],
    storage: &StorageHours,
) -> (Total, Vec<Period>, Vec<OfDatabase>) {
    let mut total = Total::default();
    let mut periods: BTreeMap<DateTime<Utc>, Period> = BTreeMap::new();
    let mut start = window.from;
    while start < window.to {
        periods.insert(
            start,
            Period {
                start: time(start),
                counts: Counts::default(),
                stored: Stored::default(),
            },
        );
        start += window.granularity.step();
    }
    let mut databases: BTreeMap<Uuid, Total> = BTreeMap::new();
    for row in rows {
        total.counts.add(&row.counts);
        if let Some(period) = periods.get_mut(&window.granularity.floor(row.hour)) {
            period.counts.add(&row.counts);
        }
        databases
            .entry(row.database_id)
            .or_default()
            .counts
            .add(&row.counts);
    }
    for (database, hours) in storage {
        let series = stored_by_period(window, hours);
        for (period, stored) in periods.values_mut().zip(&series) {
            period.stored.add(stored);
        }
        if let Some(last) = series.last() {
            total.stored.add(last);
            databases.entry(*database).or_default().stored = *last;
        }
    }
    (
        total,
        periods.into_values().collect(),
        databases
            .into_iter()
            .map(|(database_id, total)| OfDatabase { database_id, total })
            .collect(),
    )
}

/// The storage hours of `databases` over the window, a few queries at a time.
async fn storage_hours(
    ctx: &Ctx,
    organization_id: Uuid,
    databases: Vec<Uuid>,
    window: &Window,
) -> ApiResult<StorageHours> {
    use futures_util::{StreamExt, TryStreamExt};
    let storage = ctx.state.storage.clone();
    futures_util::stream::iter(databases.into_iter().map(|database| {
        let storage = storage.clone();
        async move {
            storage
                .hours(organization_id, database, window.from, window.to)
                .await
                .map(|hours| (database, hours))
        }
    }))
    .buffer_unordered(8)
    .try_collect::<StorageHours>()
    .await
    .map_err(ApiError::from)
}

/// `GET /v1/databases/{databaseId}/usage`.
pub async fn of_database(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let id = ctx.id("databaseId")?;
    let window = window(&ctx.query_pairs(), Utc::now())?;
    ctx.state
        .control
        .get_database(organization_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::Database, id))?;
    let mut rows = ctx
        .state
        .usage
        .rows(organization_id, window.from, window.to)
        .await?;
    rows.retain(|r| r.database_id == id);
    let storage = storage_hours(&ctx, organization_id, vec![id], &window).await?;
    let (total, periods, _) = summarize(&window, &rows, &storage);
    Reply::json(&Usage {
        organization_id: None,
        database_id: Some(id),
        from: time(window.from),
        to: time(window.to),
        granularity: window.granularity.name(),
        total,
        periods,
        databases: None,
    })
}

/// `GET /v1/organizations/{organizationId}/usage`.
pub async fn of_organization(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.id("organizationId")?;
    let window = window(&ctx.query_pairs(), Utc::now())?;
    // The admin may name any organization.
    ctx.state
        .control
        .get_organization(organization_id)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::Organization, organization_id))?;
    let rows = ctx
        .state
        .usage
        .rows(organization_id, window.from, window.to)
        .await?;
    // Every database with stored data counted, deleted ones until purged.
    let stored: Vec<Uuid> = ctx
        .state
        .storage
        .current(organization_id)
        .await?
        .into_iter()
        .map(|(database, _)| database)
        .collect();
    let storage = storage_hours(&ctx, organization_id, stored, &window).await?;
    let (total, periods, databases) = summarize(&window, &rows, &storage);
    Reply::json(&Usage {
        organization_id: Some(organization_id),
        database_id: None,
        from: time(window.from),
        to: time(window.to),
        granularity: window.granularity.name(),
        total,
        periods,
        databases: Some(databases),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        instant("t", text).unwrap()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn windows_are_whole_periods_defaulting_to_today() {
        let now = at("2026-12-03T11:42:00Z");
        let w = window(&[], now).unwrap();
        assert_eq!(
            (w.from, w.to),
            (at("2026-12-03T00:00:00Z"), at("2026-12-03T12:00:00Z"))
        );
        assert_eq!(w.granularity, Granularity::Hour);
        let w = window(
            &q(&[
                ("from", "2026-11-30T22:10:00+01:00"),
                ("to", "2026-12-02T00:00:00Z"),
                ("granularity", "day"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            (w.from, w.to),
            (at("2026-11-30T00:00:00Z"), at("2026-12-02T00:00:00Z"))
        );
    }

    #[test]
    fn bad_windows_are_400s_that_say_why() {
        let now = at("2026-12-03T11:42:00Z");
        for (pairs, says) in [
            (q(&[("from", "yesterday")]), "RFC 3339"),
            (q(&[("granularity", "week")]), "\"hour\" or \"day\""),
            (q(&[("from", "2026-12-04T00:00:00Z")]), "earlier"),
            (q(&[("from", "2026-01-01T00:00:00Z")]), "92 days"),
            (q(&[("limit", "3")]), "unknown query parameter"),
        ] {
            let err = window(&pairs, now).unwrap_err();
            assert!(matches!(err, ApiError::InvalidQuery(_)), "{err:?}");
            assert!(err.to_string().contains(says), "{err}");
        }
    }

    #[test]
    fn rows_are_added_up_by_period_and_database() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let counts = |r: f64, w: f64, q: u64| Counts {
            read_units: r,
            write_units: w,
            requests: q,
            watch_seconds: 0.0,
            backup_bytes: 0,
        };
        let row = |database_id, hour: &str, c| Row {
            database_id,
            hour: at(hour),
            counts: c,
        };
        let rows = [
            row(a, "2026-12-01T23:00:00Z", counts(1.0, 2.0, 3)),
            row(b, "2026-12-02T00:00:00Z", counts(0.5, 0.0, 1)),
            row(a, "2026-12-02T05:00:00Z", counts(1.0, 4.0, 2)),
        ];
        let w = window(
            &q(&[
                ("from", "2026-12-01T00:00:00Z"),
                ("to", "2026-12-03T00:00:00Z"),
                ("granularity", "day"),
            ]),
            at("2026-12-03T11:00:00Z"),
        )
        .unwrap();
        let (total, periods, databases) = summarize(&w, &rows, &StorageHours::new());
        assert_eq!(total.counts, counts(2.5, 6.0, 6));
        assert_eq!(periods.len(), 2);
        assert_eq!(periods[0].start, "2026-12-01T00:00:00Z");
        assert_eq!(periods[0].counts, counts(1.0, 2.0, 3));
        assert_eq!(periods[1].counts, counts(1.5, 4.0, 3));
        assert_eq!(databases.len(), 2);
        let of_a = databases.iter().find(|d| d.database_id == a).unwrap();
        assert_eq!(of_a.total.counts, counts(2.0, 6.0, 5));
        // Hourly: every hour of the window, zeros included.
        let w = window(
            &q(&[
                ("from", "2026-12-01T22:00:00Z"),
                ("to", "2026-12-02T01:00:00Z"),
            ]),
            at("2026-12-03T11:00:00Z"),
        )
        .unwrap();
        let (_, periods, _) = summarize(&w, &rows[..2], &StorageHours::new());
        let starts: Vec<_> = periods.iter().map(|p| p.start.as_str()).collect();
        assert_eq!(
            starts,
            [
                "2026-12-01T22:00:00Z",
                "2026-12-01T23:00:00Z",
                "2026-12-02T00:00:00Z"
            ]
        );
        assert_eq!(periods[0].counts, Counts::default());
    }

    #[test]
    fn stored_bytes_carry_forward_to_the_end_of_each_period_and_add_up() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let stored = |bytes: i64, keys: i64| Stored {
            stored_bytes: bytes,
            keys,
        };
        let w = window(
            &q(&[
                ("from", "2026-12-02T00:00:00Z"),
                ("to", "2026-12-02T04:00:00Z"),
            ]),
            at("2026-12-03T11:00:00Z"),
        )
        .unwrap();
        let storage = StorageHours::from([
            // a: 100 before the window, 300 in its second hour, 50 in its last.
            (
                a,
                vec![
                    (at("2026-12-01T08:00:00Z"), stored(100, 1)),
                    (at("2026-12-02T01:00:00Z"), stored(250, 2)),
                    (at("2026-12-02T01:00:00Z"), stored(300, 3)),
                    (at("2026-12-02T03:00:00Z"), stored(50, 1)),
                ],
            ),
            // b: first written in the window's third hour.
            (b, vec![(at("2026-12-02T02:00:00Z"), stored(10, 1))]),
        ]);
        let (total, periods, databases) = summarize(&w, &[], &storage);
        let bytes: Vec<i64> = periods.iter().map(|p| p.stored.stored_bytes).collect();
        assert_eq!(bytes, [100, 300, 310, 60]);
        assert_eq!(periods[2].stored.keys, 4);
        assert_eq!(total.stored, stored(60, 2));
        let of_b = databases.iter().find(|d| d.database_id == b).unwrap();
        assert_eq!(of_b.total.stored, stored(10, 1));
        assert_eq!(of_b.total.counts, Counts::default());
        // By day: the value at the day's end.
        let days = window(
            &q(&[
                ("from", "2026-12-01T00:00:00Z"),
                ("to", "2026-12-03T00:00:00Z"),
                ("granularity", "day"),
            ]),
            at("2026-12-03T11:00:00Z"),
        )
        .unwrap();
        let (_, periods, _) = summarize(&days, &[], &storage);
        let bytes: Vec<i64> = periods.iter().map(|p| p.stored.stored_bytes).collect();
        assert_eq!(bytes, [100, 60]);
    }
}
