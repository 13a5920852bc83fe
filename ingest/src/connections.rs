//! A bound on open connections per listener: a connection is accepted only while fewer than the limit are open,
//! so a client (or a load balancer) that opens connections without end cannot make the gateway hold a socket, an
//! HTTP/2 state and receive windows for each. Past the limit, new connections wait in the kernel's accept queue
//! until one closes. Each open connection is counted in `tailgate_ingest_connections`. With TLS, a connection
//! takes its slot when accepted and is handed to the server once its handshake is done.

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
}

/// An accepted connection; its slot is given back when it is dropped.
pub(crate) struct Connection {
    stream: Stream,
    _slot: Slot,
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
    pub(crate) fn new(listener: TcpListener, max: usize, transport: &'static str, tls: Option<ServerTls>) -> Self {
        metrics::gauge!(m::CONNECTIONS, "transport" => transport).set(0.0);
        let tls = tls.map(|tls| Handshakes::new(tls, transport));
        Limited { listener, permits: Arc::new(Semaphore::new(max.max(1))), transport, tls }
    }

    /// The next connection, once there is room for it (and, with TLS, once its handshake is done).
    pub(crate) async fn accept(&mut self) -> (Connection, SocketAddr) {
        let Some(handshakes) = &mut self.tls else {
            let (tcp, peer, slot) = accept_tcp(&self.listener, &self.permits, self.transport).await;
            return (Connection { stream: Stream::Plain(tcp), _slot: slot }, peer);
        };
        loop {
            // Both are cancel-safe: a connection accepted is handed to a handshake before the next await.
            tokio::select! {
                biased;
                (stream, peer, slot) = handshakes.next() => return (Connection { stream, _slot: slot }, peer),
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
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
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
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
