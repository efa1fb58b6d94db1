//! A deadline for a connection's first bytes. hyper's HTTP/2 server waits for the client
//! preface forever, so a peer that finishes TLS and then stays silent holds its connection
//! (and descriptor) until TCP keepalive gives up, minutes later. [`Conn`] fails the read
//! with `TimedOut` when the first [`PREFACE_LEN`] bytes have not arrived by the deadline,
//! which makes hyper drop the connection. Once they have, the timer is dropped and each read
//! costs one branch: the heartbeat gateway's per-beat path stays as it was.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tonic::transport::server::Connected;

use crate::incoming::ListenerStats;

/// Length of the HTTP/2 client connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
pub const PREFACE_LEN: usize = 24;

/// A connection whose first [`PREFACE_LEN`] bytes must arrive before a deadline.
#[pin_project]
#[derive(Debug)]
pub struct Conn<S> {
    #[pin]
    inner: S,
    /// Set until the preface has arrived.
    waiting: Option<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    deadline: Pin<Box<Sleep>>,
    missing: usize,
    /// Counts a timeout; dropped with the rest once the preface is in.
    stats: Option<Arc<ListenerStats>>,
}

impl<S> Conn<S> {
    /// `inner`, which must deliver its first [`PREFACE_LEN`] bytes within `timeout`.
    pub fn new(inner: S, timeout: Duration) -> Self {
        let waiting = Waiting { deadline: Box::pin(tokio::time::sleep(timeout)), missing: PREFACE_LEN, stats: None };
        Self { inner, waiting: Some(waiting) }
    }

    /// Counts a missed deadline in `stats.preface_timeouts`.
    pub fn counting(mut self, stats: Arc<ListenerStats>) -> Self {
        if let Some(waiting) = &mut self.waiting {
            waiting.stats = Some(stats);
        }
        self
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead> AsyncRead for Conn<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let Some(waiting) = this.waiting else {
            return this.inner.poll_read(cx, buf);
        };
        let before = buf.filled().len();
        match this.inner.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                waiting.missing = waiting.missing.saturating_sub(read);
                if waiting.missing == 0 {
                    *this.waiting = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                ready!(waiting.deadline.as_mut().poll(cx));
                if let Some(stats) = &waiting.stats {
                    stats.preface_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no HTTP/2 preface before the deadline")))
            }
        }
    }
}

impl<S: AsyncWrite> AsyncWrite for Conn<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Conn<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future as _;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn silence_past_the_deadline_fails_the_read() {
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = Conn::new(server, TIMEOUT);
        let started = tokio::time::Instant::now();
        let err = conn.read(&mut [0; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_preface_is_not_enough() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Conn::new(server, TIMEOUT);
        client.write_all(&[b'P'; PREFACE_LEN - 1]).await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), PREFACE_LEN - 1);
        assert_eq!(conn.read(&mut buf).await.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_preface_the_deadline_is_gone() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Conn::new(server, TIMEOUT);
        client.write_all(&[b'P'; PREFACE_LEN]).await.unwrap();
        let mut buf = [0; 64];
        assert_eq!(conn.read(&mut buf).await.unwrap(), PREFACE_LEN);
        assert!(conn.waiting.is_none(), "the timer is dropped once the preface is in");
        // Long after the deadline, a quiet connection still waits and then reads.
        let mut read = Box::pin(conn.read(&mut buf));
        tokio::time::sleep(TIMEOUT * 3).await;
        let waker = futures::task::noop_waker();
        assert!(read.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        client.write_all(b"frame").await.unwrap();
        assert_eq!(read.await.unwrap(), 5);
        conn.write_all(b"ok").await.unwrap();
        let mut back = [0; 2];
        client.read_exact(&mut back).await.unwrap();
    }
}
