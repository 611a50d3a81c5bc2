use super::*;
use crate::host::{simulated_node_xml, FleetSettings, HostMode, HostState};
use std::time::Duration;
use troupe_runtime::store::Store;

fn fleet(dir: &std::path::Path, libvirt_timeout: Duration) -> Arc<Fleet> {
    let store = Store::open(&dir.join("db")).unwrap();
    let settings = FleetSettings {
        reconcile: Duration::from_millis(50),
        down_after: Duration::from_secs(60),
        max_outbound: 2,
        stop_timeout: Duration::from_secs(1),
        libvirt_timeout,
        fault_injection: false,
        data_dir: dir.to_owned(),
    };
    let fleet = Fleet::new("n".into(), store, settings);
    let xml = dir.join("host.xml");
    std::fs::write(&xml, simulated_node_xml(4, 4096)).unwrap();
    fleet.register(HostSpec {
        id: "h@n".into(),
        name: "h".into(),
        uri: format!("test://{}", xml.display()),
        node: "n".into(),
        labels: Default::default(),
        overcommit: Default::default(),
        reserved_memory_mib: 0,
        mode: HostMode::Active,
        simulated: true,
        created_at: troupe_runtime::clock::now(),
    });
    fleet
}

/// Waits for the driver's first look at the host (its start does not wait for it).
async fn first_look(fleet: &Fleet) {
    fleet.first_looks(&["h@n".to_owned()], Duration::from_secs(30)).await;
}

/// A driver is findable from its own start on, so a host never shows UP to a caller
/// that then finds no driver to ask (a createVm right after a node start did).
#[tokio::test]
async fn a_driver_is_registered_by_its_own_start_before_its_host_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(dir.path(), Duration::from_secs(5));
    assert!(fleet.driver("h@n").is_err());
    let (driver, handle) = Actor::spawn(None, HostDriver, (fleet.clone(), "h@n".to_owned()))
        .await
        .unwrap();
    first_look(&fleet).await;
    assert_eq!(fleet.state("h@n"), Some(HostState::Up));
    assert_eq!(fleet.driver("h@n").unwrap().get_id(), driver.get_id());
    driver.stop(None);
    handle.await.unwrap();
}

/// A host whose libvirt calls never answer (a black-holed link) is UNREACHABLE once a
/// call times out, and its driver keeps answering its other calls meanwhile.
#[tokio::test]
async fn a_host_that_stops_answering_is_unreachable_and_its_driver_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(dir.path(), Duration::from_millis(300));
    let (driver, handle) = Actor::spawn(None, HostDriver, (fleet.clone(), "h@n".to_owned()))
        .await
        .unwrap();
    first_look(&fleet).await;
    assert_eq!(fleet.state("h@n"), Some(HostState::Up));
    fleet.libvirt("h@n").unwrap().set_hang(true);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.state("h@n") != Some(HostState::Unreachable) {
        assert!(Instant::now() < deadline, "the host never became UNREACHABLE");
        // The driver answers while its host does not.
        let vms = driver
            .call(HostMsg::Vms, Some(Duration::from_millis(200)))
            .await
            .unwrap();
        assert!(matches!(vms, ractor::rpc::CallResult::Success(v) if v.is_empty()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = driver
        .call(HostMsg::Domains, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let ractor::rpc::CallResult::Success(Err(e)) = asked else {
        panic!("a hung host's domains were listed")
    };
    assert!(e.to_string().contains("did not answer"), "{e}");
    fleet.libvirt("h@n").unwrap().set_hang(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.state("h@n") != Some(HostState::Up) {
        assert!(Instant::now() < deadline, "the host never came back UP");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    driver.stop(None);
    handle.await.unwrap();
}

/// A driver's start asks nothing of its host: one that does not answer (a hung URI) holds up
/// neither the start nor the supervisor starting it; the driver answers meanwhile, and the
/// host is UP once it answers.
#[tokio::test]
async fn a_driver_starts_without_waiting_for_a_host_that_does_not_answer() {
    let dir = tempfile::tempdir().unwrap();
    // Far longer than the start may take.
    let fleet = fleet(dir.path(), Duration::from_secs(60));
    let libvirt = Libvirt::new(&fleet.spec("h@n").unwrap().uri, Duration::from_secs(60));
    libvirt.set_hang(true);
    fleet.set_libvirt("h@n", libvirt.clone());
    let start = Actor::spawn(None, HostDriver, (fleet.clone(), "h@n".to_owned()));
    let (driver, handle) = tokio::time::timeout(Duration::from_secs(10), start)
        .await
        .expect("the driver's start waited for its host")
        .unwrap();
    let vms = driver.call(HostMsg::Vms, Some(Duration::from_secs(5))).await.unwrap();
    assert!(matches!(vms, ractor::rpc::CallResult::Success(v) if v.is_empty()));
    assert_ne!(fleet.state("h@n"), Some(HostState::Up));
    libvirt.set_hang(false);
    first_look(&fleet).await;
    assert_eq!(fleet.state("h@n"), Some(HostState::Up));
    driver.stop(None);
    handle.await.unwrap();
}

/// A sweep lists the host's domains, then hands each VM what it saw. A VM that acted on its
/// domain after the listing began knows better: recording what the sweep saw would show a
/// state that was already over (createVm's VMs showed VM_STOPPED just after VM_RUNNING, from
/// a listing taken before their start) and act on it.
#[tokio::test]
async fn a_vm_does_not_record_a_sweep_that_began_before_its_own_action() {
    use crate::vm::{Observation, RunPolicy, VmCommand, VmState};
    use troupe_runtime::store::Window;
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet(dir.path(), Duration::from_secs(5));
    let (driver, handle) = Actor::spawn(None, HostDriver, (fleet.clone(), "h@n".to_owned()))
        .await
        .unwrap();
    first_look(&fleet).await;
    let mut request = crate::vm::CreateVmRequest::new("web", 1, 256);
    request.run_policy = RunPolicy::Always;
    let vm = crate::vm::create(&fleet, request, None).await.unwrap();
    assert_eq!(vm.status.state, VmState::Running);
    let id = vm.spec.id.clone();

    // A listing that began before the stop: it shows the domain running.
    let taken = Instant::now();
    let listed = fleet.libvirt("h@n").unwrap().domains().await.unwrap();
    let old = listed.into_iter().find(|d| d.name == vm.spec.domain);
    assert!(old.as_ref().is_some_and(|d| d.state.is_active()));
    let actor = crate::vm::vm_actor(&fleet, "h@n", &id).await.unwrap();
    let stop = VmCommand::Stop {
        timeout: Duration::from_secs(1),
    };
    let stopped = crate::vm::act_on(&fleet, &id, stop).await.unwrap();
    assert_eq!(stopped.status.state, VmState::Stopped);
    let last = fleet
        .store
        .events_about(id.clone(), Window::Last, None, 1)
        .await
        .unwrap()[0]
        .seq;

    actor.cast(VmMsg::Observed(Observation::Seen(old), taken)).unwrap();
    let view = crate::vm::view_of(&actor).await.unwrap();
    assert_eq!(view.status.state, VmState::Stopped);
    let since: Vec<String> = fleet
        .store
        .events_about(id, Window::After(last), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        !since.iter().any(|k| k == "VM_RUNNING"),
        "recorded the old listing: {since:?}"
    );
    driver.stop(None);
    handle.await.unwrap();
}
