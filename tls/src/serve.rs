//! Serving HTTP/1.1 and HTTP/2 over a [`Listener`] with the timers a hardened server has, for every HTTP port of
//! Tailgate (OTLP/HTTP, the telemetry port, the scrape endpoint). `axum::serve` sets none: without a timer hyper
//! never times out a request's headers, never pings an HTTP/2 peer and never ages a connection out.
//!
//! * **Headers in time**: an HTTP/1.1 request's headers must arrive whole within `header_read_timeout` (a client
//!   that sends them a byte at a time holds its slot that long, not for ever).
//! * **HTTP/2 keep-alive**: with `keepalive_interval`, a connection is pinged that long after the last frame
//!   received and closed when the ping is not answered within `keepalive_timeout` — a peer that vanished (a
//!   half-open connection) frees its slot in seconds.
//!   hyper runs that timer from the end of one response to the next request's head too, so an HTTP/1.1 keep-alive
//!   connection idle between requests is closed after it (as Go's server does with `IdleTimeout` unset).
//! * **Maximum connection age**: a connection older than `max_connection_age` (±10%, so that clients connected
//!   together do not all reconnect together, as grpc-go does) is told to go away (HTTP/2 GOAWAY; HTTP/1.1:
//!   `Connection: close` on its next response, or closed at once when idle); requests in flight finish within
//!   `max_connection_age_grace`. Clients reconnect, so a load balancer in front spreads them again. Counted as
//!   `tailgate_connections_timed_out_total{reason="max_age"}`.
//! * **Graceful stop**: when `shutdown` completes, no connection is accepted any more, every open one is told to go
//!   away, and `serve` returns once they have all closed, or after `drain` closing what is left (an HTTP/2 peer
//!   that never answers the GOAWAY's ping would otherwise hold it open).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{Connection, Listener};

/// The timers of an HTTP port.
#[derive(Clone, Copy, Debug)]
pub struct HttpTimers {
    pub header_read_timeout: Duration,
    /// `None`: no pings.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// `None`: connections live on.
    pub max_connection_age: Option<Duration>,
    /// `None`: requests in flight on an aged connection may take as long as they take.
    pub max_connection_age_grace: Option<Duration>,
    /// How long a stop waits for open connections to finish before closing them.
    pub drain: Duration,
}

impl HttpTimers {
    /// A port a scraper or a probe calls now and then: headers within 10 s, nothing else.
    pub const SCRAPED: HttpTimers = HttpTimers {
        header_read_timeout: Duration::from_secs(10),
        keepalive_interval: None,
        keepalive_timeout: Duration::from_secs(20),
        max_connection_age: None,
        max_connection_age_grace: None,
        drain: Duration::from_secs(5),
    };
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the open connections to finish.
pub async fn serve(
    mut listener: Listener,
    router: axum::Router,
    timers: HttpTimers,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(timers.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timers.keepalive_interval)
        .keep_alive_timeout(timers.keepalive_timeout);
    let builder = Arc::new(builder);
    let name = listener.name();
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            (connection, _) = listener.accept() => {
                let service = TowerToHyperService::new(router.clone());
                connections.spawn(serve_connection(Arc::clone(&builder), connection, service, timers, name, stopping.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(timers.drain, async { while connections.join_next().await.is_some() {} });
    if drained.await.is_err() {
        tracing::debug!(listener = name, open = connections.len(), "closing connections still open after the drain");
        connections.shutdown().await;
    }
    Ok(())
}

async fn serve_connection(
    builder: Arc<auto::Builder<TokioExecutor>>,
    connection: Connection,
    service: TowerToHyperService<axum::Router>,
    timers: HttpTimers,
    listener: &'static str,
    mut stopping: watch::Receiver<bool>,
) {
    let connection = builder.serve_connection(TokioIo::new(connection), service);
    let mut connection = std::pin::pin!(connection);
    let aged = async {
        match timers.max_connection_age {
            Some(age) => tokio::time::sleep(jittered(age)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(listener, %error, "connection closed with an error");
            }
            return;
        }
        () = async { drop(stopping.wait_for(|stop| *stop).await) } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
            return;
        }
        () = aged => {
            metrics::counter!(crate::CONNECTIONS_TIMED_OUT, "listener" => listener, "reason" => "max_age").increment(1);
            connection.as_mut().graceful_shutdown();
        }
    }
    // Past its age: what is in flight finishes, within the grace if there is one, and not past a stop's drain.
    let grace = async {
        match timers.max_connection_age_grace {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = connection => {}
        () = grace => {}
        () = async { drop(stopping.wait_for(|stop| *stop).await) } => {}
    }
}

/// `age` ±10%, drawn per connection.
fn jittered(age: Duration) -> Duration {
    use std::hash::{BuildHasher as _, Hasher as _};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    age.mul_f64(0.9 + 0.2 * (random as f64 / u64::MAX as f64))
}
