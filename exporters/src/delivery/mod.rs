//! One request's way to a backend: send, classify the answer, back off and retry until it is accepted, refused for
//! good, or the worker stops.
//!
//! Delivery knows nothing of the backends: each backend module brings a [`Transport`] (or builds an
//! `http::HttpTransport` with its own refusal classifier) and declares the shared keys of `settings`.

pub mod credentials;
mod health;
pub(crate) mod http;
mod retry;
pub(crate) mod settings;
mod transport;

pub use health::Health;
pub use retry::{deliver, Delivered, Retry};
pub use settings::{Batching, Delivery};
pub use transport::{Attempt, Tenant, Transport};
