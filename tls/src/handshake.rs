//! Accepted connections, plaintext or TLS, and the handshakes between.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::ServerTls;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection as served: TCP, or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        }
    }
}

/// Handshakes in progress on one listener, each in its own task. `T` travels with the connection (a slot in a
/// connection limit, say).
pub struct Handshakes<T> {
    tls: ServerTls,
    listener: &'static str,
    done_tx: mpsc::UnboundedSender<(Stream, SocketAddr, T)>,
    done_rx: mpsc::UnboundedReceiver<(Stream, SocketAddr, T)>,
}

impl<T: Send + 'static> Handshakes<T> {
    pub fn new(tls: ServerTls, listener: &'static str) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Handshakes { tls, listener, done_tx, done_rx }
    }

    /// Starts the handshake of a connection just accepted. One that fails or times out is closed and counted.
    pub fn start(&self, tcp: TcpStream, peer: SocketAddr, tag: T) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.current());
        let done = self.done_tx.clone();
        let listener = self.listener;
        tokio::spawn(async move {
            let reason = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((Stream::Tls(Box::new(tls)), peer, tag));
                    return;
                }
                Ok(Err(error)) => {
                    tracing::debug!(listener, %peer, %error, "TLS handshake failed");
                    "error"
                }
                Err(_) => "timeout",
            };
            metrics::counter!(crate::HANDSHAKE_FAILURES, "listener" => listener, "reason" => reason).increment(1);
        });
    }

    /// The next connection whose handshake succeeded.
    pub async fn next(&mut self) -> (Stream, SocketAddr, T) {
        self.done_rx.recv().await.expect("the sender lives in self")
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }
}
