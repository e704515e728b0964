#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv_connect::purge::serve().await
}
