//! Hypervisor hosts: each one driven by a host-driver actor that holds its libvirt connection
//! (on a thread of its own) and owns one VM actor per VM placed there.
//!
//! ```text
//! hosts (one_for_one; each host driver has its own intensity)
//! └── host driver <name> ── libvirt thread ── test:///…/sim-1.xml, qemu:///system, …
//!     ├── vm <id>   (reconciles desired and actual state)
//!     └── vm <id>
//! ```

mod driver;
pub mod fleet;
mod libvirt;
mod moves;
mod removal;
mod spec;

pub(crate) use driver::{act, read_vm};
pub use driver::{host_child, Fault, HostMsg, HostsChild, Probe};
pub use fleet::{Fleet, FleetSettings};
pub use libvirt::{domain_xml, simulated_node_xml, DomainObs, DomainStateName, Libvirt, LibvirtError, NodeCapacity};
pub(crate) use moves::{drain, migrate, view_of, vm_actor};
pub(crate) use removal::records_may_go_from;
pub use spec::{AddHostRequest, DrainProgress, HostMode, HostSpec, HostState, HostView};

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
