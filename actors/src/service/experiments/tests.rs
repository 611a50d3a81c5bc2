use std::time::Duration;

use troupe_runtime::store::{ArmedFaults, NodeFault, Store};

use super::Experiments;
use crate::error::ApiError;

#[tokio::test]
async fn a_store_fault_is_not_seen_recovered_while_its_own_gate_is_armed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let armed = ArmedFaults::default();
    let experiments = Experiments::new(true, 1, Duration::from_secs(60), store, armed.clone());
    experiments
        .arm_here("e@n/0", NodeFault::DiskFull, Duration::from_secs(60))
        .unwrap();
    // The probe's own record would pass the gate: it is refused while the gate is armed.
    let early = experiments.writable_here("e@n", "e@n/0").await;
    assert!(matches!(early, Err(ApiError::Unavailable(_))), "{early:?}");
    armed.disarm("e@n/0");
    assert!(experiments.writable_here("e@n", "e@n/0").await.is_ok());
}
