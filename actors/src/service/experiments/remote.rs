//! Experiments on another node: one whose faults select in another node's tree is started on
//! that node (one over several nodes' trees is started in parts, see `spread`), and its id
//! names the node it runs on (`<uuid>@<node>`), so `stopExperiment` and `renewExperiment`
//! asked on any node reach it there. Reads (`experiment`, `experiments`,
//! `experimentUpdates`) ask no peer: every experiment is in every node's replica (see `kept`).

use std::collections::BTreeSet;

use tokio::sync::watch;

use super::{Experiment, ExperimentInput};
use crate::cluster::remote::Peer;
use crate::error::ApiError;
use crate::service::Api;

/// The node the experiment must run on when it is not this one: the one its tree faults
/// name in `nodes` (faults naming different nodes were parted before, see `spread`).
pub(super) fn home_of(api: &Api, input: &ExperimentInput) -> Result<Option<String>, ApiError> {
    let named: BTreeSet<&String> = input
        .faults
        .iter()
        .filter(|f| f.runs_on_its_node())
        .flat_map(|f| f.target.nodes.iter())
        .collect();
    let me = &api.ctx.node_name;
    match named.len() {
        0 => Ok(None),
        1 if named.contains(me) => Ok(None),
        1 => {
            let home = named.into_iter().next().cloned().unwrap_or_default();
            member(api, &home)?;
            Ok(Some(home))
        }
        _ => Err(ApiError::invalid(format!(
            "the faults select in the trees of {}: name one node per fault",
            named.into_iter().cloned().collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Refuses a node that is not a member of the cluster.
pub(super) fn member(api: &Api, node: &str) -> Result<(), ApiError> {
    match api.ctx.store.status().members.iter().any(|m| m.name == node) {
        true => Ok(()),
        false => Err(ApiError::invalid(format!("{node} is not a member of the cluster"))),
    }
}

pub(super) async fn start_on(api: &Api, home: &str, input: ExperimentInput) -> Result<Experiment, ApiError> {
    Peer(&api.node_service(), home.to_owned())
        .start_experiment(Box::new(input))
        .await
}

/// The node an experiment runs on, by its id; `None` for this one.
fn elsewhere<'a>(api: &Api, id: &'a str) -> Option<&'a str> {
    id.rsplit_once('@')
        .map(|(_, node)| node)
        .filter(|node| *node != api.ctx.node_name)
}

impl Api {
    /// One fault at one target as an experiment of its own (what `injectFault` does): held
    /// until stopped, judged as any experiment; escalation allowed, as a one-shot fault
    /// always did.
    pub async fn one_fault(
        &self,
        name: String,
        action: super::FaultAction,
        target: super::select::Selector,
    ) -> Result<Experiment, ApiError> {
        let fault = super::FaultSpec {
            action,
            target,
            to: None,
            params: serde_json::Value::Null,
        };
        let input = ExperimentInput {
            allow_escalation: true,
            ..ExperimentInput::one(name, fault)
        };
        self.start_experiment(input).await
    }

    /// An experiment, from this node's memory when it runs here, else from the replica. One
    /// this replica does not hold may have been started elsewhere a moment ago: before
    /// saying there is none, this node catches up with what the cluster committed.
    pub async fn experiment(&self, id: &str) -> Result<Option<Experiment>, ApiError> {
        self.experiments.ensure_enabled()?;
        let read = || {
            let (experiments, id) = (self.experiments.clone(), id.to_owned());
            self.ctx.store.view(move |v| experiments.now_in(v, &id))
        };
        if let Some(found) = read().await? {
            return Ok(Some(found));
        }
        self.ctx.store.linearize().await?;
        Ok(read().await?)
    }

    /// Stops the experiments holding a host fault (HOST_DISCONNECT, HOST_HANG) on `host`
    /// (its id), on the node that holds the host (where `injectFault` started them); their ids.
    pub async fn end_host_faults(&self, host: &str) -> Result<Vec<String>, ApiError> {
        self.experiments.ensure_enabled()?;
        match self.cluster().holder(host) {
            Some(node) => Peer(&self.node_service(), node).end_host_faults(host.to_owned()).await,
            None => self.end_host_faults_here(host),
        }
    }

    /// Ends it now: its faults are reverted and it is judged as usual (PASSED or FAILED).
    pub async fn stop_experiment(&self, id: &str) -> Result<Experiment, ApiError> {
        self.experiments.ensure_enabled()?;
        if let Some(parts) = self.experiments.spread(id).await? {
            return Box::pin(self.spread_each(id, parts, true)).await;
        }
        match elsewhere(self, id) {
            Some(node) => {
                Peer(&self.node_service(), node.to_owned())
                    .stop_experiment(id.to_owned())
                    .await
            }
            None => self.stop_experiment_here(id),
        }
    }

    /// Extends the lease by its length from now.
    pub async fn renew_experiment(&self, id: &str) -> Result<Experiment, ApiError> {
        self.experiments.ensure_enabled()?;
        if let Some(parts) = self.experiments.spread(id).await? {
            return Box::pin(self.spread_each(id, parts, false)).await;
        }
        match elsewhere(self, id) {
            Some(node) => {
                Peer(&self.node_service(), node.to_owned())
                    .renew_experiment(id.to_owned())
                    .await
            }
            None => self.renew_experiment_here(id),
        }
    }

    /// The experiment now, then at every change, until it ends: one running here from its
    /// view, any other from its record (and its parts' records) as each write is applied.
    pub async fn experiment_updates(&self, id: &str) -> Result<watch::Receiver<Experiment>, ApiError> {
        self.experiments.ensure_enabled()?;
        if self.experiments.shown(id).is_some() {
            return self.experiment_updates_here(id);
        }
        let (experiments, key) = (self.experiments.clone(), id.to_owned());
        let (first, subjects) = self
            .ctx
            .store
            .view(move |v| Ok((experiments.now_in(v, &key)?, experiments.subjects(v, &key)?)))
            .await?;
        let first = first.ok_or_else(|| ApiError::NotFound(format!("no experiment {id}")))?;
        let (tx, rx) = watch::channel(first);
        self.experiments.follow_records(id, subjects, tx);
        Ok(rx)
    }
}
