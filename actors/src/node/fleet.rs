//! The hosts a node drives at its start: its own and those moved to it, the simulated ones
//! made on its first start, and their VMs' claims.

use troupe_runtime::store::{Batch, META};

use super::identity::{own_fact, own_key};
use crate::host::{Fleet, HostMode, HostSpec};
use crate::placement::Overcommit;
use crate::tables::HOSTS;

/// Registers the node's hosts (making the simulated ones on a first start) and their VMs'
/// claims, before the host drivers start. A migration the node was in the middle of when it
/// stopped is marked FAILED: the VM's record still names its source host, and the driver
/// there re-creates or adopts it; any copy on the target is stale and destroyed.
pub(super) async fn load_fleet(fleet: &Fleet, simulated: usize) -> Result<(), crate::error::ApiError> {
    let node = fleet.node.clone();
    // Every member's hosts are in the replicated table; this node drives those it holds:
    // its own that never moved, and those the cluster moved here. A host that moved off it
    // while it was down is driven elsewhere (its record still names this node).
    let mut hosts: Vec<HostSpec> = fleet
        .store
        .view(move |v| {
            let mut out = Vec::new();
            v.scan(HOSTS, None, |id, bytes| {
                if crate::cluster::directory::held_in(v, id, &node)? {
                    out.push(troupe_runtime::codec::decode(bytes)?);
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await?;
    // Made once, on the node's first start: simulated hosts an operator removed stay removed.
    let made = own_fact(&fleet.store, "simulated_hosts_made", &fleet.node)
        .await?
        .is_some();
    if !made {
        let mut batch = Batch::new().put(META, own_key("simulated_hosts_made", &fleet.node), b"1".to_vec());
        for i in 1..=simulated {
            // A zone each (sim-1 in a, sim-2 in b, …): placement by label works out of the box.
            let zone = char::from(b'a' + ((i - 1) % 26) as u8).to_string();
            let spec = HostSpec {
                id: crate::ids::new_id(&fleet.node),
                name: format!("sim-{i}"),
                uri: String::new(),
                node: fleet.node.clone(),
                labels: [
                    ("simulated".to_string(), "true".to_string()),
                    ("zone".to_string(), zone),
                ]
                .into_iter()
                .collect(),
                overcommit: Overcommit::default(),
                reserved_memory_mib: 1024,
                mode: HostMode::Active,
                simulated: true,
                created_at: troupe_runtime::clock::now(),
            };
            batch = batch.event(troupe_runtime::events::NewEvent::new(
                "HOST_ADDED",
                Some(spec.id.clone()),
                serde_json::json!({ "name": spec.name, "simulated": true, "node": spec.node }),
            ));
            hosts.push(spec);
        }
        fleet.store.write(batch).await?;
    }
    for spec in &mut hosts {
        if spec.simulated {
            crate::host::prepare_simulated(fleet, spec).await?;
        }
        fleet.register(spec.clone());
    }
    let mine: std::collections::HashSet<String> = hosts.iter().map(|h| h.id.clone()).collect();
    crate::host::restore_vms(fleet, &mine, true).await
}
