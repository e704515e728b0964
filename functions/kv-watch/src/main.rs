use subkv_core::routes;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv_connect::watch::serve(&routes::KV_WATCH).await
}
