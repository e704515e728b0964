//! The management API over HTTP, against the local stack: every route, every
//! error class, tenant isolation, and the concurrent-enable race.

use reqwest::Method;
use serde_json::{json, Value};
use subkv_e2e::*;

// ---------------------------------------------------------------- organizations

#[tokio::test]
async fn create_organization_returns_the_token_once_and_it_works() {
    let reply = post(
        "/v1/organizations",
        &admin_token(),
        json!({"name": "Acme Inc."}),
    )
    .await;
    let body = reply.assert_ok();
    assert!(is_uuid(&body["id"]));
    assert!(is_uuid(&body["tokenId"]));
    assert_eq!(body["name"], "Acme Inc.");
    assert!(body["createdAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    let token = body["token"].as_str().expect("token");
    assert!(
        token.starts_with("skv_") && token.len() >= 4 + 22,
        "{token}"
    );
    // The token opens the organization's routes.
    let org_id = body["id"].as_str().expect("id");
    get(&format!("/v1/organizations/{org_id}/databases"), token)
        .await
        .assert_ok();
}

#[tokio::test]
async fn create_organization_needs_the_admin_token() {
    let path = "/v1/organizations";
    let body = Some(json!({"name": "x"}));
    send(Method::POST, path, None, body.clone())
        .await
        .assert_error(401, "unauthorized");
    send(
        Method::POST,
        path,
        Some("skv_not-a-real-token"),
        body.clone(),
    )
    .await
    .assert_error(401, "unauthorized");
    let org = create_org("tenant").await;
    send(Method::POST, path, Some(&org.token), body)
        .await
        .assert_error(403, "forbidden");
    // A 401 tells the client how to authenticate.
    let reply = send(Method::POST, path, None, None).await;
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn create_organization_rejects_bad_bodies() {
    let admin = admin_token();
    for body in [
        "",
        "{",
        "[]",
        "{}",
        r#"{"name": ""}"#,
        r#"{"name": 5}"#,
        r#"{"name": "a", "extra": true}"#,
    ] {
        send_raw(
            Method::POST,
            "/v1/organizations",
            Some(&admin),
            Some(body.into()),
        )
        .await
        .assert_error(400, "invalidRequestBody");
    }
    let long = "n".repeat(201);
    post("/v1/organizations", &admin, json!({ "name": long }))
        .await
        .assert_error(400, "invalidRequestBody");
}

#[tokio::test]
async fn the_admin_lists_and_reads_organizations_and_nobody_else_may() {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let a = create_org(&format!("Listed A {tag}")).await;
    let b = create_org(&format!("listed b {tag}")).await;
    // Other tests create organizations meanwhile: filter by this test's tag.
    let listed = get(
        &format!("/v1/organizations?q={}", &tag[..12].to_uppercase()),
        &admin_token(),
    )
    .await;
    let page = listed.assert_ok().as_array().expect("a list").clone();
    let ids: Vec<&str> = page.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [a.id.as_str(), b.id.as_str()],
        "oldest first: {page:?}"
    );
    for org in &page {
        let mut keys: Vec<&str> = org
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["createdAt", "id", "name"], "{org}");
    }
    assert!(!listed.text.contains(&a.token) && !listed.text.contains(&b.token));
    let newest = get(
        &format!("/v1/organizations?q={tag}&order=desc&limit=1"),
        &admin_token(),
    )
    .await;
    assert_eq!(newest.assert_ok()[0]["id"], b.id.as_str());
    let link = newest
        .headers
        .get("link")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        link.contains("page=2") && link.contains("rel=\"next\""),
        "{link}"
    );
    // By id, as created.
    let one = get(&format!("/v1/organizations/{}", a.id), &admin_token()).await;
    assert_eq!(one.assert_ok()["name"], format!("Listed A {tag}"));
    assert_eq!(one.assert_ok()["id"], a.id.as_str());
    // Admin only; unknown and malformed ids.
    get("/v1/organizations", &a.token)
        .await
        .assert_error(403, "forbidden");
    get(&format!("/v1/organizations/{}", a.id), &a.token)
        .await
        .assert_error(403, "forbidden");
    get(
        &format!("/v1/organizations/{}", unknown_id()),
        &admin_token(),
    )
    .await
    .assert_error(404, "organizationNotFound");
    get("/v1/organizations/not-a-uuid", &admin_token())
        .await
        .assert_error(400, "invalidId");
    get("/v1/organizations?limit=101", &admin_token())
        .await
        .assert_error(400, "invalidQueryParameter");
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn tokens_can_be_minted_and_revoked_by_admin_or_the_organization() {
    let org = create_org("tokens").await;
    let path = format!("/v1/organizations/{}/tokens", org.id);
    let by_admin = post(&path, &admin_token(), json!({"description": "ci"})).await;
    let minted = by_admin.assert_ok().clone();
    assert_eq!(minted["organizationId"], org.id.as_str());
    assert_eq!(minted["description"], "ci");
    let second = minted["token"].as_str().expect("token").to_string();
    // The organization's own token may mint too, with no body at all.
    let third = send(Method::POST, &path, Some(&org.token), None).await;
    let third_token = third.assert_ok()["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_ne!(second, third_token);
    let list = format!("/v1/organizations/{}/databases", org.id);
    get(&list, &second).await.assert_ok();

    // Revoking by id shuts that token out at once; the others keep working.
    let revoke = format!("{path}/{}", minted["id"].as_str().expect("id"));
    let reply = delete(&revoke, &org.token).await;
    assert_eq!(reply.assert_ok(), &json!({}));
    get(&list, &second).await.assert_error(401, "unauthorized");
    get(&list, &third_token).await.assert_ok();
    delete(&revoke, &org.token)
        .await
        .assert_error(404, "tokenNotFound");

    // The admin may revoke the first token.
    delete(&format!("{path}/{}", org.token_id), &admin_token())
        .await
        .assert_ok();
    get(&list, &org.token)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn token_routes_check_ids_and_organizations() {
    let a = create_org("a").await;
    let b = create_org("b").await;
    // Another organization's token: the organization does not exist for it.
    post(
        &format!("/v1/organizations/{}/tokens", a.id),
        &b.token,
        json!({}),
    )
    .await
    .assert_error(404, "organizationNotFound");
    delete(
        &format!("/v1/organizations/{}/tokens/{}", a.id, a.token_id),
        &b.token,
    )
    .await
    .assert_error(404, "organizationNotFound");
    // A's token still works after B's attempt.
    get(&format!("/v1/organizations/{}/databases", a.id), &a.token)
        .await
        .assert_ok();
    // The admin naming an unknown organization.
    let unknown = unknown_id();
    post(
        &format!("/v1/organizations/{unknown}/tokens"),
        &admin_token(),
        json!({}),
    )
    .await
    .assert_error(404, "organizationNotFound");
    delete(
        &format!("/v1/organizations/{unknown}/tokens/{}", unknown_id()),
        &admin_token(),
    )
    .await
    .assert_error(404, "organizationNotFound");
    // Malformed ids.
    post(
        "/v1/organizations/not-a-uuid/tokens",
        &admin_token(),
        json!({}),
    )
    .await
    .assert_error(400, "invalidId");
    delete(&format!("/v1/organizations/{}/tokens/123", a.id), &a.token)
        .await
        .assert_error(400, "invalidId");
    post(
        &format!("/v1/organizations/{}/tokens", a.id),
        &a.token,
        json!({"description": 7}),
    )
    .await
    .assert_error(400, "invalidRequestBody");
}

#[tokio::test]
async fn tokens_are_listed_without_secrets_paged_and_only_to_their_organization() {
    let org = create_org("token-list").await;
    let path = format!("/v1/organizations/{}/tokens", org.id);
    let mut secrets = vec![org.token.clone()];
    for description in ["ci", "deploy"] {
        let minted = post(&path, &org.token, json!({ "description": description })).await;
        secrets.push(minted.assert_ok()["token"].as_str().unwrap().to_string());
    }
    let listed = get(&path, &org.token).await;
    let page = listed.assert_ok().as_array().expect("a list").clone();
    assert_eq!(page.len(), 3, "{page:?}");
    assert_eq!(page[0]["id"], org.token_id.as_str(), "oldest first");
    let descriptions: Vec<&str> = page
        .iter()
        .map(|t| t["description"].as_str().unwrap())
        .collect();
    assert_eq!(descriptions[1..], ["ci", "deploy"]);
    for token in &page {
        let mut keys: Vec<&str> = token
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "access",
                "createdAt",
                "databases",
                "description",
                "expiresAt",
                "id",
                "lastUsedAt",
                "organizationId"
            ],
            "{token}"
        );
        // Unlimited, never expiring: what a token made without limits is.
        assert_eq!(
            (&token["access"], &token["databases"], &token["expiresAt"]),
            (&json!("readWrite"), &Value::Null, &Value::Null),
            "{token}"
        );
    }
    // Last used, to the hour: the token that made these requests, not the others.
    let used = page[0]["lastUsedAt"]
        .as_str()
        .expect("the first token was used");
    assert!(used.ends_with('Z') && used.len() == 24, "{used}");
    assert_eq!(page[1]["lastUsedAt"], Value::Null);
    assert_eq!(page[2]["lastUsedAt"], Value::Null);
    for secret in &secrets {
        assert!(!listed.text.contains(secret.as_str()), "a secret is listed");
        let hash = hex::encode(subkv_core::auth::token_sha256(secret));
        assert!(!listed.text.contains(&hash), "a token's hash is listed");
    }
    // Pages and links as for databases; the admin may list any organization's.
    let first = get(&format!("{path}?limit=2&order=desc"), &admin_token()).await;
    assert_eq!(first.assert_ok().as_array().unwrap().len(), 2);
    assert_eq!(first.assert_ok()[0]["description"], "deploy");
    let link = first
        .headers
        .get("link")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        link.contains("page=2") && link.contains("rel=\"next\""),
        "{link}"
    );
    // A revoked token is no longer listed.
    let revoked = page[1]["id"].as_str().unwrap();
    delete(&format!("{path}/{revoked}"), &org.token)
        .await
        .assert_ok();
    let after = get(&path, &org.token).await;
    let ids: Vec<&str> = after
        .assert_ok()
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(!ids.contains(&revoked));
    // Another organization's token, an unknown organization, bad input.
    let other = create_org("token-list-other").await;
    get(&path, &other.token)
        .await
        .assert_error(404, "organizationNotFound");
    get(
        &format!("/v1/organizations/{}/tokens", unknown_id()),
        &admin_token(),
    )
    .await
    .assert_error(404, "organizationNotFound");
    get(&format!("{path}?limit=0"), &org.token)
        .await
        .assert_error(400, "invalidQueryParameter");
    get("/v1/organizations/not-a-uuid/tokens", &org.token)
        .await
        .assert_error(400, "invalidId");
}

// ---------------------------------------------------------------- databases

#[tokio::test]
async fn databases_create_get_and_update() {
    let org = create_org("dbs").await;
    let create = format!("/v1/organizations/{}/databases", org.id);

    let db = post(&create, &org.token, json!({"description": "my database"}))
        .await
        .assert_ok()
        .clone();
    assert!(is_uuid(&db["id"]));
    assert_eq!(db["organizationId"], org.id.as_str());
    assert_eq!(db["description"], "my database");
    assert_eq!(db["createdAt"], db["updatedAt"]);
    assert_eq!(db.as_object().map(|o| o.len()), Some(5), "{db}");

    // No body, an empty object and null all mean "".
    for body in [None, Some("{}"), Some(r#"{"description": null}"#)] {
        let reply = send_raw(
            Method::POST,
            &create,
            Some(&org.token),
            body.map(Into::into),
        )
        .await;
        assert_eq!(reply.assert_ok()["description"], "", "{body:?}");
    }

    let path = format!("/v1/databases/{}", db["id"].as_str().expect("id"));
    assert_eq!(get(&path, &org.token).await.assert_ok(), &db);

    // PATCH with null or without the field leaves it unchanged.
    for body in [json!({"description": null}), json!({})] {
        let same = patch(&path, &org.token, body).await;
        assert_eq!(same.assert_ok(), &db);
    }
    let updated = patch(&path, &org.token, json!({"description": "renamed"}))
        .await
        .assert_ok()
        .clone();
    assert_eq!(updated["description"], "renamed");
    assert_eq!(updated["createdAt"], db["createdAt"]);
    assert!(updated["updatedAt"].as_str() >= db["updatedAt"].as_str());
    assert_eq!(get(&path, &org.token).await.assert_ok(), &updated);

    // A description of exactly 1000 characters is fine, 1001 is not.
    let max = "é".repeat(1000);
    patch(&path, &org.token, json!({ "description": max }))
        .await
        .assert_ok();
    patch(
        &path,
        &org.token,
        json!({ "description": "d".repeat(1001) }),
    )
    .await
    .assert_error(400, "invalidRequestBody");
}

#[tokio::test]
async fn database_routes_reject_bad_input() {
    let org = create_org("bad-input").await;
    let create = format!("/v1/organizations/{}/databases", org.id);
    for body in [
        "{",
        "not json",
        r#"{"description": 1}"#,
        r#"{"description": ["a"]}"#,
        r#"{"description": "a", "name": "b"}"#,
        r#"{"description": "a"} trailing"#,
    ] {
        send_raw(Method::POST, &create, Some(&org.token), Some(body.into()))
            .await
            .assert_error(400, "invalidRequestBody");
    }
    post(
        &create,
        &org.token,
        json!({"description": "x".repeat(1001)}),
    )
    .await
    .assert_error(400, "invalidRequestBody");
    // Bodies over 64 KiB are refused before parsing.
    let huge = format!(r#"{{"description": "{}"}}"#, "x".repeat(70 * 1024));
    send_raw(Method::POST, &create, Some(&org.token), Some(huge))
        .await
        .assert_error(413, "payloadTooLarge");

    for path in [
        "/v1/databases/nope",
        "/v1/databases/00000000-0000-0000-0000-00000000000",
    ] {
        get(path, &org.token).await.assert_error(400, "invalidId");
    }
    get("/v1/organizations/xyz/databases", &org.token)
        .await
        .assert_error(400, "invalidId");
    let unknown = unknown_id();
    get(&format!("/v1/databases/{unknown}"), &org.token)
        .await
        .assert_error(404, "databaseNotFound");
    patch(
        &format!("/v1/databases/{unknown}"),
        &org.token,
        json!({"description": "x"}),
    )
    .await
    .assert_error(404, "databaseNotFound");
    // Missing or wrong token on every database route.
    for (method, path) in [
        (Method::POST, create.clone()),
        (Method::GET, create.clone()),
        (Method::GET, format!("/v1/databases/{unknown}")),
        (Method::PATCH, format!("/v1/databases/{unknown}")),
    ] {
        send(method.clone(), &path, None, None)
            .await
            .assert_error(401, "unauthorized");
        send(method.clone(), &path, Some("Bearer-garbage"), None)
            .await
            .assert_error(401, "unauthorized");
        // The admin token is not an organization token.
        send(method, &path, Some(&admin_token()), None)
            .await
            .assert_error(403, "forbidden");
    }
}

fn link_relations(link: &str) -> Vec<(String, String)> {
    link.split(", ")
        .map(|part| {
            let (url, rel) = part.split_once("; ").expect("link part");
            let url = url.trim_start_matches('<').trim_end_matches('>');
            let rel = rel.trim_start_matches("rel=\"").trim_end_matches('"');
            (rel.to_string(), url.to_string())
        })
        .collect()
}

fn page_of(url: &str) -> String {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn list_databases_pages_sorts_filters_and_links() {
    let org = create_org("lists").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create_db(&org, &format!("db {i}")).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let base = format!("/v1/organizations/{}/databases", org.id);

    // Default: all five, oldest first.
    let all = get(&base, &org.token).await;
    let listed: Vec<String> = all
        .assert_ok()
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(listed, ids);

    // Page 2 of size 2, newest first.
    let reply = get(
        &format!("{base}?page=2&limit=2&sort=created_at&order=desc"),
        &org.token,
    )
    .await;
    let page: Vec<String> = reply
        .assert_ok()
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(page, vec![ids[2].clone(), ids[1].clone()]);
    let link = reply.headers["link"].to_str().expect("link header");
    let rels = link_relations(link);
    let names: Vec<&str> = rels.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(names, ["first", "prev", "next", "last"], "{link}");
    let pages: Vec<String> = rels.iter().map(|(_, u)| page_of(u)).collect();
    assert_eq!(pages, ["1", "1", "3", "3"], "{link}");
    assert!(
        rels.iter()
            .all(|(_, u)| u.contains("limit=2") && u.contains("order=desc") && u.contains(&base)),
        "{link}"
    );

    // Following `next` gives the last page.
    let next = &rels[2].1;
    let path = next.split_once(&api_url()).map(|(_, p)| p).unwrap_or(next);
    let last = get(path, &org.token).await;
    assert_eq!(last.assert_ok().as_array().map(Vec::len), Some(1));
    assert_eq!(last.json[0]["id"], ids[0].as_str());

    // First page: no prev.
    let first = get(&format!("{base}?limit=2"), &org.token).await;
    let names: Vec<String> = link_relations(first.headers["link"].to_str().expect("link"))
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(names, ["first", "next", "last"]);

    // q filters by database id.
    let needle = &ids[3][..13];
    let found = get(&format!("{base}?q={needle}"), &org.token).await;
    let found_ids: Vec<&str> = found
        .assert_ok()
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert!(found_ids.contains(&ids[3].as_str()), "{found_ids:?}");
    assert!(found_ids.len() < ids.len());
    let none = get(&format!("{base}?q=zzzz"), &org.token).await;
    assert_eq!(none.assert_ok(), &json!([]));

    for bad in [
        "page=0",
        "page=x",
        "limit=0",
        "limit=101",
        "sort=name",
        "order=sideways",
    ] {
        get(&format!("{base}?{bad}"), &org.token)
            .await
            .assert_error(400, "invalidQueryParameter");
    }
}

// ---------------------------------------------------------------- backups

#[tokio::test]
async fn backup_lifecycle_enable_get_list_delete_enable_again() {
    let org = create_org("backups").await;
    let db = create_db(&org, "backed up").await;
    let db_id = db["id"].as_str().expect("id");
    let backups = format!("/v1/databases/{db_id}/database_backups");
    assert_eq!(get(&backups, &org.token).await.assert_ok(), &json!([]));

    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let enabled = post(&backups, &org.token, backup_body(secret)).await;
    let id = enabled.assert_ok()["id"].as_str().expect("id").to_string();
    assert_eq!(enabled.json.as_object().map(|o| o.len()), Some(1));

    let one = format!("/v1/database_backups/{id}");
    let backup = get(&one, &org.token).await;
    assert!(
        !backup.text.contains(secret) && !backup.text.contains("secretAccessKey"),
        "{}",
        backup.text
    );
    let b = backup.assert_ok();
    assert_eq!(b["id"], id.as_str());
    assert_eq!(b["kind"], "s3");
    assert_eq!(b["endpoint"], "https://storage.googleapis.com");
    assert_eq!(b["bucketName"], "test-kv-backup");
    assert_eq!(b["bucketRegion"], "us-central1");
    assert_eq!(b["accessKeyId"], "GOOG1EXAMPLEACCESSKEY");
    assert_eq!(b["prefix"], "backup/");
    // The engine may already have begun (its catch-up runs every 2 s here): the
    // store is unreachable from the local stack, so it stays pending, perhaps
    // with its progress and the error so far.
    assert_eq!(b["status"]["code"], "pending", "{}", b["status"]);
    for field in b["status"].as_object().expect("status").keys() {
        assert!(
            ["code", "lastError", "snapshotChunks"].contains(&field.as_str()),
            "{}",
            b["status"]
        );
    }

    let list = get(&backups, &org.token).await;
    assert!(!list.text.contains(secret));
    // The same backup; its status may have moved on meanwhile (the engine's
    // catch-up may have begun its snapshot: `snapshotChunks`).
    let without_status = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().expect("a backup").remove("status");
        v
    };
    let listed = list.assert_ok().as_array().expect("a list").clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(without_status(&listed[0]), without_status(b));
    assert_eq!(listed[0]["status"]["code"], "pending");

    // Only one backup per database.
    post(&backups, &org.token, backup_body("another-secret"))
        .await
        .assert_error(409, "backupAlreadyEnabled");

    assert_eq!(delete(&one, &org.token).await.assert_ok(), &json!({}));
    get(&one, &org.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    delete(&one, &org.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    assert_eq!(get(&backups, &org.token).await.assert_ok(), &json!([]));

    // Disabled: the database can enable a new one; prefix defaults to "".
    let mut body = backup_body("third-secret");
    body.as_object_mut().expect("object").remove("prefix");
    let again = post(&backups, &org.token, body).await;
    let new_id = again.assert_ok()["id"].as_str().expect("id").to_string();
    assert_ne!(new_id, id);
    let listed = get(&backups, &org.token).await;
    assert_eq!(listed.assert_ok()[0]["prefix"], "");

    // The secret never reaches a log line either.
    let log = std::fs::read_to_string(api_log_path()).expect("api log");
    assert!(
        !log.contains(secret),
        "the secret access key appears in the function logs"
    );
}

#[tokio::test]
async fn enable_backup_validates_every_field() {
    let org = create_org("validation").await;
    let db = create_db(&org, "").await;
    let backups = format!(
        "/v1/databases/{}/database_backups",
        db["id"].as_str().expect("id")
    );
    let with = |field: &str, value: Value| {
        let mut body = backup_body("s3cr3t-value");
        body[field] = value;
        body
    };
    let without = |field: &str| {
        let mut body = backup_body("s3cr3t-value");
        body.as_object_mut().expect("object").remove(field);
        body
    };
    let cases = vec![
        with("kind", json!("gcs")),
        with("kind", json!(1)),
        with("endpoint", json!("ftp://storage.googleapis.com")),
        with(
            "endpoint",
            json!("https://user:pass@storage.googleapis.com"),
        ),
        with("endpoint", json!("https://storage.googleapis.com/path")),
        with("endpoint", json!("not a url")),
        with("bucketName", json!("Bad_Bucket")),
        with("bucketName", json!("ab")),
        with("bucketRegion", json!("US EAST")),
        with("accessKeyId", json!("")),
        with("secretAccessKey", json!("")),
        with("prefix", json!("/absolute")),
        with("prefix", json!("a/../b")),
        with("extra", json!("field")),
        without("kind"),
        without("endpoint"),
        without("bucketName"),
        without("bucketRegion"),
        without("accessKeyId"),
        without("secretAccessKey"),
        json!([]),
    ];
    for body in cases {
        let reply = post(&backups, &org.token, body.clone()).await;
        reply.assert_error(400, "invalidRequestBody");
        assert!(!reply.text.contains("s3cr3t-value"), "{}", reply.text);
    }
    // A secret of the wrong type is not echoed back.
    let reply = post(
        &backups,
        &org.token,
        with("secretAccessKey", json!(918273645)),
    )
    .await;
    reply.assert_error(400, "invalidRequestBody");
    assert!(!reply.text.contains("918273645"), "{}", reply.text);
    // Nothing was enabled by any of these.
    assert_eq!(get(&backups, &org.token).await.assert_ok(), &json!([]));
}

#[tokio::test]
async fn backup_routes_check_ids_and_tokens() {
    let org = create_org("backup-ids").await;
    let unknown = unknown_id();
    post(
        &format!("/v1/databases/{unknown}/database_backups"),
        &org.token,
        backup_body("x"),
    )
    .await
    .assert_error(404, "databaseNotFound");
    get(
        &format!("/v1/databases/{unknown}/database_backups"),
        &org.token,
    )
    .await
    .assert_error(404, "databaseNotFound");
    get(&format!("/v1/database_backups/{unknown}"), &org.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    delete(&format!("/v1/database_backups/{unknown}"), &org.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    for (method, path) in [
        (Method::POST, "/v1/databases/x/database_backups"),
        (Method::GET, "/v1/databases/x/database_backups"),
        (Method::GET, "/v1/database_backups/x"),
        (Method::DELETE, "/v1/database_backups/x"),
    ] {
        send(
            method.clone(),
            path,
            Some(&org.token),
            Some(backup_body("x")),
        )
        .await
        .assert_error(400, "invalidId");
        send(method, path, None, None)
            .await
            .assert_error(401, "unauthorized");
    }
}

// ---------------------------------------------------------------- isolation

#[tokio::test]
async fn another_organization_sees_nothing() {
    let a = create_org("tenant-a").await;
    let b = create_org("tenant-b").await;
    let db = create_db(&a, "a's data").await;
    let db_id = db["id"].as_str().expect("id");
    let backup = post(
        &format!("/v1/databases/{db_id}/database_backups"),
        &a.token,
        backup_body("a-secret"),
    )
    .await
    .assert_ok()["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Every id of A answers B exactly like an id that does not exist.
    get(&format!("/v1/databases/{db_id}"), &b.token)
        .await
        .assert_error(404, "databaseNotFound");
    patch(
        &format!("/v1/databases/{db_id}"),
        &b.token,
        json!({"description": "pwned"}),
    )
    .await
    .assert_error(404, "databaseNotFound");
    get(&format!("/v1/databases/{db_id}/database_backups"), &b.token)
        .await
        .assert_error(404, "databaseNotFound");
    post(
        &format!("/v1/databases/{db_id}/database_backups"),
        &b.token,
        backup_body("b"),
    )
    .await
    .assert_error(404, "databaseNotFound");
    get(&format!("/v1/database_backups/{backup}"), &b.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    delete(&format!("/v1/database_backups/{backup}"), &b.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    get(&format!("/v1/organizations/{}/databases", a.id), &b.token)
        .await
        .assert_error(404, "organizationNotFound");
    post(
        &format!("/v1/organizations/{}/databases", a.id),
        &b.token,
        json!({}),
    )
    .await
    .assert_error(404, "organizationNotFound");
    let own = get(&format!("/v1/organizations/{}/databases", b.id), &b.token).await;
    assert_eq!(own.assert_ok(), &json!([]));

    // And A's things are untouched.
    assert_eq!(
        get(&format!("/v1/databases/{db_id}"), &a.token)
            .await
            .assert_ok(),
        &db
    );
    get(&format!("/v1/database_backups/{backup}"), &a.token)
        .await
        .assert_ok();
}

// ---------------------------------------------------------------- the race

#[tokio::test]
async fn concurrent_enables_let_exactly_one_win() {
    let org = create_org("race").await;
    for round in 0..3 {
        let db = create_db(&org, &format!("race {round}")).await;
        let path = format!(
            "/v1/databases/{}/database_backups",
            db["id"].as_str().expect("id")
        );
        let attempts: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                let token = org.token.clone();
                tokio::spawn(async move {
                    post(&path, &token, backup_body(&format!("secret-{i}"))).await
                })
            })
            .collect();
        let mut winners = Vec::new();
        for attempt in attempts {
            let reply = attempt.await.expect("task");
            match reply.status.as_u16() {
                200 => winners.push(reply.json["id"].as_str().expect("id").to_string()),
                409 => assert!(
                    matches!(
                        reply.json["code"].as_str(),
                        Some("backupAlreadyEnabled" | "changeInProgress")
                    ),
                    "{reply:#?}"
                ),
                _ => panic!("unexpected reply {reply:#?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let listed = get(&path, &org.token).await;
        let listed = listed.assert_ok().as_array().expect("array").clone();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], winners[0].as_str());
    }
}
