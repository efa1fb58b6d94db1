//! Simulated clients run on runtimes of their own: one single-threaded tokio runtime per core,
//! the clients dealt out among them.
//!
//! Thousands of clients that each wake a few times a second are the worst case for a
//! work-stealing runtime: every wake that lands on the other worker is a futex call and a
//! context switch. On runtimes of their own, a client's timer, socket and task stay on one
//! thread, and a thread sleeps only in `epoll_wait`. This is the load generator's cost, paid on
//! the cores the measured servers share, so it is kept as small as it can be. It also keeps
//! the fleet off the caller's runtime (a `#[tokio::test]`'s single thread).

use std::future::Future;
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::sync::oneshot;

/// The threads running the clients; dropping it (or [`stop`](Self::stop)) drops every client
/// future, which closes their connections.
pub struct ClientThreads {
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl ClientThreads {
    /// Starts `clients`, dealt round-robin over one thread per available core.
    pub fn spawn<F>(name: &str, clients: impl IntoIterator<Item = F>) -> anyhow::Result<Self>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut shares: Vec<Vec<F>> = (0..cores).map(|_| Vec::new()).collect();
        for (index, client) in clients.into_iter().enumerate() {
            shares[index % cores].push(client);
        }
        let mut threads = Vec::with_capacity(cores);
        for (index, share) in shares.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building a client runtime")?;
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    for client in share {
                        runtime.spawn(client);
                    }
                    // Until stopped (or the handle is gone); dropping the runtime then drops
                    // every client future before the thread ends.
                    let _ = runtime.block_on(stopped);
                })
                .context("starting a client thread")?;
            threads.push((stop, thread));
        }
        Ok(Self { threads })
    }

    /// Stops every client and waits for the threads to finish.
    pub fn stop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

impl Drop for ClientThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_client_runs_until_stopped_and_is_then_dropped() {
        struct Count(Arc<AtomicUsize>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (started, starts) = std::sync::mpsc::channel();
        let dropped = Arc::new(AtomicUsize::new(0));
        let clients = (0..10).map(|_| {
            let (started, guard) = (started.clone(), Count(dropped.clone()));
            async move {
                let _guard = guard;
                let _ = started.send(());
                std::future::pending::<()>().await;
            }
        });
        let mut threads = ClientThreads::spawn("test-client", clients).unwrap();
        for _ in 0..10 {
            starts.recv_timeout(Duration::from_secs(10)).expect("every client starts");
        }
        assert_eq!(dropped.load(Ordering::SeqCst), 0);
        threads.stop();
        assert_eq!(dropped.load(Ordering::SeqCst), 10, "stop drops every client");
    }
}
