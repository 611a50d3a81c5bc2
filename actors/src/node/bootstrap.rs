//! Bringing a node up: data dir, store, tokens, cookie, the API and the supervision tree.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr};
use troupe_runtime::auth::Tokens;
use troupe_runtime::config::Config;
use troupe_runtime::idempotency::Idempotency;
use troupe_runtime::store::{self, Store, StoreError, StoreOptions};
use troupe_runtime::supervision::{
    Backoff, ChildSpec, Intensity, Nested, StartOrder, Strategy, Supervisor, SupervisorArgs, SupervisorMsg,
    SupervisorSpec,
};

use super::identity::{check_format, cluster_cookie, data_dir_is_this_members, node_id, private_dir};
use super::{ExtraChildren, Node, Phase, StartNodeError};
use crate::agent::Slots;
use crate::agent::{AgentPolicy, AgentsChild};
use crate::cluster::{Cluster, ClusterChild, Link, PeerInfo};
use crate::host::{Fleet, FleetSettings, HostsChild};
use crate::scheduler::TaskQueue;
use crate::scheduler::{BreakerPolicy, RetryPolicy, Scheduler, SchedulerArgs, SchedulerMsg};
use crate::service::node::{role_name, NodeService};
use crate::service::raft::RaftService;
use crate::service::{Agents, Api, Context, Hosts, Messages, Peers, ServicesChild, Swarms, Tasks, Vms};
use crate::serving::Serving;

pub(super) async fn start(
    config: &Config,
    extra: ExtraChildren,
    phase: &Phase,
    opened: &std::sync::OnceLock<Store>,
) -> Result<Node, StartNodeError> {
    let cluster_listen = crate::cluster::chosen_port(config.cluster_listen);
    let data_dir = config.data_dir.clone();
    blocking(move || private_dir(&data_dir))
        .await
        .map_err(|source| StartNodeError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    crate::cluster::remote::set_partition_gates(store::named_gates_in(config.data_dir.join("faults")));
    store::set_gates(store::named_gates_in(config.data_dir.join("faults")));
    // What fault experiments arm in memory: only on a node that allows them.
    let armed = store::ArmedFaults::default();
    let file_gates = store::gates_in(config.data_dir.join("faults"));
    if config.fault_injection {
        crate::cluster::remote::set_armed_faults(armed.clone());
    }
    let options = StoreOptions {
        event_retention: config.event_retention,
        cache_bytes: config.store_cache_mb << 20,
        fault: match config.fault_injection {
            true => Some(armed.hook(file_gates)),
            false => file_gates,
        },
        identity: store::raft::Identity {
            name: config.node_name.clone(),
            start: if config.join.is_empty() {
                store::raft::Start::Alone
            } else {
                store::raft::Start::Join
            },
            timing: store::raft::Timing {
                snapshot_every: config.raft_snapshot_every,
                snapshot_every_bytes: config.raft_snapshot_every_mb.saturating_mul(1 << 20),
                ..Default::default()
            },
        },
    };
    phase.send_replace("opening the store".into());
    let store_path = config.store_path();
    let store = match blocking(move || Store::open_with(&store_path, options)).await {
        Err(StoreError::Locked) => return Err(StartNodeError::Locked(config.data_dir.clone())),
        other => other?,
    };
    let _ = opened.set(store.clone());
    data_dir_is_this_members(&store, config).await?;
    let cookie = cluster_cookie(config, &store).await?;
    let tls = match &config.tls {
        Some(files) => Some(troupe_runtime::tls::cluster_tls(files).map_err(StartNodeError::Tls)?),
        None => None,
    };
    let peer_hosts = crate::host::PeerHosts::default();
    let observed = crate::agent::Observed::default();
    let cluster = Cluster::new(PeerInfo {
        name: config.node_name.clone(),
        cluster_address: match &config.advertise_host {
            Some(host) => crate::cluster::host_port(host, cluster_listen.port()),
            None => cluster_listen.to_string(),
        },
        gateway_address: None,
    })
    .with_drop_after(config.peer_drop_after)
    .with_store(&store);
    let slots = Slots::default();
    let experiments = crate::service::experiments::Experiments::new(
        config.fault_injection,
        config.fault_max_targets,
        config.fault_max_duration,
        store.clone(),
        armed,
    );
    experiments
        .follow(&store)
        .await
        .map_err(|e| StartNodeError::Tree(format!("experiment records: {e}")))?;
    let serving = Serving::default();
    let node_service = NodeService {
        serving: serving.clone(),
        cluster: cluster.clone(),
        store: store.clone(),
        voters: config.voters,
        root: slots.root.clone(),
        rooms: slots.rooms.clone(),
        experiments: experiments.clone(),
        tokens: Default::default(),
        hosts: Default::default(),
        agents: observed.clone(),
    };
    // The link to the other nodes comes first: a joining node writes nothing before the
    // leader has admitted it to the log, and a member's writes reach the leader through it.
    let peers = Peers {
        node: node_service.clone(),
        raft: RaftService {
            cluster: cluster.clone(),
            store: store.clone(),
            lane: Default::default(),
        },
        // What a beat's answer observed beyond membership: the peer's hosts and its agents.
        beats: {
            let (peer_hosts, observed) = (peer_hosts.clone(), observed.clone());
            Arc::new(move |peer, ack| {
                peer_hosts.heard(peer, ack.hosts.clone(), ack.vms.clone());
                observed.heard(peer, Arc::new(ack.agents.clone()));
            })
        },
    };
    let member = store.joined().await?;
    if !member && !config.join.is_empty() {
        // Before the link dials under this node's name, which would displace the sessions of
        // a live member of that name.
        phase.send_replace("asking whether its name is a member's".into());
        crate::cluster::name_check::ask(&config.join, &config.node_name, store.raft_id(), &cookie)
            .await
            .map_err(StartNodeError::Join)?;
    }
    phase.send_replace("connecting to its peers".into());
    let link = ClusterChild::start_early(Link {
        cluster: cluster.clone(),
        store: store.clone(),
        served: Arc::new(peers),
        listen: cluster_listen,
        raft_listen: config.raft_listen,
        advertise_host: config.advertise_host.clone(),
        join: config.join.clone(),
        cookie,
        tls,
    })
    .await
    .map_err(|e| StartNodeError::Tree(format!("cluster: {e}")))?;
    let link = Arc::new(link);
    let link_id = link.id().to_owned();
    let rest = async {
        if !member {
            let role = node_service
                .join(config.join_timeout, phase)
                .await
                .map_err(|e| match e {
                    // Refused for good by a leader it reached: its words say why.
                    crate::error::ApiError::Conflict(why) => StartNodeError::Join(why),
                    // Said with where it looked: a wrong address, a gateway port given for the
                    // cluster port, or another cluster's cookie all look like silence from here.
                    e => StartNodeError::Join(format!(
                        "{e}; it dialled {} (--join: a member's cluster port, with the cluster's cookie)",
                        config.join.join(", ")
                    )),
                })?;
            tracing::info!(node = %config.node_name, role = role_name(role), "joined the cluster's replicated log");
        }
        phase.send_replace("reading its replica of the cluster's state".into());
        check_format(&store, &config.data_dir).await?;
        let tokens = Tokens::load(store.clone(), &config.data_dir).await?;
        let admin_token_path = tokens.ensure_admin_token(&config.node_name).await?;
        let node_id = node_id(&store, &config.node_name).await?;
        let incarnation = crate::cluster::replicated::count_start(
            &store,
            &config.node_name,
            &cluster_listen.to_string(),
            &config.node_labels,
        )
        .await?;
        tracing::info!(node = %config.node_name, incarnation, "this node's start is counted");
        // `troupe_agents{state}` and `troupe_vms{state}` follow the replica from here on.
        store
            .project(std::sync::Arc::new(crate::agent::AgentGauge::new(&config.node_name)))
            .await?;
        store
            .project(std::sync::Arc::new(crate::vm::VmGauge::new(&config.node_name)))
            .await?;
        crate::agent::owners::build_once(&store).await?;
        Ok::<_, StartNodeError>((tokens, admin_token_path, node_id))
    };
    let (tokens, admin_token_path, node_id) = match rest.await {
        Ok(done) => {
            let _ = node_service.tokens.set(done.0.clone());
            done
        }
        Err(e) => {
            link.stop_early();
            return Err(e);
        }
    };
    let idempotency = Idempotency::new(store.clone(), config.idempotency_window);
    let agent_policy = AgentPolicy::of_node(config, &store);
    let fleet = Fleet::new(
        config.node_name.clone(),
        store.clone(),
        FleetSettings {
            reconcile: config.vm_reconcile,
            down_after: config.host_down_after,
            max_outbound: config.max_outbound_migrations,
            stop_timeout: config.vm_stop_timeout,
            libvirt_timeout: config.libvirt_timeout,
            fault_injection: config.fault_injection,
            data_dir: config.data_dir.clone(),
        },
    );
    super::fleet::load_fleet(&fleet, config.simulated_hosts)
        .await
        .map_err(|e| StartNodeError::Tree(format!("hosts: {e}")))?;
    let _ = node_service.hosts.set(fleet.clone());
    let backoff = Backoff {
        base: config.supervisor_backoff,
        max: Duration::from_secs(5).max(config.supervisor_backoff),
    };
    let default_strategy = match config.default_strategy.as_str() {
        "round_robin" => crate::task::Strategy::RoundRobin,
        "least_connections" => crate::task::Strategy::LeastConnections,
        "weighted" => crate::task::Strategy::Weighted,
        _ => crate::task::Strategy::Score,
    };
    let ctx_cluster = cluster.clone();
    // What every service shares; each domain's own state goes to its service alone.
    let ctx = Arc::new(Context {
        node_id,
        node_name: config.node_name.clone(),
        started_at: troupe_runtime::clock::now(),
        store: store.clone(),
        cluster: cluster.clone(),
        idempotency: idempotency.clone(),
        tokens,
        max_payload_bytes: config.max_payload_bytes,
        voters: config.voters,
        serving: serving.clone(),
    });
    let agents = Agents {
        ctx: ctx.clone(),
        slots: slots.clone(),
        policy: agent_policy.clone(),
        observed: observed.clone(),
        log_watch: Default::default(),
        names: Default::default(),
    };
    agents
        .names
        .follow(&store)
        .await
        .map_err(|e| StartNodeError::Tree(format!("agent names: {e}")))?;
    agents
        .log_watch
        .follow_keys(&store, &[crate::tables::AGENT_LOGS])
        .await
        .map_err(|e| StartNodeError::Tree(format!("agent log watch: {e}")))?;
    observed.sample_with(agents.sampler());
    let tasks = Tasks {
        ctx: ctx.clone(),
        queue: TaskQueue {
            node: config.node_name.clone(),
            store: store.clone(),
            idempotency: idempotency.clone(),
            cluster: cluster.clone(),
            serving: serving.clone(),
            scheduler: slots.scheduler.clone(),
            open: slots.open_tasks.clone(),
            max_open: config.max_open_tasks,
            default_strategy,
            requeueing: Default::default(),
        },
        turns: Default::default(),
    };
    let swarms = Swarms {
        ctx: ctx.clone(),
        port: crate::swarm::Port {
            node: config.node_name.clone(),
            store: store.clone(),
            serving,
            max_payload_bytes: config.max_payload_bytes,
            fault_injection: config.fault_injection,
            locks: Default::default(),
            watch: Default::default(),
            backoff,
            policy: agent_policy.clone(),
            slots: slots.clone(),
            members: Arc::new(agents.clone()),
            subtasks: Arc::new(tasks.clone()),
        },
    };
    swarms
        .port
        .watch
        .follow(&store)
        .await
        .map_err(|e| StartNodeError::Tree(format!("swarm watch: {e}")))?;
    let audience = crate::messaging::Audience::default();
    audience
        .follow(&store)
        .await
        .map_err(|e| StartNodeError::Tree(format!("message audience: {e}")))?;
    let hosts = Hosts {
        ctx: ctx.clone(),
        fleet: fleet.clone(),
        intensity: agent_policy.intensity,
        peers: peer_hosts,
    };
    let api = Api {
        messages: Messages {
            ctx: ctx.clone(),
            mailboxes: crate::messaging::Mailboxes::new(
                config.agent_mailbox_size,
                store.clone(),
                slots.handles.clone(),
                config.node_name.clone(),
                ctx.cluster.directory().clone(),
                audience,
            ),
        },
        vms: Vms { hosts: hosts.clone() },
        ctx,
        slots: slots.clone(),
        agents,
        tasks,
        hosts,
        swarms,
        experiments,
        alerting: crate::alerts::Alerting::new(store.clone(), config.alerts.clone()),
    };
    api.experiments.bind(api.clone());
    let courier = crate::messaging::courier::child(&slots.outbox, api.clone());
    let watchdog = crate::agent::watchdog::chore(
        crate::agent::watchdog::Watching {
            handles: slots.handles.clone(),
            root: slots.root.clone(),
            store: store.clone(),
            serving: api.ctx.serving.clone(),
        },
        config.agent_watchdog,
        config.agent_watchdog_misses,
    );
    super::watchdog::start(api.clone(), config.watchdog.clone(), config.watchdog_misses);
    let intensity = Some(Intensity {
        max_restarts: config.supervisor_max_restarts,
        window: config.supervisor_window,
    });
    let scheduler: Arc<dyn ChildSpec> = Arc::new(SchedulerChild {
        node: config.node_name.clone(),
        store: store.clone(),
        slots: slots.clone(),
        cluster: cluster.clone(),
        retry: RetryPolicy {
            base: config.retry_base,
            max: config.retry_max,
        },
        breaker: BreakerPolicy {
            failures: config.breaker_failures,
            cooldown: config.breaker_cooldown,
        },
    });
    let agents = Nested::child(AgentsChild {
        node: config.node_name.clone(),
        store: store.clone(),
        slots: slots.clone(),
        policy: agent_policy.clone(),
        backoff,
        owner: crate::agent::Owner::Node,
        strategy: Strategy::OneForOne,
    });
    let swarms = Nested::child(crate::swarm::SwarmsChild {
        port: api.swarms().port(),
    });
    let core_store = store.clone();
    let core = SupervisorSpec {
        id: "core".into(),
        args: Box::new(move || SupervisorArgs {
            name: "core".into(),
            strategy: Strategy::RestForOne,
            intensity,
            backoff,
            children: vec![scheduler.clone(), agents.clone(), swarms.clone()],
            start_order: StartOrder::Sequential,
            store: core_store.clone(),
        }),
    };
    let hosts = Nested::child(HostsChild {
        fleet,
        backoff,
        intensity: agent_policy.intensity,
    });
    // The node's work: in a cluster of several it runs only while the node holds its lease
    // (see crate::failover), so it starts once the lease is there.
    let work: Vec<Arc<dyn ChildSpec>> = vec![Nested::child(core), hosts];
    let runs_now = crate::failover::runs_at_start(&store);
    ctx_cluster
        .directory()
        .follow(&store, &config.node_name)
        .await
        .map_err(|e| StartNodeError::Tree(format!("directory: {e}")))?;
    // The courier first, so it stops last: the agents' last lines are carried while the
    // work stops.
    let mut children: Vec<Arc<dyn ChildSpec>> = vec![courier];
    if runs_now {
        children.extend(work.iter().cloned());
    }
    children.extend([link, Arc::new(ServicesChild { api: api.clone() }) as Arc<dyn ChildSpec>]);
    children.extend(extra(&api));
    let args = SupervisorArgs {
        name: "node".into(),
        strategy: Strategy::OneForOne,
        intensity,
        backoff,
        children,
        start_order: StartOrder::Sequential,
        store: store.clone(),
    };
    phase.send_replace("starting its supervision tree: work, services, gateway".into());
    let (root, root_done) = Actor::spawn(None, Supervisor, args)
        .await
        .map_err(|e| StartNodeError::Tree(e.to_string()))?;
    slots.root.set(root.clone());
    if runs_now {
        match api.messages().restore().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "delivering the messages left in mailboxes"),
            Err(e) => tracing::error!(error = %e, "could not read the mailboxes left on disk"),
        }
    }
    ctx_cluster.leases.set_running(runs_now);
    let chores = super::chores::child(super::chores::Chores {
        store: store.clone(),
        cluster: ctx_cluster.clone(),
        rehome: crate::failover::Rehome {
            agents: api.agents().adopter(),
            swarms: api.swarms().port(),
            fleet: api.hosts().fleet.clone(),
            host_intensity: api.hosts().intensity,
            scheduler: api.slots.scheduler.clone(),
            mailboxes: api.messages().mailboxes.clone(),
        },
        work: crate::failover::Work {
            root: root.clone(),
            children: work,
        },
        idempotency,
        watchdog,
        alerting: api.alerting.clone(),
        node: config.node_name.clone(),
        llm_retention: config.llm_retention,
        intensity,
        backoff,
    });
    let started = crate::call::ask_within(
        &root,
        |r| SupervisorMsg::StartChild(chores, r),
        "the node supervisor",
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| StartNodeError::Tree(format!("chores: {e}")))?;
    started.map_err(|e| StartNodeError::Tree(format!("chores: {e}")))?;
    tracing::info!(node = %config.node_name, admin_token = %admin_token_path.display(), "node started");
    Ok(Node {
        api,
        root,
        root_done,
        admin_token_path,
        link: link_id,
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a start-up file operation panicked")
}

struct SchedulerChild {
    node: String,
    store: Store,
    slots: Slots,
    /// Where the peers' heartbeats tell the scheduler what room their agents have.
    cluster: Cluster,
    retry: RetryPolicy,
    breaker: BreakerPolicy,
}

impl ChildSpec for SchedulerChild {
    fn id(&self) -> &str {
        "scheduler"
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    fn start_timeout(&self) -> Duration {
        // Recovery reads every open task.
        Duration::from_secs(60)
    }

    crate::liveness::pinged_and_held!(SchedulerMsg);

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let args = SchedulerArgs {
                node: self.node.clone(),
                store: self.store.clone(),
                retry: self.retry,
                breaker: self.breaker,
                payload_cache_bytes: crate::scheduler::PAYLOAD_CACHE_BYTES,
                open: self.slots.open_tasks.clone(),
                rooms: self.slots.rooms.clone(),
                peers: Some({
                    let cluster = self.cluster.clone();
                    Arc::new(move |capability: &str| cluster.peer_rooms(capability))
                }),
            };
            let (scheduler, _) = Actor::spawn_linked(None, Scheduler, args, supervisor).await?;
            self.slots.scheduler.set(scheduler.clone());
            Ok(scheduler.get_cell())
        })
    }
}
