//! Accepting TCP connections under two bounds, before HTTP/2 (or TLS) sees
//! them:
//!
//! * a cap on open connections (`limits.max_connections`): beyond it a new
//!   connection is closed at once, so a flood of sockets cannot exhaust the
//!   process's file descriptors;
//! * a preface timeout (`limits.connection_preface_timeout_secs`): a
//!   connection must send its first [`PREFACE_BYTES`] bytes (the HTTP/2
//!   client preface is 24 bytes, a TLS ClientHello is longer) within the
//!   timeout or it is closed. HTTP/2 keepalive only covers connections
//!   that finished the handshake; this covers the ones that never start.
//!
//! The bytes read to check the preface are replayed to the server, which
//! sees an ordinary stream.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::Metrics;

/// Bytes a connection must send within the preface timeout.
pub const PREFACE_BYTES: usize = 24;

/// A connection that passed both bounds; it holds its slot until dropped.
pub struct Guarded {
    stream: TcpStream,
    /// Bytes already read (the preface), replayed before the socket's.
    head: Vec<u8>,
    pos: usize,
    _slot: Slot,
}

/// One of `max_connections`, counted in `blindfold_connections_open`.
struct Slot {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connections_add(-1);
    }
}

/// The accepted, checked connections of `listener`, for
/// `serve_with_incoming`. The accept loop ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    preface_timeout: Duration,
    metrics: Arc<Metrics>,
) -> ReceiverStream<io::Result<Guarded>> {
    let (tx, rx) = mpsc::channel::<io::Result<Guarded>>(64);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: do not spin; the next accept may work
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics.connection_refused("cap");
                tracing::debug!(max_connections, "connection refused: at the connection cap");
                drop(stream);
                continue;
            };
            metrics.connections_add(1);
            let slot = Slot {
                _permit: permit,
                metrics: metrics.clone(),
            };
            let _ = stream.set_nodelay(true);
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                let mut head = vec![0u8; PREFACE_BYTES];
                match tokio::time::timeout(preface_timeout, stream.read_exact(&mut head)).await {
                    Ok(Ok(_)) => {
                        let _ = tx
                            .send(Ok(Guarded {
                                stream,
                                head,
                                pos: 0,
                                _slot: slot,
                            }))
                            .await;
                    }
                    // closed early or failed: nothing to serve
                    Ok(Err(_)) => {}
                    Err(_) => {
                        metrics.connection_refused("preface_timeout");
                        tracing::debug!(
                            secs = preface_timeout.as_secs_f64(),
                            "connection closed: no preface within the timeout"
                        );
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos < this.head.len() {
            let n = (this.head.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.head[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.head.len() {
                this.head = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio_stream::StreamExt;

    async fn setup(
        cap: usize,
        timeout: Duration,
    ) -> (
        std::net::SocketAddr,
        ReceiverStream<io::Result<Guarded>>,
        Arc<Metrics>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Metrics::default());
        (
            addr,
            incoming(listener, cap, timeout, metrics.clone()),
            metrics,
        )
    }

    /// Reads until the peer closes; true when it did within `within`.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 16];
        matches!(
            tokio::time::timeout(within, s.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    #[tokio::test]
    async fn the_preface_is_replayed_and_silent_connections_are_closed() {
        let (addr, mut conns, _) = setup(8, Duration::from_millis(300)).await;
        let mut good = TcpStream::connect(addr).await.unwrap();
        let msg: Vec<u8> = (0..40u8).collect();
        good.write_all(&msg).await.unwrap();
        let mut g = conns.next().await.unwrap().unwrap();
        let mut got = vec![0u8; 40];
        g.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg, "the preface bytes reach the server in order");

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut partial = TcpStream::connect(addr).await.unwrap();
        partial.write_all(&[1, 2, 3]).await.unwrap();
        assert!(closed_within(&mut silent, Duration::from_secs(3)).await);
        assert!(closed_within(&mut partial, Duration::from_secs(3)).await);
        // the good one is still open
        assert!(!closed_within(&mut good, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_slots_come_back() {
        let (addr, mut conns, metrics) = setup(2, Duration::from_secs(30)).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&[0u8; PREFACE_BYTES]).await.unwrap();
            held.push((s, conns.next().await.unwrap().unwrap()));
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut third, Duration::from_secs(3)).await);
        assert!(metrics.render().contains("blindfold_connections_open 2"));
        drop(held.pop());
        // the slot is free again
        let mut again = TcpStream::connect(addr).await.unwrap();
        again.write_all(&[0u8; PREFACE_BYTES]).await.unwrap();
        let served = tokio::time::timeout(Duration::from_secs(3), conns.next()).await;
        assert!(matches!(served, Ok(Some(Ok(_)))));
    }
}
