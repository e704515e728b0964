use subkv_connect::protocol::{serve, Op};
use subkv_core::routes;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    serve(&routes::KV_CONNECT, Op::Connect).await
}
