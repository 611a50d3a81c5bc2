//! The lane's listening and dialling sides against each other, on loopback.

use super::*;

#[test]
fn keys_compare_whole() {
    assert!(same(&[1, 2, 3], &[1, 2, 3]));
    assert!(!same(&[1, 2, 3], &[1, 2, 4]));
    assert!(!same(&[1, 2], &[1, 2, 3]));
}

#[test]
fn a_lane_on_every_interface_is_dialled_at_the_cluster_host() {
    assert_eq!(reachable("0.0.0.0:4100", Some("10.0.0.7:4697")), "10.0.0.7:4100");
    assert_eq!(reachable("127.0.0.1:4100", Some("10.0.0.7:4697")), "127.0.0.1:4100");
    assert_eq!(reachable("0.0.0.0:4100", None), "0.0.0.0:4100");
}

/// A store in a fresh directory, and its lane listening on loopback.
/// The names of the threads connections were greeted on.
static GREETERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(super) fn greeted_on(thread: Option<&str>) {
    GREETERS.lock().unwrap().push(thread.unwrap_or_default().to_owned());
}

/// The names of the threads connections were made on.
static DIALERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(super) fn dialed_on(thread: Option<&str>) {
    DIALERS.lock().unwrap().push(thread.unwrap_or_default().to_owned());
}

async fn listening() -> (tempfile::TempDir, Store, Listener) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let listener = Listener::start(store.clone(), SocketAddr::from(([127, 0, 0, 1], 0)), None, None)
        .await
        .unwrap();
    (dir, store, listener)
}

/// Fails unless `seen` names a thread and none of the Raft runtime's.
fn off_the_raft_runtime(seen: &Mutex<Vec<String>>, what: &str) {
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "no connection was {what}");
    assert!(
        seen.iter().all(|t| t != "troupe-raft"),
        "{what} on the Raft runtime: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_from_the_raft_runtime_is_dialled_and_greeted_on_the_nodes_runtime() {
    let (_dir, _store, listener) = listening().await;
    let lanes = Arc::new(Lanes::new(None));
    lanes.learn("m", listener.info.clone());
    // Sent from a thread named as the Raft runtime's are.
    let sender = lanes.clone();
    let sent = std::thread::Builder::new()
        .name("troupe-raft".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(sender.send("m", RpcKind::ReadIndex, &[], Duration::from_secs(5)))
        })
        .unwrap();
    let sent = tokio::task::spawn_blocking(move || sent.join().unwrap()).await.unwrap();
    sent.unwrap();
    off_the_raft_runtime(&DIALERS, "dialled");
    off_the_raft_runtime(&GREETERS, "greeted");
}

#[test]
fn a_connection_is_watched_by_the_runtime_that_sends_on_it_not_by_the_one_that_dialled_it() {
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap()
    };
    let (lane, node, raft) = (runtime("lane"), runtime("node"), runtime("raft"));
    let (_dir, _store, listener) = lane.block_on(listening());
    // Made by the node's runtime, as a node makes its lanes.
    let lanes = node.block_on(async { Lanes::new(None) });
    lanes.learn("m", listener.info.clone());
    let send = || raft.block_on(lanes.send("m", RpcKind::ReadIndex, &[], Duration::from_secs(5)));
    send().unwrap();
    // The node's runtime gone, the connection it dialled still carries the next request:
    // the runtime that sent on it watches its socket.
    node.shutdown_timeout(Duration::from_secs(5));
    send().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_sender_stopped_waiting_is_kept_once_its_answer_comes() {
    // A lane the test answers by hand.
    let lane = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let key = [7u8; KEY_LEN];
    let lanes = Arc::new(Lanes::new(None));
    let info = LaneInfo {
        addr: lane.local_addr().unwrap().to_string(),
        key: ByteBuf::from(key.to_vec()),
    };
    lanes.learn("m", info);
    let send = |kind: RpcKind, request: &'static [u8]| {
        let lanes = lanes.clone();
        tokio::spawn(async move { lanes.send("m", kind, request, Duration::from_secs(30)).await })
    };
    let sending = send(RpcKind::ReadIndex, b"asked");
    let (tcp, _) = lane.accept().await.unwrap();
    let mut conn: Conn = BufStream::new(Box::new(tcp));
    let mut greeting = [0u8; MAGIC.len() + KEY_LEN];
    conn.read_exact(&mut greeting).await.unwrap();
    conn.write_u8(0).await.unwrap();
    conn.flush().await.unwrap();
    let asked = read_frame(&mut conn).await.unwrap();
    assert_eq!(asked, (kind_byte(RpcKind::ReadIndex), b"asked".to_vec()));
    // The sender stops waiting (a forwarded write applied here first); then the answer comes.
    sending.abort();
    assert!(sending.await.unwrap_err().is_cancelled());
    write_frame(&mut conn, 0, b"late").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lanes.peers.lock().unwrap()["m"].idle.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the connection was not kept");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The next request goes on it: no new connection, no greeting.
    let next = send(RpcKind::Vote, b"again");
    let asked = read_frame(&mut conn).await.unwrap();
    assert_eq!(asked, (kind_byte(RpcKind::Vote), b"again".to_vec()));
    write_frame(&mut conn, 0, b"answered").await.unwrap();
    assert_eq!(next.await.unwrap().unwrap(), b"answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_serves_whoever_holds_its_key_and_holds_requests_while_the_link_is_held() {
    let (_dir, _store, listener) = listening().await;
    let lanes = Arc::new(Lanes::new(None));
    let ask = |within: u64| {
        let lanes = lanes.clone();
        async move {
            lanes
                .send("m", RpcKind::ReadIndex, &[], Duration::from_millis(within))
                .await
        }
    };
    // A wrong key: the lane closes the connection, and the dialler forgets the lane.
    let mut wrong = listener.info.clone();
    wrong.key[0] ^= 1;
    lanes.learn("m", wrong);
    assert!(matches!(ask(5_000).await, Err(SendError::NotSent(_))));
    assert!(
        !lanes.knows("m") && lanes.shuns("m"),
        "the link carries its messages a while"
    );
    // The right one: answered, twice on one connection kept idle between.
    lanes.learn("m", listener.info.clone());
    ask(5_000).await.unwrap();
    ask(5_000).await.unwrap();
    assert_eq!(lanes.peers.lock().unwrap()["m"].idle.len(), 1);
    // Held: a request waits unanswered until the release.
    let (hold, held) = watch::channel(true);
    listener.hold_with(held);
    assert!(matches!(ask(300).await, Err(SendError::Lost(_))));
    let waiting = tokio::spawn(ask(5_000));
    hold.send_replace(false);
    waiting.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lane_does_not_keep_its_store_open() {
    let (_dir, store, listener) = listening().await;
    let addr = listener.info.addr.clone();
    let lanes = Lanes::new(None);
    lanes.learn("m", listener.info.clone());
    lanes
        .send("m", RpcKind::ReadIndex, &[], Duration::from_secs(5))
        .await
        .unwrap();
    // The last handle gone, the store closes, its Raft runtime ends, and the lane with it.
    drop(store);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the lane still listens");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_greet_are_bounded_in_number_and_the_lane_serves_again_after() {
    let (_dir, _store, listener) = listening().await;
    let mut silent = Vec::new();
    for _ in 0..MAX_GREETING {
        silent.push(TcpStream::connect(&listener.info.addr).await.unwrap());
    }
    // One more is closed at once, unread: not after the greeting's deadline.
    let mut late = TcpStream::connect(&listener.info.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(GREETING_WITHIN / 2, late.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // Once they are gone, a member that holds the key is served.
    drop(silent);
    let lanes = Lanes::new(None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        lanes.learn("m", listener.info.clone());
        if lanes
            .send("m", RpcKind::ReadIndex, &[], Duration::from_secs(5))
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lane never served again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_lane_that_takes_no_connection_costs_a_message_a_second_not_its_deadline() {
    // Connections queue at this socket, and nothing ever answers their greeting.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let lanes = Lanes::new(None);
    let info = LaneInfo {
        addr: silent.local_addr().unwrap().to_string(),
        key: ByteBuf::from(vec![0; KEY_LEN]),
    };
    lanes.learn("m", info);
    let asked = tokio::time::Instant::now();
    let sent = lanes.send("m", RpcKind::Vote, &[], Duration::from_secs(30)).await;
    assert!(matches!(sent, Err(SendError::NotSent(_))), "{sent:?}");
    assert_eq!(asked.elapsed(), CONNECT_WITHIN);
    assert!(lanes.shuns("m"));
    tokio::time::advance(SHUNNED_FOR).await;
    assert!(!lanes.shuns("m"), "its lane is asked for again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_member_whose_lane_moved_is_sent_where_it_listens_now() {
    let (_dir, _store, listener) = listening().await;
    // The lane learnt before the member restarted: nothing listens there any more.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let old = LaneInfo {
        addr: gone.local_addr().unwrap().to_string(),
        key: ByteBuf::from(vec![0; KEY_LEN]),
    };
    drop(gone);
    let lanes = Lanes::new(None);
    lanes.learn("m", old);
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let ask = || async {
        asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        lanes.learn("m", listener.info.clone());
        true
    };
    let sent = lanes
        .send_on_lane("m", RpcKind::ReadIndex, &[], Duration::from_secs(5), ask)
        .await;
    assert!(matches!(sent, Some(Ok(_))), "{sent:?}");
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(!lanes.shuns("m"), "its new lane carries the next messages");
}

#[tokio::test(start_paused = true)]
async fn a_member_that_does_not_say_where_its_lane_is_is_not_asked_before_every_message() {
    let lanes = Lanes::new(None);
    let asked = std::sync::atomic::AtomicUsize::new(0);
    let ask = || async {
        asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        false
    };
    for _ in 0..5 {
        assert!(!lanes.on_lane("old", ask).await, "the link carries it");
    }
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::advance(SHUNNED_FOR).await;
    assert!(!lanes.on_lane("old", ask).await);
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "asked again after a while"
    );
}

#[test]
fn every_kind_has_its_byte() {
    for kind in [
        RpcKind::Append,
        RpcKind::Vote,
        RpcKind::Snapshot,
        RpcKind::Propose,
        RpcKind::ReadIndex,
        RpcKind::Succeed,
    ] {
        assert_eq!(kind_of(kind_byte(kind)), Some(kind));
    }
    assert_eq!(kind_of(9), None);
}
