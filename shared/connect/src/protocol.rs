//! KV Connect (denoland/denokv proto/kv-connect.md), versions 1 to 3: the
//! metadata exchange and the data path, one handler per route.

use crate::state::ConnectState;
use denokv_proto::datapath as pb;
use lambda_http::http::header::CONTENT_TYPE;
use lambda_http::http::HeaderValue;
use lambda_http::{Body, Request, RequestExt, Response};
use prost::Message;
use std::sync::Arc;
use subkv_core::auth::{bearer_token, token_sha256_hex};
use subkv_core::routes::{Access, Route};
use subkv_core::runtime::{self, Refused, RequestLog};
use subkv_dynamo_kv::WriteOutcome;
use subkv_kv::error::{KvError, KvResult, ENQUEUE_UNSUPPORTED};
use subkv_kv::limits::{
    read_too_large, MAX_EXPIRE_AT_MS, MAX_READ_RESPONSE_BYTES, MAX_REQUEST_BYTES,
};
use subkv_kv::model::Entry;
use subkv_kv::token::Grant;
use uuid::Uuid;

/// Protocol versions subkv speaks.
pub const VERSIONS: [u64; 3] = [1, 2, 3];

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

fn database_in_path(route: &Route, request: &Request) -> KvResult<Uuid> {
    let given = request.path_parameters();
    let raw = match given.first("databaseId") {
        Some(id) => Some(id.to_string()),
        None => route
            .match_path(request.uri().path())
            .and_then(|p| p.into_iter().find(|(k, _)| *k == "databaseId"))
            .map(|(_, v)| v.to_string()),
    };
    let raw = raw.unwrap_or_default();
    Uuid::try_parse(&raw).map_err(|_| KvError::NotFound(format!("database {raw:?} not found")))
}

fn protobuf(message: &impl Message) -> Response<Body> {
    let mut response = Response::new(Body::Binary(message.encode_to_vec()));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A checked data-path request: its database, protocol version, and whether
/// its token may only read.
pub struct DataRequest {
    pub database: Uuid,
    pub version: u8,
    pub read_only: bool,
    /// The organization and organization token behind its data-path token.
    pub holder: Option<(Uuid, Uuid)>,
}

impl DataRequest {
    /// Whose request it is, for its usage: none for a data-path token of the
    /// first format (`skvd1`), which names no organization.
    pub fn metered(&self) -> Option<Metered> {
        self.holder.map(|(organization, _)| Metered {
            organization,
            database: self.database,
        })
    }
}

/// The organization and database a request's usage is counted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metered {
    pub organization: Uuid,
    pub database: Uuid,
}

/// Checks what every data-path request must carry (spec "Data Path Protocol"),
/// then that the organization token its data-path token came from still exists
/// (seen within [`crate::state::LiveTokens::recheck`] by this instance, else one
/// read of the control table): a revoked organization token stops working on
/// the data path within a minute.
pub async fn authorize(
    state: &ConnectState,
    route: &Route,
    request: &Request,
) -> KvResult<DataRequest> {
    let req = check_request(state, route, request)?;
    still_authorized(state, req.holder).await?;
    Ok(req)
}

/// Whether the organization token behind a data-path token (`holder`) still
/// exists and has not expired: trusted if this instance saw it within
/// [`crate::state::LiveTokens::recheck`], else read from the control table.
/// Also called by a streaming watch as it goes.
pub async fn still_authorized(state: &ConnectState, holder: Option<(Uuid, Uuid)>) -> KvResult<()> {
    let Some((organization, token)) = holder else {
        return Ok(());
    };
    if state.live_tokens.fresh(token) {
        return Ok(());
    }
    let record = state
        .control
        .token_by_id(organization, token)
        .await
        .map_err(|e| KvError::Unavailable(format!("reading the access token: {e}")))?;
    match record {
        Some(record) if !record.expired(chrono::Utc::now().timestamp_millis()) => {
            state.live_tokens.saw(token);
            Ok(())
        }
        _ => Err(KvError::Unauthorized(
            "the access token this session was opened with was revoked or has expired",
        )),
    }
}

/// The checks that need no I/O: the data-path token and the headers.
fn check_request(state: &ConnectState, route: &Route, request: &Request) -> KvResult<DataRequest> {
    if request.body().len() > MAX_REQUEST_BYTES {
        return Err(KvError::PayloadTooLarge(format!(
            "request body too large (the limit is {MAX_REQUEST_BYTES} bytes)"
        )));
    }
    let token = bearer_token(request.headers()).ok_or(KvError::Unauthorized(
        "missing bearer token: send Authorization: Bearer <token from the metadata exchange>",
    ))?;
    let grant = state.signer.verify(token, now_seconds())?;
    let database = grant.database;
    let in_path = database_in_path(route, request)?;
    if in_path != database {
        return Err(KvError::NotFound(format!(
            "database {in_path} not found for this token"
        )));
    }
    if let Some(ct) = header(request, "content-type") {
        if !ct.trim().eq_ignore_ascii_case("application/x-protobuf") {
            return Err(KvError::UnsupportedMediaType(format!(
                "content-type must be application/x-protobuf, got {ct:?}"
            )));
        }
    }
    let (version, id_header) = match header(request, "x-denokv-version") {
        None => (1, "x-transaction-domain-id"),
        Some("2") => (2, "x-denokv-database-id"),
        Some("3") => (3, "x-denokv-database-id"),
        Some(other) => {
            return Err(KvError::bad(format!(
                "unsupported x-denokv-version {other:?}: subkv speaks 1, 2 and 3"
            )))
        }
    };
    match header(request, id_header).map(Uuid::try_parse) {
        Some(Ok(id)) if id == database => Ok(DataRequest {
            database,
            version,
            read_only: grant.read_only,
            holder: grant.holder,
        }),
        Some(_) => Err(KvError::bad(format!(
            "{id_header} does not name the database of this token"
        ))),
        None => Err(KvError::bad(format!("missing {id_header} header"))),
    }
}

fn decode<M: Message + Default>(request: &Request, what: &str) -> KvResult<M> {
    M::decode(request.body().as_ref())
        .map_err(|e| KvError::bad(format!("invalid {what} protobuf: {e}")))
}

/// `POST /databases/{databaseId}/connect`: the metadata exchange.
pub async fn connect(
    state: &ConnectState,
    route: &Route,
    request: Request,
    who: &mut Option<Metered>,
) -> KvResult<Response<Body>> {
    let database = database_in_path(route, &request)?;
    let body = request.body().as_ref();
    let supported: Vec<u64> = if body.iter().all(u8::is_ascii_whitespace) {
        vec![1]
    } else {
        let parsed: denokv_proto::MetadataExchangeRequest = serde_json::from_slice(body)
            .map_err(|e| KvError::bad(format!("invalid metadata exchange request: {e}")))?;
        parsed.supported_versions
    };
    let version = VERSIONS
        .iter()
        .rev()
        .find(|v| supported.contains(v))
        .copied()
        .ok_or_else(|| {
            KvError::bad(format!(
                "no protocol version in common: the client supports {supported:?}, subkv supports 1, 2 and 3"
            ))
        })?;
    let token = bearer_token(request.headers()).ok_or(KvError::Unauthorized(
        "missing access token: set DENO_KV_ACCESS_TOKEN to an organization token",
    ))?;
    let store_err = |e: subkv_core::error::StoreError| KvError::Internal(e.to_string());
    let record = state
        .control
        .token_by_hash(&token_sha256_hex(token))
        .await
        .map_err(store_err)?
        .ok_or(KvError::Unauthorized("invalid access token"))?;
    if record.expired(chrono::Utc::now().timestamp_millis()) {
        return Err(KvError::Unauthorized("the access token has expired"));
    }
    subkv_core::control::note_token_used(state.control.as_ref(), &record).await;
    // A token limited to other databases does not see this one.
    if !record.scope().allows(database) {
        return Err(KvError::NotFound(format!("database {database} not found")));
    }
    let db = state
        .control
        .get_database(record.organization_id, database)
        .await
        .map_err(store_err)?
        .ok_or_else(|| KvError::NotFound(format!("database {database} not found")))?;
    *who = Some(Metered {
        organization: record.organization_id,
        database,
    });
    // A database being restored (or whose restore failed) gets no data-path
    // token, so no read or write reaches it until it is active.
    if let Some(refusal) = db.restore.as_ref().and_then(|r| r.refusal(database)) {
        return Err(KvError::Conflict(refusal));
    }
    let grant = Grant {
        database,
        read_only: record.scope().read_only,
        holder: Some((record.organization_id, record.id)),
    };
    let not_after = record.expires_at_ms().map(|ms| ms.div_euclid(1000));
    let (data_token, expires) = state.signer.issue(&grant, now_seconds(), not_after);
    let expires_at = chrono::DateTime::from_timestamp(expires, 0)
        .ok_or_else(|| KvError::Internal("token expiry out of range".into()))?;
    let metadata = denokv_proto::DatabaseMetadata {
        version,
        database_id: database,
        endpoints: vec![denokv_proto::EndpointInfo {
            url: endpoint_url(&request, version).into(),
            consistency: "strong".into(),
        }],
        token: data_token.into(),
        expires_at,
    };
    let json = serde_json::to_vec(&metadata)
        .map_err(|e| KvError::Internal(format!("metadata JSON: {e}")))?;
    let mut response = Response::new(Body::Binary(json));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// Where the data path lives: beside the metadata URL (`.../databases/{id}`).
/// Version 1 clients need an absolute URL, built from the request; later ones
/// resolve a relative one against the URL they called, which survives API stages
/// and custom-domain base paths.
fn endpoint_url(request: &Request, version: u64) -> String {
    let path = request.uri().path();
    let trimmed = path.trim_end_matches('/');
    let base = trimmed.strip_suffix("/connect").unwrap_or(trimmed);
    if version >= 2 {
        let id = base.rsplit('/').next().unwrap_or_default();
        let up = if path.ends_with('/') { "../../" } else { "../" };
        return format!("{up}{id}");
    }
    // API Gateway and CloudFront always send a Host; only a bare local server might not.
    let origin = runtime::origin(request).unwrap_or_else(|| "http://localhost".into());
    format!("{origin}{base}")
}

/// `POST /databases/{databaseId}/snapshot_read`.
pub async fn snapshot_read(
    state: &ConnectState,
    route: &Route,
    request: Request,
    who: &mut Option<Metered>,
) -> KvResult<Response<Body>> {
    let req = authorize(state, route, &request).await?;
    *who = req.metered();
    let read: pb::SnapshotRead = decode(&request, "SnapshotRead")?;
    let ranges: Vec<denokv_proto::ReadRange> = read.try_into()?;
    let results = state.kv.snapshot_read(req.database, &ranges).await?;
    let output = pb::SnapshotReadOutput {
        ranges: results
            .into_iter()
            .map(|entries| pb::ReadRangeOutput {
                values: entries.into_iter().map(pb_entry).collect(),
            })
            .collect(),
        read_disabled: false,
        read_is_strongly_consistent: true,
        status: pb::SnapshotReadStatus::SrSuccess as i32,
    };
    check_read_answer(&output)?;
    Ok(protobuf(&output))
}

/// Whether a read's answer is within the largest subkv gives
/// ([`MAX_READ_RESPONSE_BYTES`], what one streamed Lambda response carries),
/// decided from its exact encoded length before anything is encoded or sent. Past
/// it, a 400 naming the limit: answering fewer entries instead would end the
/// client's list early (Deno takes a short batch as the last).
pub fn check_read_answer(output: &pb::SnapshotReadOutput) -> KvResult<()> {
    let bytes = output.encoded_len();
    if bytes <= MAX_READ_RESPONSE_BYTES {
        return Ok(());
    }
    let entries: usize = output.ranges.iter().map(|r| r.values.len()).sum();
    Err(read_too_large(entries, bytes))
}

pub fn pb_entry(entry: Entry) -> pb::KvEntry {
    let versionstamp = entry.versionstamp().to_vec();
    pb::KvEntry {
        key: entry.key,
        value: entry.value,
        encoding: entry.encoding as i32,
        versionstamp,
    }
}

/// What denokv_proto's conversion of an atomic write assumes (and panics on
/// otherwise, which aborts a release build's instance), checked first: a KvU64
/// value (encoding LE64) is exactly 8 bytes, and an `expireAt` is no later than
/// the latest instant it can represent.
fn check_before_conversion(write: &pb::AtomicWrite) -> KvResult<()> {
    let le64 = denokv_proto::VALUE_ENCODING_LE64 as i32;
    let malformed = write
        .mutations
        .iter()
        .filter_map(|m| m.value.as_ref())
        .any(|v| v.encoding == le64 && v.data.len() != 8);
    if malformed {
        return Err(KvError::bad(
            "invalid KvU64 value: a value with encoding LE64 must be 8 bytes",
        ));
    }
    if let Some(late) = write
        .mutations
        .iter()
        .map(|m| m.expire_at_ms)
        .find(|&at| at > MAX_EXPIRE_AT_MS)
    {
        return Err(KvError::bad(format!(
            "invalid expireAt: {late} ms after the Unix epoch is out of range (the limit is \
             {MAX_EXPIRE_AT_MS} ms, the end of the year 262142)"
        )));
    }
    Ok(())
}

/// About how many bytes a commit adds to its database's storage, for the
/// storage quota: every key it writes a value to, with the value and an item's
/// overhead (its other attributes and DynamoDB's 100 bytes). The values it
/// replaces are not read (no round trip for the check), so an overwrite counts
/// as new bytes; deletions add nothing.
pub fn adds_bytes(write: &pb::AtomicWrite) -> u64 {
    write
        .mutations
        .iter()
        .filter(|m| m.mutation_type != pb::MutationType::MDelete as i32)
        .map(|m| {
            let value = m.value.as_ref().map_or(0, |v| v.data.len());
            (m.key.len() + value) as u64 + ITEM_OVERHEAD_ESTIMATE
        })
        .sum()
}

/// An entry item's bytes besides its key and value, about: its attribute names,
/// database id, version and encoding (~60) and DynamoDB's 100 per item.
const ITEM_OVERHEAD_ESTIMATE: u64 = 160;

/// `POST /databases/{databaseId}/atomic_write`.
pub async fn atomic_write(
    state: &ConnectState,
    route: &Route,
    request: Request,
    who: &mut Option<Metered>,
) -> KvResult<Response<Body>> {
    let req = authorize(state, route, &request).await?;
    *who = req.metered();
    if req.read_only {
        return Err(KvError::Forbidden(
            "this access token may only read (access \"read\"): writes are refused".into(),
        ));
    }
    let write: pb::AtomicWrite = decode(&request, "AtomicWrite")?;
    // The organization's write quota, before anything is written (reads are
    // never refused).
    if let Some(who) = req.metered() {
        let sources = crate::quota::Sources {
            control: state.control.as_ref(),
            usage: state.usage.as_ref(),
            storage: state.storage.as_ref(),
        };
        state
            .quotas
            .check_write(
                who.organization,
                chrono::Utc::now(),
                &sources,
                &state.meter,
                adds_bytes(&write),
            )
            .await?;
    }
    if !write.enqueues.is_empty() {
        return Err(KvError::bad(ENQUEUE_UNSUPPORTED));
    }
    check_before_conversion(&write)?;
    let write: denokv_proto::AtomicWrite = write.try_into()?;
    let output = match state.kv.atomic_write(req.database, &write).await? {
        WriteOutcome::Committed(vs) => pb::AtomicWriteOutput {
            status: pb::AtomicWriteStatus::AwSuccess as i32,
            versionstamp: vs.to_vec(),
            failed_checks: vec![],
        },
        WriteOutcome::CheckFailed(failed) => pb::AtomicWriteOutput {
            status: pb::AtomicWriteStatus::AwCheckFailure as i32,
            versionstamp: vec![],
            failed_checks: failed,
        },
    };
    Ok(protobuf(&output))
}

/// An error as KV Connect answers it: its status, a plain-text body.
pub fn error_response(err: &KvError) -> Response<Body> {
    let mut response = Response::new(Body::Text(err.body_text()));
    *response.status_mut() = err.status();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The request's log line (errors with their detail, which never reaches the client).
pub fn log_request(route: &Route, started: std::time::Instant, err: Option<&KvError>) {
    let detail = err.map(KvError::detail);
    RequestLog {
        function: route.function,
        status: err.map_or(200, |e| e.status().as_u16()),
        elapsed_us: started.elapsed().as_micros() as u64,
        organization: None,
        code: None,
        error: detail.as_deref(),
    }
    .emit();
}

/// One log line per request; errors become their plain-text response.
pub fn finish(
    route: &Route,
    started: std::time::Instant,
    result: KvResult<Response<Body>>,
) -> Response<Body> {
    log_request(route, started, result.as_ref().err());
    result.unwrap_or_else(|err| error_response(&err))
}

/// The operations of the request/response data-plane functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Connect,
    SnapshotRead,
    AtomicWrite,
}

/// Runs one request of `op`. Never fails: errors become their response.
pub async fn handle(
    state: &ConnectState,
    route: &'static Route,
    op: Op,
    request: Request,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let mut who = None;
    let (result, units) = crate::usage::metered(async {
        match op {
            Op::Connect => connect(state, route, request, &mut who).await,
            Op::SnapshotRead => snapshot_read(state, route, request, &mut who).await,
            Op::AtomicWrite => atomic_write(state, route, request, &mut who).await,
        }
    })
    .await;
    // Every request that got as far as naming its organization and database
    // counts, refused or not: what it read or wrote was billed by DynamoDB.
    if let Some(who) = who {
        state
            .count(
                who,
                subkv_core::usage::Counts {
                    read_units: units.read,
                    write_units: units.write,
                    requests: 1,
                    watch_seconds: 0.0,
                    backup_bytes: 0,
                },
                false,
            )
            .await;
    }
    finish(route, started, result)
}

/// What a data-plane function answers for the runtime: instead of a response AWS
/// Lambda would not deliver, a 400 naming the limit (a 5xx would be retried
/// forever); to a request around the distribution, a 403.
pub fn refusal(refused: &Refused) -> Response<Body> {
    error_response(&refused_error(refused))
}

/// The data plane's error for what the runtime refuses.
pub fn refused_error(refused: &Refused) -> KvError {
    match refused {
        Refused::TooLarge(err) => KvError::bad(err.to_string()),
        Refused::NotThroughEdge => KvError::Forbidden(refused.to_string()),
    }
}

/// The whole of a request/response data-plane function's `main`. A route whose
/// answers can be larger than a buffered Lambda response carries (`snapshot_read`,
/// [`Access::KvStream`]) is served with Lambda response streaming: the same
/// response, sent as a stream of up to 20 MB instead of one payload of 6 MB.
pub async fn serve(route: &'static Route, op: Op) -> Result<(), lambda_http::Error> {
    let handler = move |state: Arc<ConnectState>, request| async move {
        handle(&state, route, op, request).await
    };
    if route.access == Access::KvStream {
        runtime::serve_http_streaming(route.function, ConnectState::serving(), handler, refusal)
            .await
    } else {
        runtime::serve_http(route.function, ConnectState::serving(), handler, refusal).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http;
    use lambda_http::http::header::HOST;
    use subkv_core::runtime::ResponseTooLarge;
    use subkv_kv::limits::{MAX_READ_ENTRIES, MAX_VALUE_BYTES, MAX_WRITE_KEY_BYTES};
    use subkv_kv::model::versionstamp;

    fn request(path: &str, host: &str) -> Request {
        let mut r = Request::new(Body::Empty);
        *r.uri_mut() = http::Uri::try_from(path).unwrap();
        r.headers_mut()
            .insert(HOST, HeaderValue::from_str(host).unwrap());
        r
    }

    #[test]
    fn endpoints_are_relative_from_v2_and_absolute_for_v1() {
        let r = request("/databases/abc/connect", "api.example.com");
        assert_eq!(endpoint_url(&r, 3), "../abc");
        assert_eq!(endpoint_url(&r, 1), "http://api.example.com/databases/abc");
        let mut r = r;
        r.headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(endpoint_url(&r, 1), "https://api.example.com/databases/abc");
        let r = request("/prod/databases/abc/connect/", "h");
        assert_eq!(endpoint_url(&r, 2), "../../abc");
        // Resolving as the client does lands on the data path.
        let base = url::Url::parse("http://h:9000/prod/databases/abc/connect").unwrap();
        assert_eq!(
            base.join("../abc").unwrap().as_str(),
            "http://h:9000/prod/databases/abc"
        );
    }

    /// The body of a plain-text response (asserting its content type).
    fn plain_text(response: &Response<Body>) -> &str {
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let Body::Text(body) = response.body() else {
            panic!("text body")
        };
        body
    }

    #[test]
    fn errors_are_plain_text_with_their_status() {
        let response = error_response(&KvError::bad("too many checks"));
        assert_eq!(response.status(), 400);
        assert_eq!(plain_text(&response), "too many checks\n");
        let internal = error_response(&KvError::Internal("secret detail".into()));
        assert_eq!(internal.status(), 500);
        let Body::Text(body) = internal.body() else {
            panic!("text body")
        };
        assert!(!body.contains("secret"));
    }

    /// A read's answer: `ranges` ranges of `entries` entries each, with keys of
    /// `key` bytes and values of `value` bytes.
    fn answer(ranges: usize, entries: usize, key: usize, value: usize) -> pb::SnapshotReadOutput {
        let entry = |i: usize| pb::KvEntry {
            key: (0..key).map(|j| (i + j) as u8).collect(),
            value: vec![7; value],
            encoding: pb::ValueEncoding::VeBytes as i32,
            versionstamp: versionstamp(u64::MAX - i as u64).to_vec(),
        };
        pb::SnapshotReadOutput {
            ranges: (0..ranges)
                .map(|_| pb::ReadRangeOutput {
                    values: (0..entries).map(entry).collect(),
                })
                .collect(),
            read_disabled: false,
            read_is_strongly_consistent: true,
            status: pb::SnapshotReadStatus::SrSuccess as i32,
        }
    }

    /// The most entries of this size one read's answer holds.
    fn largest_read(key: usize, value: usize) -> usize {
        let fits = |n: usize| check_read_answer(&answer(1, n, key, value)).is_ok();
        let (mut lo, mut hi) = (0, MAX_READ_ENTRIES + 1);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if fits(mid) {
                lo = mid
            } else {
                hi = mid
            }
        }
        lo
    }

    #[test]
    fn the_largest_read_answered() {
        // The size checked is the exact size sent.
        let out = answer(3, 40, 30, 65536);
        assert_eq!(out.encoded_len(), out.encode_to_vec().len());
        // Deno's default batch of 100, at Deno's largest keys and values: 6.8 MB,
        // past a buffered Lambda response, within a streamed one.
        let hundred = answer(1, 100, MAX_WRITE_KEY_BYTES, MAX_VALUE_BYTES).encoded_len();
        assert_eq!(hundred, 6_760_909);
        assert!(check_read_answer(&answer(1, 100, MAX_WRITE_KEY_BYTES, MAX_VALUE_BYTES)).is_ok());
        // The largest read: 294 entries of the largest keys and values (303 with
        // short keys), split over ranges or not; Deno allows 1000 (67.6 MB).
        assert_eq!(largest_read(MAX_WRITE_KEY_BYTES, MAX_VALUE_BYTES), 294);
        assert_eq!(largest_read(20, MAX_VALUE_BYTES), 303);
        assert_eq!(largest_read(20, 1024), MAX_READ_ENTRIES);
        assert!(check_read_answer(&answer(3, 98, MAX_WRITE_KEY_BYTES, MAX_VALUE_BYTES)).is_ok());
        let err =
            check_read_answer(&answer(10, 100, MAX_WRITE_KEY_BYTES, MAX_VALUE_BYTES)).unwrap_err();
        assert_eq!(err.status(), 400);
        let message = err.to_string();
        assert!(
            message.starts_with("read too large: its 1000 entries take 67609"),
            "{message}"
        );
        assert!(
            message.contains("(the limit is 19922944 bytes per read"),
            "{message}"
        );
        // With the streamed response's head, the largest answer stays within
        // Lambda's limit on a streamed response.
        let response = protobuf(&answer(0, 0, 0, 0));
        assert!(
            runtime::streamed_head_bytes(response.headers()) + MAX_READ_RESPONSE_BYTES
                <= runtime::MAX_STREAMED_RESPONSE_BYTES
        );
    }

    #[test]
    fn a_response_too_large_for_lambda_is_a_plain_400_naming_the_limit() {
        let response = refusal(&Refused::TooLarge(ResponseTooLarge {
            mode: runtime::ResponseMode::Buffered,
            bytes: 8_742_890,
            limit: runtime::MAX_BUFFERED_RESPONSE_BYTES,
        }));
        assert_eq!(response.status(), 400);
        let body = plain_text(&response);
        assert!(
            body.contains("the limit is 6291456 bytes for a buffered response"),
            "{body}"
        );
    }

    #[test]
    fn a_request_around_the_distribution_is_a_plain_403() {
        // Deno's client shows a 4xx as an error and does not retry it.
        let response = refusal(&Refused::NotThroughEdge);
        assert_eq!(response.status(), 403);
        let body = plain_text(&response);
        assert!(body.contains("through the deployment's domain"), "{body}");
    }

    #[test]
    fn a_kv_u64_value_must_be_eight_bytes() {
        let write = |data: Vec<u8>| pb::AtomicWrite {
            mutations: vec![pb::Mutation {
                key: vec![2, b'k', 0],
                value: Some(pb::KvValue {
                    data,
                    encoding: pb::ValueEncoding::VeLe64 as i32,
                }),
                mutation_type: pb::MutationType::MSum as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(check_before_conversion(&write(vec![1; 8])).is_ok());
        for bad in [vec![], vec![1, 2], vec![0; 9]] {
            let err = check_before_conversion(&write(bad)).unwrap_err();
            assert_eq!(err.status().as_u16(), 400);
            assert!(err.to_string().contains("8 bytes"), "{err}");
        }
    }

    #[test]
    fn an_expiry_past_the_latest_instant_is_a_400_before_the_conversion_panics() {
        let write = |expire_at_ms: i64| pb::AtomicWrite {
            mutations: vec![pb::Mutation {
                key: vec![2, b'k', 0],
                value: Some(pb::KvValue {
                    data: vec![1],
                    encoding: pb::ValueEncoding::VeBytes as i32,
                }),
                mutation_type: pb::MutationType::MSet as i32,
                expire_at_ms,
                ..Default::default()
            }],
            ..Default::default()
        };
        for late in [10_i64.pow(16), MAX_EXPIRE_AT_MS + 1, i64::MAX] {
            let err = check_before_conversion(&write(late)).unwrap_err();
            assert_eq!(err.status().as_u16(), 400);
            assert!(
                err.to_string().contains(&MAX_EXPIRE_AT_MS.to_string()),
                "{err}"
            );
        }
        // What passes converts without panicking; an expiry before the epoch is
        // the conversion's own 400.
        for ok in [0, -1, 1, MAX_EXPIRE_AT_MS] {
            check_before_conversion(&write(ok)).unwrap();
            let converted: Result<denokv_proto::AtomicWrite, _> = write(ok).try_into();
            assert!(converted.is_ok(), "{ok}");
        }
        let converted: Result<denokv_proto::AtomicWrite, _> = write(-2).try_into();
        let Err(err) = converted else {
            panic!("an expiry before the epoch converts")
        };
        assert_eq!(KvError::from(err).status().as_u16(), 400);
    }
}
