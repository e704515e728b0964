use subkv::{api, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv::lambda::serve(&routes::CREATE_ORGANIZATION, api::organizations::create).await
}
