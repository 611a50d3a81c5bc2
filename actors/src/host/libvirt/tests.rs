use super::*;

async fn simulated(dir: &std::path::Path, cpus: u32, memory_mib: u64) -> Libvirt {
    let path = dir.join(format!("host-{cpus}.xml"));
    std::fs::write(&path, simulated_node_xml(cpus, memory_mib)).unwrap();
    let (lv, opened) = Libvirt::open(&format!("test://{}", path.display()), Duration::from_secs(30)).await;
    opened.unwrap();
    lv
}

#[tokio::test]
async fn a_simulated_host_reports_its_own_capacity_and_runs_domains() {
    let dir = tempfile::tempdir().unwrap();
    let lv = simulated(dir.path(), 24, 32 * 1024).await;
    assert_eq!(
        lv.capacity().await.unwrap(),
        NodeCapacity {
            cpus: 24,
            memory_mib: 32 * 1024
        }
    );
    let uuid = uuid::Uuid::new_v4().to_string();
    lv.define(domain_xml(lv.uri(), "troupe-a", &uuid, 2, 512))
        .await
        .unwrap();
    let obs = lv.observe("troupe-a").await.unwrap().unwrap();
    assert_eq!(obs.state, DomainStateName::Shutoff);
    assert_eq!(obs.uuid, uuid);
    lv.on_domain("troupe-a", |d| d.create().map(|_| ())).await.unwrap();
    let obs = lv.observe("troupe-a").await.unwrap().unwrap();
    assert_eq!(
        (obs.state, obs.vcpus, obs.memory_kib),
        (DomainStateName::Running, 2, 512 * 1024)
    );
    // The test driver does not migrate: Troupe must move VMs itself.
    let other = simulated(dir.path(), 8, 8 * 1024).await;
    let err = lv.migrate_live("troupe-a", &other).await.unwrap_err();
    assert!(err.is_unsupported(), "{err:?}");
    lv.on_domain("troupe-a", |d| d.destroy()).await.unwrap();
    let obs = lv.observe("troupe-a").await.unwrap().unwrap();
    assert_eq!(
        (obs.state, obs.reason.as_str()),
        (DomainStateName::Shutoff, "destroyed")
    );
    lv.remove("troupe-a").await.unwrap();
    assert_eq!(lv.observe("troupe-a").await.unwrap(), None);
    lv.remove("troupe-a").await.unwrap();
}

#[tokio::test]
async fn a_broken_connection_fails_every_call_until_healed_and_keeps_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let lv = simulated(dir.path(), 4, 4096).await;
    let uuid = uuid::Uuid::new_v4().to_string();
    lv.define(domain_xml(lv.uri(), "troupe-b", &uuid, 1, 256))
        .await
        .unwrap();
    lv.set_broken(Some("injected".into())).await.unwrap();
    assert!(lv.domains().await.unwrap_err().is_lost());
    assert!(lv.reconnect().await.unwrap_err().is_lost());
    lv.set_broken(None).await.unwrap();
    assert!(!lv.reconnect().await.unwrap(), "the live connection is kept");
    assert_eq!(lv.domains().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_uri_that_does_not_open_reports_the_host_unreachable() {
    // Nothing listens on port 1 of loopback: the connection is refused.
    let (lv, opened) = Libvirt::open("qemu+tcp://127.0.0.1:1/system", Duration::from_secs(30)).await;
    assert!(opened.unwrap_err().is_lost());
    assert!(lv.domains().await.unwrap_err().is_lost());
}

/// A call stuck inside libvirt (here: a closure that blocks until released) fails in time as
/// a lost host, and the calls after it are answered by a fresh thread.
#[tokio::test]
async fn a_call_that_hangs_fails_in_time_and_the_next_calls_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.xml");
    std::fs::write(&path, simulated_node_xml(4, 4096)).unwrap();
    let (lv, opened) = Libvirt::open(&format!("test://{}", path.display()), Duration::from_millis(200)).await;
    opened.unwrap();
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let err = lv
        .run(move |_| {
            let _ = blocked.recv();
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.is_lost(), "{err:?}");
    assert_eq!(lv.worker.stuck(), 1);
    // The fresh thread has no connection yet: the host is unreachable until reconnected.
    assert!(lv.domains().await.unwrap_err().is_lost());
    assert!(lv.reconnect().await.unwrap(), "a new connection");
    assert_eq!(lv.capacity().await.unwrap().cpus, 4);
    release.send(()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lv.worker.stuck() > 0 {
        assert!(std::time::Instant::now() < deadline, "the stuck thread never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The injected hang blocks every call, on every thread, until healed; each call still ends
/// at its timeout, and no more than a few threads are left stuck.
#[tokio::test]
async fn a_hung_host_fails_every_call_in_time_until_healed() {
    let dir = tempfile::tempdir().unwrap();
    let lv = simulated(dir.path(), 4, 4096).await;
    let lv = Libvirt {
        timeout: Duration::from_millis(100),
        ..lv
    };
    lv.set_hang(true);
    for _ in 0..8 {
        assert!(lv.capacity().await.unwrap_err().is_lost());
    }
    assert!(lv.worker.stuck() <= 4, "{}", lv.worker.stuck());
    lv.set_hang(false);
    let _ = lv.reconnect().await.unwrap();
    assert_eq!(lv.capacity().await.unwrap().cpus, 4);
}

#[test]
fn keepalive_is_set_on_connections_to_a_daemon_and_not_on_the_test_driver() {
    use worker::keepalive_for;
    let on = Some((worker::KEEPALIVE_INTERVAL, worker::KEEPALIVE_COUNT));
    assert_eq!(keepalive_for("qemu+ssh://root@10.0.0.5/system"), on);
    assert_eq!(keepalive_for("qemu+tcp://127.0.0.1:16509/system"), on);
    assert_eq!(keepalive_for("qemu:///system"), on);
    assert_eq!(keepalive_for("test:///default"), None);
    assert_eq!(keepalive_for("test:///tmp/host.xml"), None);
}
