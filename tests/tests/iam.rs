//! IAM on the local stack (issue 13, §1): the emulator refuses a function what
//! its role in infra/template.yaml does not allow (infra/local/iam.py), so every
//! other end-to-end test is also a test of the template's grants. Here, calls
//! made with a function's own credentials (`local-role-<function>`, as the stack
//! gives them) show both sides: what its role allows goes through, what it lacks
//! is refused with DynamoDB's and KMS's AccessDeniedException, naming the action.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::MacAlgorithmSpec;

/// The SDK configuration of the local stack, signed as `function`'s role.
async fn as_function(function: &str) -> aws_config::SdkConfig {
    let credentials = aws_sdk_dynamodb::config::Credentials::new(
        format!("local-role-{function}"),
        "local",
        None,
        None,
        "subkv-e2e",
    );
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .credentials_provider(credentials)
        .load()
        .await
}

fn control_table() -> String {
    std::env::var("SUBKV_CONTROL_TABLE").unwrap_or_else(|_| "subkv-control".into())
}

fn data_token_key() -> String {
    std::env::var("SUBKV_DATA_TOKEN_KEY_ID").unwrap_or_else(|_| "alias/subkv-data-token".into())
}

fn key(pk: &str) -> [(String, AttributeValue); 2] {
    [
        ("pk".into(), AttributeValue::S(pk.into())),
        ("sk".into(), AttributeValue::S("iam-test".into())),
    ]
}

/// The message of a call refused with AccessDeniedException (panics otherwise).
fn refusal<T: std::fmt::Debug, E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    result: Result<T, E>,
) -> String {
    let error = result.expect_err("the call went through");
    let message = error.message().unwrap_or_default().to_owned();
    assert_eq!(error.code(), Some("AccessDeniedException"), "{message}");
    message
}

/// A GetItem of the control table's item `pk`, as `dynamo`'s caller.
async fn get_control(
    dynamo: &aws_sdk_dynamodb::Client,
    pk: &str,
) -> Result<
    aws_sdk_dynamodb::operation::get_item::GetItemOutput,
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError>,
> {
    let [pk, sk] = key(pk);
    dynamo
        .get_item()
        .table_name(control_table())
        .key(pk.0, pk.1)
        .key(sk.0, sk.1)
        .consistent_read(true)
        .send()
        .await
}

#[tokio::test]
async fn the_functions_call_as_their_roles() {
    // An organization and a database, through the management API's functions.
    let db = subkv_e2e::backup::kv_database("iam-roles").await;
    assert!(!db.id.is_empty());
    let log = std::fs::read_to_string(subkv_e2e::emulator_log_path()).expect("the emulator's log");
    for (function, role) in [
        ("create-organization", "CreateOrganizationFunctionRole"),
        ("create-database", "CreateDatabaseFunctionRole"),
    ] {
        let line = format!(
            "iam: local-role-{function} calls as arn:aws:iam::123456789012:role/subkv-{role}"
        );
        assert!(log.contains(&line), "no `{line}` in the emulator's log");
    }
}

#[tokio::test]
async fn a_read_route_reads_the_control_table_and_is_refused_a_write() {
    let dynamo = aws_sdk_dynamodb::Client::new(&as_function("get-database").await);
    let read = get_control(&dynamo, "IAM#read-route").await;
    assert!(read.is_ok(), "GetItem, which its role allows: {read:?}");
    let [pk, sk] = key("IAM#read-route");

    let write = dynamo
        .put_item()
        .table_name(control_table())
        .item(pk.0, pk.1)
        .item(sk.0, sk.1)
        .send()
        .await;
    let message = refusal(write);
    assert!(
        message.contains("GetDatabaseFunctionRole")
            && message.contains("dynamodb:PutItem")
            && message.contains(&format!("table/{}", control_table())),
        "{message}"
    );
}

#[tokio::test]
async fn a_transaction_needs_every_item_allowed() {
    // create-database may put into the control table, but not delete from it:
    // a transaction with one Delete is refused whole, and writes nothing.
    let dynamo = aws_sdk_dynamodb::Client::new(&as_function("create-database").await);
    let put = |pk: &str| {
        let [a, b] = key(pk);
        aws_sdk_dynamodb::types::TransactWriteItem::builder()
            .put(
                aws_sdk_dynamodb::types::Put::builder()
                    .table_name(control_table())
                    .item(a.0, a.1)
                    .item(b.0, b.1)
                    .build()
                    .expect("put"),
            )
            .build()
    };
    let [a, b] = key("IAM#other");
    let delete = aws_sdk_dynamodb::types::TransactWriteItem::builder()
        .delete(
            aws_sdk_dynamodb::types::Delete::builder()
                .table_name(control_table())
                .key(a.0, a.1)
                .key(b.0, b.1)
                .build()
                .expect("delete"),
        )
        .build();
    let written = dynamo
        .transact_write_items()
        .transact_items(put("IAM#transaction"))
        .transact_items(delete)
        .send()
        .await;
    let message = refusal(written);
    assert!(message.contains("dynamodb:DeleteItem"), "{message}");

    let admin = aws_sdk_dynamodb::Client::new(
        &aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
    );
    let item = get_control(&admin, "IAM#transaction")
        .await
        .expect("read as the operator")
        .item;
    assert!(item.is_none(), "the refused transaction wrote {item:?}");
}

#[tokio::test]
async fn only_the_data_path_derives_the_token_key() {
    let derive = |sdk: aws_config::SdkConfig| async move {
        aws_sdk_kms::Client::new(&sdk)
            .generate_mac()
            .key_id(data_token_key())
            .mac_algorithm(MacAlgorithmSpec::HmacSha256)
            .message(Blob::new("iam-test"))
            .send()
            .await
    };
    let granted = derive(as_function("kv-connect").await).await;
    assert!(
        granted.is_ok(),
        "kv-connect, named by the key policy: {granted:?}"
    );

    let message = refusal(derive(as_function("get-database").await).await);
    assert!(message.contains("kms:GenerateMac"), "{message}");
}

#[tokio::test]
async fn a_function_without_a_role_in_the_template_may_do_nothing() {
    let dynamo = aws_sdk_dynamodb::Client::new(&as_function("none").await);
    let message = refusal(get_control(&dynamo, "IAM#none").await);
    assert!(message.contains("dynamodb:GetItem"), "{message}");
}
