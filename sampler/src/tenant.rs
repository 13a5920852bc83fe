//! Tenants as the sampler keeps them apart: a trace is identified by its tenant and its trace ID, so two tenants'
//! spans that share a trace ID are two traces, decided and written separately. A tenant is its record's
//! `tailgate.tenant` header, held as a small number (`0` is the default tenant, records without the header) that
//! is the same in every partition of this process; the names are kept for writing the header back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rdkafka::message::{Headers, Message};
use tailgate_proto::headers;

/// A tenant, as [`intern`] numbered it.
pub type Tenant = u32;

/// The default tenant.
pub const DEFAULT: Tenant = 0;

#[derive(Default)]
struct Names {
    by_name: HashMap<Arc<str>, Tenant>,
    names: Vec<Arc<str>>,
}

fn names() -> &'static Mutex<Names> {
    static NAMES: OnceLock<Mutex<Names>> = OnceLock::new();
    NAMES.get_or_init(Mutex::default)
}

/// The number of tenant `name` (`None`: the default tenant).
pub fn intern(name: Option<&str>) -> Tenant {
    let Some(name) = name else { return DEFAULT };
    let mut names = names().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(tenant) = names.by_name.get(name) {
        return *tenant;
    }
    let name: Arc<str> = Arc::from(name);
    names.names.push(Arc::clone(&name));
    let tenant = names.names.len() as Tenant;
    names.by_name.insert(name, tenant);
    tenant
}

/// The name of `tenant`, `None` for the default one.
pub fn name(tenant: Tenant) -> Option<Arc<str>> {
    let index = (tenant as usize).checked_sub(1)?;
    names().lock().unwrap_or_else(std::sync::PoisonError::into_inner).names.get(index).cloned()
}

/// The tenant of a record: its `tailgate.tenant` header.
pub fn of(message: &impl Message) -> Tenant {
    let header = message.headers().and_then(|headers| headers.iter().find(|header| header.key == headers::TENANT));
    intern(header.and_then(|header| header.value).and_then(|value| std::str::from_utf8(value).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_has_one_number_and_back() {
        let a = intern(Some("tenant-test-a"));
        assert_eq!(intern(Some("tenant-test-a")), a);
        assert_ne!(intern(Some("tenant-test-b")), a);
        assert_eq!(intern(None), DEFAULT);
        assert_eq!(name(a).as_deref(), Some("tenant-test-a"));
        assert_eq!(name(DEFAULT), None);
    }
}
