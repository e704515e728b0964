//! The request pipeline and handlers with the in-memory store: the parts the
//! local stack cannot show, such as the SSRF rules with the development setting
//! off and what is stored in place of the secret.

use lambda_http::http::Request as HttpRequest;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use subkv_api::handlers as api;
use subkv_api::state::ApiState;
use subkv_core::auth::{mint_token, token_sha256};
use subkv_core::config::Config;
use subkv_core::control::records::{now_rfc3339, BackupStatus, Organization, TokenRecord};
use subkv_core::control::{ControlTable, MemoryControl};
use subkv_core::routes;
use subkv_core::secrets::FakeSealer;
use uuid::Uuid;

struct Fixture {
    app: Arc<ApiState>,
    store: Arc<MemoryControl>,
    org: Uuid,
    token: String,
}

async fn fixture(allow_insecure: bool) -> Fixture {
    let store = Arc::new(MemoryControl::new());
    let config = Config {
        control_table: "unused".into(),
        kv_data_table: "unused".into(),
        admin_token_sha256: Some(token_sha256("admin")),
        backup_kms_key_id: Some("alias/test".into()),
        allow_insecure_endpoints: allow_insecure,
    };
    let (org, token) = seed_org(&store, "acme").await;
    let app = Arc::new(ApiState::new(config, store.clone(), Arc::new(FakeSealer)));
    Fixture {
        app,
        store,
        org,
        token,
    }
}

/// An organization named `name` and a token of it, in `store`: its id and the
/// token's plaintext.
async fn seed_org(store: &MemoryControl, name: &str) -> (Uuid, String) {
    let org = Organization {
        id: Uuid::new_v4(),
        name: name.into(),
        created_at: now_rfc3339(),
        limits: Default::default(),
    };
    let token = mint_token();
    let record = TokenRecord {
        id: Uuid::new_v4(),
        organization_id: org.id,
        token_sha256: token.sha256_hex.clone(),
        description: String::new(),
        created_at: now_rfc3339(),
        databases: None,
        access: Default::default(),
        expires_at: None,
        last_used_at: None,
    };
    store
        .create_organization(&org, &record)
        .await
        .expect("seed");
    (org.id, token.plaintext)
}

fn request(method: &str, path: &str, token: &str, body: Option<Value>) -> Request {
    HttpRequest::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("host", "api.example.com")
        .body(body.map_or(Body::Empty, |b| Body::from(b.to_string())))
        .expect("request")
}

async fn json_of(response: Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = serde_json::from_slice(response.body().as_ref()).expect("json body");
    (status, body)
}

async fn create_db(f: &Fixture) -> Uuid {
    let req = request(
        "POST",
        &format!("/v1/organizations/{}/databases", f.org),
        &f.token,
        Some(json!({})),
    );
    let (status, body) = json_of(
        subkv_api::pipeline::handle(
            f.app.clone(),
            &routes::CREATE_DATABASE,
            &api::databases::create,
            req,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().expect("id").parse().expect("uuid")
}

fn backup_body(endpoint: &str) -> Value {
    json!({
        "kind": "s3", "endpoint": endpoint, "bucketName": "bucket", "bucketRegion": "us-east-1",
        "accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "very-secret-key",
    })
}

async fn enable(f: &Fixture, db: Uuid, endpoint: &str) -> (u16, Value) {
    let req = request(
        "POST",
        &format!("/v1/databases/{db}/database_backups"),
        &f.token,
        Some(backup_body(endpoint)),
    );
    json_of(
        subkv_api::pipeline::handle(
            f.app.clone(),
            &routes::ENABLE_BACKUP,
            &api::backups::enable,
            req,
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn production_setting_refuses_internal_endpoints() {
    let f = fixture(false).await;
    let db = create_db(&f).await;
    for endpoint in [
        "http://s3.amazonaws.com",
        "https://169.254.169.254",
        "https://[fd00:ec2::254]",
        "https://127.0.0.1:4566",
        "https://localhost",
        "https://10.1.2.3",
        "https://minio",
    ] {
        let (status, body) = enable(&f, db, endpoint).await;
        assert_eq!(status, 400, "{endpoint}: {body}");
        assert_eq!(body["code"], "invalidRequestBody");
    }
    let (status, body) = enable(&f, db, "https://s3.us-east-1.amazonaws.com").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn development_setting_allows_the_local_emulator() {
    let f = fixture(true).await;
    let db = create_db(&f).await;
    let (status, body) = enable(&f, db, "http://127.0.0.1:4566").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_secret_is_stored_only_sealed_with_its_context() {
    let f = fixture(false).await;
    let db = create_db(&f).await;
    let (status, body) = enable(&f, db, "https://storage.googleapis.com").await;
    assert_eq!(status, 200, "{body}");
    let id: Uuid = body["id"].as_str().expect("id").parse().expect("uuid");
    let stored = f
        .store
        .get_backup(f.org, id)
        .await
        .expect("store")
        .expect("backup");
    let sealed = String::from_utf8_lossy(&stored.secret_access_key_ciphertext).to_string();
    assert!(!sealed.contains("very-secret-key"));
    // The fake sealer appends the context: the backup and database ids are bound in.
    assert!(sealed.contains(&id.to_string()) && sealed.contains(&db.to_string()));
}

#[tokio::test]
async fn path_parameters_are_found_behind_a_stage_prefix() {
    let f = fixture(false).await;
    let db = create_db(&f).await;
    let req = request("GET", &format!("/prod/v1/databases/{db}"), &f.token, None);
    let (status, body) = json_of(
        subkv_api::pipeline::handle(
            f.app.clone(),
            &routes::GET_DATABASE,
            &api::databases::get,
            req,
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], db.to_string());
}

#[tokio::test]
async fn list_links_are_absolute_with_the_forwarded_scheme() {
    let f = fixture(false).await;
    create_db(&f).await;
    let mut req = request(
        "GET",
        &format!("/v1/organizations/{}/databases?limit=1", f.org),
        &f.token,
        None,
    );
    req.headers_mut()
        .insert("x-forwarded-proto", "https".parse().expect("header"));
    let response = subkv_api::pipeline::handle(
        f.app.clone(),
        &routes::LIST_DATABASES,
        &api::databases::list,
        req,
    )
    .await;
    let link = response.headers()["link"]
        .to_str()
        .expect("link")
        .to_string();
    assert!(
        link.starts_with(&format!(
            "<https://api.example.com/v1/organizations/{}/databases?page=1&limit=1>; rel=\"first\"",
            f.org
        )),
        "{link}"
    );
}

#[tokio::test]
async fn binary_garbage_bodies_are_400s_not_500s() {
    // API Gateway hands non-UTF-8 bodies over base64-encoded; lambda_http decodes them
    // into bytes. (cargo lambda watch answers such requests itself with a 500 before
    // any function runs, so this is proven here rather than end to end.)
    let f = fixture(false).await;
    let db = create_db(&f).await;
    for body in [
        &b"\xff\xfe{"[..],
        b"*\x00\xc3\x28",
        b"{\"description\": \"\xc3\x28\"}",
    ] {
        let mut req = request("PATCH", &format!("/v1/databases/{db}"), &f.token, None);
        *req.body_mut() = Body::Binary(body.to_vec());
        let (status, reply) = json_of(
            subkv_api::pipeline::handle(
                f.app.clone(),
                &routes::UPDATE_DATABASE,
                &api::databases::update,
                req,
            )
            .await,
        )
        .await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["code"], "invalidRequestBody");
    }
}

/// A second organization and its token.
async fn other_org(f: &Fixture) -> String {
    seed_org(&f.store, "other").await.1
}

async fn retry(f: &Fixture, token: &str, id: &str) -> (u16, Value) {
    let req = request(
        "POST",
        &format!("/v1/database_backups/{id}/retry"),
        token,
        None,
    );
    json_of(
        subkv_api::pipeline::handle(
            f.app.clone(),
            &routes::RETRY_BACKUP,
            &api::backups::retry,
            req,
        )
        .await,
    )
    .await
}

/// An enabled backup of a new database.
async fn backup(f: &Fixture) -> Uuid {
    let db = create_db(f).await;
    let (status, body) = enable(f, db, "https://s3.us-east-1.amazonaws.com").await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().expect("id").parse().expect("uuid")
}

fn failed(message: &str) -> BackupStatus {
    BackupStatus::Failed {
        message: message.into(),
    }
}

#[tokio::test]
async fn a_failed_backup_without_its_differential_is_retried_as_pending() {
    let f = fixture(false).await;
    let id = backup(&f).await;
    let message = "PutObject refused by the store: InvalidAccessKeyId: m";
    assert!(f
        .store
        .set_engine_state(id, failed(message), Some("SlowDown"), false));

    let (status, body) = retry(&f, &f.token, &id.to_string()).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.to_string());
    assert_eq!(body["status"], json!({"code": "pending"}));
    let stored = f.store.get_backup(f.org, id).await.expect("store");
    let stored = stored.expect("backup");
    assert_eq!(stored.status, BackupStatus::Pending);
    assert_eq!(stored.last_error, None);
}

#[tokio::test]
async fn a_failed_backup_whose_differential_was_written_is_retried_as_active() {
    let f = fixture(false).await;
    let id = backup(&f).await;
    assert!(f
        .store
        .set_engine_state(id, failed("gave up"), Some("SlowDown"), true));

    let (status, body) = retry(&f, &f.token, &id.to_string()).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!({"code": "active"}));
    let stored = f.store.get_backup(f.org, id).await.expect("store");
    assert_eq!(stored.expect("backup").status, BackupStatus::Active);
    // Retried once: it is no longer failed.
    let (status, body) = retry(&f, &f.token, &id.to_string()).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn only_a_failed_backup_can_be_retried() {
    let f = fixture(false).await;
    let id = backup(&f).await;
    for (state, code) in [
        (BackupStatus::Pending, "pending"),
        (BackupStatus::Active, "active"),
    ] {
        assert!(f.store.set_engine_state(id, state.clone(), None, true));
        let (status, body) = retry(&f, &f.token, &id.to_string()).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["code"], "backupNotFailed");
        assert!(
            body["message"].as_str().expect("message").contains(code),
            "{body}"
        );
        let stored = f.store.get_backup(f.org, id).await.expect("store");
        assert_eq!(stored.expect("backup").status, state, "unchanged");
    }
}

#[tokio::test]
async fn retrying_an_unknown_or_foreign_backup_is_404() {
    let f = fixture(false).await;
    let id = backup(&f).await;
    assert!(f.store.set_engine_state(id, failed("m"), None, false));
    let stranger = other_org(&f).await;
    for (token, id) in [(&stranger, id), (&f.token, Uuid::new_v4())] {
        let (status, body) = retry(&f, token, &id.to_string()).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["code"], "databaseBackupNotFound");
    }
    let stored = f.store.get_backup(f.org, id).await.expect("store");
    assert_eq!(stored.expect("backup").status, failed("m"), "untouched");
    let (status, body) = retry(&f, &f.token, "not-a-uuid").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalidId");
    let (status, body) = retry(&f, "admin", &id.to_string()).await;
    assert_eq!(status, 403, "{body}");
}

async fn call<F, Fut>(
    f: &Fixture,
    route: &'static subkv_core::routes::Route,
    handler: &F,
    method: &str,
    path: &str,
    token: &str,
) -> (u16, Value)
where
    F: Fn(subkv_api::pipeline::Ctx) -> Fut,
    Fut: std::future::Future<Output = subkv_api::error::ApiResult<subkv_api::http::Reply>>,
{
    let req = request(method, path, token, None);
    json_of(subkv_api::pipeline::handle(f.app.clone(), route, handler, req).await).await
}

#[tokio::test]
async fn a_deleted_database_is_gone_with_its_backup_and_on_the_purge_list() {
    let f = fixture(false).await;
    let backup_id = backup(&f).await;
    let db = f
        .store
        .get_backup(f.org, backup_id)
        .await
        .unwrap()
        .expect("backup")
        .database_id;
    let path = format!("/v1/databases/{db}");
    // Another organization's token, and the admin's, cannot delete it.
    let other = other_org(&f).await;
    let (status, reply) = call(
        &f,
        &routes::DELETE_DATABASE,
        &api::databases::delete,
        "DELETE",
        &path,
        &other,
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (404, Some("databaseNotFound")),
        "{reply}"
    );
    let (status, _) = call(
        &f,
        &routes::DELETE_DATABASE,
        &api::databases::delete,
        "DELETE",
        &path,
        "admin",
    )
    .await;
    assert_eq!(status, 403);

    let (status, reply) = call(
        &f,
        &routes::DELETE_DATABASE,
        &api::databases::delete,
        "DELETE",
        &path,
        &f.token,
    )
    .await;
    assert_eq!((status, reply), (200, json!({})));
    let (status, reply) = call(
        &f,
        &routes::GET_DATABASE,
        &api::databases::get,
        "GET",
        &path,
        &f.token,
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (404, Some("databaseNotFound")),
        "{reply}"
    );
    assert!(f
        .store
        .get_backup(f.org, backup_id)
        .await
        .unwrap()
        .is_none());
    let purges = f.store.purges().await.unwrap();
    assert_eq!(
        purges.iter().map(|p| p.database_id).collect::<Vec<_>>(),
        vec![db]
    );
    // Deleting it again: 404, and no second purge.
    let (status, _) = call(
        &f,
        &routes::DELETE_DATABASE,
        &api::databases::delete,
        "DELETE",
        &path,
        &f.token,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(f.store.purges().await.unwrap().len(), 1);
}

/// Creates a token of the fixture's organization with `body`; (status, reply).
async fn create_token(f: &Fixture, body: Value) -> (u16, Value) {
    let req = request(
        "POST",
        &format!("/v1/organizations/{}/tokens", f.org),
        &f.token,
        Some(body),
    );
    json_of(
        subkv_api::pipeline::handle(
            f.app.clone(),
            &routes::CREATE_TOKEN,
            &api::tokens::create,
            req,
        )
        .await,
    )
    .await
}

#[tokio::test]
async fn a_limited_token_reads_its_databases_and_nothing_else() {
    let f = fixture(false).await;
    let (mine, other) = (create_db(&f).await, create_db(&f).await);
    let (status, created) = create_token(
        &f,
        json!({"databases": [mine], "access": "read", "description": "ro"}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["access"], "read");
    assert_eq!(created["databases"], json!([mine]));
    assert_eq!(created["expiresAt"], Value::Null);
    let token = created["token"].as_str().unwrap().to_string();

    let get = |db: Uuid| {
        let path = format!("/v1/databases/{db}");
        let (f, token) = (&f, token.clone());
        async move {
            call(
                f,
                &routes::GET_DATABASE,
                &api::databases::get,
                "GET",
                &path,
                &token,
            )
            .await
        }
    };
    assert_eq!(get(mine).await.0, 200);
    let (status, reply) = get(other).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (404, Some("databaseNotFound"))
    );
    let list = format!("/v1/organizations/{}/databases", f.org);
    let (status, listed) = call(
        &f,
        &routes::LIST_DATABASES,
        &api::databases::list,
        "GET",
        &list,
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        listed
            .as_array()
            .map(|a| a.iter().map(|d| d["id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(mine)])
    );
    // Nothing beyond reading its databases.
    let path = format!("/v1/databases/{mine}");
    let (status, reply) = call(
        &f,
        &routes::DELETE_DATABASE,
        &api::databases::delete,
        "DELETE",
        &path,
        &token,
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (403, Some("forbidden")),
        "{reply}"
    );
    let tokens = format!("/v1/organizations/{}/tokens", f.org);
    let (status, _) = call(
        &f,
        &routes::LIST_TOKENS,
        &api::tokens::list,
        "GET",
        &tokens,
        &token,
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn token_limits_are_checked_when_it_is_made() {
    let f = fixture(false).await;
    let stranger = seed_org(&f.store, "stranger").await;
    let foreign = {
        let db = subkv_core::control::records::KvDatabase {
            id: Uuid::new_v4(),
            organization_id: stranger.0,
            description: String::new(),
            created_at: now_rfc3339(),
            updated_at: now_rfc3339(),
            restore: None,
        };
        f.store.create_database(&db).await.unwrap();
        db.id
    };
    for (body, needle) in [
        (
            json!({"expiresAt": "2020-01-01T00:00:00Z"}),
            "not in the future",
        ),
        (json!({"expiresAt": "tomorrow"}), "RFC 3339"),
        (json!({"databases": []}), "1 to 100"),
        (
            json!({"databases": [foreign]}),
            "not a database of this organization",
        ),
        (json!({"access": "admin"}), "access"),
    ] {
        let (status, reply) = create_token(&f, body.clone()).await;
        assert_eq!(
            (status, reply["code"].as_str()),
            (400, Some("invalidRequestBody")),
            "{body}: {reply}"
        );
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{body}: {reply}"
        );
    }
    // An offset is accepted and stored in UTC.
    let (status, created) =
        create_token(&f, json!({"expiresAt": "2099-01-01T02:00:00+02:00"})).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["expiresAt"], "2099-01-01T00:00:00.000Z");
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let f = fixture(false).await;
    let token = mint_token();
    let record = TokenRecord {
        id: Uuid::new_v4(),
        organization_id: f.org,
        token_sha256: token.sha256_hex.clone(),
        description: String::new(),
        created_at: now_rfc3339(),
        databases: None,
        access: Default::default(),
        expires_at: Some("2020-01-01T00:00:00.000Z".into()),
        last_used_at: None,
    };
    assert!(f.store.put_token(&record).await.unwrap());
    let list = format!("/v1/organizations/{}/databases", f.org);
    let (status, reply) = call(
        &f,
        &routes::LIST_DATABASES,
        &api::databases::list,
        "GET",
        &list,
        &token.plaintext,
    )
    .await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (401, Some("unauthorized")),
        "{reply}"
    );
    assert!(reply["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn an_organization_with_databases_is_deleted_only_with_force() {
    let f = fixture(false).await;
    let db = create_db(&f).await;
    let path = format!("/v1/organizations/{}", f.org);
    let delete = |path: String| {
        let f = &f;
        async move {
            call(
                f,
                &routes::DELETE_ORGANIZATION,
                &api::organizations::delete,
                "DELETE",
                &path,
                "admin",
            )
            .await
        }
    };
    let (status, reply) = delete(path.clone()).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (409, Some("organizationHasDatabases")),
        "{reply}"
    );
    assert!(
        reply["message"].as_str().unwrap().contains("1 database"),
        "{reply}"
    );
    let (status, reply) = delete(format!("{path}?force=maybe")).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (400, Some("invalidQueryParameter")),
        "{reply}"
    );
    // Its own token cannot.
    let (status, _) = call(
        &f,
        &routes::DELETE_ORGANIZATION,
        &api::organizations::delete,
        "DELETE",
        &path,
        &f.token,
    )
    .await;
    assert_eq!(status, 403);

    let (status, reply) = delete(format!("{path}?force=true")).await;
    assert_eq!((status, reply), (200, json!({})));
    assert!(f.store.get_organization(f.org).await.unwrap().is_none());
    assert!(f.store.list_tokens(f.org).await.unwrap().is_empty());
    assert!(f.store.get_database(f.org, db).await.unwrap().is_none());
    assert_eq!(f.store.purges().await.unwrap().len(), 1);
    // Its token is gone with it; deleting again is a 404.
    let list = format!("/v1/organizations/{}/databases", f.org);
    let (status, _) = call(
        &f,
        &routes::LIST_DATABASES,
        &api::databases::list,
        "GET",
        &list,
        &f.token,
    )
    .await;
    assert_eq!(status, 401);
    let (status, reply) = delete(path).await;
    assert_eq!(
        (status, reply["code"].as_str()),
        (404, Some("organizationNotFound"))
    );
}

#[tokio::test]
async fn a_token_records_its_last_use_to_the_hour() {
    let f = fixture(false).await;
    let listed = |f: &Fixture| {
        let req = request(
            "GET",
            &format!("/v1/organizations/{}/tokens", f.org),
            "admin",
            None,
        );
        let app = f.app.clone();
        async move {
            let (status, body) = json_of(
                subkv_api::pipeline::handle(app, &routes::LIST_TOKENS, &api::tokens::list, req)
                    .await,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body[0].clone()
        }
    };
    // The admin's requests use no token: never used yet.
    assert_eq!(listed(&f).await["lastUsedAt"], Value::Null);
    create_db(&f).await;
    let first = listed(&f).await["lastUsedAt"].clone();
    let at = first.as_str().expect("lastUsedAt after a use");
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    // Within the hour, another use writes nothing.
    create_db(&f).await;
    assert_eq!(listed(&f).await["lastUsedAt"], first);
}
