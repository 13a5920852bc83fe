//! A listener that every server socket of Tailgate uses — the OTLP receivers, the telemetry port, the Prometheus
//! scrape endpoint: TCP or TLS, with bounds that one host cannot exhaust.
//!
//! * **A bound on open connections**: a connection is accepted only while fewer than `max_connections` are open,
//!   so a client (or a load balancer) that opens connections without end cannot make the process hold a socket,
//!   an HTTP/2 state and receive windows for each. Past the limit, new connections wait in the kernel's accept
//!   queue until one closes. With TLS, a connection takes its slot when accepted and is handed to the server once
//!   its handshake is done.
//! * **A bound per source address** (`max_connections_per_source`, off by default: behind a load balancer every
//!   connection comes from its few addresses): a host's connection past it is closed at once, so one host cannot
//!   take every slot.
//! * **No slot held for nothing**: a connection that sends no byte within `first_byte_timeout`, or over which no
//!   byte passes either way for `idle_timeout`, is closed (its reads fail with `TimedOut`) and its slot given back.
//!
//! Counted per listener: `tailgate_connections{listener}` open, `tailgate_connections_timed_out_total{listener,
//! reason}` (`first_byte`, `idle`), `tailgate_connections_refused_total{listener, reason="per_source"}`.

use std::collections::HashMap;
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::{Handshakes, ServerTls, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that holds at most `max_connections` connections open, `max_connections_per_source` from one host.
pub struct Listener {
    tcp: TcpListener,
    name: &'static str,
    permits: Arc<Semaphore>,
    sources: Sources,
    tls: Option<Handshakes<Slot>>,
    limits: Limits,
}

/// A listener's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    /// 0: no bound per host.
    pub max_connections_per_source: usize,
    /// How long a new connection may take to send its first byte.
    pub first_byte_timeout: Duration,
    /// How long no byte may pass either way over an open connection.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The bounds of a port that answers a scraper or a probe now and then (the telemetry port, the scrape
    /// endpoint): a few connections, no silence longer than a scrape interval allows.
    pub const SCRAPED: Limits = Limits {
        max_connections: 64,
        max_connections_per_source: 0,
        first_byte_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(120),
    };
}

/// Open connections per source address.
type Sources = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// An accepted connection; its slot is given back when it is dropped.
pub struct Connection {
    stream: Stream,
    _slot: Slot,
    silence: Silence,
}

/// When a connection has been silent too long: a timer for the current deadline, moved on lazily from the last
/// byte seen (so that a busy connection costs a timestamp per read or write, not a timer reset).
struct Silence {
    timer: Pin<Box<tokio::time::Sleep>>,
    last: tokio::time::Instant,
    spoke: bool,
    limits: Limits,
    listener: &'static str,
}

impl Silence {
    fn new(limits: Limits, listener: &'static str) -> Silence {
        let now = tokio::time::Instant::now();
        Silence {
            timer: Box::pin(tokio::time::sleep_until(now + limits.first_byte_timeout)),
            last: now,
            spoke: false,
            limits,
            listener,
        }
    }

    fn heard(&mut self, from_client: bool) {
        self.last = tokio::time::Instant::now();
        self.spoke |= from_client;
    }

    /// Whether the connection has been silent too long; otherwise the timer is set to wake `cx` when it would be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let timeout = if self.spoke { self.limits.idle_timeout } else { self.limits.first_byte_timeout };
            let deadline = self.last + timeout;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.last + timeout <= tokio::time::Instant::now() {
                let reason = if self.spoke { "idle" } else { "first_byte" };
                metrics::counter!(crate::CONNECTIONS_TIMED_OUT, "listener" => self.listener, "reason" => reason)
                    .increment(1);
                return true;
            }
        }
    }
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    listener: &'static str,
    source: IpAddr,
    sources: Sources,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!(crate::CONNECTIONS, "listener" => self.listener).decrement(1.0);
        let mut sources = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = sources.get_mut(&self.source) {
            *open -= 1;
            if *open == 0 {
                sources.remove(&self.source);
            }
        }
    }
}

impl Listener {
    /// With `tls`, every connection is TLS. `name` (`grpc`, `http`, `telemetry`, `scrape`) labels its metrics.
    pub fn new(tcp: TcpListener, name: &'static str, tls: Option<ServerTls>, limits: Limits) -> Self {
        metrics::gauge!(crate::CONNECTIONS, "listener" => name).set(0.0);
        let tls = tls.map(|tls| Handshakes::new(tls, name));
        let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        Listener { tcp, name, permits, sources: Sources::default(), tls, limits }
    }

    /// The next connection, once there is room for it (and, with TLS, once its handshake is done).
    pub async fn accept(&mut self) -> (Connection, SocketAddr) {
        let silence = || Silence::new(self.limits, self.name);
        let Some(handshakes) = &mut self.tls else {
            let (tcp, peer, slot) = self.accept_tcp().await;
            return (Connection { stream: Stream::Plain(tcp), _slot: slot, silence: silence() }, peer);
        };
        loop {
            // Both are cancel-safe: a connection accepted is handed to a handshake before the next await.
            tokio::select! {
                biased;
                (stream, peer, slot) = handshakes.next() => {
                    // The handshake had its own timeout; the first bytes of a request are still to come.
                    let mut silence = Silence::new(self.limits, self.name);
                    silence.heard(false);
                    return (Connection { stream, _slot: slot, silence }, peer);
                }
                (tcp, peer, slot) = accept_tcp(&self.tcp, &self.permits, &self.sources, self.limits, self.name) => {
                    handshakes.start(tcp, peer, slot);
                }
            }
        }
    }

    async fn accept_tcp(&self) -> (TcpStream, SocketAddr, Slot) {
        accept_tcp(&self.tcp, &self.permits, &self.sources, self.limits, self.name).await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The name that labels this listener's metrics.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The next TCP connection, once there is room for it, with its slot. A connection from a host that already has
/// `max_connections_per_source` open is closed at once.
async fn accept_tcp(
    tcp: &TcpListener,
    permits: &Arc<Semaphore>,
    sources: &Sources,
    limits: Limits,
    listener: &'static str,
) -> (TcpStream, SocketAddr, Slot) {
    let permit = Arc::clone(permits).acquire_owned().await.expect("the semaphore is never closed");
    loop {
        match tcp.accept().await {
            Ok((stream, addr)) => {
                let source = addr.ip().to_canonical();
                {
                    let mut sources = sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let open = sources.entry(source).or_insert(0);
                    if limits.max_connections_per_source > 0 && *open >= limits.max_connections_per_source {
                        metrics::counter!(crate::CONNECTIONS_REFUSED, "listener" => listener, "reason" => "per_source")
                            .increment(1);
                        continue;
                    }
                    *open += 1;
                }
                let _ = stream.set_nodelay(true);
                metrics::gauge!(crate::CONNECTIONS, "listener" => listener).increment(1.0);
                return (stream, addr, Slot { _permit: permit, listener, source, sources: Arc::clone(sources) });
            }
            // Out of file descriptors and the like: wait a little rather than spin.
            Err(error) => {
                tracing::warn!(%error, listener, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.tcp().connect_info()
    }
}
impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.silence.heard(true);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.silence.expired(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection silent for too long")))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.silence.heard(false);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.silence.heard(false);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
