//! The backup engine's metrics: CloudWatch Embedded Metric Format lines in
//! namespace `subkv/backup`, without dimensions, so that their number and cost
//! do not grow with the fleet (the backup and database ids ride along as plain
//! properties, for Logs Insights).

use subkv_dynamo_kv::now_ms;

/// One Embedded Metric Format line: `metrics` (name, unit) in namespace
/// `subkv/backup`, no dimension, with `properties` holding their values and
/// anything else worth searching for.
pub(crate) fn emf(
    metrics: &[(&str, &str)],
    mut properties: serde_json::Value,
) -> serde_json::Value {
    let metrics: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, unit)| serde_json::json!({"Name": name, "Unit": unit}))
        .collect();
    properties["_aws"] = serde_json::json!({
        "Timestamp": now_ms(),
        "CloudWatchMetrics": [{
            "Namespace": "subkv/backup",
            "Dimensions": [[]],
            "Metrics": metrics,
        }],
    });
    properties
}

/// Writes a metrics line. Not through tracing: EMF wants the object as the
/// whole log line.
pub(crate) fn print(line: serde_json::Value) {
    println!("{line}");
}
