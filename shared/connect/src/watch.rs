//! `POST /databases/{databaseId}/watch` (protocol 3): a streamed response of
//! length-prefixed `WatchOutput` messages, served with Lambda response streaming.
//!
//! The function reads the watched keys (one serializable read), sends them, then
//! polls the database head (one GetItem per poll) and re-reads the keys when it
//! moves or when a watched entry's expiry passes; it sends only keys whose
//! versionstamp changed, and a zero-length keep-alive every few seconds. The stream
//! ends after `SUBKV_WATCH_MAX_SECONDS` (inside Lambda's 15-minute limit); Deno's
//! client then reconnects by itself. It ends as soon as the client is gone: the
//! next poll (250 ms) finds the stream closed, or the next keep-alive (5 s)
//! cannot be written.
//!
//! Each open watch holds a lease (`subkv_dynamo_kv::watches`): a database holds
//! at most `SUBKV_WATCH_MAX_PER_DATABASE` (50) and the deployment
//! `SUBKV_WATCH_MAX_PER_DEPLOYMENT` (500); over either, the watch is refused
//! with a 429 naming the limit, which Deno raises to the caller. An
//! organization with `limits.watches` (docs/quotas.md) holds at most that many:
//! over it, a 403 naming the limit.
//!
//! Usage (docs/usage.md): a watch counts as one request, its open time as
//! `watchSeconds`, and the capacity units of its reads and its lease; it reports
//! them to the instance's tally every flush period while it runs, and when it
//! ends.

use crate::protocol::{authorize, log_request, pb_entry, refused_error, Metered};
use crate::state::ConnectState;
use crate::usage::Charges;
use bytes::Bytes;
use denokv_proto::datapath as pb;
use http_body::Frame;
use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::http::HeaderValue;
use lambda_http::{Request, Response};
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkv_core::routes::Route;
use subkv_core::runtime;
use subkv_core::usage::Counts;
use subkv_dynamo_kv::{now_ms, OrganizationWatches};
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::model::Entry;
use tokio::sync::mpsc;
use uuid::Uuid;

type FrameStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;
/// The streamed response body.
pub type WatchBody = http_body_util::StreamBody<FrameStream>;

fn body_from(rx: mpsc::Receiver<Bytes>) -> WatchBody {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok(Frame::data(bytes)), rx))
    });
    http_body_util::StreamBody::new(Box::pin(stream))
}

/// A length-prefixed frame (4-byte little-endian length, then the message).
pub fn frame(message: &pb::WatchOutput) -> Bytes {
    let body = message.encode_to_vec();
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Bytes::from(out)
}

const KEEPALIVE: &[u8] = &[0, 0, 0, 0];

/// The message to send for the watched keys' current state, or `None` if no
/// key's version changed since the last message (`last`; `None` before the first).
///
/// A message carries every key, each marked changed, as `denokv serve` sends
/// them: the spec allows marking unchanged keys `changed: false`, but the Deno
/// runtime's client then reports those keys as absent (seen with Deno 2.9).
/// The client drops keys whose versionstamp it already has, so callers still
/// see only real changes.
pub fn update(
    last: Option<&[Option<u64>]>,
    current: &[Option<Entry>],
) -> Option<Vec<pb::WatchKeyOutput>> {
    let versions: Vec<Option<u64>> = current
        .iter()
        .map(|e| e.as_ref().map(|e| e.version))
        .collect();
    if last.is_some_and(|last| last == versions.as_slice()) {
        return None;
    }
    Some(
        current
            .iter()
            .map(|entry| pb::WatchKeyOutput {
                changed: true,
                entry_if_changed: entry.clone().map(pb_entry),
            })
            .collect(),
    )
}

/// What a watch used, reported to the instance's usage tally as it goes.
struct WatchUsage {
    who: Option<Metered>,
    charges: Charges,
    since: Instant,
}

impl WatchUsage {
    /// Reports the units and open seconds since the last report (and the
    /// watch's one request, at its end). A watch that was open and ends flushes
    /// the tally at once (`flush`): its instance may serve no other request
    /// for a while.
    async fn report(&mut self, state: &ConnectState, ended: bool, flush: bool) {
        let units = self.charges.take();
        let seconds = self.since.elapsed().as_secs_f64();
        self.since = Instant::now();
        if let Some(who) = self.who {
            let counts = Counts {
                read_units: units.read,
                write_units: units.write,
                requests: u64::from(ended),
                watch_seconds: seconds,
                backup_bytes: 0,
            };
            state.count(who, counts, flush).await;
        }
    }

    fn due(&self, state: &ConnectState) -> bool {
        self.since.elapsed() >= state.meter.period()
    }
}

async fn run(
    state: Arc<ConnectState>,
    database: Uuid,
    holder: Option<(Uuid, Uuid)>,
    keys: Vec<Vec<u8>>,
    tx: mpsc::Sender<Bytes>,
    usage: &mut WatchUsage,
) -> KvResult<()> {
    let config = state.watch.clone();
    let deadline = Instant::now() + Duration::from_secs(config.max_seconds);
    let mut last: Option<Vec<Option<u64>>> = None;
    let mut last_sent = Instant::now();
    loop {
        let head = state.kv.head(database).await?;
        let entries = state.kv.get_many(database, &keys).await?;
        if let Some(outputs) = update(last.as_deref(), &entries) {
            let message = pb::WatchOutput {
                status: pb::SnapshotReadStatus::SrSuccess as i32,
                keys: outputs,
            };
            if tx.send(frame(&message)).await.is_err() {
                return Ok(());
            }
            last_sent = Instant::now();
        }
        last = Some(
            entries
                .iter()
                .map(|e| e.as_ref().map(|e| e.version))
                .collect(),
        );
        let next_expiry = entries
            .iter()
            .flatten()
            .filter_map(|e| e.expire_at_ms)
            .min();
        // Wait for the head to move or a watched entry to expire.
        loop {
            if Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(config.poll_ms)).await;
            if tx.is_closed() {
                return Ok(());
            }
            if last_sent.elapsed() >= Duration::from_secs(config.keepalive_seconds) {
                if tx.send(Bytes::from_static(KEEPALIVE)).await.is_err() {
                    return Ok(());
                }
                last_sent = Instant::now();
            }
            if usage.due(&state) {
                usage.report(&state, false, false).await;
            }
            if next_expiry.is_some_and(|at| at <= now_ms()) {
                break;
            }
            // A revoked or expired organization token ends the stream too
            // (checked against the control table once per recheck interval).
            crate::protocol::still_authorized(&state, holder).await?;
            if state.kv.head(database).await? != head {
                break;
            }
        }
    }
}

fn error_body(err: KvError) -> Response<WatchBody> {
    let (tx, rx) = mpsc::channel(1);
    let text = err.body_text();
    let _ = tx.try_send(Bytes::from(text));
    let mut response = Response::new(body_from(rx));
    *response.status_mut() = err.status();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Starts a watch; errors before the stream starts are plain-text 4xx.
pub async fn watch(
    state: Arc<ConnectState>,
    route: &'static Route,
    request: Request,
) -> Response<WatchBody> {
    let started = Instant::now();
    let prepared = async {
        let req = authorize(&state, route, &request).await?;
        if req.version < 3 {
            return Err(KvError::bad("watch needs KV Connect protocol version 3"));
        }
        let watch = pb::Watch::decode(request.body().as_ref())
            .map_err(|e| KvError::bad(format!("invalid Watch protobuf: {e}")))?;
        let keys: Vec<Vec<u8>> = watch.try_into()?;
        if keys.iter().any(Vec::is_empty) {
            return Err(KvError::bad("key cannot be empty"));
        }
        Ok((req.database, req.holder, keys, req.metered()))
    }
    .await;
    let (database, holder, keys, who) = match prepared {
        Ok(ok) => ok,
        Err(err) => {
            log_request(route, started, Some(&err));
            return error_body(err);
        }
    };
    // A lease counts the watch against its database's, its organization's and
    // the deployment's caps until it ends (or, if this function dies, until it
    // lapses).
    let mut usage = WatchUsage {
        who,
        charges: Charges::default(),
        since: Instant::now(),
    };
    let lease = Uuid::new_v4();
    let lapses = now_ms() + (state.watch.max_seconds as i64 + 60) * 1000;
    let opened = usage
        .charges
        .scope(async {
            let organization = match who {
                Some(who) => {
                    let sources = crate::quota::Sources {
                        control: state.control.as_ref(),
                        usage: state.usage.as_ref(),
                        storage: state.storage.as_ref(),
                    };
                    let limit = state
                        .quotas
                        .watch_limit(who.organization, chrono::Utc::now(), &sources)
                        .await?;
                    Some(OrganizationWatches {
                        organization: who.organization,
                        limit,
                    })
                }
                None => None,
            };
            state
                .kv
                .open_watch(database, lease, lapses, state.watch.caps, organization)
                .await
        })
        .await;
    if let Err(err) = opened {
        usage.report(&state, true, false).await;
        log_request(route, started, Some(&err));
        return error_body(err);
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let charges = usage.charges.clone();
        let result = charges
            .scope(run(state.clone(), database, holder, keys, tx, &mut usage))
            .await;
        let closed = charges.scope(state.kv.close_watch(database, lease)).await;
        if let Err(err) = closed {
            tracing::warn!(%database, error = %err.detail(), "a watch's lease was not given back; it lapses");
        }
        usage.report(&state, true, true).await;
        let elapsed_us = started.elapsed().as_micros() as u64;
        match result {
            Ok(()) => tracing::info!(
                route = route.function,
                status = 200,
                elapsed_us,
                "watch ended"
            ),
            // The stream is already 200: the client sees it end and reconnects.
            Err(err) => {
                tracing::warn!(route = route.function, elapsed_us, error = %err.detail(), "watch failed")
            }
        }
    });
    let mut response = Response::new(body_from(rx));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// The whole of the watch function's `main`.
pub async fn serve(route: &'static Route) -> Result<(), lambda_http::Error> {
    runtime::serve_http_streaming(
        route.function,
        ConnectState::serving(),
        move |state, request| watch(state, route, request),
        |refused| error_body(refused_error(refused)),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkv_kv::model::versionstamp;

    fn entry(version: u64) -> Entry {
        Entry {
            key: vec![2, b'k', 0],
            value: vec![1],
            encoding: 3,
            version,
            seq: 0,
            expire_at_ms: None,
        }
    }

    #[test]
    fn a_message_is_sent_on_any_change_and_carries_every_key() {
        let now = vec![Some(entry(3)), None];
        let first = update(None, &now).expect("the first message is always sent");
        assert!(first.iter().all(|o| o.changed));
        assert_eq!(
            first[0].entry_if_changed.as_ref().unwrap().versionstamp,
            versionstamp(3).to_vec()
        );
        assert!(first[1].entry_if_changed.is_none());
        let last = vec![Some(3), None];
        assert!(update(Some(&last), &now).is_none(), "nothing changed");
        let next = update(Some(&last), &[Some(entry(3)), Some(entry(4))]).unwrap();
        assert!(next.iter().all(|o| o.changed));
        assert_eq!(
            next[0].entry_if_changed.as_ref().unwrap().versionstamp,
            versionstamp(3).to_vec(),
            "an unchanged key is sent with its current entry"
        );
        let deleted = update(Some(&last), &[None, None]).unwrap();
        assert!(deleted
            .iter()
            .all(|o| o.changed && o.entry_if_changed.is_none()));
    }

    #[test]
    fn frames_are_length_prefixed_little_endian() {
        let message = pb::WatchOutput {
            status: 1,
            keys: vec![],
        };
        let f = frame(&message);
        let len = u32::from_le_bytes([f[0], f[1], f[2], f[3]]) as usize;
        assert_eq!(len, f.len() - 4);
        assert_eq!(pb::WatchOutput::decode(&f[4..]).unwrap(), message);
    }
}
