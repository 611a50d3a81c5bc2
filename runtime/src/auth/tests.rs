use super::*;

async fn tokens() -> (tempfile::TempDir, Tokens) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let tokens = Tokens::load(store, dir.path()).await.unwrap();
    (dir, tokens)
}

#[tokio::test]
async fn tokens_resolve_to_their_role_and_unknown_ones_do_not() {
    let (_d, tokens) = tokens().await;
    let (secret, info) = tokens.create(Role::Operator, "ci", None).await.unwrap();
    assert_eq!(
        tokens.check(&secret).await.unwrap(),
        Check::Valid {
            id: info.id.clone(),
            role: Role::Operator
        }
    );
    assert_eq!(tokens.check("trp_nope").await.unwrap(), Check::Unknown);
    assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once_and_the_listing_never_shows_secrets() {
    let (_d, tokens) = tokens().await;
    let (secret, info) = tokens.create(Role::Viewer, "dashboard", None).await.unwrap();
    let revocations = tokens.revocations();
    tokens.revoke(&info.id).await.unwrap();
    assert!(revocations.has_changed().unwrap());
    assert_eq!(tokens.check(&secret).await.unwrap(), Check::Refused("was revoked"));
    assert!(!tokens.still_valid(&info.id));
    let listed = tokens.list();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
    let text = format!("{listed:?}");
    assert!(!text.contains(&secret) && !text.contains(&hash(&secret)));
    assert!(matches!(tokens.revoke("missing").await, Err(TokenError::NotFound(_))));
}

#[tokio::test]
async fn an_expired_token_is_refused_and_use_is_recorded() {
    let (dir, tokens) = tokens().await;
    let (secret, info) = tokens
        .create(Role::Viewer, "short", Some(chrono::TimeDelta::milliseconds(1)))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(tokens.check(&secret).await.unwrap(), Check::Refused("has expired"));
    assert!(tokens
        .create(Role::Viewer, "x", Some(chrono::TimeDelta::zero()))
        .await
        .is_err());
    assert!(tokens.create(Role::Viewer, " ", None).await.is_err());

    let (secret, info2) = tokens.create(Role::Viewer, "used", None).await.unwrap();
    assert!(tokens.check(&secret).await.is_ok());
    tokens.store.flush().await.unwrap();
    // A fresh cache over the same store sees the use and both tokens.
    let again = Tokens::load(tokens.store.clone(), dir.path()).await.unwrap();
    let used = again.list().into_iter().find(|t| t.id == info2.id).unwrap();
    assert!(used.last_used_at.is_some());
    assert!(again.list().iter().any(|t| t.id == info.id));
}

#[tokio::test]
async fn admin_token_is_created_once_and_only_its_hash_is_stored() {
    let (dir, tokens) = tokens().await;
    let path = tokens.ensure_admin_token("local").await.unwrap();
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    tokens.ensure_admin_token("local").await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), token);
    assert!(matches!(
        tokens.check(&token).await.unwrap(),
        Check::Valid { role: Role::Admin, .. }
    ));
    assert!(tokens.store.get(TOKENS, &token).await.unwrap().is_none());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    drop(dir);
}

#[tokio::test]
async fn tokens_created_while_the_store_is_locked_are_imported_when_first_used() {
    let (dir, tokens) = tokens().await;
    // The store is open here, so the CLI path leaves the record in tokens.pending/.
    let token = create_offline(dir.path(), Role::Viewer, "from-cli").await.unwrap();
    assert!(dir.path().join("tokens.pending").join(hash(&token)).exists());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("tokens.pending")), 0o700, "its owner's only");
    }
    assert!(matches!(
        tokens.check(&token).await.unwrap(),
        Check::Valid { role: Role::Viewer, .. }
    ));
    assert!(std::fs::read_dir(dir.path().join("tokens.pending"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(tokens.list()[0].name, "from-cli");
}

#[tokio::test]
async fn a_token_created_for_a_fresh_data_dir_makes_no_store_and_is_imported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let token = create_offline(dir.path(), Role::Operator, "before-start")
        .await
        .unwrap();
    // The node makes its store under its own name when it first starts, not this command.
    assert!(!dir.path().join("troupe.redb").exists());
    let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
    let tokens = Tokens::load(store, dir.path()).await.unwrap();
    assert_eq!(tokens.list()[0].name, "before-start", "imported at start");
    assert!(matches!(
        tokens.check(&token).await.unwrap(),
        Check::Valid {
            role: Role::Operator,
            ..
        }
    ));
}
