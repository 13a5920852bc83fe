//! Kafka record headers every Tailgate record carries.
//!
//! Headers are metadata about the record, never about the telemetry inside it: a consumer that ignores them (the
//! OpenTelemetry Collector's Kafka receiver, say) still reads the value correctly.

/// Encoding of the record value: [`ENCODING_OTLP_PROTO`] on the signal topics; the sampling-decision topic's records
/// name their own ([`crate::decisions`]).
pub const ENCODING: &str = "tailgate.encoding";
/// The value of [`ENCODING`]: the name the OpenTelemetry Collector's Kafka exporter gives this encoding.
pub const ENCODING_OTLP_PROTO: &str = "otlp_proto";

/// Version of this contract. Consumers (the sampler, the exporters) dead-letter a record of a major version they
/// don't know (`tailgate_kafka::contract`); a record without it is read as plain OTLP.
pub const CONTRACT_VERSION: &str = "tailgate.contract";
/// The value of [`CONTRACT_VERSION`] written by this build.
pub const CONTRACT_VERSION_CURRENT: &str = "1";

/// When the gateway received the request the record was made from: Unix time in nanoseconds, decimal ASCII.
/// The record's Kafka timestamp holds the same instant in milliseconds.
pub const RECEIVED_AT: &str = "tailgate.received_at_unix_nano";

/// The tenant the data belongs to, once authentication assigns one. Absent means the default tenant. Its value
/// is a tenant ID that [`check_tenant`] accepts; a record with any other value is refused by every reader.
pub const TENANT: &str = "tailgate.tenant";

/// The longest tenant ID (Cortex's, Loki's and Mimir's limit).
pub const MAX_TENANT_LENGTH: usize = 150;

/// A tenant ID is what Loki, Mimir and Tempo accept as `X-Scope-OrgID`, so that it can be passed to each of them
/// unchanged: 1 to [`MAX_TENANT_LENGTH`] of `a-z A-Z 0-9 ! - _ . * ' ( )`, and not `.` or `..`.
pub fn check_tenant(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
    if id.is_empty() || id.len() > MAX_TENANT_LENGTH || id == "." || id == ".." || !id.chars().all(allowed) {
        return Err(format!(
            "a tenant ID is 1 to {MAX_TENANT_LENGTH} of the characters a-z A-Z 0-9 ! - _ . * ' ( ), and not . or .."
        ));
    }
    Ok(())
}

/// The dead-letter topic of `topic`: where records a consumer cannot process go, with the reason in headers.
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

/// Dead-letter header: why the record was refused.
pub const DLQ_ERROR: &str = "tailgate.error";
/// Dead-letter header: where the record came from, `partition:offset` of the source topic.
pub const DLQ_SOURCE: &str = "tailgate.source";
/// Dead-letter header: who refused it (`sampler`, `exporter.jaeger`, ...).
pub const DLQ_STAGE: &str = "tailgate.stage";
/// Dead-letter header, present when the record was too large to copy: the value is empty, and this says how many
/// bytes were left in the source record at [`DLQ_SOURCE`].
pub const DLQ_OMITTED: &str = "tailgate.omitted";
