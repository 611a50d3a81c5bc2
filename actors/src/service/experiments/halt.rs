//! The kill switch (`haltAllFaults`, every node) and what is armed now (`faultGates`).

use troupe_runtime::store::NodeFault;

use super::inject::Armed;
use super::{lock, End, Experiments, FaultAction, FaultGate};
use crate::error::ApiError;
use crate::service::Api;

impl Experiments {
    /// The kill switch on this node: reverts every armed gate now and ends the experiments
    /// (ABORTED); answers how many gates it reverted.
    pub(crate) async fn halt_here(&self) -> usize {
        let taken: Vec<(String, Vec<(FaultGate, Armed)>)> = {
            let mut records = lock(&self.records);
            records
                .iter_mut()
                .map(|(id, r)| {
                    if r.end.is_none() && !r.view.borrow().state.is_final() {
                        r.end = Some(End {
                            why: "halted by haltAllFaults".into(),
                            aborted: true,
                        });
                    }
                    r.wake.notify_one();
                    (id.clone(), std::mem::take(&mut r.gates))
                })
                .collect()
        };
        let mut reverted = 0;
        for (experiment, gates) in taken {
            for (gate, armed) in gates {
                self.revert(&experiment, &gate, armed).await;
                reverted += 1;
            }
        }
        // Gates a peer's experiment armed here.
        for (id, _, _) in self.armed.armed() {
            if self.armed.disarm(&id).is_some() {
                reverted += 1;
            }
        }
        if reverted > 0 {
            // Said where the faults were: the node asked may have none to list.
            tracing::warn!(reverted, "the kill switch (haltAllFaults) reverted this node's faults");
        }
        reverted
    }
}

impl Api {
    /// The kill switch: reverts every armed fault of this node and of every reachable peer
    /// now, and ends their experiments (ABORTED); answers how many faults it reverted. It
    /// works on every node, `--fault-injection` or not: an admin must be able to stop the
    /// faults from whichever node still answers.
    pub async fn halt_all_faults(&self) -> Result<usize, ApiError> {
        let mut reverted = self.experiments.halt_here().await;
        let service = self.node_service();
        let peers = self.ctx.cluster.peers();
        let asked = futures::future::join_all(peers.iter().map(|peer| {
            let service = service.clone();
            async move { crate::cluster::remote::Peer(&service, peer.clone()).halt().await }
        }))
        .await;
        for (peer, answer) in peers.iter().zip(asked) {
            match answer {
                Ok(n) => reverted += n,
                Err(e) => tracing::warn!(%peer, error = %e, "a peer's faults could not be halted"),
            }
        }
        tracing::warn!(
            reverted,
            peers = peers.len(),
            "haltAllFaults: the faults armed across the cluster were reverted"
        );
        Ok(reverted)
    }

    /// What is armed now, across this node's experiments, and on this node by a peer's
    /// (a partition's far side): empty once everything reverted.
    pub fn fault_gates(&self) -> Result<Vec<FaultGate>, ApiError> {
        self.experiments.ensure_enabled()?;
        let mut gates: Vec<FaultGate> = lock(&self.experiments.records)
            .values()
            .flat_map(|r| r.gates.iter().map(|(g, _)| g.clone()))
            .collect();
        for (id, fault, since) in self.experiments.armed.armed() {
            if gates.iter().any(|g| g.injection == id) {
                continue;
            }
            gates.push(FaultGate {
                experiment: id.split('/').next().unwrap_or_default().to_owned(),
                injection: id,
                action: match fault {
                    NodeFault::Cut { .. } => FaultAction::Partition,
                    NodeFault::Reject { .. } => FaultAction::StoreReject,
                    NodeFault::SlowCommit { .. } => FaultAction::StoreSlowCommit,
                    NodeFault::DiskFull => FaultAction::DiskFull,
                },
                target: self.ctx.node_name.clone(),
                since,
            });
        }
        Ok(gates)
    }
}
