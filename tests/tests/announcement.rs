//! The announcement's code samples (tests/announcement/*.ts, verbatim), run by the
//! real Deno runtime against the local stack. Only what a reader would fill in
//! changes: the base URL `https://api.deno.com/v1` and the placeholder ids/tokens.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use subkv_e2e::*;

const HOSTED_BASE: &str = "https://api.deno.com/v1";

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("announcement")
}

/// Runs one sample with its placeholders filled in; returns its stdout.
fn run_sample(name: &str, fill: &[(&str, &str)]) -> String {
    let source = std::fs::read_to_string(samples_dir().join(name)).expect("sample");
    assert!(
        source.contains(HOSTED_BASE),
        "{name} no longer calls the hosted API"
    );
    let mut script = source.replace(HOSTED_BASE, &format!("{}/v1", api_url()));
    for (placeholder, value) in fill {
        let quoted = format!("\"{placeholder}\"");
        assert!(script.contains(&quoted), "{name} has no {quoted}");
        script = script.replace(&quoted, &format!("\"{value}\""));
    }
    let dir = std::env::temp_dir().join(format!("subkv-announcement-{}", unknown_id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for support in ["deno.json", "std_assert.ts"] {
        std::fs::copy(samples_dir().join(support), dir.join(support)).expect("copy");
    }
    std::fs::write(dir.join(name), script).expect("write sample");
    let deno =
        std::env::var("DENO").expect("DENO must point at the deno binary (make test sets it)");
    let host = api_url().trim_start_matches("http://").to_string();
    let output = Command::new(deno)
        .current_dir(&dir)
        .args(["run", "--quiet", "--no-prompt", "--config", "deno.json"])
        .arg(format!("--allow-net={host}"))
        .arg("--allow-env=ACCESS_KEY_ID,SECRET_ACCESS_KEY")
        .arg(name)
        .env("ACCESS_KEY_ID", "GOOG1EANNOUNCEMENTKEY")
        .env("SECRET_ACCESS_KEY", "announcement-secret-value")
        .env("NO_COLOR", "1")
        .output()
        .expect("deno runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "{name} failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    stdout
}

#[tokio::test]
async fn the_announcement_samples_run_unchanged() {
    let org = create_org("announcement").await;
    let org_fill = [
        ("your-organization-id", org.id.as_str()),
        ("your-organization-token", org.token.as_str()),
    ];

    // 1. Create a database; it prints the id.
    let database_id = run_sample("1_create_database.ts", &org_fill)
        .trim()
        .to_string();
    let db = get(&format!("/v1/databases/{database_id}"), &org.token).await;
    assert_eq!(db.assert_ok()["description"], "my database");

    // 2. Enable a backup to Google Cloud Storage; it prints the backup id.
    let fill = [
        ("your-organization-token", org.token.as_str()),
        ("database-id", database_id.as_str()),
    ];
    let backup_id = run_sample("2_enable_backup.ts", &fill).trim().to_string();
    assert!(is_uuid(&json!(backup_id)), "{backup_id}");

    // 3. Get it: the object as the announcement shows it (pending until the engine runs).
    let fill = [
        ("your-organization-token", org.token.as_str()),
        ("database-backup-id", backup_id.as_str()),
    ];
    let shown = run_sample("3_get_backup.ts", &fill);
    for expected in [
        format!("id: \"{backup_id}\""),
        "kind: \"s3\"".into(),
        "endpoint: \"https://storage.googleapis.com\"".into(),
        "bucketName: \"test-kv-backup\"".into(),
        "bucketRegion: \"us-central1\"".into(),
        "accessKeyId: \"GOOG1EANNOUNCEMENTKEY\"".into(),
        "prefix: \"backup/\"".into(),
        "code: \"pending\"".into(),
    ] {
        assert!(shown.contains(&expected), "missing {expected} in:\n{shown}");
    }
    assert!(!shown.contains("announcement-secret-value") && !shown.contains("secretAccessKey"));

    // 4. List the database's backups: exactly that one.
    let fill = [
        ("your-organization-token", org.token.as_str()),
        ("database-id", database_id.as_str()),
    ];
    let listed = run_sample("4_list_backups.ts", &fill);
    assert_eq!(listed.matches("kind: \"s3\"").count(), 1, "{listed}");
    assert!(listed.contains(&backup_id), "{listed}");

    // 5. Delete it; then it is gone and a new one can be enabled.
    let fill = [
        ("your-organization-token", org.token.as_str()),
        ("database-backup-id", backup_id.as_str()),
    ];
    run_sample("5_delete_backup.ts", &fill);
    get(&format!("/v1/database_backups/{backup_id}"), &org.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    let fill = [
        ("your-organization-token", org.token.as_str()),
        ("database-id", database_id.as_str()),
    ];
    let again = run_sample("2_enable_backup.ts", &fill).trim().to_string();
    assert_ne!(again, backup_id);
}
