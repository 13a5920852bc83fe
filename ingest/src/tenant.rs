//! Whose data a request is: the tenant its credentials name, or (on a listener told to trust it) the tenant a
//! header names, or the default tenant. Written to every record made from the request as `tailgate.tenant`.

use std::sync::Arc;

/// A tenant ID: what Loki, Mimir and Tempo accept as `X-Scope-OrgID`, so that it can be passed to each of them
/// unchanged. `None` is the default tenant: no header on the records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tenant(Option<Arc<str>>);

impl Tenant {
    /// The default tenant.
    pub const DEFAULT: Tenant = Tenant(None);

    /// A named tenant, or why `id` cannot be one.
    pub fn new(id: &str) -> Result<Tenant, String> {
        validate(id)?;
        Ok(Tenant(Some(Arc::from(id))))
    }

    pub fn id(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// What the metrics call it: its ID, or `default`.
    pub fn label(&self) -> String {
        self.id().unwrap_or("default").to_owned()
    }
}

/// The characters Loki, Mimir and Tempo allow in a tenant ID: the Kafka contract's rule, which every reader of the
/// records checks again.
pub fn validate(id: &str) -> Result<(), String> {
    tailgate_proto::headers::check_tenant(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_what_every_backend_accepts() {
        for good in ["payments", "team-a_1", "(x)", "a.b"] {
            assert!(Tenant::new(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", "x\n", &"a".repeat(151)] {
            assert!(Tenant::new(bad).is_err(), "{bad}");
        }
    }
}
