//! The expiry sweeper: a scheduled function that deletes expired entries through
//! the normal commit path, so each expiry reaches the change log (and the backups)
//! as a deletion. Reads never wait for it: they hide expired entries at once.

use super::error::KvResult;
use super::protocol::KvApp;
use super::store::now_ms;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use std::sync::Arc;

/// Most items one invocation sweeps; the next run takes the rest.
const BATCH: usize = 500;

/// Sweeps once; returns how many entries it deleted.
pub async fn sweep_once(app: &KvApp) -> KvResult<usize> {
    let items = app.store.expired_items(now_ms(), BATCH).await?;
    let mut swept = 0;
    for (database, sk) in items {
        swept += app.store.sweep_item(database, &sk).await?;
    }
    Ok(swept)
}

/// The whole of the sweeper's `main`.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let app = Arc::new(KvApp::from_env().await?);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_event: LambdaEvent<serde_json::Value>| {
            let app = app.clone();
            async move {
                let started = std::time::Instant::now();
                let swept = sweep_once(&app).await.map_err(|e| {
                    tracing::error!(error = %e.detail(), "sweep failed");
                    e.detail()
                })?;
                tracing::info!(
                    swept,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "sweep"
                );
                Ok::<_, lambda_runtime::Error>(serde_json::json!({ "swept": swept }))
            }
        },
    ))
    .await
}
