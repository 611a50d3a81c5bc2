//! The leader's side: confirming its leadership, judging the members by the leases it
//! granted, committing their states, and members leaving or forgotten.

use super::*;

/// As the leader: confirms its leadership with a quorum each [`BEAT`] (so it may grant
/// leases) and judges the members by the leases it granted them. Runs for the node's
/// lifetime.
pub(crate) async fn watch_members(store: Store, cluster: Cluster) {
    let me = cluster.name();
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut leading: Option<(u64, Instant)> = None;
    // When a majority last confirmed this node's leadership, in the term it leads.
    let mut confirmed: Option<Instant> = None;
    // When this leader first found each member in the membership (see `tick::Joined`).
    let mut joined = super::tick::Joined::new();
    loop {
        // How long it waited for this beat: past a beat, it was paused (see `judged_from`).
        let asleep = Instant::now();
        tick.tick().await;
        let (now, waited) = (Instant::now(), asleep.elapsed());
        if store.failure().is_some() {
            return;
        }
        let status = store.status();
        if status.leader.as_deref() != Some(me.as_str()) {
            if leading.take().is_some() {
                cluster.leases.deposed();
            }
            confirmed = None;
            continue;
        }
        let since = super::tick::judged_from(leading, status.term, now, waited);
        if leading.is_none_or(|(_, was)| was != since) {
            if leading.is_some_and(|(term, _)| term == status.term) {
                tracing::warn!(
                    paused_ms = waited.as_millis() as u64,
                    "this leader was paused: its members are judged from now, not by the silence its pause made"
                );
            } else {
                cluster.leases.deposed();
                confirmed = None;
            }
            leading = Some((status.term, since));
        }
        let check = Instant::now();
        match tokio::time::timeout(CONFIRMED_WITHIN, store.raft().ensure_linearizable()).await {
            Ok(Ok(_)) => cluster.leases.confirmed(check, store.status().commit_index),
            _ => continue,
        }
        // A test's gate (a build with the `fault-injection` feature): a pause here.
        troupe_runtime::store::hold_at("judge").await;
        let mut since = since;
        if super::tick::regained(confirmed.map(|at| check.saturating_duration_since(at))) {
            // No majority answered it for a while (the others stopped, or it was cut off):
            // nobody could renew a lease meanwhile, so that silence is nobody's. Members
            // back with the majority were declared DOWN and their work moved for it.
            tracing::info!(
                unconfirmed_ms = confirmed.map_or(0, |at| check.saturating_duration_since(at).as_millis() as u64),
                "this leader heard from a majority again: its members are judged from now"
            );
            leading = Some((status.term, check));
            since = check;
        }
        confirmed = Some(check);
        joined.saw(status.members.iter().map(|m| m.name.as_str()), check);
        if status.members.len() <= 1 {
            continue;
        }
        if let Err(e) = judge(&store, &cluster, &status, since, check, &joined).await {
            tracing::warn!(error = %e, "could not record a member's state");
        }
    }
}

/// How long a leaving member has to stop its work.
const RELEASE_WITHIN: Duration = Duration::from_secs(90);

/// On the leader: the member `node` leaves the cluster. Its work stops first (it must be
/// reachable; a member that will not return is forgotten instead), then one entry marks it
/// LEFT, bumps its fencing epoch and moves what it ran to the UP members, and then it is
/// removed from the log's membership (a learner taking a voter's place when one can).
pub(crate) async fn leave(
    service: &crate::service::node::NodeService,
    node: &str,
) -> Result<(), crate::error::ApiError> {
    use crate::error::ApiError;
    let (store, cluster, voters) = (&service.store, &service.cluster, service.voters);
    let (record, survivors) = standing(store, node).await?;
    match record.as_ref().map(|r| r.state) {
        Some(MemberState::Left) => return Err(ApiError::Conflict(still_listed(node))),
        Some(MemberState::Down) => {
            return Err(ApiError::Conflict(format!(
                "{node} is down: forget it (forgetMember) rather than drain it"
            )))
        }
        _ => {}
    }
    if survivors.is_empty() {
        return Err(ApiError::Conflict(format!(
            "no other member is UP to take {node}'s work"
        )));
    }
    let released = if node == cluster.name() {
        cluster.leases.release(RELEASE_WITHIN).await
    } else {
        crate::cluster::remote::Peer(service, node.to_owned())
            .release()
            .await
            .map_err(|e| match e {
                // Silent (stopped, or cut off) but not declared DOWN yet: the way out is
                // `forgetMember` once it is, which the refusal alone did not say.
                ApiError::Unavailable(why) => ApiError::Unavailable(format!(
                    "{why}: a member leaves only while it answers, to stop its work first; one gone for \
                     good is forgotten (forgetMember) once the leader declares it DOWN, after {} s of \
                     silence",
                    DOWN_AFTER.as_secs()
                )),
                other => other,
            })?
    };
    if !released {
        return Err(ApiError::Unavailable(format!(
            "{node} did not stop its work within {} s",
            RELEASE_WITHIN.as_secs()
        )));
    }
    depart(store, node, record, survivors, voters).await
}

/// On the leader: forgets the member `node`, which is DOWN and will not return: it is
/// marked LEFT (anything still placed on it moves) and removed from the log's membership.
pub(crate) async fn forget(
    service: &crate::service::node::NodeService,
    node: &str,
) -> Result<(), crate::error::ApiError> {
    let (store, voters) = (&service.store, service.voters);
    let (record, survivors) = standing(store, node).await?;
    match record.as_ref().map(|r| r.state) {
        Some(MemberState::Down) => depart(store, node, record, survivors, voters).await,
        // Its name's record says it left, yet a member of that name is in the log's
        // membership (`standing` found it there): a node admitted under a forgotten
        // member's name that died before it caught up, whose admission never finished, so
        // its record was never made UP and the leader judges it no more. Removing it from
        // the membership is all there is left to do (it stayed there for good, and a new
        // node of that name was refused admission while it did).
        Some(MemberState::Left) => {
            store.remove_member(node, voters).await?;
            tracing::info!(
                node,
                "removed a member that had not caught up since it joined again under a name that left"
            );
            Ok(())
        }
        Some(MemberState::Suspect) => Err(crate::error::ApiError::Conflict(format!(
            "{node} is SUSPECT, not DOWN yet: a member gone for good is forgotten once the leader \
             declares it DOWN, after {} s of silence (a member that is there leaves: leaveCluster)",
            DOWN_AFTER.as_secs()
        ))),
        _ => Err(crate::error::ApiError::Conflict(format!(
            "{node} is not down: a member that is there leaves (leaveCluster); one that is gone \
             for good is forgotten once the leader declares it DOWN, after {} s of silence",
            DOWN_AFTER.as_secs()
        ))),
    }
}

/// Why a member whose record says LEFT cannot leave: it is still in the log's membership,
/// admitted again under that name and never caught up; it is forgotten instead.
fn still_listed(node: &str) -> String {
    format!(
        "{node} left the cluster, and a node admitted again under its name has not caught up with \
         the log: forget it (forgetMember) to remove it from the membership"
    )
}

/// The member's committed record, and the other members that are UP, as of everything the
/// cluster committed before the call (a linearizable read: a leader applies what it
/// committed a moment later, and another member may have applied it first, so a client
/// that saw gamma DOWN there was refused `forgetMember` here).
async fn standing(store: &Store, node: &str) -> Result<(Option<MemberRecord>, Vec<String>), crate::error::ApiError> {
    store.linearize().await?;
    let names: Vec<String> = store.status().members.into_iter().map(|m| m.name).collect();
    if !names.iter().any(|n| n == node) {
        return Err(crate::error::ApiError::NotFound(format!(
            "{node} is not a member of the cluster"
        )));
    }
    let node = node.to_owned();
    Ok(store
        .view(move |v| {
            let mut survivors = Vec::new();
            for name in names.iter().filter(|n| **n != node) {
                if member_in(v, name)?.is_none_or(|r| r.state == MemberState::Up) {
                    survivors.push(name.clone());
                }
            }
            Ok((member_in(v, &node)?, survivors))
        })
        .await?)
}

/// Marks `node` LEFT with its moves, then removes it from the membership.
async fn depart(
    store: &Store,
    node: &str,
    record: Option<MemberRecord>,
    survivors: Vec<String>,
    voters: usize,
) -> Result<(), crate::error::ApiError> {
    let current = record.map(|r| troupe_runtime::codec::encode(&r)).transpose()?;
    let mut batch = transition(
        store,
        node,
        MemberState::Left,
        current,
        Duration::ZERO,
        survivors.clone(),
    )
    .await?;
    // Which Raft id left: should that node come back (forgotten while it was stopped, it
    // never applies this entry), the members tell it so.
    let id = store
        .status()
        .members
        .into_iter()
        .find(|m| m.name == node)
        .map(|m| m.id);
    if let Some(id) = id {
        let key = crate::cluster::lease::left_id_key(node);
        batch = batch.put(META, key, troupe_runtime::codec::encode(&Some(id))?);
    }
    store.write(batch).await?;
    move_stragglers(store, node, survivors).await?;
    let promoted = store.remove_member(node, voters).await?;
    tracing::info!(node, "a member left the cluster");
    if let Some(learner) = promoted {
        // A learner took the voter's place: said as setMemberRole's change is.
        tracing::info!(node = %learner, replacing = node, "a learner became a voter");
        let event = NewEvent::new(
            "MEMBER_ROLE_CHANGED",
            Some(learner.clone()),
            serde_json::json!({ "node": learner, "role": "VOTER", "replacing": node }),
        );
        store.write(Batch::new().event(event)).await?;
    }
    Ok(())
}

/// Decides each member's state from the leases granted by `now`, when a majority last
/// confirmed this node's leadership in `status.term`, and commits what changed as that
/// term's decision ([`Batch::led_in`]). Silence is counted to that confirmation: a pause of
/// this node after it is not the members' (a leader frozen here for 4.7 s declared both
/// others DOWN once thawed), and a judgement that reaches the log in a later term, through
/// the next leader, is refused.
async fn judge(
    store: &Store,
    cluster: &Cluster,
    status: &troupe_runtime::store::raft::Status,
    since: Instant,
    now: Instant,
    joined: &super::tick::Joined<Instant>,
) -> Result<(), StoreError> {
    let me = cluster.name();
    let names: Vec<String> = status.members.iter().map(|m| m.name.clone()).collect();
    let records = {
        let names = names.clone();
        store
            .view(move |v| {
                names
                    .iter()
                    .map(|n| Ok((n.clone(), member_in(v, n)?)))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await?
    };
    let members: Vec<(String, MemberState)> = records
        .iter()
        .map(|(n, r)| (n.clone(), r.as_ref().map_or(MemberState::Up, |r| r.state)))
        .collect();
    let mut records: HashMap<String, Option<MemberRecord>> = records.into_iter().collect();
    let changes = super::tick::tick(
        &me,
        &members,
        |name| cluster.leases.silence(name, joined.since(name, since), now),
        |name| {
            let progress = cluster.progress(name);
            super::tick::Ready {
                caught_up: super::tick::caught_up(status.caught_up(name), progress.map(|p| p.applied_behind)),
                working: progress.is_some_and(|p| p.running),
                restarted: cluster.restarted(name).unwrap_or(false),
            }
        },
    );
    for change in changes {
        let (name, next) = (change.node, change.to);
        let current = records
            .remove(&name)
            .flatten()
            .map(|r| troupe_runtime::codec::encode(&r))
            .transpose()?;
        let (silent, survivors) = (change.silent, change.survivors);
        let batch = transition(store, &name, next, current, silent, survivors.clone())
            .await?
            .led_in(status.term);
        match store.write(batch).await {
            Ok(_) => {
                if (change.from, next) == (MemberState::Down, MemberState::Up) {
                    cluster.forget_restart(&name);
                }
                // A member back UP needs nobody: said at INFO, the falls at WARN.
                if next == MemberState::Up {
                    tracing::info!(node = %name, state = next.name(), silent_ms = silent.as_millis() as u64, "a member's state changed");
                } else {
                    tracing::warn!(node = %name, state = next.name(), silent_ms = silent.as_millis() as u64, "a member's state changed");
                }
                if next == MemberState::Down {
                    move_stragglers(store, &name, survivors).await?;
                }
            }
            // Another leader decided first, or this node no longer leads.
            Err(StoreError::Stale(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The entry that moves `node` to `next`, on the condition that its record is still
/// `current`; a DOWN also bumps its fencing epoch and moves what it ran to `survivors`.
async fn transition(
    store: &Store,
    node: &str,
    next: MemberState,
    current: Option<Vec<u8>>,
    silent: Duration,
    survivors: Vec<String>,
) -> Result<Batch, StoreError> {
    let record = MemberRecord {
        state: next,
        since: troupe_runtime::clock::now(),
    };
    let kind = match next {
        MemberState::Up => "MEMBER_UP",
        MemberState::Suspect => "MEMBER_SUSPECT",
        MemberState::Down => "MEMBER_DOWN",
        MemberState::Left => "MEMBER_LEFT",
    };
    let mut batch = Batch::new().require(META, member_key(node), current).put(
        META,
        member_key(node),
        troupe_runtime::codec::encode(&record)?,
    );
    let silent_ms = silent.as_millis() as u64;
    if !matches!(next, MemberState::Down | MemberState::Left) {
        return Ok(batch.event(NewEvent::new(
            kind,
            Some(node.to_owned()),
            json!({ "node": node, "silentMs": silent_ms }),
        )));
    }
    let reason = match next {
        MemberState::Left => format!("node {node} left the cluster"),
        _ => format!("node {node} is down"),
    };
    let node = node.to_owned();
    let plan = {
        let node = node.clone();
        store
            .view(move |v| super::moves::plan_moves(v, &node, &survivors))
            .await?
    };
    let epoch = plan.epoch + 1;
    if next == MemberState::Left {
        // A member gone for good takes its admin token with it: its `admin.token` file, on
        // a machine that is no longer the cluster's, must not keep working.
        let gone = node.clone();
        batch = store
            .view(move |v| troupe_runtime::auth::revoke_admin_of(v, batch, &gone))
            .await?;
    }
    batch = batch.put(META, fence_key(&node), troupe_runtime::codec::encode(&epoch)?);
    batch = batch.event(NewEvent::new(
        kind,
        Some(node.clone()),
        json!({ "node": node, "silentMs": silent_ms, "epoch": epoch, "agentsMoved": plan.agents.len(),
                "agentsNotMoved": plan.stranded.len(), "swarmsMoved": plan.swarms.len(), "hostsMoved": plan.hosts.len(), "tasksMoved": plan.tasks.len() }),
    ));
    for (mut spec, placement) in plan.agents {
        let to = placement.node.clone();
        spec.node = to.clone();
        // The status its old node recorded claims a live actor that is gone: until the new
        // node has started it (and records what it finds), it is STARTING there.
        if let Some(status) = moved_status(store, &spec.id).await? {
            batch = batch.put(AGENT_STATUS, spec.id.clone(), troupe_runtime::codec::encode(&status)?);
        }
        batch = batch
            .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(DIRECTORY, spec.id.clone(), troupe_runtime::codec::encode(&placement)?)
            .event(NewEvent::new(
                "AGENT_MOVED",
                Some(spec.id.clone()),
                json!({ "from": node, "to": to, "reason": reason, "epoch": placement.epoch }),
            ));
    }
    for (id, why) in &plan.stranded {
        batch = batch.event(NewEvent::new(
            "AGENT_NOT_MOVED",
            Some(id.clone()),
            json!({ "from": node, "reason": reason, "why": why }),
        ));
    }
    for moving in plan.swarms {
        let (teams, members) = (moving.swarms.len() - 1, moving.members.len());
        for (mut spec, placement) in moving.swarms {
            spec.node = placement.node.clone();
            batch = batch
                .put(SWARMS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
                .put(DIRECTORY, spec.id.clone(), troupe_runtime::codec::encode(&placement)?);
        }
        for (mut spec, placement) in moving.members {
            spec.node = placement.node.clone();
            batch = batch
                .put(AGENTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
                .put(DIRECTORY, spec.id.clone(), troupe_runtime::codec::encode(&placement)?);
        }
        batch = batch.event(NewEvent::new(
            "SWARM_MOVED",
            Some(moving.top.clone()),
            json!({ "from": node, "to": moving.to, "reason": reason, "teams": teams, "members": members }),
        ));
    }
    for (mut spec, placement, vms) in plan.hosts {
        let to = placement.node.clone();
        spec.node = to.clone();
        batch = batch
            .put(HOSTS, spec.id.clone(), troupe_runtime::codec::encode(&spec)?)
            .put(DIRECTORY, spec.id.clone(), troupe_runtime::codec::encode(&placement)?);
        for vm in &vms {
            batch = batch.put(DIRECTORY, vm.clone(), troupe_runtime::codec::encode(&placement)?);
        }
        batch = batch.event(NewEvent::new(
            "HOST_MOVED",
            Some(spec.id.clone()),
            json!({ "from": node, "to": to, "reason": reason, "name": spec.name, "vms": vms.len() }),
        ));
    }
    moved_tasks(batch, plan.tasks, &node, &reason)
}

/// `batch` with the open tasks of `node` placed where the plan put them, and a
/// `TASKS_MOVED` event for each node that takes some.
fn moved_tasks(
    mut batch: Batch,
    tasks: Vec<(String, crate::cluster::directory::Placement)>,
    node: &str,
    reason: &str,
) -> Result<Batch, StoreError> {
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (id, placement) in tasks {
        *per_node.entry(placement.node.clone()).or_default() += 1;
        batch = batch.put(DIRECTORY, id, troupe_runtime::codec::encode(&placement)?);
    }
    for (to, count) in per_node {
        batch = batch.event(NewEvent::new(
            "TASKS_MOVED",
            Some(to.clone()),
            json!({ "from": node, "to": to, "count": count, "reason": reason }),
        ));
    }
    Ok(batch)
}

/// Moves the open tasks still held by `node` once its DOWN or LEFT is committed: those
/// queued there between the plan's read and that commit (a submit placed on it a moment
/// before it left), which the plan did not see. After the commit, `node` is fenced and
/// writes none. Without this, three tasks acknowledged as a member left stayed QUEUED
/// there, and cancelling them answered that it was down. How many moved.
async fn move_stragglers(store: &Store, node: &str, survivors: Vec<String>) -> Result<usize, StoreError> {
    let plan = {
        let node = node.to_owned();
        store
            .view(move |v| super::moves::plan_moves(v, &node, &survivors))
            .await?
    };
    if plan.tasks.is_empty() {
        return Ok(0);
    }
    let moved = plan.tasks.len();
    let reason = format!("node {node} is gone (queued there as it went)");
    store
        .write(moved_tasks(Batch::new(), plan.tasks, node, &reason)?)
        .await?;
    tracing::warn!(node, moved, "open tasks queued on a member as it went were moved");
    Ok(moved)
}

/// The status to record for an agent moving to another node: STARTING when its recorded state says
/// an actor runs it (RUNNING, PAUSED, UNHEALTHY, RECOVERING, STARTING), its counts kept;
/// `None` when the state says nothing runs (it is written as it was).
async fn moved_status(store: &Store, id: &str) -> Result<Option<AgentStatus>, StoreError> {
    use crate::agent::AgentState;
    let Some(bytes) = store.get(AGENT_STATUS, id).await? else {
        return Ok(None);
    };
    let mut status: AgentStatus = troupe_runtime::codec::decode(&bytes)?;
    let live = matches!(
        status.state,
        AgentState::Starting
            | AgentState::Running
            | AgentState::Paused
            | AgentState::Unhealthy
            | AgentState::Recovering
    );
    if !live {
        return Ok(None);
    }
    status.state = AgentState::Starting;
    status.updated_at = troupe_runtime::clock::now();
    Ok(Some(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_tasks_queued_on_a_member_as_it_went_move_after_its_departure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("troupe.redb")).unwrap();
        // The member's departure is committed (its plan saw no open task); a task queued
        // there a moment before it was is applied after that read.
        store
            .write(
                Batch::new()
                    .put(
                        TASKS,
                        "late@gone",
                        troupe_runtime::codec::encode(&TaskSpec::example("late@gone")).unwrap(),
                    )
                    .put(
                        TASK_STATUS,
                        "late@gone",
                        troupe_runtime::codec::encode(&TaskStatus::queued()).unwrap(),
                    )
                    .put(OPEN_TASKS, "late@gone", vec![]),
            )
            .await
            .unwrap();
        assert_eq!(move_stragglers(&store, "gone", vec!["a".into()]).await.unwrap(), 1);
        let placed = store.view(|v| placement_in(v, "late@gone")).await.unwrap().unwrap();
        assert_eq!((placed.node.as_str(), placed.epoch), ("a", 1));
        // Moved once: the next look finds nothing left there.
        assert_eq!(move_stragglers(&store, "gone", vec!["a".into()]).await.unwrap(), 0);
    }
}
