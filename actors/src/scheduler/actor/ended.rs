//! The tasks this scheduler ended whose end may not have landed in the store yet. The
//! scheduler hands its writes to the store without waiting (see `record`), so for a moment
//! after a task ends here the store still says it is open: a read of the store in that
//! moment must not take it for a task to run (an `Adopt` of a task that came here first by
//! `EnsureQueued`, a move heard twice, a late `Enqueue`). Each end is numbered as it is
//! handed over; a flush of the store that was handed over after it says it landed.

use std::collections::{HashMap, VecDeque};

use ractor::ActorProcessingErr;
use troupe_runtime::store::{Batch, StoreError};

use crate::task::{TaskSpec, TaskState, TaskStatus};

use super::{SchedulerMsg, State};

/// Once this many ends wait to be known landed, a flush is handed over to learn it: what a
/// scheduler keeps of its ends stays bounded while nothing asks.
const CONFIRM_AT: usize = 1024;

#[derive(Default)]
pub(super) struct Ended {
    /// In the order they were handed over, each with its number.
    order: VecDeque<(u64, String)>,
    /// Each task's latest number.
    latest: HashMap<String, u64>,
    /// The number the next end gets.
    next: u64,
    /// Whether a flush counting them is on its way.
    confirming: bool,
}

impl Ended {
    /// Notes that the end of `task` is handed over now.
    pub(super) fn note(&mut self, task: &str) {
        self.order.push_back((self.next, task.to_owned()));
        self.latest.insert(task.to_owned(), self.next);
        self.next += 1;
    }

    /// Whether `task` ended here and that may not have landed yet.
    pub(super) fn holds(&self, task: &str) -> bool {
        self.latest.contains_key(task)
    }

    /// The number a flush handed over now covers: every end numbered below it.
    pub(super) fn mark(&self) -> u64 {
        self.next
    }

    /// Forgets the ends numbered below `upto`: a flush handed over after them landed.
    pub(super) fn landed(&mut self, upto: u64) {
        while let Some((n, _)) = self.order.front().filter(|(n, _)| *n < upto) {
            let n = *n;
            let (_, task) = self.order.pop_front().expect("just seen");
            if self.latest.get(&task) == Some(&n) {
                self.latest.remove(&task);
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.order.len()
    }
}

impl State {
    /// Once many ends wait to be known landed, hands over a flush that tells when they did.
    /// Called once the message's writes were handed over: the flush must come after them.
    pub(super) fn confirm_ends(&mut self) {
        if self.ended.len() >= CONFIRM_AT && !self.ended.confirming {
            self.ended.confirming = true;
            self.after_landing(None);
        }
    }

    /// Hands over a flush behind this scheduler's writes so far and, once it landed, tells
    /// the scheduler (`EndsLanded`), then sends it `then`.
    pub(super) fn after_landing(&mut self, then: Option<SchedulerMsg>) {
        let upto = self.ended.mark();
        // Handed over now, so behind every write this scheduler handed over before.
        let flushed = self.store.submit(Batch::default());
        let myself = self.myself.clone();
        tokio::spawn(async move {
            let outcome = flushed.durable().await;
            let landed = outcome.is_ok().then_some(upto);
            let _ = myself.cast(SchedulerMsg::EndsLanded(landed));
            match (outcome, then) {
                (Ok(_) | Err(StoreError::Unavailable(_)), Some(then)) => {
                    // No majority in time: asked again, it waits again (a flush waits for a
                    // leader for seconds, so this is no busy loop).
                    let _ = myself.cast(then);
                }
                (Err(e), Some(_)) => {
                    tracing::warn!(error = %e, "this node's last writes did not land: the tasks placed here are read at the scheduler's next start");
                }
                (_, None) => {}
            }
        });
    }

    /// The task `id` as the store holds it once this scheduler's writes so far landed, if
    /// it is placed here and QUEUED: what this scheduler handed the writer about it (its
    /// start, its end) lands first, so a task that ran here is not QUEUED any more, and one
    /// requeued since is.
    pub(super) async fn queued_in_store(
        &mut self,
        id: String,
    ) -> Result<Option<(TaskSpec, TaskStatus)>, ActorProcessingErr> {
        let upto = self.ended.mark();
        self.store.flush().await?;
        self.ended.landed(upto);
        let node = self.node.clone();
        let found = self
            .store
            .view(move |v| {
                if !crate::cluster::directory::held_in(v, &id, &node)? {
                    return Ok(None);
                }
                let (Some(spec), Some(status)) = (
                    v.get(crate::tables::TASKS, &id)?,
                    v.get(crate::tables::TASK_STATUS, &id)?,
                ) else {
                    return Ok(None);
                };
                Ok(Some((
                    troupe_runtime::codec::decode::<TaskSpec>(&spec)?,
                    troupe_runtime::codec::decode::<TaskStatus>(&status)?,
                )))
            })
            .await?;
        Ok(found.filter(|(_, s)| s.state == TaskState::Queued))
    }

    /// `EndsLanded`: the flush handed over at `upto` landed (`None`: it did not).
    pub(super) fn ends_landed(&mut self, upto: Option<u64>) {
        if let Some(upto) = upto {
            self.ended.landed(upto);
        }
        self.ended.confirming = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_is_held_until_a_flush_handed_over_after_it_landed() {
        let mut ended = Ended::default();
        ended.note("t1");
        let before_t2 = ended.mark();
        ended.note("t2");
        assert!(ended.holds("t1") && ended.holds("t2"));
        ended.landed(before_t2);
        assert!(!ended.holds("t1"), "its flush landed");
        assert!(ended.holds("t2"), "ended after the flush was handed over");
        ended.landed(ended.mark());
        assert!(!ended.holds("t2"));
        assert_eq!(ended.len(), 0);
    }

    #[test]
    fn a_task_ended_twice_is_held_until_its_last_end_landed() {
        let mut ended = Ended::default();
        ended.note("t1");
        let between = ended.mark();
        ended.note("t1");
        ended.landed(between);
        assert!(ended.holds("t1"));
        ended.landed(ended.mark());
        assert!(!ended.holds("t1"));
    }
}
