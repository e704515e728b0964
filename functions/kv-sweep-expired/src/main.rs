#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv::kv::sweep::serve().await
}
