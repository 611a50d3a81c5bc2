//! A toy service declared with `service!`: the same request answered here (the local function,
//! called directly) and through the service actor (encoded, dispatched, decoded), keys carried,
//! a bad payload answered with an error, and the waits each request declares.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::Actor;

use super::{At, Everywhere, Located, ServiceActor, Within, PEER_TIMEOUT};
use crate::cluster::{Cluster, PeerInfo};
use crate::error::ApiError;

service! {
    service Toy as "toy" (ToyMsg, ToyRequest, ToyResponse, ToyLocal);
    /// Adds two numbers.
    call Add => add(a: u32, b: u32) -> u32;
    /// Remembers a word under the caller's key.
    keyed Keep => keep(word: String) -> String;
    call Wait => wait(ms: u64) -> (), within Duration::from_millis(*ms) + PEER_TIMEOUT;
    call Fail => fail() -> u32;
}

/// The words kept, each with the key its call carried.
type Kept = Arc<Mutex<Vec<(String, Option<String>)>>>;

#[derive(Clone)]
struct Toy {
    cluster: Cluster,
    kept: Kept,
    /// How many `Wait`s began.
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// What ends them: one permit each.
    release: Arc<tokio::sync::Semaphore>,
}

impl Located for Toy {
    fn cluster(&self) -> &Cluster {
        &self.cluster
    }
}

impl ToyLocal for Toy {
    async fn add(&self, a: u32, b: u32) -> Result<u32, ApiError> {
        Ok(a + b)
    }

    async fn keep(&self, word: String, key: Option<String>) -> Result<String, ApiError> {
        self.kept.lock().unwrap().push((word.clone(), key));
        Ok(word)
    }

    /// Waits for the test to release it (`ms` is what the request declares it may take).
    async fn wait(&self, _ms: u64) -> Result<(), ApiError> {
        self.waiting.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.release.acquire().await.expect("never closed").forget();
        Ok(())
    }

    async fn fail(&self) -> Result<u32, ApiError> {
        Err(ApiError::NotFound("nothing here".into()))
    }
}

/// A toy service of a node called `name`, served by its actor in this process.
async fn toy(name: &str) -> Toy {
    served_toy(name, None).await.0
}

/// A toy service of a node called `name`, served by its actor (closing with `closing`).
async fn served_toy(name: &str, closing: Option<super::PeerCalls>) -> (Toy, ractor::ActorRef<ToyMsg>) {
    let toy = Toy {
        cluster: Cluster::new(PeerInfo {
            name: name.into(),
            cluster_address: "127.0.0.1:1".into(),
            gateway_address: None,
        }),
        kept: Arc::default(),
        waiting: Arc::default(),
        release: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    // Never held: the flag's sender is gone at once and it stays false.
    let held = tokio::sync::watch::channel(false).1;
    let (actor, _) = Actor::spawn(None, ServiceActor::<Toy>::default(), (toy.clone(), held, closing))
        .await
        .expect("the toy service starts");
    (toy, actor)
}

#[tokio::test]
async fn a_request_is_answered_alike_here_and_through_the_service_actor() {
    let toy = toy("toy-a").await;
    let here = At::Here(&toy);
    let sent = At::Peer(&toy, "toy-a".into());
    assert_eq!(here.add(2, 3).await.unwrap(), 5);
    assert_eq!(sent.add(2, 3).await.unwrap(), 5);
    // The domain's own error crosses the wire as itself.
    assert!(matches!(sent.fail().await, Err(ApiError::NotFound(m)) if m == "nothing here"));
}

#[tokio::test]
async fn a_keyed_request_carries_the_callers_key_or_a_fresh_one_to_the_peer() {
    let toy = toy("toy-b").await;
    let sent = At::Peer(&toy, "toy-b".into());
    sent.keep("one".into(), Some("k1".into())).await.unwrap();
    sent.keep("two".into(), None).await.unwrap();
    At::Here(&toy).keep("three".into(), None).await.unwrap();
    let kept = toy.kept.lock().unwrap().clone();
    assert_eq!(kept[0], ("one".into(), Some("k1".into())));
    assert!(kept[1].1.as_deref().is_some_and(|k| k.starts_with("fwd-")), "{kept:?}");
    // Here, the caller's key (none) is the one the local function gets.
    assert_eq!(kept[2], ("three".into(), None));
}

#[tokio::test]
async fn a_payload_that_does_not_decode_is_an_error_answer_not_a_dropped_call() {
    let toy = toy("toy-c").await;
    let cell = ractor::pg::get_members(&super::group("toy", "toy-c")).remove(0);
    let actor: ractor::ActorRef<ToyMsg> = cell.into();
    let answer = actor
        .call(
            |reply| ToyMsg::Call(vec![0xc1, 0xff], reply),
            Some(Duration::from_secs(5)),
        )
        .await
        .expect("the service answers");
    let ractor::rpc::CallResult::Success(bytes) = answer else {
        panic!("no answer")
    };
    let decoded: Result<ToyResponse, ApiError> = troupe_runtime::codec::decode(&bytes).unwrap();
    assert!(matches!(decoded, Err(ApiError::InvalidInput(m)) if m.contains("undecodable toy request")));
    drop(toy);
}

#[test]
fn each_request_waits_as_long_as_it_declares() {
    assert_eq!(ToyRequest::Add { a: 1, b: 2 }.within(), PEER_TIMEOUT);
    assert_eq!(
        ToyRequest::Wait { ms: 60_000 }.within(),
        Duration::from_secs(60) + PEER_TIMEOUT
    );
}

#[tokio::test]
async fn everywhere_answers_this_nodes_part_first_and_names_no_missing_peer_when_alone() {
    let toy = toy("toy-d").await;
    let gathered = Everywhere(&toy).add(1, 1).await.unwrap();
    assert_eq!(gathered.answers, vec![2]);
    assert!(gathered.missing.is_empty());
    assert!(matches!(Everywhere(&toy).fail().await, Err(ApiError::NotFound(_))));
}

#[test]
fn the_holder_of_an_id_is_its_named_node_and_this_node_holds_the_rest() {
    let cluster = Cluster::new(PeerInfo {
        name: "alpha".into(),
        cluster_address: "127.0.0.1:1".into(),
        gateway_address: None,
    });
    assert_eq!(cluster.holder("0190-x@beta"), Some("beta".into()));
    assert_eq!(cluster.holder("0190-x@alpha"), None);
    assert_eq!(cluster.holder("no-home"), None);
    assert!(cluster.holds("0190-x@alpha") && !cluster.holds("0190-x@beta"));
}

#[tokio::test]
async fn a_keyed_call_to_a_peer_no_longer_connected_says_nothing_was_done_there() {
    let toy = toy("toy-c").await;
    // Heard from a moment ago (UP), and gone since: its service is not connected.
    let gone = crate::cluster::Answer {
        name: "toy-gone".into(),
        address: "127.0.0.1:2".into(),
        rooms: Default::default(),
        progress: crate::cluster::Progress {
            applied_behind: 0,
            running: true,
        },
        boot: 1,
    };
    toy.cluster.heard(vec![gone], tokio::time::Instant::now());
    let refused = At::Peer(&toy, "toy-gone".into())
        .keep("w".into(), Some("k".into()))
        .await
        .unwrap_err();
    // Before, the retry's advice said it may have acted: a client retried a task that
    // never was, and a submit was not queued where it was asked.
    assert!(super::never_sent(&refused), "{refused}");
    assert!(!refused.to_string().contains("may have acted"), "{refused}");
    assert!(toy.kept.lock().unwrap().is_empty());
}

/// Sends `request` to the service actor itself (not through its group) and decodes the answer.
async fn sent_to(actor: &ractor::ActorRef<ToyMsg>, request: ToyRequest) -> Result<ToyResponse, ApiError> {
    use super::Envelope;
    let bytes = troupe_runtime::codec::encode(&super::Call { key: None, request }).unwrap();
    let reply = actor
        .call(|r| ToyMsg::wrap(bytes, r), Some(Duration::from_secs(30)))
        .await
        .expect("sent")
        .expect("answered");
    troupe_runtime::codec::decode_then::<Result<ToyResponse, ApiError>, u64>(&reply)
        .unwrap()
        .0
}

#[tokio::test]
async fn a_closed_service_answers_what_it_took_refuses_what_comes_after_and_leaves_its_group() {
    let calls = super::PeerCalls::default();
    let (toy, actor) = served_toy("toy-closing", Some(calls.clone())).await;
    assert!(super::is_connected("toy", "toy-closing"));
    // A request under way as the node closes: a `Wait` the test releases.
    let under_way = tokio::spawn({
        let actor = actor.clone();
        async move { sent_to(&actor, ToyRequest::Wait { ms: 0 }).await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while toy.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the wait never began");
        tokio::task::yield_now().await;
    }
    calls.close();
    // One after the close is refused as a stopping node refuses work: nothing of it done.
    let late = sent_to(&actor, ToyRequest::Keep { word: "late".into() }).await;
    assert!(
        matches!(&late, Err(e) if crate::serving::refused_for_stop(e)),
        "{late:?}"
    );
    assert!(toy.kept.lock().unwrap().is_empty());
    // The close waits for the one under way (bounded), which is answered once it ends.
    assert_eq!(calls.settled(Duration::from_millis(50)).await, 1);
    toy.release.add_permits(1);
    assert_eq!(calls.settled(Duration::from_secs(30)).await, 0);
    assert!(matches!(under_way.await.unwrap(), Ok(ToyResponse::Wait(()))));
    // Peers no longer find it.
    while super::is_connected("toy", "toy-closing") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service stayed in its group"
        );
        tokio::task::yield_now().await;
    }
}
