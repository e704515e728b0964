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
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OfDatabase {
    database_id: Uuid,
    #[serde(flatten)]
    counts: Counts,
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
    total: Counts,
    /// Every period of the window, oldest first (zero where nothing was used).
    periods: Vec<Period>,
    /// Per database (the organization's usage): every database with usage in
    /// the window, deleted ones included.
    #[serde(skip_serializing_if = "Option::is_none")]
    databases: Option<Vec<OfDatabase>>,
}

/// The answer for `rows` (already only the database's, for a database).
fn summarize(window: &Window, rows: &[Row]) -> (Counts, Vec<Period>, Vec<OfDatabase>) {
    let mut total = Counts::default();
    let mut periods: BTreeMap<DateTime<Utc>, Counts> = BTreeMap::new();
    let mut start = window.from;
    while start < window.to {
        periods.insert(start, Counts::default());
        start += window.granularity.step();
    }
    let mut databases: BTreeMap<Uuid, Counts> = BTreeMap::new();
    for row in rows {
        total.add(&row.counts);
        periods
            .entry(window.granularity.floor(row.hour))
            .or_default()
            .add(&row.counts);
        databases
            .entry(row.database_id)
            .or_default()
            .add(&row.counts);
    }
    (
        total,
        periods
            .into_iter()
            .map(|(start, counts)| Period {
                start: time(start),
                counts,
            })
            .collect(),
        databases
            .into_iter()
            .map(|(database_id, counts)| OfDatabase {
                database_id,
                counts,
            })
            .collect(),
    )
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
    let (total, periods, _) = summarize(&window, &rows);
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
    let (total, periods, databases) = summarize(&window, &rows);
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
        let (total, periods, databases) = summarize(&w, &rows);
        assert_eq!(total, counts(2.5, 6.0, 6));
        assert_eq!(periods.len(), 2);
        assert_eq!(periods[0].start, "2026-12-01T00:00:00Z");
        assert_eq!(periods[0].counts, counts(1.0, 2.0, 3));
        assert_eq!(periods[1].counts, counts(1.5, 4.0, 3));
        assert_eq!(databases.len(), 2);
        let of_a = databases.iter().find(|d| d.database_id == a).unwrap();
        assert_eq!(of_a.counts, counts(2.0, 6.0, 5));
        // Hourly: every hour of the window, zeros included.
        let w = window(
            &q(&[
                ("from", "2026-12-01T22:00:00Z"),
                ("to", "2026-12-02T01:00:00Z"),
            ]),
            at("2026-12-03T11:00:00Z"),
        )
        .unwrap();
        let (_, periods, _) = summarize(&w, &rows[..2]);
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
}
