use subkv::{api, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv::lambda::serve(&routes::CREATE_TOKEN, api::tokens::create).await
}
