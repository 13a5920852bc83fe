//! Tenants as the sampler keeps them apart: a trace is identified by its tenant and its trace ID, so two tenants'
//! spans that share a trace ID are two traces, decided and written separately. A tenant is its record's
//! `tailgate.tenant` header, held as a small number (`0` is the default tenant, records without the header) that
//! is the same in every partition of this process; the names are kept for writing the header back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rdkafka::message::Message;

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

/// The most tenants a process tells apart. Each name is held for the life of the process (traces, decisions and
/// RED series refer to it by number), so a topic holding endless distinct tenant IDs must not grow the table
/// without bound: past this many, a record of a new tenant is refused as unreadable (dead-lettered).
pub const MAX_TENANTS: usize = 10_000;

/// The number of tenant `name` (`None`: the default tenant), or why it cannot have one.
pub fn intern(name: Option<&str>) -> Result<Tenant, String> {
    let Some(name) = name else { return Ok(DEFAULT) };
    names().lock().unwrap_or_else(std::sync::PoisonError::into_inner).intern(name, MAX_TENANTS)
}

impl Names {
    fn intern(&mut self, name: &str, limit: usize) -> Result<Tenant, String> {
        if let Some(tenant) = self.by_name.get(name) {
            return Ok(*tenant);
        }
        if self.names.len() >= limit {
            return Err(format!("more than {limit} tenants seen by this worker; tenant `{name}` is refused"));
        }
        let name: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&name));
        let tenant = self.names.len() as Tenant;
        self.by_name.insert(name, tenant);
        Ok(tenant)
    }
}

/// The name of `tenant`, `None` for the default one.
pub fn name(tenant: Tenant) -> Option<Arc<str>> {
    let index = (tenant as usize).checked_sub(1)?;
    names().lock().unwrap_or_else(std::sync::PoisonError::into_inner).names.get(index).cloned()
}

/// The tenant of a record: its `tailgate.tenant` header, refused when it is no tenant ID
/// ([`tailgate_kafka::contract::tenant`]) or one too many.
pub fn of(message: &impl Message) -> Result<Tenant, String> {
    intern(tailgate_kafka::contract::tenant(message)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_has_one_number_and_back() {
        let a = intern(Some("tenant-test-a")).unwrap();
        assert_eq!(intern(Some("tenant-test-a")), Ok(a));
        assert_ne!(intern(Some("tenant-test-b")), Ok(a));
        assert_eq!(intern(None), Ok(DEFAULT));
        assert_eq!(name(a).as_deref(), Some("tenant-test-a"));
        assert_eq!(name(DEFAULT), None);
    }

    /// Every distinct tenant header used to add a name for the life of the process: a topic of random tenant IDs
    /// grew the sampler without bound. Past `MAX_TENANTS` a new one is refused; known ones still resolve.
    #[test]
    fn the_table_of_tenants_is_bounded() {
        let mut names = Names::default();
        let known = names.intern("known", 100).unwrap();
        let refused = (0..110).filter(|n| names.intern(&format!("tenant-{n}"), 100).is_err()).count();
        assert_eq!(refused, 11, "one known and 99 new fit in 100");
        assert_eq!(names.names.len(), 100);
        assert_eq!(names.intern("known", 100), Ok(known));
    }
}
