//! What a forced host removal may do with a VM it could not delete.

use super::{DomainObs, Fleet, LibvirtError};

/// Whether the records of a VM whose deletion failed may go with its host: only when its
/// domain is gone, or the host cannot be asked (then its domain is left there). A host that
/// answers and still has the domain refused the deletion for a reason (the VM is migrating,
/// libvirt refused): dropping the records would leave the domain running untracked.
pub fn records_may_go(probe: &Result<Option<DomainObs>, LibvirtError>) -> bool {
    match probe {
        Ok(None) => true,
        Ok(Some(_)) => false,
        Err(e) => e.is_lost(),
    }
}

/// Asks the host about the VM's domain and applies [`records_may_go`].
pub(crate) async fn records_may_go_from(fleet: &Fleet, host: &str, domain: &str) -> bool {
    match fleet.libvirt(host) {
        Some(libvirt) => records_may_go(&libvirt.observe(domain).await),
        // No connection was ever made: nothing of it can be on the host through Troupe.
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::DomainStateName;

    #[test]
    fn only_a_gone_domain_or_an_unreachable_host_lets_the_records_go() {
        let running = DomainObs {
            name: "troupe-a".into(),
            uuid: "a".into(),
            state: DomainStateName::Running,
            reason: "booted".into(),
            cpu_time_ns: 0,
            memory_kib: 0,
            vcpus: 1,
        };
        assert!(records_may_go(&Ok(None)));
        assert!(records_may_go(&Err(LibvirtError::Lost("no answer".into()))));
        assert!(!records_may_go(&Ok(Some(running))));
        let refused = LibvirtError::Call {
            message: "busy".into(),
            unsupported: false,
            no_domain: false,
        };
        assert!(!records_may_go(&Err(refused)));
    }
}
