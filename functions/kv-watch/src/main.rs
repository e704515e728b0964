use subkv::routes;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv::kv::watch::serve(&routes::KV_WATCH).await
}
