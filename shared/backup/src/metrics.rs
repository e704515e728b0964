//! The backup engine's metrics: Embedded Metric Format lines
//! ([`subkv_core::metrics`]) in namespace `subkv/backup`, without dimensions, so
//! that their number and cost do not grow with the fleet (the backup and
//! database ids ride along as plain properties, for Logs Insights).

pub(crate) use subkv_core::metrics::print;

/// One metrics line in namespace `subkv/backup`.
pub(crate) fn emf(metrics: &[(&str, &str)], properties: serde_json::Value) -> serde_json::Value {
    subkv_core::metrics::emf("subkv/backup", metrics, properties)
}
