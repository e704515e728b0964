#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv_backup::function::serve().await
}
