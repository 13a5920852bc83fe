//! How an exporter proves who it is to an HTTP backend: a bearer token or basic auth, each secret read from a file
//! (or the environment) for every request, so a rotated token is used from the next request on. The same type as
//! the credentials Tailgate's own scraped ports ask for (`tailgate_tls::scrape_auth`).

pub use tailgate_tls::scrape_auth::{BasicCredentials as BasicAuth, ScrapeAuth as BackendAuth};
