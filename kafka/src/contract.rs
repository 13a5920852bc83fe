//! Which records a consumer of this build can read: those of the contract's major version it knows
//! (`tailgate.contract`, `tailgate_proto::headers`). A record of another major version may mean anything; it is
//! refused — dead-lettered by the role, never misread. A record without the header (another producer, such as the
//! OpenTelemetry Collector's Kafka exporter) is read as plain OTLP.

use rdkafka::message::{Headers as _, Message};
use tailgate_proto::headers;

/// `Err` with the reason for a record of a contract major version this build does not know.
pub fn readable(message: &impl Message) -> Result<(), String> {
    let Some(record_headers) = message.headers() else { return Ok(()) };
    let Some(version) = record_headers.iter().find(|h| h.key == headers::CONTRACT_VERSION) else { return Ok(()) };
    let version = String::from_utf8_lossy(version.value.unwrap_or_default());
    let major = version.split('.').next().unwrap_or_default();
    if major == headers::CONTRACT_VERSION_CURRENT {
        Ok(())
    } else {
        Err(format!(
            "record of Kafka contract version {version}; this build reads version {}",
            headers::CONTRACT_VERSION_CURRENT
        ))
    }
}

/// The record's tenant: `None` without a `tailgate.tenant` header (the default tenant), `Err` for a value that is
/// no tenant ID (not UTF-8, or not what [`headers::check_tenant`] accepts). Such a record was not written by a
/// Tailgate gateway, which writes only checked IDs; it is refused, so that a stray value can never become a
/// header sent to a backend or a name held for the life of the process.
pub fn tenant<M: Message>(message: &M) -> Result<Option<&str>, String> {
    let Some(record_headers) = message.headers() else { return Ok(None) };
    let Some(header) = record_headers.iter().find(|h| h.key == headers::TENANT) else { return Ok(None) };
    let id = std::str::from_utf8(header.value.unwrap_or_default())
        .map_err(|_| "the tailgate.tenant header is not UTF-8".to_owned())?;
    headers::check_tenant(id).map_err(|message| format!("the tailgate.tenant header: {message}"))?;
    Ok(Some(id))
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    use super::*;

    fn record(version: Option<&str>) -> OwnedMessage {
        let headers =
            version.map(|v| OwnedHeaders::new().insert(Header { key: headers::CONTRACT_VERSION, value: Some(v) }));
        OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, headers)
    }

    #[test]
    fn only_the_known_major_version_is_read() {
        assert_eq!(readable(&record(None)), Ok(()), "no header: plain OTLP from another producer");
        assert_eq!(readable(&record(Some("1"))), Ok(()));
        assert_eq!(readable(&record(Some("1.3"))), Ok(()), "a minor version adds only what may be ignored");
        let refused = readable(&record(Some("2"))).unwrap_err();
        assert!(refused.contains("version 2") && refused.contains("reads version 1"), "{refused}");
    }

    fn tenant_record(value: &[u8]) -> OwnedMessage {
        let headers = OwnedHeaders::new().insert(Header { key: headers::TENANT, value: Some(value) });
        OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 0, Some(headers))
    }

    #[test]
    fn a_tenant_is_read_only_when_it_is_a_tenant_id() {
        assert_eq!(tenant(&record(None)), Ok(None));
        assert_eq!(tenant(&tenant_record(b"payments")), Ok(Some("payments")));
        for bad in [&b""[..], b"a b", b"x\n", b"\xff", "a".repeat(151).as_bytes()] {
            assert!(tenant(&tenant_record(bad)).is_err(), "{bad:?}");
        }
    }
}
