//! Injected faults (`injectFault`, with `--fault-injection`): what they are, and how a
//! request reaches the driver of the host they hit.

use super::{ask, Fleet, HostMsg, ASK};
use crate::error::ApiError;

/// Faults `injectFault` can cause (with `--fault-injection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Fault {
    /// Breaks the host's connection until healed: every call fails as on a lost link; the
    /// host's domains keep running.
    HostDisconnect,
    /// Makes every libvirt call to the host block until healed, as on a black-holed link:
    /// calls time out and the host is UNREACHABLE; its domains keep running.
    HostHang,
    /// Heals a broken or hung connection.
    HostReconnect,
    /// Destroys the VM's domain behind Troupe's back.
    DomainDestroy,
    /// Destroys and undefines the VM's domain behind Troupe's back.
    DomainUndefine,
    /// Crashes the host's driver: its supervisor restarts it, and the new driver's VM actors
    /// adopt the domains that exist.
    DriverCrash,
}

/// Injects `fault` on `target`: a host (id or name) for HOST_* faults and DRIVER_CRASH, a VM
/// for DOMAIN_* ones.
pub(crate) async fn inject(fleet: &Fleet, target: &str, fault: Fault) -> Result<String, ApiError> {
    if !fleet.settings.fault_injection {
        return Err(ApiError::Forbidden(
            "fault injection is disabled on this node; start it with --fault-injection".into(),
        ));
    }
    let (host, vm) = match fault {
        Fault::HostDisconnect | Fault::HostHang | Fault::HostReconnect | Fault::DriverCrash => {
            (fleet.find(target)?, None)
        }
        Fault::DomainDestroy | Fault::DomainUndefine => {
            let (_, host) = crate::vm::locate(fleet, target).await?;
            (host, Some(target.to_owned()))
        }
    };
    if fault == Fault::HostReconnect {
        // A hung host's driver may be waiting on a call that only this heal answers.
        if let Some(libvirt) = fleet.libvirt(&host) {
            libvirt.set_hang(false);
        }
    }
    let driver = fleet.driver(&host)?;
    ask(&driver, |r| HostMsg::Fault(fault, vm, r), "the host driver", ASK).await??;
    // No event here: each injection is an experiment's, which records its FAULT_INJECTED
    // (and FAULT_REVERTED at the heal); the host's own HOST_* events follow.
    Ok(format!("{fault:?} injected on {target}"))
}
