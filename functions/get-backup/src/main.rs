use subkv::{api, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv::lambda::serve(&routes::GET_BACKUP, api::backups::get).await
}
