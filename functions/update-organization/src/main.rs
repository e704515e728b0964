use subkv_api::handlers;
use subkv_core::routes;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    subkv_api::serve(
        &routes::UPDATE_ORGANIZATION,
        handlers::organizations::update,
    )
    .await
}
