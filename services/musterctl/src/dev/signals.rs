//! Ctrl-C and SIGTERM, installed before anything starts: a signal during start-up then stops
//! the components and removes the temporary directory like one after it, instead of killing
//! the process with the default action.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        Ok(Self { interrupt: signal(SignalKind::interrupt())?, terminate: signal(SignalKind::terminate())? })
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
