#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv_connect::sweep::serve().await
}
