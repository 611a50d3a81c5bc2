//! Backends: the object inside an agent actor that does the work. It lives as long as its
//! agent does: started once, asked to run each task (several may run at once), stopped
//! once. A long-lived process with its own reader fits the same shape as a command per task.

mod builtin;
mod exec;

use futures::future::BoxFuture;

use super::spec::{AgentSpec, BackendSpec};
use crate::task::{Assignment, Outcome};

pub trait Backend: Send + 'static {
    /// Gets ready to run tasks; an error fails the agent's start.
    fn start(&mut self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
    /// Runs one attempt. The future is independent of `self`, so attempts run concurrently;
    /// dropping it stops the attempt.
    fn run(&mut self, assignment: Assignment) -> BoxFuture<'static, Outcome>;
    /// The time an attempt may take when its task sets none.
    fn default_timeout_ms(&self) -> Option<u64> {
        None
    }
    /// Releases what `start` acquired.
    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The backend object an agent spec asks for.
pub fn build(spec: &AgentSpec) -> Box<dyn Backend> {
    match &spec.backend {
        BackendSpec::Builtin(kind) => Box::new(builtin::Builtin::new(*kind, spec.id.clone())),
        BackendSpec::Exec(e) => Box::new(exec::Exec::new(e.clone(), spec.id.clone())),
    }
}
