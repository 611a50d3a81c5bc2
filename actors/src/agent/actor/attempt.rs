//! An agent's attempts: each runs in a task the actor owns, within its timeout, and reports
//! how it ended; a start that reaches a paused or stopping agent is handed back unbegun.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use ractor::ActorRef;
use tokio::task::JoinHandle;

use super::{AgentActor, AgentMsg, State};
use crate::scheduler::report::Report;
use crate::task::{Assignment, Outcome};

/// Attempts in flight by task, with their attempt number; dropping it aborts them.
#[derive(Default)]
pub struct Running(pub(super) HashMap<String, (u32, JoinHandle<()>)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, (_, h)) in self.0.drain() {
            h.abort();
        }
    }
}

impl AgentActor {
    pub(super) fn run(&self, myself: ActorRef<AgentMsg>, a: Assignment, state: &mut State) {
        let (task_id, attempt) = (a.task_id.clone(), a.attempt);
        if state.paused || state.draining {
            // The start crossed a pause or a graceful stop: it goes back unbegun (the
            // scheduler already knows the agent is closed, so it goes elsewhere or waits).
            let why = match state.paused {
                true => format!("agent {} was paused before the task reached it", self.spec.name),
                false => format!("agent {} was stopping before the task reached it", self.spec.name),
            };
            tracing::info!(agent = %self.spec.id, task = %task_id, attempt, "{why}: handed back");
            let _ = self.reports.send_message(Report::Declined {
                task_id,
                attempt,
                agent_id: self.spec.id.clone(),
                why,
            });
            return;
        }
        let timeout = match state.backend.own_timeouts() {
            true => None,
            false => a.timeout_ms.or(state.backend.default_timeout_ms()),
        };
        let work = state.backend.run(a);
        let agent_id = self.spec.id.clone();
        let reports = self.reports.clone();
        let span = tracing::info_span!("attempt", agent = %agent_id, task = %task_id, attempt);
        let id = task_id.clone();
        let job = async move {
            let outcome = settle(work, timeout).await;
            match &outcome {
                Ok(_) => tracing::debug!("attempt succeeded"),
                Err(error) => tracing::info!(%error, "attempt failed"),
            }
            let _ = reports.send_message(Report::Finished {
                task_id: id.clone(),
                attempt,
                agent_id,
                outcome,
            });
            let _ = myself.cast(AgentMsg::Done { task_id: id, attempt });
        };
        let handle = tokio::spawn(tracing::Instrument::instrument(job, span));
        if let Some((_, older)) = state.running.0.insert(task_id, (attempt, handle)) {
            older.abort();
        }
    }
}

/// Runs an attempt to its outcome within its timeout. A panic inside the backend's future is
/// a failed attempt: left to unwind, it would end the spawned job before it reports, and the
/// task would stay RUNNING for ever.
async fn settle(work: BoxFuture<'static, Outcome>, timeout: Option<u64>) -> Outcome {
    let work = AssertUnwindSafe(work).catch_unwind();
    let caught = match timeout {
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), work).await {
            Ok(caught) => caught,
            Err(_) => return Err(format!("timed out after {ms} ms")),
        },
        None => work.await,
    };
    caught.unwrap_or_else(|panic| Err(format!("the attempt panicked: {}", panic_message(panic.as_ref()))))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_attempt_is_a_failed_attempt() {
        let work: BoxFuture<'static, Outcome> = Box::pin(async { panic!("boom at {}", 3) });
        let outcome = settle(work, Some(1_000)).await;
        assert_eq!(outcome, Err("the attempt panicked: boom at 3".to_string()));
        let work: BoxFuture<'static, Outcome> = Box::pin(async { panic!("plain") });
        assert_eq!(settle(work, None).await, Err("the attempt panicked: plain".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_past_its_timeout_fails() {
        let work: BoxFuture<'static, Outcome> = Box::pin(std::future::pending());
        assert_eq!(settle(work, Some(50)).await, Err("timed out after 50 ms".to_string()));
    }
}
