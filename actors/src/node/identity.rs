//! What a node is, read or made at its start: its private data dir, the store's format, its
//! stable id, its cluster cookie, and the facts it keeps under its own name in the replicated
//! `meta` table.

use std::path::Path;

use troupe_runtime::auth::{self, TOKENS};
use troupe_runtime::config::Config;
use troupe_runtime::store::{Batch, Store, StoreError, META};

use super::StartNodeError;
use crate::tables::{AGENTS, TASKS};

/// The layout of the store this release writes.
const FORMAT: &str = "4";

/// The data dir holds the cookie, the tokens' hashes and every payload: its owner only.
pub(super) fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Refuses a store written by an older release (its records would not decode), and marks a
/// new one with this release's format.
pub(super) async fn check_format(store: &Store, data_dir: &Path) -> Result<(), StartNodeError> {
    let (format, used) = store
        .view(|v| {
            let records = v.len(AGENTS)? + v.len(TASKS)? + v.len(TOKENS)?;
            Ok((v.get(META, "format")?, records > 0 || v.last_seq()? > 0))
        })
        .await?;
    match format {
        Some(f) if f == FORMAT.as_bytes() => Ok(()),
        Some(f) => Err(StartNodeError::Format {
            path: data_dir.to_path_buf(),
            message: format!(
                "written in store format {}, this release reads format {FORMAT}",
                String::from_utf8_lossy(&f)
            ),
        }),
        None if used => Err(StartNodeError::Format {
            path: data_dir.to_path_buf(),
            message: "written by an older Troupe release (store format 1); start this release with an empty data dir"
                .into(),
        }),
        None => Ok(store
            .write(Batch::new().put(META, "format", FORMAT.as_bytes().to_vec()))
            .await
            .map(|_| ())?),
    }
}

/// The node's own key in the replicated `meta` table: every member keeps its facts there
/// under its name (a store of a single node from an earlier release kept them unnamed).
pub(super) fn own_key(what: &str, node: &str) -> String {
    format!("{what}@{node}")
}

/// Reads a fact of this node from `meta`: its named key, else the unnamed one an earlier
/// release wrote when this node was its store's only member.
pub(super) async fn own_fact(store: &Store, what: &str, node: &str) -> Result<Option<Vec<u8>>, StoreError> {
    if let Some(bytes) = store.get(META, &own_key(what, node)).await? {
        return Ok(Some(bytes));
    }
    let alone = store.status().members.len() <= 1;
    if alone {
        return store.get(META, what).await;
    }
    Ok(None)
}

/// The node's stable id, made on first start.
pub(super) async fn node_id(store: &Store, node: &str) -> Result<String, StoreError> {
    if let Some(bytes) = own_fact(store, "node_id", node).await? {
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    let id = uuid::Uuid::now_v7().to_string();
    store
        .write(Batch::new().put(META, own_key("node_id", node), id.as_bytes().to_vec()))
        .await?;
    Ok(id)
}

/// Whether this data dir may start as `config.node_name`: it is not another member's, and
/// not that of a member that left the cluster.
pub(super) async fn data_dir_is_this_members(store: &Store, config: &Config) -> Result<(), StartNodeError> {
    // A member's data dir is that member's: under another name it would dial itself and
    // write as nobody the cluster knows (it waited 10 s, then "the leader … did not answer").
    // (A node alone may take another name: its store, opened by a tool, may say `local`.)
    let (me, status) = (store.raft_id(), store.status());
    let several = status.members.len() > 1;
    if let Some(member) = status
        .members
        .iter()
        .find(|m| several && m.id == me && m.name != config.node_name)
    {
        return Err(StartNodeError::Format {
            path: config.data_dir.clone(),
            message: format!(
                "this data dir is member {}'s (Raft id {me}), not {}'s: start it with --node-name {}, or give \
                 node {} a data dir of its own",
                member.name, config.node_name, member.name, config.node_name
            ),
        });
    }
    // A member that left (or was forgotten while it ran) never connects again: its sessions
    // under the name would close those of a new member of that name.
    let name = config.node_name.clone();
    let record = store.view(move |v| crate::cluster::lease::member_in(v, &name)).await?;
    if let Some(left) = record.filter(|r| r.state == crate::cluster::lease::MemberState::Left) {
        return Err(StartNodeError::Left {
            name: config.node_name.clone(),
            since: left.since.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        });
    }
    Ok(())
}

/// The cluster cookie for this node (see [`resolve_cookie`]), read off the async threads.
pub(super) async fn cluster_cookie(config: &Config, store: &Store) -> Result<String, StartNodeError> {
    let (data_dir, file) = (config.data_dir.clone(), config.cookie_file.clone());
    let env = std::env::var("TROUPE_COOKIE").ok();
    let members: Vec<String> = store.status().members.into_iter().map(|m| m.name).collect();
    let join = config.join.clone();
    tokio::task::spawn_blocking(move || resolve_cookie(&data_dir, file.as_deref(), env, &members, &join))
        .await
        .map_err(|e| StartNodeError::Cookie(format!("reading the cookie failed: {e}")))?
}

/// The cluster cookie: from the cookie file, else `env` (`TROUPE_COOKIE`), else the one
/// kept in the data dir. A cookie given by file is kept there too, the last one given (a
/// node that joined with `--cookie-file` then restarts with its data dir alone; a first try
/// with the wrong file does not outlive the right one). A node
/// alone makes one when there is none; a member of a cluster of several (`members` names
/// them) never does, nor a node told to join one (`join` names its members): a new cookie
/// is not the cluster's, and the node would start cut off from every peer (each session
/// refused, the join waiting two minutes for nothing), so it stops saying how to give it
/// the cookie.
fn resolve_cookie(
    data_dir: &Path,
    cookie_file: Option<&Path>,
    env: Option<String>,
    members: &[String],
    join: &[String],
) -> Result<String, StartNodeError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| StartNodeError::Cookie(format!("{}: {e}", path.display())))
    };
    let kept = data_dir.join("cookie");
    if let Some(path) = cookie_file {
        let cookie = read(path)?;
        if read(&kept).ok().as_deref() != Some(cookie.as_str()) {
            auth::write_private(&kept, &cookie).map_err(|e| StartNodeError::Cookie(e.to_string()))?;
        }
        return Ok(cookie);
    }
    if let Some(cookie) = env.filter(|c| !c.trim().is_empty()) {
        return Ok(cookie.trim().to_owned());
    }
    if kept.exists() {
        return read(&kept);
    }
    if members.len() > 1 {
        return Err(StartNodeError::Cookie(format!(
            "this node is a member of a cluster of {} ({}) and has no cookie ({} does not exist): \
             start it with --cookie-file (or TROUPE_COOKIE) holding the cluster's cookie; a new \
             one would not be the cluster's",
            members.len(),
            members.join(", "),
            kept.display()
        )));
    }
    if !join.is_empty() {
        return Err(StartNodeError::Cookie(format!(
            "this node is to join the cluster of {} and has no cookie ({} does not exist): start \
             it with --cookie-file naming a member's cookie (<its data dir>/cookie) or with \
             TROUPE_COOKIE; a new one would not be the cluster's",
            join.join(", "),
            kept.display()
        )));
    }
    let cookie = uuid::Uuid::new_v4().simple().to_string();
    auth::write_private(&kept, &cookie).map_err(|e| StartNodeError::Cookie(e.to_string()))?;
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::resolve_cookie;

    #[test]
    fn a_cookie_given_by_file_is_kept_so_the_data_dir_alone_restarts_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let (data, given) = (dir.path().join("b"), dir.path().join("cluster-cookie"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(&given, "the-clusters\n").unwrap();
        let members = ["a".to_owned(), "b".to_owned()];
        assert_eq!(
            resolve_cookie(&data, Some(&given), None, &[], &[]).unwrap(),
            "the-clusters"
        );
        // Restarted with neither flag nor variable: the kept copy, not a new cookie.
        assert_eq!(
            resolve_cookie(&data, None, None, &members, &[]).unwrap(),
            "the-clusters"
        );
        // A variable wins over the kept copy.
        assert_eq!(
            resolve_cookie(&data, None, Some("env".into()), &members, &[]).unwrap(),
            "env"
        );
        // Given another file later (the first was the wrong one), that one is kept.
        let right = dir.path().join("right-cookie");
        std::fs::write(&right, "the-right-one\n").unwrap();
        assert_eq!(
            resolve_cookie(&data, Some(&right), None, &[], &[]).unwrap(),
            "the-right-one"
        );
        assert_eq!(
            resolve_cookie(&data, None, None, &members, &[]).unwrap(),
            "the-right-one"
        );
    }

    #[test]
    fn a_member_with_no_cookie_refuses_to_start_and_a_node_alone_makes_one() {
        let dir = tempfile::tempdir().unwrap();
        let members = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let refused = resolve_cookie(dir.path(), None, None, &members, &[])
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("member of a cluster of 3 (a, b, c)") && refused.contains("--cookie-file"),
            "{refused}"
        );
        assert!(!dir.path().join("cookie").exists(), "no cookie was made");
        let made = resolve_cookie(dir.path(), None, None, &["a".to_owned()], &[]).unwrap();
        assert_eq!(resolve_cookie(dir.path(), None, None, &members, &[]).unwrap(), made);
    }

    #[test]
    fn a_fresh_node_told_to_join_with_no_cookie_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let join = ["127.0.0.1:4697".to_owned()];
        let refused = resolve_cookie(dir.path(), None, None, &[], &join)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("to join the cluster of 127.0.0.1:4697") && refused.contains("--cookie-file"),
            "{refused}"
        );
        assert!(!dir.path().join("cookie").exists(), "no cookie was made");
        // Given one, or restarted with the copy it kept, it starts.
        assert_eq!(
            resolve_cookie(dir.path(), None, Some("the-clusters".into()), &[], &join).unwrap(),
            "the-clusters"
        );
        std::fs::write(dir.path().join("cookie"), "kept").unwrap();
        assert_eq!(resolve_cookie(dir.path(), None, None, &[], &join).unwrap(), "kept");
    }
}
