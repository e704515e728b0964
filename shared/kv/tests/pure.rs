//! `subkv-kv` is the pure core: nothing it links may do I/O on AWS or speak Lambda,
//! and the planes depend on each other one way only. Cargo already forbids cycles;
//! these tests read the resolved dependency trees (`cargo tree`, normal
//! dependencies) and keep the AWS SDK, the Lambda runtime and subkv's own
//! I/O crates out of the pure core, and each plane out of the others.

use std::collections::BTreeSet;
use std::process::Command;

/// Every package `package` links (normal dependencies, transitively).
fn linked(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split(' ').next())
        .map(String::from)
        .collect()
}

#[test]
fn the_pure_core_links_no_aws_lambda_or_io_crate() {
    let linked = linked("subkv-kv");
    assert!(
        linked.contains("denokv_proto"),
        "the tree was read: {linked:?}"
    );
    let forbidden: Vec<&String> = linked
        .iter()
        .filter(|name| {
            name.starts_with("aws-")
                || name.starts_with("aws_")
                || name.starts_with("lambda")
                || name.as_str() == "tokio"
                || name.as_str() == "hyper"
                || (name.starts_with("subkv-") && name.as_str() != "subkv-kv")
        })
        .collect();
    assert!(
        forbidden.is_empty(),
        "subkv-kv must stay pure, but links {forbidden:?}"
    );
}

#[test]
fn planes_depend_one_way() {
    let planes = [
        "subkv-api",
        "subkv-kv",
        "subkv-dynamo-kv",
        "subkv-connect",
        "subkv-backup",
        "subkv-restore",
    ];
    // The core links no plane.
    let core = linked("subkv-core");
    for plane in planes {
        assert!(!core.contains(plane), "subkv-core links {plane}");
    }
    // The management API links no KV or backup code.
    let api = linked("subkv-api");
    assert!(api.contains("subkv-core"), "the tree was read: {api:?}");
    for plane in [
        "subkv-kv",
        "subkv-dynamo-kv",
        "subkv-connect",
        "subkv-backup",
        "subkv-restore",
    ] {
        assert!(!api.contains(plane), "subkv-api links {plane}");
    }
    // The KV engine links no function code; KV Connect no backup code.
    let engine = linked("subkv-dynamo-kv");
    for plane in ["subkv-api", "subkv-connect", "subkv-backup"] {
        assert!(!engine.contains(plane), "subkv-dynamo-kv links {plane}");
    }
    let connect = linked("subkv-connect");
    for plane in ["subkv-api", "subkv-backup", "subkv-restore"] {
        assert!(!connect.contains(plane), "subkv-connect links {plane}");
    }
    let backup = linked("subkv-backup");
    for plane in ["subkv-api", "subkv-connect", "subkv-restore"] {
        assert!(!backup.contains(plane), "subkv-backup links {plane}");
    }
    // The restore plane joins the management API and the backup's read side; it
    // serves no KV Connect.
    let restore = linked("subkv-restore");
    assert!(
        restore.contains("subkv-api") && restore.contains("subkv-backup"),
        "the tree was read: {restore:?}"
    );
    assert!(
        !restore.contains("subkv-connect"),
        "subkv-restore links subkv-connect"
    );
}
