//! Differential test against denokv (issue 12): tests/kv/differential.ts runs one
//! randomized operation sequence against a fresh subkv database on the local stack
//! and against `denokv serve` (the reference server, on an empty SQLite file),
//! through the same client (Deno's `Deno.openKv`, KV Connect), and compares every
//! result (docs/data-plane.md, "Differential testing").
//!
//! `make test` runs it with [`SEED`] and [`BUDGET`]; `make fuzz-kv` with a random
//! seed and a bigger budget, through `SUBKV_DIFF_SEED` and `SUBKV_DIFF_BUDGET`. A
//! failure prints the seed, the operation and `make fuzz-kv SEED=.. BUDGET=..`,
//! which replays it.

use std::time::Duration;
use subkv_e2e::backup::{deno_script, describe, output_within, Server, TempDir};
use subkv_e2e::*;

/// The seed `make test` runs.
const SEED: u32 = 20_261_202;
/// The number of operations `make test` runs (about 35 s on the 2-core CI machine).
const BUDGET: u32 = 300;

/// Every class of operation the script counts; each must have run at least once, so
/// a generator change that stops producing one fails here instead of testing less.
const CLASSES: &[&str] = &[
    "set",
    "expireIn",
    "delete",
    "get",
    "getMany",
    "atomic",
    "check",
    "check:current",
    "check:null",
    "check:op",
    "check:passed",
    "check:failed",
    "mutation:set",
    "mutation:delete",
    "mutation:sum",
    "mutation:min",
    "mutation:max",
    "mutation:setVersionstamped",
    "largeCommit",
    "largeCommit:committed",
    "list",
    "list:prefix",
    "list:end+start",
    "list:prefix+start",
    "list:end+prefix",
    "reverse",
    "limit",
    "batchSize",
    "cursor",
    "resume",
    "longKey",
    "bigValue",
    "tooManyMutations",
    "tooManyChecks",
    "tooLarge",
];

fn env_number(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: not a number below 2^32")),
        _ => default,
    }
}

#[tokio::test]
async fn subkv_and_denokv_give_the_same_results_for_a_random_operation_sequence() {
    let seed = env_number("SUBKV_DIFF_SEED", SEED);
    let budget = env_number("SUBKV_DIFF_BUDGET", BUDGET);
    assert!(budget > 0, "SUBKV_DIFF_BUDGET must be positive");
    eprintln!("differential: seed {seed}, budget {budget} (replay: make fuzz-kv SEED={seed} BUDGET={budget})");

    let org = create_org("kv-differential").await;
    let db = create_db(&org, "kv-differential").await;
    let url = format!(
        "{}/databases/{}/connect",
        api_url(),
        db["id"].as_str().expect("database id")
    );
    // Deno reads one access token (DENO_KV_ACCESS_TOKEN) for every remote database
    // it opens: the reference server accepts the organization's token.
    let dir = TempDir::new("kv-differential");
    let denokv = Server::empty(dir.path(), &org.token);

    let timeout = Duration::from_secs(120) + Duration::from_millis(500) * budget;
    let output = output_within(
        "differential.ts",
        deno_script("differential.ts")
            .env("SUBKV_KV_URL", &url)
            .env("DENOKV_URL", &denokv.url)
            .env("DENO_KV_ACCESS_TOKEN", &org.token)
            .env("SUBKV_DIFF_SEED", seed.to_string())
            .env("SUBKV_DIFF_BUDGET", budget.to_string()),
        timeout,
    )
    .unwrap_or_else(|e| {
        panic!("seed {seed}: {e}\nreplay: make fuzz-kv SEED={seed} BUDGET={budget}")
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "subkv and denokv differ (seed {seed}, budget {budget}):\n{}\ndenokv serve's log:\n{}",
        describe(&output),
        denokv.log()
    );
    eprintln!("{stdout}");

    let summary = format!("differential: seed {seed}, {budget} operations, ");
    assert!(stdout.contains(&summary), "no summary line:\n{stdout}");
    let classes = stdout
        .lines()
        .find_map(|l| l.strip_prefix("classes: "))
        .unwrap_or_else(|| panic!("no classes line:\n{stdout}"));
    let classes: serde_json::Value = serde_json::from_str(classes).expect("classes JSON");
    // The CI run must cover every class (a replay or another seed need not).
    if seed == SEED && budget == BUDGET {
        let missing: Vec<&str> = CLASSES
            .iter()
            .copied()
            .filter(|c| classes[c].as_u64().unwrap_or(0) == 0)
            .collect();
        assert!(
            missing.is_empty(),
            "seed {seed} ran no {missing:?}:\n{stdout}"
        );
    }
}
