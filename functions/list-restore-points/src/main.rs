use subkv_core::routes;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv_restore::serve_restore_points(&routes::LIST_RESTORE_POINTS).await
}
