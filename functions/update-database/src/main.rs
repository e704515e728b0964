use subkv::{api, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv::lambda::serve(&routes::UPDATE_DATABASE, api::databases::update).await
}
