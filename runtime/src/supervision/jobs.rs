//! The slow parts of a supervisor's work, run outside its mailbox so that a child that is
//! slow to start or to stop never holds up its siblings: each job reports back by message.

use std::sync::Arc;
use std::time::Duration;

use ractor::{ActorCell, ActorRef};

use super::child::{ChildSpec, Shutdown};
use super::supervisor::SupervisorMsg;

/// How long a kill may take to be carried out (it aborts the actor's task).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// One child to (re)start: its spec and the generation the start belongs to.
pub(super) struct Start {
    pub spec: Arc<dyn ChildSpec>,
    pub generation: u64,
}

/// Stops `stops` in order, waits `delay`, then starts `starts` in order, reporting each start.
pub(super) fn spawn(
    supervisor: ActorRef<SupervisorMsg>,
    stops: Vec<(ActorCell, Shutdown)>,
    delay: Duration,
    starts: Vec<Start>,
) {
    tokio::spawn(async move {
        for (cell, shutdown) in stops {
            stop(&cell, shutdown).await;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        for Start { spec, generation } in starts {
            let result = start(spec.clone(), &supervisor).await;
            let id = spec.id().to_owned();
            if supervisor
                .cast(SupervisorMsg::Started { id, generation, result })
                .is_err()
            {
                return; // the supervisor is gone; start() already stopped what it made
            }
        }
    });
}

/// Starts one child within its start timeout. A start that times out is left to finish in
/// the background and its actor stopped, so a late start never leaves a child nobody owns.
pub(super) async fn start(spec: Arc<dyn ChildSpec>, supervisor: &ActorRef<SupervisorMsg>) -> Result<ActorCell, String> {
    let timeout = spec.start_timeout();
    let mut starting = tokio::spawn(spec.clone().start(supervisor.get_cell()));
    match tokio::time::timeout(timeout, &mut starting).await {
        Ok(Ok(Ok(cell))) => Ok(cell),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("start panicked: {e}")),
        Err(_) => {
            let shutdown = spec.shutdown();
            tokio::spawn(async move {
                if let Ok(Ok(cell)) = starting.await {
                    stop(&cell, shutdown).await;
                }
            });
            Err(format!("did not start within {} ms", timeout.as_millis()))
        }
    }
}

/// Stops a child by its shutdown policy.
pub(super) async fn stop(cell: &ActorCell, shutdown: Shutdown) {
    let reason = Some("stopped by supervisor".to_string());
    let outcome = match shutdown {
        Shutdown::BrutalKill => {
            // Only fails when the actor is already gone.
            let _ = cell.kill_and_wait(Some(KILL_WAIT)).await;
            return;
        }
        Shutdown::Timeout(limit) => cell.stop_and_wait(reason, Some(limit)).await,
        Shutdown::Infinity => cell.stop_and_wait(reason, None).await,
    };
    // Any other error means the actor was already gone.
    if let Err(ractor::RactorErr::Timeout) = outcome {
        tracing::warn!(actor = %cell.get_id(), "child did not stop in time; killing it");
        let _ = cell.kill_and_wait(Some(KILL_WAIT)).await;
    }
}
