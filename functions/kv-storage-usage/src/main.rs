#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv_connect::storage::serve().await
}
