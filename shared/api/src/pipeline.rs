//! The one request pipeline every management function runs: body limit, bearer
//! auth, path ids, access control from the route table, the handler, one log line.

use crate::error::{ApiError, ApiResult, Resource};
use crate::http::{error_response, parse_id, parse_json, Reply, MAX_BODY_BYTES};
use crate::state::ApiState;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use subkv_core::auth::{bearer_token, is_admin, token_sha256_hex, Caller};
use subkv_core::routes::{Access, Route};
use subkv_core::runtime::{self, Refused, RequestLog};
use uuid::Uuid;

/// One authenticated request, as a handler sees it.
pub struct Ctx {
    pub state: Arc<ApiState>,
    pub request: Request,
    pub caller: Caller,
    /// Path ids, parsed, by parameter name.
    ids: Vec<(&'static str, Uuid)>,
}

impl Ctx {
    /// A path id. Every `{...Id}` parameter of the route is parsed before the handler runs.
    pub fn id(&self, name: &str) -> ApiResult<Uuid> {
        self.ids
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, id)| *id)
            .ok_or_else(|| ApiError::Internal(format!("route has no path parameter {name}")))
    }

    /// The organization whose token made the request (Organization routes only).
    pub fn organization_id(&self) -> ApiResult<Uuid> {
        match self.caller {
            Caller::Organization {
                organization_id, ..
            } => Ok(organization_id),
            Caller::Admin => Err(ApiError::Forbidden(
                "this route needs an organization token, not the admin token",
            )),
        }
    }

    /// The body as `T`; with `empty_is_object`, an empty body reads as `{}`.
    pub fn json<T: DeserializeOwned>(&self, empty_is_object: bool) -> ApiResult<T> {
        parse_json(self.request.body().as_ref(), empty_is_object)
    }

    /// Query parameters, decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect()
    }

    /// The URL of this request without its query, for `Link` headers.
    pub fn base_url(&self) -> String {
        let path = self.request.uri().path();
        match runtime::origin(&self.request) {
            Some(origin) => format!("{origin}{path}"),
            None => path.to_string(),
        }
    }
}

async fn authenticate(state: &ApiState, request: &Request) -> ApiResult<Caller> {
    const MISSING: &str = "missing or invalid bearer token: send Authorization: Bearer <token>";
    let token = bearer_token(request.headers()).ok_or(ApiError::Unauthorized(MISSING))?;
    if is_admin(token, state.config.admin_token_sha256.as_ref()) {
        return Ok(Caller::Admin);
    }
    let record = state
        .control
        .token_by_hash(&token_sha256_hex(token))
        .await?
        .ok_or(ApiError::Unauthorized(MISSING))?;
    if record.expired(subkv_core::control::retired::now_ms()) {
        return Err(ApiError::Unauthorized(
            "this token has expired: ask for a new one",
        ));
    }
    subkv_core::control::note_token_used(state.control.as_ref(), &record).await;
    Ok(Caller::Organization {
        organization_id: record.organization_id,
        token_id: record.id,
        scope: record.scope(),
    })
}

/// Path parameters: from API Gateway (or the watch router) when it supplies them,
/// else by matching the route pattern against the path.
fn path_params(route: &Route, request: &Request) -> Vec<(&'static str, String)> {
    let given = request.path_parameters();
    let from_gateway: Vec<_> = route
        .parameters()
        .filter_map(|name| given.first(name).map(|v| (name, v.to_string())))
        .collect();
    if from_gateway.len() == route.parameters().count() {
        return from_gateway;
    }
    route
        .match_path(request.uri().path())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect()
}

/// The routes a limited token may call: reading its databases.
const LIMITED_TOKEN_ROUTES: &[&str] = &[
    subkv_core::routes::GET_DATABASE.function,
    subkv_core::routes::LIST_DATABASES.function,
];

fn check_access(route: &Route, caller: &Caller, ids: &[(&'static str, Uuid)]) -> ApiResult<()> {
    match (route.access, caller) {
        (Access::Admin, Caller::Organization { .. }) => {
            return Err(ApiError::Forbidden(
                "only the operator's admin token may do this",
            ))
        }
        (Access::Organization, Caller::Admin) => {
            return Err(ApiError::Forbidden(
                "this route needs an organization token, not the admin token",
            ))
        }
        _ => {}
    }
    // A token of another organization learns nothing: the same 404 as an unknown id.
    if let (
        Some((_, path_org)),
        Caller::Organization {
            organization_id, ..
        },
    ) = (ids.iter().find(|(n, _)| *n == "organizationId"), caller)
    {
        if path_org != organization_id {
            return Err(ApiError::not_found(Resource::Organization, path_org));
        }
    }
    // A limited token (some databases, or read only: issue 15 §2) may read its
    // databases and nothing else; another database is a 404, as for a stranger.
    if let Caller::Organization { scope, .. } = caller {
        if scope.is_limited() {
            if !LIMITED_TOKEN_ROUTES.contains(&route.function) {
                return Err(ApiError::Forbidden(
                    "this token is limited (to some databases, or to reading): it may only read its databases",
                ));
            }
            if let Some((_, db)) = ids.iter().find(|(n, _)| *n == "databaseId") {
                if !scope.allows(*db) {
                    return Err(ApiError::not_found(Resource::Database, db));
                }
            }
        }
    }
    Ok(())
}

/// Runs one request through the pipeline. Never fails: errors become their response.
pub async fn handle<F, Fut>(
    state: Arc<ApiState>,
    route: &'static Route,
    handler: &F,
    request: Request,
) -> Response<Body>
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = ApiResult<Reply>>,
{
    let started = Instant::now();
    let mut organization = None;
    let result = async {
        if request.body().len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        let caller = authenticate(&state, &request).await?;
        if let Caller::Organization {
            organization_id, ..
        } = caller
        {
            organization = Some(organization_id);
        }
        let params = path_params(route, &request);
        if params.len() != route.parameters().count() {
            return Err(ApiError::Internal(format!(
                "path {} does not match {}",
                request.uri().path(),
                route.path
            )));
        }
        let ids = params
            .iter()
            .map(|(name, value)| parse_id(name, value).map(|id| (*name, id)))
            .collect::<ApiResult<Vec<_>>>()?;
        check_access(route, &caller, &ids)?;
        handler(Ctx {
            state: state.clone(),
            request,
            caller,
            ids,
        })
        .await
    }
    .await;
    let mut log = RequestLog {
        function: route.function,
        status: 200,
        elapsed_us: started.elapsed().as_micros() as u64,
        organization,
        code: None,
        error: None,
    };
    match result {
        Ok(reply) => {
            log.emit();
            reply.into_response()
        }
        Err(err) => {
            let detail = error_chain(&err);
            log.status = err.status().as_u16();
            log.code = Some(err.code());
            log.error = (log.status >= 500).then_some(detail.as_str());
            log.emit();
            error_response(&err)
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The message of a request the origin check refuses (403 `forbidden`).
const NOT_THROUGH_EDGE: &str = "requests are served through the deployment's domain only";

/// The whole of a management function's `main`: its state built once, then every
/// request through [`handle`].
pub async fn serve<F, Fut>(route: &'static Route, handler: F) -> Result<(), lambda_http::Error>
where
    F: Fn(Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ApiResult<Reply>> + Send + 'static,
{
    let handler = Arc::new(handler);
    runtime::serve_http(
        route.function,
        ApiState::from_env(),
        move |state, request| {
            let handler = handler.clone();
            async move { handle(state, route, handler.as_ref(), request).await }
        },
        |refused| match refused {
            Refused::TooLarge(err) => error_response(&ApiError::ResponseTooLarge(err.clone())),
            Refused::NotThroughEdge => error_response(&ApiError::Forbidden(NOT_THROUGH_EDGE)),
        },
    )
    .await
}
