//! What a supervisor does when a child exits (decide, then restart, give up or escalate),
//! how it stops all its children, and how it records each lifecycle change.

use std::sync::Arc;

use ractor::ActorProcessingErr;
use serde_json::json;

use super::{Child, Slot, State, SupervisorMsg};
use crate::events::NewEvent;
use crate::store::{Batch, Op, StoreError};
use crate::supervision::child::{ChildEvent, ChildSpec};
use crate::supervision::decision::{ChildView, Decision, Exit, Strategy};
use crate::supervision::jobs::{self, Start};

impl State {
    pub(super) async fn on_exit(&mut self, pos: usize, exit: Exit, reason: String) -> Result<(), ActorProcessingErr> {
        let spec = self.children[pos].spec.clone();
        let view = |c: &Child| ChildView {
            id: c.spec.id().to_owned(),
            restart: c.spec.restart(),
            running: matches!(c.slot, Slot::Running(_)),
            intensity: c.spec.intensity(),
        };
        // one_for_one restarts the child alone: it needs no view of its siblings (an agents
        // supervisor may have thousands).
        let listing: Vec<ChildView> = match self.ladder.strategy {
            Strategy::OneForOne => vec![view(&self.children[pos])],
            _ => self.children.values().map(view).collect(),
        };
        let mut decision = self
            .ladder
            .decide(&listing, spec.id(), exit, tokio::time::Instant::now());
        if matches!(decision, Decision::GiveUp { .. }) && spec.one_more_chance() {
            self.ladder.forget(spec.id());
            decision = Decision::Restart {
                stop: Vec::new(),
                start: vec![spec.id().to_owned()],
                delay: std::time::Duration::ZERO,
                restarts: 0,
            };
        }
        tracing::warn!(supervisor = %self.name, child = %spec.id(), ?exit, %reason, ?decision, "child exited");
        let restarting = matches!(decision, Decision::Restart { .. });
        let reason = match (&decision, spec.intensity()) {
            (Decision::GiveUp { restarts }, Some(i)) => format!(
                "gave up after {restarts} restarts within {} ms; last exit: {reason}",
                i.window.as_millis()
            ),
            _ => reason,
        };
        match exit {
            Exit::Failed => self.record(
                &spec,
                ChildEvent::Failed {
                    reason: reason.clone(),
                    restarting,
                },
            ),
            Exit::Normal if matches!(decision, Decision::GiveUp { .. }) => self.record(
                &spec,
                ChildEvent::Failed {
                    reason: reason.clone(),
                    restarting,
                },
            ),
            Exit::Normal if !restarting => self.record(&spec, ChildEvent::Stopped),
            Exit::Normal => {}
        }
        match decision {
            Decision::Remove | Decision::GiveUp { .. } => {
                self.children.shift_remove_index(pos);
                self.ladder.forget(spec.id());
            }
            Decision::Restart { stop, start, delay, .. } => self.restart(&stop, &start, delay),
            Decision::Escalate { restarts } => {
                let window_ms = self.ladder.intensity.map_or(0, |i| i.window.as_millis() as u64);
                let event = NewEvent::new(
                    "SUPERVISOR_ESCALATED",
                    Some(self.name.clone()),
                    json!({ "child": spec.id(), "reason": reason, "restarts": restarts, "windowMs": window_ms }),
                );
                if let Err(e) = self.store.write(Batch::new().event(event)).await {
                    tracing::error!(supervisor = %self.name, error = %e, "could not record escalation");
                }
                self.stop_all().await;
                return Err(format!("supervisor {} gave up after {restarts} restarts: {reason}", self.name).into());
            }
        }
        Ok(())
    }

    /// Carries out a restart decision: the siblings in `stop` are stopped by a job, which
    /// then (after `delay`) starts every child in `start` in order.
    fn restart(&mut self, stop: &[String], start: &[String], delay: std::time::Duration) {
        let mut stops = Vec::new();
        for id in stop {
            let Some(p) = self.position(id) else { continue };
            if let Slot::Running(cell) = std::mem::replace(&mut self.children[p].slot, Slot::Restarting) {
                stops.push((cell, self.children[p].spec.shutdown()));
            }
        }
        // Stopped siblings that are not coming back are gone for good.
        let gone: Vec<Child> = stop
            .iter()
            .filter(|id| !start.contains(id))
            .filter_map(|id| self.children.shift_remove(id))
            .collect();
        for child in gone {
            self.ladder.forget(child.spec.id());
            self.record(&child.spec, ChildEvent::Stopped);
        }
        let mut starts = Vec::new();
        for id in start {
            let Some(p) = self.position(id) else { continue };
            let child = &mut self.children[p];
            child.slot = Slot::Restarting;
            child.generation += 1;
            starts.push(Start {
                spec: child.spec.clone(),
                generation: child.generation,
            });
        }
        jobs::spawn(self.myself.clone(), stops, delay, starts);
    }

    /// Stops every child, last started first, recording each stop.
    pub(super) async fn stop_all(&mut self) {
        while let Some((_, child)) = self.children.pop() {
            if let Slot::Running(cell) = &child.slot {
                jobs::stop(cell, child.spec.shutdown()).await;
            }
            if let Some(waiting) = child.on_started {
                let _ = waiting.send(Err(format!("supervisor {} is stopping", self.name)));
            }
            for reply in child.on_stopped {
                let _ = reply.send(true);
            }
            self.record(&child.spec, ChildEvent::Stopped);
        }
    }

    /// Writes the event for a lifecycle change, with whatever the spec records beside it.
    /// Not awaited (a supervisor must not wait for a disk flush per child), but watched: a
    /// record that does not become durable fails the supervisor, whose restart rebuilds its
    /// children from the store.
    pub(super) fn record(&self, spec: &Arc<dyn ChildSpec>, event: ChildEvent) {
        let mut batch = Batch::new();
        spec.lifecycle(&event, &mut batch);
        let mut data = spec.event_data();
        let suffix = match &event {
            ChildEvent::Started => "STARTED",
            ChildEvent::Failed { reason, restarting } => {
                data["reason"] = json!(reason);
                data["restarting"] = json!(restarting);
                "FAILED"
            }
            ChildEvent::Restarted { restarts } => {
                data["restarts"] = json!(restarts);
                "RESTARTED"
            }
            ChildEvent::Stopped => "STOPPED",
        };
        if matches!(event, ChildEvent::Restarted { .. }) {
            metrics::counter!("troupe_restarts_total").increment(1);
        }
        data["supervisor"] = json!(self.name);
        // Which node's: every node has a `watchdog` service and a `hosts` supervisor. (An
        // agent's data names its node already.)
        if data.get("node").is_none() && !self.store.node().is_empty() {
            data["node"] = json!(self.store.node());
        }
        let kind = format!("{}_{suffix}", spec.kind());
        batch.push(Op::Event(NewEvent::new(kind, Some(spec.id().to_owned()), data)));
        let myself = self.myself.clone();
        let supervisor = self.name.clone();
        self.store.submit_watched(batch, move |e| match e {
            // The cluster did not take it (no majority reachable, or this node was declared
            // down and fenced): the disk is fine, and the node's lease decides what runs.
            StoreError::Stale(_) | StoreError::Unavailable(_) | StoreError::NotLeader { .. } => {
                tracing::warn!(%supervisor, error = %e, "a lifecycle record was not taken by the cluster");
            }
            // A node that left keeps no record of its own: the cluster has moved on.
            StoreError::Left => tracing::debug!(%supervisor, "a lifecycle record of a node that left is not written"),
            // The node stops with no majority up: said once, by the node's stop.
            StoreError::Alone => {
                tracing::debug!(%supervisor, "a lifecycle record of a stop no majority takes is not written")
            }
            e => {
                let _ = myself.cast(SupervisorMsg::WriteFailed(e.to_string()));
            }
        });
    }
}
