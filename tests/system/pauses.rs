//! A leader's own pause is not its members' silence: frozen together with a follower past
//! the DOWN timeout, or alone in the middle of its judgement, once thawed it declares
//! nobody down.

use anyhow::{ensure, Context, Result};

use super::failover::{three_nodes_up, wait_member_state};
use super::replicated::{held_by, room_of};
use super::support::{text, Deadline, WAIT};

/// A leader frozen together with a follower (a majority paused at once: their host's VMs
/// paused, a hypervisor's hiccup) for longer than the DOWN timeout judges nobody by the
/// silence its own pause made once thawed: the member never frozen is not declared DOWN, and
/// no work moves to the leader. It used to declare every member DOWN. Nor is a leader
/// elected: the thawed follower neither stands nor grants a pre-vote before it has heard
/// what its leader sent meanwhile (it stood at once, and won: a leader change and writes
/// refused, for a cluster whose leader was back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_thawed_after_a_long_pause_declares_nobody_down_for_its_own_silence() -> Result<()> {
    frozen_with_a_follower(false).await
}

/// As above, the leader frozen in the middle of its judgement: between its majority's
/// confirmation and its reading of the members' silence. It counted its pause as their
/// silence there, and declared both DOWN once thawed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_while_it_judges_declares_nobody_down_for_its_own_silence() -> Result<()> {
    frozen_with_a_follower(true).await
}

/// The leader and a follower frozen past the DOWN timeout, the leader's judgement held
/// after its confirmation (`in_judgement`) or not, then thawed: nobody is declared down
/// and nobody else leads.
async fn frozen_with_a_follower(in_judgement: bool) -> Result<()> {
    let nodes = three_nodes_up().await?;
    let (leader, term) = super::restarts::leader_and_term(&nodes[0]).await?;
    let at = |name: &str| nodes.iter().position(|n| n.name == name).context("a member");
    let l = at(&leader)?;
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let (frozen, awake) = (others[0], others[1]);
    let down_before = nodes[awake].events_after(None, &["MEMBER_DOWN"]).await?.len();
    if in_judgement {
        nodes[l].inject_fault("hold-judge")?;
        let deadline = Deadline::after(WAIT, "the leader's judgement to be held");
        while !nodes[l].fault_marker("holding-judge") {
            deadline.tick("not held").await?;
        }
    }
    nodes[l].freeze()?;
    if in_judgement {
        // Let go while frozen: it goes on the moment it is thawed.
        nodes[l].clear_fault("hold-judge")?;
    }
    nodes[frozen].freeze()?;
    // Paused past the DOWN timeout (4 s): the member left awake asks for votes once its
    // leader's lease (1 s) and an election timeout (0.7-1 s) passed, and again after each
    // timeout, and nobody answers. Five such asks take over 4 s.
    let deadline = Deadline::after(WAIT, "the awake member to ask for votes five times");
    loop {
        let asked = super::support::metric(
            &nodes[awake].metrics().await?,
            "troupe_raft_pre_votes_total",
            &["outcome=\"lost\""],
        );
        if asked >= 5.0 {
            break;
        }
        deadline.tick(asked).await?;
    }
    nodes[l].thaw()?;
    nodes[frozen].thaw()?;
    // Once the leader has judged its members again (it says it was paused, or, held in its
    // judgement, that a majority answers it again), or has declared one down.
    let deadline = Deadline::after(WAIT, "the thawed leader to judge its members");
    loop {
        let down = nodes[awake].events_after(None, &["MEMBER_DOWN"]).await?.len();
        let afresh = nodes[l].logged("this leader was paused") + nodes[l].logged("heard from a majority again");
        if afresh > 0 || down > down_before {
            break;
        }
        deadline.tick(down).await?;
    }
    // Its lease lapsed while its leader was frozen, so its work stopped; once it runs again
    // (it holds a lease), a write through it commits: the leader's judgement is applied.
    let deadline = Deadline::after(WAIT, "the awake member's work to run again");
    loop {
        let (status, body) = nodes[awake].get("/healthz").await?;
        if status == 200 {
            break;
        }
        deadline.tick(body).await?;
    }
    let agent = nodes[awake].spawn_builtin("echo", &[]).await?;
    nodes[awake].wait_agent_state(&agent, "RUNNING").await?;
    let down = nodes[awake].events_after(None, &["MEMBER_DOWN"]).await?;
    ensure!(down.len() == down_before, "{down:?}");
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[awake], m, "UP").await?;
    }
    for node in &nodes {
        let now = super::restarts::leader_and_term(node).await?;
        ensure!(
            now == (leader.clone(), term),
            "{} says {now:?}, was {leader} in term {term}",
            node.name
        );
    }
    Ok(())
}

/// A leader frozen in the middle of judging its members, between its majority's
/// confirmation and its reading of their silence, for longer than the DOWN timeout while
/// the others elected another, declares nobody down once thawed: its pause is not their
/// silence, and a judgement of a term it no longer leads is refused by the next leader. It
/// had both others declared DOWN through the new leader, whose own writes that DOWN then
/// fenced: no member's state changed again, the thawed one stayed SUSPECT for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_while_it_judges_and_deposed_meanwhile_declares_nobody_down_once_thawed() -> Result<()> {
    let nodes = three_nodes_up().await?;
    let (leader, _) = super::restarts::leader_and_term(&nodes[0]).await?;
    let l = nodes.iter().position(|n| n.name == leader).context("a member leads")?;
    // Every member's judgement is held once it leads: the next leader's too, so that it
    // declares the frozen one neither DOWN (which would fence its writes) nor anything.
    for node in &nodes {
        node.inject_fault("hold-judge")?;
    }
    let deadline = Deadline::after(WAIT, "the leader's judgement to be held");
    while !nodes[l].fault_marker("holding-judge") {
        deadline.tick("not held").await?;
    }
    nodes[l].freeze()?;
    let deadline = Deadline::after(WAIT, "another member to lead and judge");
    let next = loop {
        if let Some(next) = (0..3).find(|i| *i != l && nodes[*i].fault_marker("holding-judge")) {
            break next;
        }
        deadline.tick("nobody else leads").await?;
    };
    // The leader's pause outlasts the DOWN timeout (4 s): once thawed, it has not heard
    // from the others for that long. (A lower bound the test needs for its failure to
    // show, not a wait for anything to happen.)
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    nodes[l].clear_fault("hold-judge")?;
    nodes[l].thaw()?;
    let deadline = Deadline::after(WAIT, "the thawed leader's judgement to go on");
    while nodes[l].fault_marker("holding-judge") {
        deadline.tick("still held").await?;
    }
    for i in (0..3).filter(|i| *i != l) {
        nodes[i].clear_fault("hold-judge")?;
    }
    for node in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[next], node, "UP").await?;
    }
    for node in &nodes {
        let down = node.events_after(None, &["MEMBER_DOWN"]).await?;
        ensure!(
            down.iter().all(|e| e["subject"] == leader.as_str()),
            "{} holds a member other than the frozen leader declared down: {down:?}",
            node.name
        );
    }
    Ok(())
}

/// A leader that lost its majority (both followers stopped) judges nobody by the silence of
/// that time once a follower is back: it could not hear anyone meanwhile. It declared the
/// returning member DOWN (silent 31 s), moved all its work to itself, and UP again 0.2 s
/// later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_back_with_a_majority_judges_the_member_that_returned_from_now() -> Result<()> {
    let drop_after = |name: &str| super::support::NodeOpts::named(name).arg("--peer-drop-after-ms", 4500);
    let mut nodes =
        super::replicated::start_cluster(drop_after("alpha"), vec![drop_after("beta"), drop_after("gamma")]).await?;
    for m in ["alpha", "beta", "gamma"] {
        wait_member_state(&nodes[0], m, "UP").await?;
    }
    let (leader, _) = super::restarts::leader_and_term(&nodes[0]).await?;
    let l = nodes.iter().position(|n| n.name == leader).context("a member leads")?;
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    for &i in &others {
        nodes[i].terminate(WAIT).await?;
    }
    // Silent past the DOWN timeout (4 s): the leader drops both from its lists at 4.5 s.
    let deadline = Deadline::after(WAIT, "the leader to drop both silent members");
    while nodes[l].logged("dropping a silent peer") < 2 {
        deadline.tick(nodes[l].logged("dropping a silent peer")).await?;
    }
    let back = others[0];
    nodes[back].restart().await?;
    let name = nodes[back].name.clone();
    let down = nodes[l].events_after(None, &["MEMBER_DOWN"]).await?;
    ensure!(!down.iter().any(|e| e["subject"] == name.as_str()), "{down:?}");
    ensure!(
        nodes[l].logged("heard from a majority again") >= 1,
        "{}",
        nodes[l].log_tail()
    );
    Ok(())
}

/// A submit placed on a member whose agents have a free slot is written where it was sent
/// and held there, so the member freezing right after its last beat does not fail it: it is
/// acknowledged at once (the other two commit it), and it runs once the member thaws. It was
/// forwarded to the member, and failed after 5 s, "it may have acted".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_placed_on_a_member_that_froze_after_its_last_beat_is_acknowledged_and_runs_once_it_thaws(
) -> Result<()> {
    let nodes = three_nodes_up().await?;
    let (beta, gamma) = (&nodes[1], &nodes[2]);
    let agent = gamma.spawn_builtin("echo", &["far-only"]).await?;
    gamma.wait_agent_state(&agent, "RUNNING").await?;
    // A member is placed on within a second of its last beat: tried again, thawed between
    // tries, should the submit come later than that after the freeze.
    for attempt in 1..=3 {
        room_of(beta, "gamma", "far-only", Some(1)).await?;
        gamma.freeze()?;
        let sent = beta
            .submit(serde_json::json!({ "capability": "far-only", "payload": { "attempt": attempt } }))
            .await;
        let task = match sent {
            Ok(task) => task,
            Err(e) => {
                gamma.thaw()?;
                return Err(e.context("the submit placed on the frozen member"));
            }
        };
        let id = text(&task, "/id")?;
        let holder = held_by(beta, &id).await;
        gamma.thaw()?;
        if holder? != "gamma" {
            // Placed after the window: queued on beta, which hands it to gamma once it beats.
            beta.wait_task_state(&id, "SUCCEEDED").await?;
            continue;
        }
        ensure!(id.ends_with("@beta"), "made on beta: {id}");
        let done = beta.wait_task_state(&id, "SUCCEEDED").await?;
        ensure!(done["agentId"] == agent.as_str(), "ran on gamma's agent: {done}");
        return Ok(());
    }
    anyhow::bail!("no submit was placed on gamma within a second of its last beat in 3 tries")
}

/// A leader that lost its majority decides nothing about the members it cannot hear: it
/// shows them SUSPECT, not DOWN (DOWN says their work moved; nothing moved, and no
/// MEMBER_DOWN was committed: a new-user trial read DOWN on such a leader 3 s after its
/// followers froze).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_majority_shows_the_members_it_cannot_hear_suspect_not_down() -> Result<()> {
    let nodes = three_nodes_up().await?;
    let (leader, _) = super::restarts::leader_and_term(&nodes[0]).await?;
    let l = nodes.iter().position(|n| n.name == leader).context("the leader")?;
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    // One follower judged once (SUSPECT, then UP again, both committed): its recorded UP
    // was shown for as long as the freeze below lasted.
    nodes[others[0]].freeze()?;
    wait_member_state(&nodes[l], &nodes[others[0]].name, "SUSPECT").await?;
    nodes[others[0]].thaw()?;
    wait_member_state(&nodes[l], &nodes[others[0]].name, "UP").await?;
    // Its return is said at INFO: it needs nobody (its fall was a WARN).
    let back = |line: &&str| line.contains("a member's state changed") && line.contains("state=\"UP\"");
    let deadline = Deadline::after(WAIT, "the leader to log the member's return");
    let said = loop {
        let log = std::fs::read_to_string(nodes[l].data_dir().join("stderr.log"))?;
        if let Some(line) = log.lines().find(back) {
            break line.to_owned();
        }
        deadline.tick("not yet").await?;
    };
    ensure!(said.contains(" INFO ") && !said.contains(" WARN "), "{said}");
    // (Declared DOWN meanwhile on a slow machine, it came back: only what follows counts.)
    let downs_before = nodes[l].events_after(None, &["MEMBER_DOWN"]).await?.len();
    for i in &others {
        nodes[*i].freeze()?;
    }
    // The leader's readiness says it lost its majority (after 2 s) before the members show.
    let deadline = Deadline::after(WAIT, "the leader to say no majority answers it");
    loop {
        let (status, body) = nodes[l].get("/readyz").await?;
        if status == 503 && body.contains("no majority") {
            break;
        }
        deadline.tick(body).await?;
    }
    for i in &others {
        wait_member_state(&nodes[l], &nodes[*i].name, "SUSPECT").await?;
    }
    let down = nodes[l].events_after(None, &["MEMBER_DOWN"]).await?;
    ensure!(down.len() == downs_before, "{down:?}");
    for i in &others {
        nodes[*i].thaw()?;
    }
    for i in &others {
        wait_member_state(&nodes[l], &nodes[*i].name, "UP").await?;
    }
    Ok(())
}

/// A member frozen while it waited for a peer's answer says, once thawed, that it did not
/// run for most of the wait, rather than blame the peer: it said "node alpha did not answer
/// within 5000 ms" of a leader that was fine (a new-user trial, a member frozen for 8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_frozen_while_it_waits_for_a_peer_says_it_did_not_run_rather_than_blame_the_peer() -> Result<()> {
    let nodes = three_nodes_up().await?;
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    let s = super::support::swarms::create(alpha, serde_json::json!({ "name": "held", "maxAgents": 1 })).await?;
    let id = text(&s, "/id")?;
    let held = beta
        .gql_ok(
            "query($id: ID!) { swarm(id: $id) { node } }",
            serde_json::json!({ "id": id }),
        )
        .await?;
    ensure!(held["swarm"]["node"] == "alpha", "{held}");
    // Alpha holds the write at its store, so beta's request to it stays unanswered.
    alpha.inject_fault("hold-swarm_memory")?;
    let set = "mutation($id: ID!) { setSwarmMemory(id: $id, key: \"k\", value: 1) { version } }";
    let (answer, frozen) = tokio::join!(beta.gql(set, serde_json::json!({ "id": id })), async {
        let deadline = Deadline::after(WAIT, "alpha to hold the write beta asked for");
        while !alpha.fault_marker("holding-swarm_memory") {
            deadline.tick("not yet").await?;
        }
        // Frozen past the 5 s a peer has to answer (the freeze is the scenario, not a wait
        // for something to happen).
        beta.freeze()?;
        tokio::time::sleep(std::time::Duration::from_secs(6)).await;
        beta.thaw()
    });
    frozen?;
    let answer = answer?;
    alpha.clear_fault("hold-swarm_memory")?;
    ensure!(
        super::support::error_code(&answer).as_deref() == Some("UNAVAILABLE"),
        "{answer}"
    );
    let said = answer.to_string();
    ensure!(
        said.contains("this node itself did not run for") && said.contains("it may have acted"),
        "{said}"
    );
    Ok(())
}
