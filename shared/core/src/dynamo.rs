//! DynamoDB glue every plane shares: attribute values in and out of items, and one
//! reading of a failed call (what it says, whether it is worth retrying, which
//! items cancelled a transaction).

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

use crate::error::{Recovery, StoreError};

/// One DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn b(bytes: impl Into<Vec<u8>>) -> AttributeValue {
    AttributeValue::B(Blob::new(bytes.into()))
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

pub fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

pub fn get_b<'a>(item: &'a Item, name: &str) -> Option<&'a [u8]> {
    item.get(name)?.as_b().ok().map(|b| b.as_ref())
}

/// The whole error, with the service's code and message (never a secret: requests
/// carry none).
pub fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    DisplayErrorContext(err).to_string()
}

/// A failed call as the storage layer's error: [`Recovery::Retry`] if
/// [`is_transient`], else [`Recovery::Operator`] (a DynamoDB call that fails
/// otherwise is refused for our configuration or our request, not for the data).
pub fn store_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: std::error::Error + 'static,
{
    let server_error = err
        .raw_response()
        .is_some_and(|r| r.status().is_server_error());
    let recovery = if is_transient(&err, server_error) {
        Recovery::Retry
    } else {
        Recovery::Operator
    };
    StoreError::Dynamo {
        operation,
        source: describe(&err).into(),
        recovery,
    }
}

/// Error codes that mean "busy, try again later", not "wrong".
const BUSY: [&str; 4] = [
    "Throttling",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
    "InternalServerError",
];

/// Whether a failed call may succeed if simply tried again later: no answer
/// (timeout, connection failure), a 5xx, or throttling.
pub fn is_transient<E, R>(err: &SdkError<E, R>, status_is_5xx: bool) -> bool
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if status_is_5xx
        || matches!(
            err,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        )
    {
        return true;
    }
    let text = describe(err);
    BUSY.iter().any(|code| text.contains(code))
}

/// A conditional write whose condition did not hold.
pub fn is_condition_failure<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// Why a transaction was cancelled, one code per action in request order
/// (`"None"` for the actions that were fine); `None` if it was not cancelled.
pub fn cancellation_codes<R>(err: &SdkError<TransactWriteItemsError, R>) -> Option<Vec<String>> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(e) => Some(
            e.cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_string())
                .collect(),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let item: Item = HashMap::from([
            ("s".to_string(), s("text")),
            ("n".to_string(), n(42u64)),
            ("b".to_string(), b(vec![1, 2, 3])),
        ]);
        assert_eq!(get_s(&item, "s"), Some("text"));
        assert_eq!(get_n::<u64>(&item, "n"), Some(42));
        assert_eq!(get_b(&item, "b"), Some(&[1u8, 2, 3][..]));
        assert_eq!(get_s(&item, "n"), None);
        assert_eq!(get_n::<u64>(&item, "s"), None);
        assert_eq!(get_b(&item, "missing"), None);
    }

    /// A `GetItem` answered with `status` and error `code`.
    fn get_failed(status: u16, code: &str) -> StoreError {
        use aws_sdk_dynamodb::error::ErrorMetadata;
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        let error = GetItemError::generic(ErrorMetadata::builder().code(code).message("m").build());
        let raw = HttpResponse::new(status.try_into().expect("a status"), "".into());
        store_error("GetItem", SdkError::service_error(error, raw))
    }

    #[test]
    fn failed_calls_say_whether_a_retry_can_fix_them() {
        for (status, code) in [
            (400, "ProvisionedThroughputExceededException"),
            (400, "ThrottlingException"),
            (500, "InternalServerError"),
            (503, "ServiceUnavailable"),
        ] {
            assert_eq!(
                get_failed(status, code).recovery(),
                Recovery::Retry,
                "{code}"
            );
        }
        for code in [
            "AccessDeniedException",
            "ResourceNotFoundException",
            "ValidationException",
        ] {
            assert_eq!(
                get_failed(400, code).recovery(),
                Recovery::Operator,
                "{code}"
            );
        }
    }
}

/// An item's size as DynamoDB counts it for capacity and storage (developer
/// guide, "Item sizes and formats"): per attribute, its name's UTF-8 length plus
/// its value's size (a string's UTF-8 length, a binary's bytes, a number's
/// significant digits / 2 + 1, 1 for a boolean or null, a list or map 3 bytes
/// plus 1 per element plus the elements, a set the sum of its elements).
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn number_size(text: &str) -> usize {
    let mantissa = text
        .trim_start_matches(['+', '-'])
        .split(['e', 'E'])
        .next()
        .unwrap_or_default();
    let digits = mantissa.replace('.', "");
    let significant = digits.trim_matches('0').len();
    significant.div_ceil(2) + 1
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(text) => number_size(text),
        AttributeValue::B(bytes) => bytes.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(items) => items.iter().map(String::len).sum(),
        AttributeValue::Ns(items) => items.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(items) => items.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(items) => 3 + items.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn item_sizes_follow_dynamodb_rules() {
        // The same cases as infra/local/capacity.py's tests.
        let item = Item::from([
            ("pk".to_string(), s("abc")),
            ("n".to_string(), n("12345")),
            ("b".to_string(), b(vec![0u8; 10])),
            ("t".to_string(), AttributeValue::Bool(true)),
        ]);
        assert_eq!(item_size(&item), (2 + 3) + (1 + 4) + (1 + 10) + (1 + 1));
        assert_eq!(number_size("-0.00120"), 2);
        assert_eq!(number_size("1e10"), 2);
        assert_eq!(number_size("1234567"), 5);
        let nested = Item::from([(
            "m".to_string(),
            AttributeValue::M(HashMap::from([("k".to_string(), s("vv"))])),
        )]);
        assert_eq!(item_size(&nested), 1 + 3 + (1 + 1 + 2));
        assert_eq!(item_size(&Item::new()), 0);
    }
}
