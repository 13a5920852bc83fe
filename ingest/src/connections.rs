//! A bound on open connections per listener: a connection is accepted only while fewer than the limit are open,
//! so a client (or a load balancer) that opens connections without end cannot make the gateway hold a socket, an
//! HTTP/2 state and receive windows for each. Past the limit, new connections wait in the kernel's accept queue
//! until one closes. Each open connection is counted in `tailgate_ingest_connections`. With TLS, a connection
//! takes its slot when accepted and is handed to the server once its handshake is done.
//!
//! A slot is not held for nothing: a connection that sends no byte within `first_byte_timeout`, or over which no
//! byte passes either way for `idle_timeout`, is closed (its reads fail with `TimedOut`) and its slot given back
//! (`tailgate_ingest_connections_timed_out_total{transport, reason}`). A host that opens connections and stays
//! silent ties up each slot for seconds, not for ever.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tailgate_tls::{Handshakes, ServerTls, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics as m;

/// A listener that holds at most `max` connections open.
pub(crate) struct Limited {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    transport: &'static str,
    tls: Option<Handshakes<Slot>>,
    timeouts: Timeouts,
}

/// How long a connection may stay silent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub first_byte: Duration,
    pub idle: Duration,
}

/// An accepted connection; its slot is given back when it is dropped.
pub(crate) struct Connection {
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
    timeouts: Timeouts,
    transport: &'static str,
}

impl Silence {
    fn new(timeouts: Timeouts, transport: &'static str) -> Silence {
        let now = tokio::time::Instant::now();
        Silence {
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.first_byte)),
            last: now,
            spoke: false,
            timeouts,
            transport,
        }
    }

    fn heard(&mut self, from_client: bool) {
        self.last = tokio::time::Instant::now();
        self.spoke |= from_client;
    }

    /// Whether the connection has been silent too long; otherwise the timer is set to wake `cx` when it would be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            let timeout = if self.spoke { self.timeouts.idle } else { self.timeouts.first_byte };
            let deadline = self.last + timeout;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.last + timeout <= tokio::time::Instant::now() {
                let reason = if self.spoke { "idle" } else { "first_byte" };
                metrics::counter!(m::CONNECTIONS_TIMED_OUT, "transport" => self.transport, "reason" => reason)
                    .increment(1);
                return true;
            }
        }
    }
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    transport: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!(m::CONNECTIONS, "transport" => self.transport).decrement(1.0);
    }
}

impl Limited {
    /// With `tls`, every connection is TLS.
    pub(crate) fn new(
        listener: TcpListener,
        max: usize,
        transport: &'static str,
        tls: Option<ServerTls>,
        timeouts: Timeouts,
    ) -> Self {
        metrics::gauge!(m::CONNECTIONS, "transport" => transport).set(0.0);
        let tls = tls.map(|tls| Handshakes::new(tls, transport));
        Limited { listener, permits: Arc::new(Semaphore::new(max.max(1))), transport, tls, timeouts }
    }

    /// The next connection, once there is room for it (and, with TLS, once its handshake is done).
    pub(crate) async fn accept(&mut self) -> (Connection, SocketAddr) {
        let silence = || Silence::new(self.timeouts, self.transport);
        let Some(handshakes) = &mut self.tls else {
            let (tcp, peer, slot) = accept_tcp(&self.listener, &self.permits, self.transport).await;
            return (Connection { stream: Stream::Plain(tcp), _slot: slot, silence: silence() }, peer);
        };
        loop {
            // Both are cancel-safe: a connection accepted is handed to a handshake before the next await.
            tokio::select! {
                biased;
                (stream, peer, slot) = handshakes.next() => {
                    // The handshake had its own timeout; the first bytes of a request are still to come.
                    let mut silence = silence();
                    silence.heard(false);
                    return (Connection { stream, _slot: slot, silence }, peer);
                }
                (tcp, peer, slot) = accept_tcp(&self.listener, &self.permits, self.transport) => {
                    handshakes.start(tcp, peer, slot);
                }
            }
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// The next TCP connection, once there is room for it, with its slot.
async fn accept_tcp(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    transport: &'static str,
) -> (TcpStream, SocketAddr, Slot) {
    let permit = Arc::clone(permits).acquire_owned().await.expect("the semaphore is never closed");
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                metrics::gauge!(m::CONNECTIONS, "transport" => transport).increment(1.0);
                return (stream, addr, Slot { _permit: permit, transport });
            }
            // Out of file descriptors and the like: wait a little rather than spin.
            Err(error) => {
                tracing::warn!(%error, transport, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl axum::serve::Listener for Limited {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        Limited::accept(self).await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Limited::local_addr(self)
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
