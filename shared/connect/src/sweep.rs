//! The expiry sweeper: a scheduled function that deletes expired entries through
//! the normal commit path, so each expiry reaches the change log (and the backups)
//! as a deletion. Reads never wait for it: they hide expired entries at once.

use crate::state::ConnectState;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use subkv_core::runtime;
use subkv_dynamo_kv::now_ms;
use subkv_kv::error::KvResult;

/// Most items one invocation sweeps; the next run takes the rest.
const BATCH: usize = 500;

/// Sweeps once; returns how many entries it deleted.
pub async fn sweep_once(state: &ConnectState) -> KvResult<usize> {
    let items = state.kv.expired_items(now_ms(), BATCH).await?;
    let mut swept = 0;
    for (database, sk) in items {
        swept += state.kv.sweep_item(database, &sk).await?;
    }
    Ok(swept)
}

/// The whole of the sweeper's `main`.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    runtime::serve_events(
        "kv-sweep-expired",
        ConnectState::from_env(),
        |state, _event: LambdaEvent<serde_json::Value>| async move {
            let started = std::time::Instant::now();
            let swept = sweep_once(&state).await.map_err(|e| {
                tracing::error!(error = %e.detail(), "sweep failed");
                e.detail()
            })?;
            tracing::info!(
                swept,
                elapsed_us = started.elapsed().as_micros() as u64,
                "sweep"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::json!({ "swept": swept }))
        },
    )
    .await
}
