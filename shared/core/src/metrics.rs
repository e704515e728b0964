//! Metrics as CloudWatch Embedded Metric Format lines: one JSON object per log
//! line, which CloudWatch turns into metrics of a namespace, without dimensions
//! (so their number and cost do not grow with tenants; ids ride along as plain
//! properties, for Logs Insights).

use std::time::{SystemTime, UNIX_EPOCH};

/// One EMF line: `metrics` (name, unit) in `namespace`, no dimension, with
/// `properties` holding their values and anything else worth searching for.
pub fn emf(
    namespace: &str,
    metrics: &[(&str, &str)],
    mut properties: serde_json::Value,
) -> serde_json::Value {
    let metrics: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, unit)| serde_json::json!({"Name": name, "Unit": unit}))
        .collect();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    properties["_aws"] = serde_json::json!({
        "Timestamp": now_ms,
        "CloudWatchMetrics": [{
            "Namespace": namespace,
            "Dimensions": [[]],
            "Metrics": metrics,
        }],
    });
    properties
}

/// Writes a metrics line. Not through tracing: EMF wants the object as the
/// whole log line.
pub fn print(line: serde_json::Value) {
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_its_metrics_and_carries_their_values() {
        let line = emf("ns", &[("Swept", "Count")], serde_json::json!({"Swept": 3}));
        assert_eq!(line["Swept"], 3);
        let spec = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(spec["Namespace"], "ns");
        assert_eq!(spec["Dimensions"], serde_json::json!([[]]));
        assert_eq!(spec["Metrics"][0]["Name"], "Swept");
        assert!(line["_aws"]["Timestamp"].as_u64().unwrap() > 0);
    }
}
