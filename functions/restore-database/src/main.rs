#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv_restore::function::serve().await
}
