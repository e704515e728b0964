use subkv::{api, routes};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv::lambda::serve(&routes::DELETE_BACKUP, api::backups::delete).await
}
