//! A bound on open connections per listener: a connection is accepted only while fewer than the limit are open,
//! so a client (or a load balancer) that opens connections without end cannot make the gateway hold a socket, an
//! HTTP/2 state and receive windows for each. Past the limit, new connections wait in the kernel's accept queue
//! until one closes. Each open connection is counted in `tailgate_ingest_connections`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics as m;

/// A listener that holds at most `max` connections open.
pub(crate) struct Limited {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    transport: &'static str,
}

/// An accepted connection; its slot is given back when it is dropped.
pub(crate) struct Connection {
    stream: TcpStream,
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
    pub(crate) fn new(listener: TcpListener, max: usize, transport: &'static str) -> Self {
        metrics::gauge!(m::CONNECTIONS, "transport" => transport).set(0.0);
        Limited { listener, permits: Arc::new(Semaphore::new(max.max(1))), transport }
    }

    /// The next connection, once there is room for it.
    pub(crate) async fn accept(&mut self) -> (Connection, SocketAddr) {
        let permit = Arc::clone(&self.permits).acquire_owned().await.expect("the semaphore is never closed");
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    metrics::gauge!(m::CONNECTIONS, "transport" => self.transport).increment(1.0);
                    return (Connection { stream, _slot: Slot { _permit: permit, transport: self.transport } }, addr);
                }
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(error) => {
                    tracing::warn!(%error, transport = self.transport, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
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
        self.stream.connect_info()
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
