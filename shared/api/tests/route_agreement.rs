//! One route table, four places that must agree with it: the `cargo lambda watch`
//! router (workspace Cargo.toml), the function crates, the SAM template and the
//! OpenAPI document. Also keeps the template's table and the OpenAPI schemas in
//! step with the code.

use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use subkv_core::routes::{self, Route};

fn repo() -> PathBuf {
    // shared/api -> the repository root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("repo root")
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

type Triple = (String, String, String); // (function, METHOD, path)

fn expected() -> BTreeSet<Triple> {
    routes::ALL
        .iter()
        .map(|r: &Route| (r.function.into(), r.method.into(), r.path.into()))
        .collect()
}

#[test]
fn watch_router_serves_every_route_with_its_function() {
    let manifest: toml::Value = read("Cargo.toml").parse().expect("Cargo.toml");
    let router = manifest["workspace"]["metadata"]["lambda"]["watch"]["router"]
        .as_table()
        .expect("watch router table");
    let mut found = BTreeSet::new();
    for (path, targets) in router {
        for target in targets.as_array().expect("list of {method, function}") {
            found.insert((
                target["function"].as_str().expect("function").to_string(),
                target["method"].as_str().expect("method").to_string(),
                path.clone(),
            ));
        }
    }
    assert_eq!(found, expected());
}

#[test]
fn every_route_has_a_function_crate_calling_its_route() {
    let mut crates = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("functions")).expect("functions/") {
        let entry = entry.expect("entry");
        crates.insert(entry.file_name().to_string_lossy().to_string());
    }
    let functions: BTreeSet<String> = routes::ALL
        .iter()
        .map(|r| r.function)
        .chain(routes::BACKGROUND_FUNCTIONS.iter().copied())
        .map(String::from)
        .collect();
    assert_eq!(
        crates, functions,
        "functions/ must hold exactly one crate per route, plus the background functions"
    );
    for route in routes::ALL {
        let main = read(&format!("functions/{}/src/main.rs", route.function));
        let constant = route.function.replace('-', "_").to_uppercase();
        assert!(
            main.contains(&format!("routes::{constant}")),
            "functions/{}/src/main.rs must serve routes::{constant}",
            route.function
        );
        let manifest = read(&format!("functions/{}/Cargo.toml", route.function));
        assert!(manifest.contains(&format!("name = \"{}\"", route.function)));
    }
}

fn template() -> Yaml {
    serde_yaml::from_str(&read("infra/template.yaml")).expect("template parses as plain YAML")
}

#[test]
fn sam_template_deploys_every_route_to_its_function() {
    let template = template();
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut found = BTreeSet::new();
    let mut binaries = BTreeSet::new();
    for (_, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .expect("Binary")
            .to_string();
        binaries.insert(binary.clone());
        assert_eq!(
            resource["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda")
        );
        let streamed = routes::ALL
            .iter()
            .find(|r| r.function == binary && r.access == routes::Access::KvStream);
        if let Some(route) = streamed {
            // Streamed routes: a function URL in response-stream mode, reached
            // through the Edge distribution at the route's path.
            assert_eq!(
                resource["Properties"]["FunctionUrlConfig"]["InvokeMode"].as_str(),
                Some("RESPONSE_STREAM"),
                "{binary} must stream its response"
            );
            let pattern: String = route
                .path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "*" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let behaviors = template["Resources"]["Edge"]["Properties"]["DistributionConfig"]
                ["CacheBehaviors"]
                .as_sequence()
                .expect("Edge cache behaviors");
            assert!(
                behaviors
                    .iter()
                    .any(|b| b["PathPattern"].as_str() == Some(pattern.as_str())),
                "the Edge distribution must route {pattern} to {binary}"
            );
            found.insert((
                binary.clone(),
                route.method.to_string(),
                route.path.to_string(),
            ));
            continue;
        }
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for (_, event) in events {
            if event["Type"].as_str() != Some("HttpApi") {
                continue;
            }
            found.insert((
                binary.clone(),
                event["Properties"]["Method"]
                    .as_str()
                    .expect("Method")
                    .to_uppercase(),
                event["Properties"]["Path"]
                    .as_str()
                    .expect("Path")
                    .to_string(),
            ));
        }
    }
    assert_eq!(found, expected());
    for background in routes::BACKGROUND_FUNCTIONS {
        assert!(
            binaries.contains(*background),
            "{background} is not deployed"
        );
    }
}

#[test]
fn sam_template_table_matches_the_store_schema() {
    let template = template();
    let table = &template["Resources"]["ControlTable"]["Properties"];
    let (attrs, keys) = subkv_core::control::control_table_schema();
    let attrs_found: BTreeSet<(String, String)> = table["AttributeDefinitions"]
        .as_sequence()
        .expect("AttributeDefinitions")
        .iter()
        .map(|a| {
            (
                a["AttributeName"].as_str().expect("name").into(),
                a["AttributeType"].as_str().expect("type").into(),
            )
        })
        .collect();
    let attrs_want: BTreeSet<(String, String)> = attrs
        .iter()
        .map(|a| {
            (
                a.attribute_name().into(),
                a.attribute_type().as_str().into(),
            )
        })
        .collect();
    assert_eq!(attrs_found, attrs_want);
    let keys_found: Vec<(String, String)> = table["KeySchema"]
        .as_sequence()
        .expect("KeySchema")
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().expect("name").into(),
                k["KeyType"].as_str().expect("type").into(),
            )
        })
        .collect();
    let keys_want: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.attribute_name().into(), k.key_type().as_str().into()))
        .collect();
    assert_eq!(keys_found, keys_want);
    // The indexes: names, keys and what they project.
    let index_of = |name: &str, keys: Vec<(String, String)>, projection: String| {
        (name.to_string(), keys, projection)
    };
    let indexes_found: BTreeSet<_> = table["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("GlobalSecondaryIndexes")
        .iter()
        .map(|i| {
            let keys = i["KeySchema"]
                .as_sequence()
                .expect("index KeySchema")
                .iter()
                .map(|k| {
                    (
                        k["AttributeName"].as_str().expect("name").to_string(),
                        k["KeyType"].as_str().expect("type").to_string(),
                    )
                })
                .collect();
            let mut projection = i["Projection"]["ProjectionType"]
                .as_str()
                .expect("ProjectionType")
                .to_string();
            for attr in i["Projection"]["NonKeyAttributes"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                projection += &format!(" {}", attr.as_str().expect("attribute"));
            }
            index_of(
                i["IndexName"].as_str().expect("IndexName"),
                keys,
                projection,
            )
        })
        .collect();
    let indexes_want: BTreeSet<_> = subkv_core::control::control_table_indexes()
        .iter()
        .map(|i| {
            let keys = i
                .key_schema()
                .iter()
                .map(|k| {
                    (
                        k.attribute_name().to_string(),
                        k.key_type().as_str().to_string(),
                    )
                })
                .collect();
            let projection = i.projection().expect("projection");
            let mut text = projection
                .projection_type()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            for attr in projection.non_key_attributes() {
                text += &format!(" {attr}");
            }
            index_of(i.index_name(), keys, text)
        })
        .collect();
    assert_eq!(indexes_found, indexes_want);
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        table["SSESpecification"]["SSEEnabled"].as_bool(),
        Some(true)
    );
}

fn openapi() -> Yaml {
    serde_yaml::from_str(&read("docs/openapi.yaml")).expect("docs/openapi.yaml")
}

#[test]
fn openapi_documents_every_route_and_nothing_else() {
    let doc = openapi();
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        for (method, op) in item.as_mapping().expect("path item") {
            let method = method.as_str().expect("method");
            if !["get", "post", "put", "patch", "delete"].contains(&method) {
                continue;
            }
            found.insert((
                op["operationId"].as_str().expect("operationId").to_string(),
                method.to_uppercase(),
                path.as_str().expect("path").to_string(),
            ));
        }
    }
    let management: BTreeSet<Triple> = routes::ALL
        .iter()
        .filter(|r| r.access.is_management())
        .map(|r| (r.function.into(), r.method.into(), r.path.into()))
        .collect();
    assert_eq!(found, management);
}

/// The JSON field names of a serialized value.
fn fields(value: serde_json::Value) -> BTreeSet<String> {
    value.as_object().expect("object").keys().cloned().collect()
}

fn schema_fields(doc: &Yaml, name: &str) -> BTreeSet<String> {
    doc["components"]["schemas"][name]["properties"]
        .as_mapping()
        .unwrap_or_else(|| panic!("schema {name} has no properties"))
        .keys()
        .map(|k| k.as_str().expect("key").to_string())
        .collect()
}

#[test]
fn openapi_schemas_match_what_the_code_serializes() {
    use subkv_core::control::records::*;
    use uuid::Uuid;
    let doc = openapi();
    // Every optional field set, so that every field is serialized.
    let restore = DatabaseRestore {
        source: RestoreSource {
            database_backup_id: Some(Uuid::nil()),
            s3: None,
        },
        versionstamp: Some("000000000000002a0000".into()),
        status: RestoreStatusView {
            status: RestoreStatus::Active,
            keys_restored: 3,
        },
    };
    let db = KvDatabase {
        id: Uuid::nil(),
        organization_id: Uuid::nil(),
        description: String::new(),
        created_at: now_rfc3339(),
        updated_at: now_rfc3339(),
        restore: Some(restore.clone()),
    };
    assert_eq!(
        schema_fields(&doc, "KvDatabase"),
        fields(serde_json::to_value(&db).expect("json"))
    );
    assert_eq!(
        schema_fields(&doc, "DatabaseRestore"),
        fields(serde_json::to_value(&restore).expect("json"))
    );
    let backup = BackupRecord {
        id: Uuid::nil(),
        organization_id: Uuid::nil(),
        database_id: Uuid::nil(),
        kind: "s3".into(),
        endpoint: "https://e".into(),
        bucket_name: "b".into(),
        bucket_region: "r".into(),
        access_key_id: "a".into(),
        secret_access_key_ciphertext: vec![1],
        prefix: String::new(),
        status: BackupStatus::Pending,
        created_at: now_rfc3339(),
        last_backed_up_at: None,
        last_versionstamp: None,
        last_error: None,
        snapshot_chunks: None,
    };
    let api_backup = serde_json::to_value(KvDatabaseBackup::from(&backup)).expect("json");
    assert_eq!(schema_fields(&doc, "KvDatabaseBackup"), fields(api_backup));
    let error = subkv_api::error::ApiError::Unauthorized("x").body();
    assert_eq!(
        schema_fields(&doc, "Error"),
        fields(serde_json::to_value(&error).expect("json"))
    );
    let enable = schema_fields(&doc, "EnableBackup");
    let want: BTreeSet<String> = [
        "kind",
        "endpoint",
        "bucketName",
        "bucketRegion",
        "accessKeyId",
        "secretAccessKey",
        "prefix",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(enable, want);
}
