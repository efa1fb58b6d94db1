//! The embedded components as tasks of one runtime: each gets its own stop signal, any of them
//! ending on its own is reported (so one failure stops everything instead of leaving a
//! half-working cluster), and shutdown goes group by group in the reverse of start order, so
//! agents report their leave through a gateway that is still up. A component spawned with
//! [`Supervisor::spawn_optional`] may end cleanly on its own (a revoked agent) without
//! stopping the rest.

use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// How long one group may take to stop before its tasks are aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

struct Running {
    name: String,
    group: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// Ending with `Ok` on its own is not a failure.
    optional: bool,
}

pub struct Supervisor {
    running: Vec<Running>,
    exits: mpsc::UnboundedSender<usize>,
    exited: mpsc::UnboundedReceiver<usize>,
}

impl Supervisor {
    pub fn new() -> Self {
        let (exits, exited) = mpsc::unbounded_channel();
        Self { running: Vec::new(), exits, exited }
    }

    /// Spawns `start(shutdown)` as component `name` of `group`; `shutdown` resolves when the
    /// supervisor stops the component.
    pub fn spawn<Fut>(
        &mut self,
        name: impl Into<String>,
        group: &'static str,
        start: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    ) where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.start(name.into(), group, false, start);
    }

    /// [`spawn`](Self::spawn) for a component that may end with `Ok` on its own: the others
    /// keep running. An error is still a failure.
    pub fn spawn_optional<Fut>(
        &mut self,
        name: impl Into<String>,
        group: &'static str,
        start: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    ) where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.start(name.into(), group, true, start);
    }

    fn start<Fut>(
        &mut self,
        name: String,
        group: &'static str,
        optional: bool,
        start: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    ) where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let component = start(shutdown);
        let index = self.running.len();
        let exits = self.exits.clone();
        let task = tokio::spawn(async move {
            let result = component.await;
            let _ = exits.send(index);
            result
        });
        self.running.push(Running { name, group, stop: Some(stop), task: Some(task), optional });
    }

    /// Waits for a component to end without being asked to; returns its name and why.
    /// Pending forever while every component runs.
    pub async fn failure(&mut self) -> anyhow::Error {
        loop {
            let Some(index) = self.exited.recv().await else { return std::future::pending().await };
            let component = &mut self.running[index];
            let Some(task) = component.task.take() else { continue };
            let name = component.name.clone();
            let optional = component.optional;
            return match task.await {
                Ok(Ok(())) if optional => {
                    tracing::debug!(component = %name, "ended on its own; the others keep running");
                    continue;
                }
                Ok(Ok(())) => anyhow::anyhow!("the {name} stopped on its own"),
                Ok(Err(err)) => err.context(format!("the {name} failed")),
                Err(join) => anyhow::anyhow!("the {name} panicked: {join}"),
            };
        }
    }

    /// Stops every component, the last group started first; returns the errors they ended
    /// with (a component that had already failed is not reported again).
    pub async fn stop_all(mut self) -> Vec<anyhow::Error> {
        let mut groups: Vec<&'static str> = Vec::new();
        for component in &self.running {
            if !groups.contains(&component.group) {
                groups.push(component.group);
            }
        }
        let mut errors = Vec::new();
        for group in groups.into_iter().rev() {
            let members: Vec<&mut Running> = self.running.iter_mut().filter(|c| c.group == group).collect();
            let mut waiting = Vec::new();
            for component in members {
                if let Some(stop) = component.stop.take() {
                    let _ = stop.send(());
                }
                if let Some(task) = component.task.take() {
                    waiting.push((component.name.clone(), task));
                }
            }
            tracing::debug!(group, components = waiting.len(), "stopping");
            for (name, mut task) in waiting {
                match tokio::time::timeout(STOP_TIMEOUT, &mut task).await {
                    Ok(Ok(Ok(()))) => {}
                    Ok(Ok(Err(err))) => errors.push(err.context(format!("the {name} failed while stopping"))),
                    Ok(Err(join)) => errors.push(anyhow::anyhow!("the {name} panicked: {join}")),
                    Err(_) => {
                        task.abort();
                        errors.push(anyhow::anyhow!("the {name} did not stop within {STOP_TIMEOUT:?}; aborted"));
                    }
                }
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn groups_stop_in_reverse_order_and_a_lone_exit_is_a_failure() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut supervisor = Supervisor::new();
        for (name, group) in [("registrar", "services"), ("agent 1", "agents"), ("agent 2", "agents")] {
            let order = order.clone();
            supervisor.spawn(name, group, move |shutdown| async move {
                shutdown.await;
                order.lock().unwrap().push(name);
                Ok(())
            });
        }
        supervisor.spawn("gateway", "gateway", |_shutdown| async { anyhow::bail!("port gone") });
        let failure = supervisor.failure().await;
        assert_eq!(format!("{failure:#}"), "the gateway failed: port gone");

        let errors = supervisor.stop_all().await;
        assert!(errors.is_empty(), "{errors:?}");
        let order = order.lock().unwrap().clone();
        assert_eq!(order.last(), Some(&"registrar"), "{order:?}");
        assert_eq!(order.len(), 3);
    }

    #[tokio::test]
    async fn an_optional_component_may_end_alone_but_not_fail() {
        let mut supervisor = Supervisor::new();
        supervisor.spawn("registrar", "services", |shutdown| async move {
            shutdown.await;
            Ok(())
        });
        supervisor.spawn_optional("agent 1", "agents", |_shutdown| async { Ok(()) });
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(200), supervisor.failure()).await;
        assert!(quiet.is_err(), "a clean end of an optional component is no failure");
        supervisor.spawn_optional("agent 2", "agents", |_shutdown| async { anyhow::bail!("broken config") });
        assert_eq!(format!("{:#}", supervisor.failure().await), "the agent 2 failed: broken config");
        assert!(supervisor.stop_all().await.is_empty());
    }

    #[tokio::test]
    async fn errors_while_stopping_are_returned() {
        let mut supervisor = Supervisor::new();
        supervisor.spawn("agent 1", "agents", |shutdown| async move {
            shutdown.await;
            anyhow::bail!("could not report LEFT")
        });
        let errors = supervisor.stop_all().await;
        assert_eq!(errors.len(), 1);
        assert!(format!("{:#}", errors[0]).contains("agent 1 failed while stopping"), "{errors:?}");
    }
}
