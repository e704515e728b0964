#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv::backup::function::serve().await
}
