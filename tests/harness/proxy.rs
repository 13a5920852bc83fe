//! A TCP proxy the test controls, between clients and a server, for the faults a network has: added latency, a
//! stalled path (connections open, nothing forwarded either way, not even a close), connections reset, and a
//! blackhole (a stall longer than any session: what a partitioned network looks like to both ends). It runs on a
//! thread and runtime of its own, so that it goes on forwarding whatever the test's runtime is doing, stops when
//! dropped, and counts what each fault did to the traffic, so that a fault can show its effect.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the proxy does to the traffic now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Forwards at once.
    Open,
    /// Forwards each chunk this long after it was read (chunks read together leave together: a latency, not a
    /// bandwidth limit).
    Delayed(Duration),
    /// Forwards nothing, either way, on new connections or old — no data, no close; new connections are accepted
    /// and not dialled on.
    Stalled,
}

/// What the faults did, for a fault's proof of effect.
#[derive(Debug, Default)]
pub struct Counts {
    pub delayed_chunks: AtomicU64,
    /// Chunks, closes and new connections that waited for a stall to end.
    pub stalled_chunks: AtomicU64,
    pub reset_connections: AtomicU64,
    pub connections: AtomicU64,
}

struct State {
    path: Path,
    /// Bumped by `reset`: a connection of an older generation is closed with a RST.
    generation: u64,
}

type Shared = Arc<(Mutex<State>, Counts)>;

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Proxy {
    /// Listens on a free local port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port for the proxy");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let shared: Shared = Arc::new((Mutex::new(State { path: Path::Open, generation: 0 }), Counts::default()));
        let (shutdown, mut stop) = tokio::sync::oneshot::channel::<()>();
        let accepting = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).unwrap();
                    loop {
                        let client = tokio::select! {
                            _ = &mut stop => return,
                            accepted = listener.accept() => match accepted {
                                Ok((client, _)) => client,
                                Err(_) => {
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    continue;
                                }
                            },
                        };
                        accepting.1.connections.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(connection(client, target, Arc::clone(&accepting)));
                    }
                    // Dropping the runtime at the end of the thread ends every connection's task.
                })
            })
            .expect("the proxy's thread starts");
        Proxy { addr, shared, shutdown: Some(shutdown) }
    }

    pub fn set(&self, path: Path) {
        self.shared.0.lock().unwrap().path = path;
    }

    /// Closes every open connection with a RST (new ones are forwarded as the path says).
    pub fn reset(&self) {
        self.shared.0.lock().unwrap().generation += 1;
    }

    pub fn counts(&self) -> &Counts {
        &self.shared.1
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

fn path(shared: &Shared) -> Path {
    shared.0.lock().unwrap().path
}

fn generation(shared: &Shared) -> u64 {
    shared.0.lock().unwrap().generation
}

/// Waits while the path is stalled, counting the wait once.
async fn while_stalled(shared: &Shared) {
    if path(shared) == Path::Stalled {
        shared.1.stalled_chunks.fetch_add(1, Ordering::SeqCst);
        while path(shared) == Path::Stalled {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn reset_since(shared: &Shared, generation_then: u64) {
    while generation(shared) == generation_then {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connection(client: TcpStream, target: SocketAddr, shared: Shared) {
    let born = generation(&shared);
    // Through a stall, not even the connection to the server is made.
    while_stalled(&shared).await;
    let Ok(server) = TcpStream::connect(target).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let ((client_read, server_write), (server_read, client_write)) = tokio::join!(
        forward(client_read, server_write, Arc::clone(&shared), born),
        forward(server_read, client_write, Arc::clone(&shared), born)
    );
    // A reset: each socket, whole again, is closed with SO_LINGER 0 — a RST, not a FIN (a write half dropped on
    // its own would shut down with a FIN first).
    let sockets = [client_read.zip(client_write), server_read.zip(server_write)];
    if sockets.iter().any(Option::is_some) {
        shared.1.reset_connections.fetch_add(1, Ordering::SeqCst);
    }
    for (read, write) in sockets.into_iter().flatten() {
        if let Ok(stream) = read.reunite(write) {
            // Deprecated because a non-zero linger blocks the dropping thread; a zero one closes at once.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
        }
    }
}

/// Copies `from` to `to` as the path says until `from` closes (and the path lets the close through), or a reset:
/// then it gives both halves back, for the RST. A reader stamps each chunk; a writer forwards it when the path says.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: Shared,
    born: u64,
) -> (Option<OwnedReadHalf>, Option<OwnedWriteHalf>) {
    let (chunks, mut queue) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader = async {
        let reading = async {
            let mut buffer = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buffer).await {
                if chunks.send((Instant::now(), buffer[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        };
        let reset = tokio::select! {
            _ = reading => false,
            _ = reset_since(&shared, born) => true,
        };
        // Dropping the sender tells the writer the end came.
        drop(chunks);
        reset
    };
    let writer = async {
        let writing = async {
            while let Some((read_at, chunk)) = queue.recv().await {
                while_stalled(&shared).await;
                if let Path::Delayed(delay) = path(&shared) {
                    shared.1.delayed_chunks.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep_until(read_at + delay).await;
                }
                if to.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // The close, too, waits out a stall; and a reset is no close (the reader ended for it).
            while_stalled(&shared).await;
            if generation(&shared) == born {
                let _ = to.shutdown().await;
            }
        };
        let reset = tokio::select! {
            _ = writing => false,
            _ = reset_since(&shared, born) => true,
        };
        // If it stopped (the other end gone), the reader's next send fails and it stops too.
        drop(queue);
        reset
    };
    let (read_reset, write_reset) = tokio::join!(reader, writer);
    match read_reset || write_reset || generation(&shared) != born {
        true => (Some(from), Some(to)),
        false => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy; each path shown to do to the bytes what it says.
    #[tokio::test]
    async fn the_proxy_delays_stalls_and_resets_as_told() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = server.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n @ 1..) = socket.read(&mut buffer).await {
                        let _ = socket.write_all(&buffer[..n]).await;
                    }
                });
            }
        });
        let proxy = Proxy::start(target);
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        async fn echo(
            client: &mut TcpStream,
        ) -> (Result<std::io::Result<[u8; 4]>, tokio::time::error::Elapsed>, Duration) {
            let started = std::time::Instant::now();
            client.write_all(b"ping").await.unwrap();
            let mut answer = [0u8; 4];
            let read = tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut answer)).await;
            (read.map(|r| r.map(|_| answer)), started.elapsed())
        }
        let (answer, _) = echo(&mut client).await;
        assert_eq!(answer.unwrap().unwrap(), *b"ping");

        // Delayed: both directions, so a round trip takes twice the delay.
        proxy.set(Path::Delayed(Duration::from_millis(200)));
        let (answer, took) = echo(&mut client).await;
        assert_eq!(answer.unwrap().unwrap(), *b"ping");
        assert!(took >= Duration::from_millis(400), "a round trip took {took:?}");
        assert!(proxy.counts().delayed_chunks.load(Ordering::SeqCst) >= 2);

        // Stalled: nothing comes back while it lasts; what was held arrives after.
        proxy.set(Path::Stalled);
        let (answer, _) = echo(&mut client).await;
        assert!(answer.is_err(), "an answer through a stalled path");
        proxy.set(Path::Open);
        let mut held = [0u8; 4];
        client.read_exact(&mut held).await.unwrap();
        assert_eq!(held, *b"ping", "what was held is forwarded once the path opens");

        // Reset: the client sees its connection reset, not closed.
        proxy.reset();
        let mut buffer = [0u8; 4];
        let read = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buffer)).await.unwrap();
        assert_eq!(read.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset));
        assert_eq!(proxy.counts().reset_connections.load(Ordering::SeqCst), 1);
        let mut again = TcpStream::connect(proxy.addr).await.unwrap();
        assert_eq!(echo(&mut again).await.0.unwrap().unwrap(), *b"ping", "new connections pass after a reset");
    }
}
