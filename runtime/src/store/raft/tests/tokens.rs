//! Tokens across members: a revocation a cut-off member cannot confirm, one it missed and
//! caught up with from a snapshot, and a guess of a token's shape that costs the leader
//! nothing.

use std::sync::Arc;

use super::{three_voters, Router};
use crate::store::Store;

/// a, b and c voters; the tokens of each, with a data dir of its own.
async fn tokens_on_two_of_three() -> (tempfile::TempDir, Arc<Router>, [Store; 2], [crate::auth::Tokens; 2]) {
    let (dir, router, [a, b, _], [on_a, on_b, _]) = tokens_on_three().await;
    (dir, router, [a, b], [on_a, on_b])
}

async fn tokens_on_three() -> (tempfile::TempDir, Arc<Router>, [Store; 3], [crate::auth::Tokens; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(Router::default());
    let [a, b, c] = three_voters(&router, &dir).await;
    let data = |name: &str| {
        let path = dir.path().join(format!("{name}-data"));
        std::fs::create_dir_all(&path).unwrap();
        path
    };
    let on_a = crate::auth::Tokens::load(a.clone(), &data("a")).await.unwrap();
    let on_b = crate::auth::Tokens::load(b.clone(), &data("b")).await.unwrap();
    let on_c = crate::auth::Tokens::load(c.clone(), &data("c")).await.unwrap();
    (dir, router, [a, b, c], [on_a, on_b, on_c])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_during_a_revocation_refuses_the_token_once_it_says_it_caught_up() {
    use crate::auth::{Check, Role};
    let (_dir, router, [_a, _b], [on_a, on_b]) = tokens_on_two_of_three().await;
    let (secret, info) = on_a.create(Role::Viewer, "cut-off", None).await.unwrap();
    assert!(matches!(on_b.check(&secret).await.unwrap(), Check::Valid { .. }));
    router.cut.lock().unwrap().insert("b".into());
    let (_, seq) = on_a.revoke(&info.id).await.unwrap();
    let seq = seq.expect("a first revocation has an event");
    assert_eq!(on_a.check(&secret).await.unwrap(), Check::Refused("was revoked"));
    // Cut off, b has not applied it, and says so when its time is up.
    let brief = std::time::Duration::from_millis(200);
    assert!(!on_b.caught_up(seq, brief).await.unwrap());
    let waiting = {
        let on_b = on_b.clone();
        tokio::spawn(async move { on_b.caught_up(seq, std::time::Duration::from_secs(20)).await })
    };
    router.cut.lock().unwrap().remove("b");
    assert!(waiting.await.unwrap().unwrap());
    assert_eq!(on_b.check(&secret).await.unwrap(), Check::Refused("was revoked"));
    // Revoked already: nothing more to wait for anywhere.
    assert_eq!(on_a.revoke(&info.id).await.unwrap().1, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_caught_up_from_a_snapshot_refuses_a_token_revoked_meanwhile() {
    use crate::auth::{Check, Role};
    let (_dir, router, [a, b, c], [on_a, on_b, on_c]) = tokens_on_three().await;
    let (secret, info) = on_a.create(Role::Viewer, "revoked-meanwhile", None).await.unwrap();
    assert!(matches!(on_b.check(&secret).await.unwrap(), Check::Valid { .. }));
    let mut revocations = on_b.revocations();
    revocations.borrow_and_update();
    // b misses the revocation, and the log that held it is purged: b can only catch up
    // from a snapshot, whose changes come with no event.
    router.cut.lock().unwrap().insert("b".into());
    on_a.revoke(&info.id).await.unwrap();
    let index = super::projections::purge_past(&a, &b).await;
    router.cut.lock().unwrap().remove("b");
    super::projections::installed_a_snapshot(&b, index).await;
    // The cache is read again, and the connections that used tokens are checked again.
    tokio::time::timeout(std::time::Duration::from_secs(20), revocations.changed())
        .await
        .expect("b's connections told")
        .unwrap();
    assert_eq!(on_b.check(&secret).await.unwrap(), Check::Refused("was revoked"));
    assert!(on_b.list().iter().all(|t| t.revoked_at.is_some()), "{:?}", on_b.list());
    // The cache of a member that applied the whole log holds the same.
    super::caught_up(&c, super::last_log(&a)).await;
    super::caught_up(&b, super::last_log(&a)).await;
    assert_eq!(on_b.list(), on_c.list());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_nobody_minted_is_refused_without_asking_the_leader_whatever_its_shape() {
    use crate::auth::{Check, Role};
    let (_dir, router, [_a, _b], [on_a, on_b]) = tokens_on_two_of_three().await;
    let (minted, _) = on_a.create(Role::Viewer, "real", None).await.unwrap();
    assert!(matches!(on_b.check(&minted).await.unwrap(), Check::Valid { .. }));
    // Cut off from the leader, b could not confirm a read there (that waits 5 s, then
    // fails): a guess of the minted shape is refused at once all the same.
    router.cut.lock().unwrap().insert("b".into());
    let guess = format!("trp_{}", "0123456789abcdef".repeat(4));
    let checked = tokio::time::timeout(std::time::Duration::from_secs(3), on_b.check(&guess)).await;
    assert_eq!(checked.expect("answered at once").unwrap(), Check::Unknown);
}
