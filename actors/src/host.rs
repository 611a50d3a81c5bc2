//! Hypervisor hosts: each one driven by a host-driver actor that holds its libvirt connection
//! (on a thread of its own) and owns one VM actor per VM placed there; adding and removing
//! hosts, draining them, evacuating a DOWN one, and injected faults. Moving one VM is `vm/`'s.
//!
//! ```text
//! hosts (one_for_one; each host driver has its own intensity)
//! └── host driver <name> ── libvirt thread ── test:///…/sim-1.xml, qemu:///system, …
//!     ├── vm <id>   (reconciles desired and actual state)
//!     └── vm <id>
//! ```

mod add;
mod children;
mod drain;
mod driver;
mod evacuate;
mod fault;
pub mod fleet;
mod handle;
mod libvirt;
pub mod link;
mod peers;
mod removal;
mod remove;
mod spec;
mod takeover;

pub(crate) use add::add;
pub use children::{host_child, HostsChild};
pub(crate) use drain::{drain, set_maintenance};
pub use driver::{HostMsg, Probe};
pub(crate) use fault::inject;
pub use fault::Fault;
pub use fleet::{Fleet, FleetSettings};
pub(crate) use handle::{ask, domains, vm_actors, ASK};
pub use libvirt::{
    domain_xml, simulated_node_xml, DomainObs, DomainStateName, Libvirt, LibvirtError, Listed, NodeCapacity,
};
pub use peers::PeerHosts;
pub(crate) use removal::records_may_go_from;
pub(crate) use remove::remove;
pub use spec::{AddHostRequest, DrainProgress, HostMode, HostSpec, HostState, HostView};
pub(crate) use takeover::{prepare_simulated, restore_vms, take_over};

use crate::error::ApiError;

/// Names: 1-64 letters, digits, '-', '_' or '.'.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{what} {name:?}: use 1-64 letters, digits, '-', '_' or '.'"
        )))
    }
}

pub(crate) fn check_labels(what: &str, labels: &[(String, String)]) -> Result<(), ApiError> {
    if labels.len() > 64 {
        return Err(ApiError::invalid(format!("{what}: at most 64 labels")));
    }
    for (k, v) in labels {
        check_name(&format!("{what} key"), k)?;
        if v.len() > 256 {
            return Err(ApiError::invalid(format!("{what} {k}: values are at most 256 bytes")));
        }
    }
    Ok(())
}
