//! The cluster link: runs ractor_cluster's NodeServer with what the node serves its peers
//! beside it ([`Served`]: the node and Raft services, the heartbeat), and keeps joined to
//! the configured peers (reconnecting with backoff when a session drops). It knows no
//! service: the node's wiring hands them over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::{NodeServer, NodeServerMessage};
use tokio::task::JoinHandle;
use troupe_runtime::supervision::ChildSpec;

use super::endpoints::Endpoints;
use super::{name_check, Cluster};

/// What the cluster link needs: this node's identity, its store, what it serves its peers
/// and where to listen.
pub struct Link {
    pub cluster: Cluster,
    pub store: troupe_runtime::store::Store,
    pub served: Arc<dyn Served>,
    pub listen: SocketAddr,
    /// Where the Raft lane listens (port 0: one the system picks).
    pub raft_listen: SocketAddr,
    /// The host name peers reach this node by (`--advertise-host`), when not its IP.
    pub advertise_host: Option<String>,
    pub join: Vec<String>,
    pub cookie: String,
    /// Mutual TLS between nodes, when configured.
    pub tls: Option<troupe_runtime::tls::ClusterTls>,
}

/// What a node serves its peers beside the link's NodeServer: its node and Raft services
/// (the Raft lane too) and the loops that run with them (the heartbeat). Started by the
/// link under its own actor, so a restarted link serves them again.
pub trait Served: Send + Sync + 'static {
    /// Serves them under `parent` through `endpoints`; the loops it started, which the link
    /// stops when it stops.
    fn start<'a>(
        &'a self,
        link: &'a Link,
        endpoints: &'a mut Endpoints,
        parent: &'a ActorCell,
    ) -> BoxFuture<'a, Result<Vec<JoinHandle<()>>, ActorProcessingErr>>;
}

/// The cluster link: ractor_cluster's NodeServer, what the node serves its peers
/// ([`Served`]) and the joins to the configured peers. It starts before the rest of the node (a node
/// joining a cluster must be admitted to the log before it writes anything), and the node's
/// supervisor adopts it: it restarts it like any other child.
pub struct ClusterChild {
    link: Arc<Link>,
    early: std::sync::Mutex<Option<ActorCell>>,
}

impl ClusterChild {
    /// Starts the link now, unsupervised until the node's supervisor adopts it.
    pub async fn start_early(link: Link) -> Result<Self, ActorProcessingErr> {
        let link = Arc::new(link);
        let (actor, _) = Actor::spawn(None, ClusterActor, link.clone()).await?;
        Ok(Self {
            link,
            early: std::sync::Mutex::new(Some(actor.get_cell())),
        })
    }
}

impl ClusterChild {
    /// Stops the link started early when the node does not come up after all.
    pub fn stop_early(&self) {
        if let Some(cell) = self.early.lock().unwrap_or_else(|p| p.into_inner()).take() {
            cell.stop(Some("the node did not start".into()));
        }
    }
}

impl ChildSpec for ClusterChild {
    fn id(&self) -> &str {
        "cluster"
    }

    fn kind(&self) -> &str {
        "SERVICE"
    }

    crate::liveness::pinged_and_held!(ClusterMsg);

    fn start(self: Arc<Self>, supervisor: ActorCell) -> BoxFuture<'static, Result<ActorCell, ActorProcessingErr>> {
        Box::pin(async move {
            let early = self.early.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(cell) = early {
                cell.link(supervisor);
                return Ok(cell);
            }
            let (actor, _) = Actor::spawn_linked(None, ClusterActor, self.link.clone(), supervisor).await?;
            Ok(actor.get_cell())
        })
    }
}

struct ClusterActor;

/// The background loops this service owns (re-dialling joins and the heartbeat), and its
/// actors: the NodeServer and the node and Raft services.
struct State {
    joiners: Vec<JoinHandle<()>>,
    endpoints: Endpoints,
}

impl Drop for State {
    fn drop(&mut self) {
        for j in &self.joiners {
            j.abort();
        }
    }
}

impl ractor::Message for ClusterMsg {}

/// What the cluster link and the services take: only the watchdog's ping and a HANG.
pub enum ClusterMsg {
    /// Answered once every service actor under it took a message.
    Ping(ractor::RpcReplyPort<()>),
    /// Holds its service actors and its loop until released (fault injection: HANG).
    Hold(
        tokio::sync::watch::Receiver<bool>,
        tokio::sync::mpsc::UnboundedSender<()>,
    ),
}

/// The ping and the hold, alike for the link and the services.
pub(crate) async fn handle(what: &str, msg: ClusterMsg, endpoints: &Endpoints) {
    match msg {
        ClusterMsg::Ping(reply) => endpoints.ping(reply),
        ClusterMsg::Hold(release, held) => endpoints.hold(what, release, held).await,
    }
}

impl Actor for ClusterActor {
    type Msg = ClusterMsg;
    type State = State;
    type Arguments = Arc<Link>;

    async fn pre_start(&self, myself: ActorRef<ClusterMsg>, cfg: Arc<Link>) -> Result<State, ActorProcessingErr> {
        let name = cfg.cluster.name();
        let mut joiners: Vec<JoinHandle<()>> = Vec::new();
        let (server, accepting) = listen(&cfg, &name, &myself).await?;
        joiners.push(accepting);
        let dial = match &cfg.tls {
            None => Dial::Plain,
            Some(tls) => Dial::Tls {
                connector: tokio_rustls::TlsConnector::from(tls.client.clone()),
            },
        };
        let cell = myself.get_cell();
        let mut endpoints = Endpoints::new();
        endpoints.own(server.get_cell());
        joiners.extend(cfg.served.start(&cfg, &mut endpoints, &cell).await?);
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "troupe.leader-watch".into(),
            subscription: Box::new(LeaderWatch {
                store: cfg.store.clone(),
                cluster: cfg.cluster.clone(),
                authenticated: Default::default(),
            }),
        });
        joiners.push(tokio::spawn(dial_members(
            server.clone(),
            cfg.store.clone(),
            name.clone(),
            cfg.join.clone(),
            dial,
            cfg.listen.port(),
        )));
        let tls = cfg.tls.is_some();
        tracing::info!(node = %name, listen = %cfg.listen, peers = ?cfg.join, tls, "cluster listening");
        Ok(State { joiners, endpoints })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        handle("the cluster link", msg, &state.endpoints).await;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<ClusterMsg>,
        evt: SupervisionEvent,
        _state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        child_lost(evt)
    }
}

/// A child of the link or of the services that fails or stops takes its parent down, for
/// the node's supervisor to restart.
pub(crate) fn child_lost(evt: SupervisionEvent) -> Result<(), ActorProcessingErr> {
    match evt {
        SupervisionEvent::ActorFailed(who, e) => Err(format!("cluster actor {} failed: {e}", who.get_id()).into()),
        SupervisionEvent::ActorTerminated(who, _, reason) => {
            Err(format!("cluster actor {} stopped: {}", who.get_id(), reason.unwrap_or_default()).into())
        }
        _ => Ok(()),
    }
}

/// How often the members' recorded addresses are read for new ones to dial.
const READ_ADDRESSES_EVERY: Duration = Duration::from_secs(2);
/// How long a peer has to say its first byte after it connects, and then to complete the
/// TLS handshake.
const FIRST_BYTES_WITHIN: Duration = Duration::from_secs(10);
/// Connections opening at once (first byte, TLS handshake, a joining node's question);
/// connections beyond them are closed at once.
const MAX_HANDSHAKES: usize = 64;

/// How this node dials its peers.
#[derive(Clone)]
enum Dial {
    Plain,
    /// Over mutual TLS.
    Tls {
        connector: tokio_rustls::TlsConnector,
    },
}

/// Listens for peers on the cluster port. Troupe accepts, not ractor_cluster's own listener:
/// a connection's first byte tells a joining node's question ([`name_check`]) from a session;
/// over TLS, ractor_cluster's listener would complete each handshake before it accepts the
/// next connection, with no time limit, so a peer that connects and sends nothing would
/// hold every other one up: each handshake runs in its own task bounded by
/// [`FIRST_BYTES_WITHIN`]. The NodeServer is handed the sessions (the cookie is checked over
/// them as before). Its own listener is still started (it cannot be turned off): on a free
/// loopback port, unused; the real port is what the node advertises.
async fn listen(
    cfg: &Link,
    name: &str,
    myself: &ActorRef<ClusterMsg>,
) -> Result<(ActorRef<NodeServerMessage>, JoinHandle<()>), ActorProcessingErr> {
    let acceptor = cfg
        .tls
        .as_ref()
        .map(|tls| tokio_rustls::TlsAcceptor::from(tls.server.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("the cluster cannot listen on {}: {e}", cfg.listen))?;
    let (encryption, mode) = match &acceptor {
        None => (None, ractor_cluster::node::NodeConnectionMode::Transitive),
        // Transitive dials go out in plain text: every member is dialled by Troupe instead.
        Some(acceptor) => (
            Some(ractor_cluster::IncomingEncryptionMode::Tls(acceptor.clone())),
            ractor_cluster::node::NodeConnectionMode::Isolated,
        ),
    };
    let server = NodeServer::new(
        0,
        cfg.cookie.clone(),
        name.to_owned(),
        cfg.advertise_host
            .clone()
            .unwrap_or_else(|| cfg.listen.ip().to_string()),
        encryption,
        Some(mode),
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
    server.cast(NodeServerMessage::PortChanged {
        port: cfg.listen.port(),
    })?;
    let answerer = Arc::new(name_check::Answerer {
        cluster: cfg.cluster.clone(),
        store: cfg.store.clone(),
        cookie: cfg.cookie.clone(),
    });
    let accepting = tokio::spawn(accept(listener, acceptor, server.clone(), answerer));
    Ok((server, accepting))
}

/// Accepts peers, each connection's first byte (and TLS handshake) awaited in a task of its
/// own, bounded in time and in number.
async fn accept(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    server: ActorRef<NodeServerMessage>,
    answerer: Arc<name_check::Answerer>,
) {
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (tcp, peer_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "the cluster listener could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%peer_addr, "too many connections opening at once: closing a new one");
            continue;
        };
        let (acceptor, server, answerer) = (acceptor.clone(), server.clone(), answerer.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            let Ok(local_addr) = tcp.local_addr() else { return };
            let mut first = [0u8; 1];
            match tokio::time::timeout(FIRST_BYTES_WITHIN, tcp.peek(&mut first)).await {
                Ok(Ok(1)) => {}
                Ok(_) => return,
                Err(_) => {
                    tracing::debug!(%peer_addr, "a connection to the cluster port said nothing in time");
                    return;
                }
            }
            if first[0] == name_check::MAGIC[0] {
                answerer.answer(tcp, peer_addr).await;
                return;
            }
            let stream = match acceptor {
                None => ractor_cluster::NetworkStream::Raw {
                    peer_addr,
                    local_addr,
                    stream: tcp,
                },
                Some(acceptor) => match tokio::time::timeout(FIRST_BYTES_WITHIN, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => ractor_cluster::NetworkStream::TlsServer {
                        peer_addr,
                        local_addr,
                        stream,
                    },
                    Ok(Err(e)) => {
                        tracing::warn!(%peer_addr, error = %e, "a peer's TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer_addr, "a peer did not complete its TLS handshake in time");
                        return;
                    }
                },
            };
            let _ = server.cast(NodeServerMessage::ConnectionOpened {
                stream: Box::new(stream),
                is_server: true,
            });
        });
    }
}

/// Hears the NodeServer's sessions close: when the closed one led the replicated log, this
/// member stands for election as soon as the leader's lease allows
/// ([`troupe_runtime::store::Store::leader_session_closed`]); one that closed before it was
/// authenticated is noted ([`Cluster::session_refused`]): a joining node with another
/// cluster's cookie saw only "no peer is connected yet" for two minutes.
struct LeaderWatch {
    store: troupe_runtime::store::Store,
    cluster: Cluster,
    /// The sessions authenticated and still open, by the NodeServer's id.
    authenticated: std::sync::Mutex<std::collections::HashSet<ractor_cluster::NodeId>>,
}

impl ractor_cluster::NodeEventSubscription for LeaderWatch {
    fn node_session_opened(&self, _: ractor_cluster::node::NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let was = self
            .authenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ses.node_id);
        if !was {
            self.cluster.session_refused(ses.peer_addr.clone());
        }
        let Some(peer) = ses.peer_name else { return };
        // ractor_cluster names a peer `<node>@<host>`.
        let name = peer
            .name
            .split_once('@')
            .map_or(peer.name.as_str(), |(n, _)| n)
            .to_owned();
        let store = self.store.clone();
        tokio::spawn(async move { store.leader_session_closed(&name).await });
    }

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        self.authenticated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ses.node_id);
    }
}

/// Keeps a session open to every configured peer and to every member of the replicated log
/// at the address it last recorded (so a node restarted without `--join` finds the others
/// at once, rather than when they dial it again).
async fn dial_members(
    server: ActorRef<NodeServerMessage>,
    store: troupe_runtime::store::Store,
    me: String,
    join: Vec<String>,
    dial: Dial,
    port: u16,
) {
    struct Dialling(std::collections::HashMap<String, JoinHandle<()>>);
    impl Drop for Dialling {
        fn drop(&mut self) {
            for j in self.0.values() {
                j.abort();
            }
        }
    }
    let mut dialling = Dialling(Default::default());
    let mut tick = tokio::time::interval(READ_ADDRESSES_EVERY);
    loop {
        // The NodeServer's unused listener may have been started again (and advertised its
        // own port): advertise the real one.
        let _ = server.cast(NodeServerMessage::PortChanged { port });
        let mut peers = join.clone();
        match super::replicated::member_addresses(&store, &me).await {
            Ok(addresses) => {
                peers.extend(addresses);
                undial(&mut dialling.0, &peers);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the members' addresses"),
        }
        for peer in peers {
            if let std::collections::hash_map::Entry::Vacant(new) = dialling.0.entry(peer) {
                // A `--join` address is dialled again within 2 s: nobody dials a joining node,
                // whose two minutes to be admitted a 30 s wait ate into.
                let longest = match join.contains(new.key()) {
                    true => JOIN_REDIAL,
                    false => MAX_REDIAL,
                };
                let task = tokio::spawn(keep_joined(server.clone(), new.key().clone(), dial.clone(), longest));
                new.insert(task);
            }
        }
        tick.tick().await;
    }
}

/// Stops dialling what is not in `wanted`: a member that left or was forgotten, or an
/// address a member no longer has (they were dialled, and warned of, every 30 s for ever).
fn undial(dialling: &mut std::collections::HashMap<String, JoinHandle<()>>, wanted: &[String]) {
    dialling.retain(|peer, task| {
        let kept = wanted.contains(peer);
        if !kept {
            task.abort();
        }
        kept
    });
}

/// Keeps a session to `peer` open: connects, checks every few seconds, reconnects with
/// exponential backoff (0.5 s doubling to `longest`) while it cannot.
async fn keep_joined(server: ActorRef<NodeServerMessage>, peer: String, dial: Dial, longest: Duration) {
    let mut backoff = Duration::from_millis(500);
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        if connected(&server, &peer).await {
            backoff = Duration::from_millis(500);
            warned = None;
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        }
        let connect = async {
            match &dial {
                Dial::Plain => ractor_cluster::client_connect(&server, peer.as_str()).await,
                Dial::Tls { connector, .. } => {
                    let host = peer.rsplit_once(':').map_or(peer.as_str(), |(h, _)| h);
                    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
                    let Ok(name) = tokio_rustls::rustls::pki_types::ServerName::try_from(host) else {
                        return Err(ractor_cluster::ClientConnectErr::Encryption(std::io::Error::other(
                            format!("{peer} is not a host name or address a certificate can name"),
                        )));
                    };
                    ractor_cluster::client_connect_enc(&server, peer.as_str(), connector.clone(), name).await
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(())) => {
                tracing::info!(%peer, "connected to peer");
                // Give the handshake a moment before checking the session.
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            // Said at WARN as the peer is first missed and then every `MAX_REDIAL` at most
            // (the member's SUSPECT and DOWN are said by the failover judge), else at DEBUG.
            Ok(Err(e)) if says_again(warned.map(|at| at.elapsed())) => {
                warned = Some(tokio::time::Instant::now());
                tracing::warn!(%peer, error = %e, retry_in = ?backoff, "cannot reach peer")
            }
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, retry_in = ?backoff, "cannot reach peer"),
            Err(_) if says_again(warned.map(|at| at.elapsed())) => {
                warned = Some(tokio::time::Instant::now());
                tracing::warn!(%peer, retry_in = ?backoff, "connecting to peer timed out")
            }
            Err(_) => tracing::debug!(%peer, retry_in = ?backoff, "connecting to peer timed out"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(longest);
    }
}

/// The longest wait between two attempts to dial a peer.
const MAX_REDIAL: Duration = Duration::from_secs(30);

/// The longest wait between two attempts to dial a `--join` address.
const JOIN_REDIAL: Duration = Duration::from_secs(2);

/// Whether a failed dial is worth a WARN, `since_warned` the last one: the first since the
/// peer was reached, then one each [`MAX_REDIAL`] at most.
fn says_again(since_warned: Option<Duration>) -> bool {
    since_warned.is_none_or(|quiet| quiet >= MAX_REDIAL)
}

async fn connected(server: &ActorRef<NodeServerMessage>, peer: &str) -> bool {
    let resolved: Vec<String> = match tokio::net::lookup_host(peer).await {
        Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
        Err(_) => Vec::new(),
    };
    let Ok(ractor::rpc::CallResult::Success(sessions)) = server
        .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(2)))
        .await
    else {
        return false;
    };
    sessions
        .values()
        .any(|s| resolved.contains(&s.peer_addr) || s.peer_name.as_ref().is_some_and(|n| n.connection_string == peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_no_longer_a_member_is_no_longer_dialled() {
        let mut dialling: std::collections::HashMap<String, JoinHandle<()>> = ["a:1", "gone:2", "moved:3"]
            .into_iter()
            .map(|p| (p.to_owned(), tokio::spawn(std::future::pending())))
            .collect();
        let dropped: Vec<_> = ["gone:2", "moved:3"]
            .iter()
            .map(|p| dialling[*p].abort_handle())
            .collect();
        undial(&mut dialling, &["a:1".to_owned(), "moved:4".to_owned()]);
        assert_eq!(dialling.keys().collect::<Vec<_>>(), ["a:1"]);
        tokio::task::yield_now().await;
        assert!(dropped.iter().all(|d| d.is_finished()) && !dialling["a:1"].is_finished());
    }

    #[test]
    fn a_peer_that_cannot_be_dialled_is_warned_of_first_then_every_longest_wait() {
        // Waits as a member's address is dialled (to 30 s) and as a --join one is (to 2 s).
        for (longest, expected) in [
            (
                MAX_REDIAL,
                vec![true, false, false, false, false, false, true, true, true, true],
            ),
            (
                JOIN_REDIAL,
                vec![true, false, false, false, false, false, false, false, false, false],
            ),
        ] {
            let (mut backoff, mut clock, mut last) = (Duration::from_millis(500), Duration::ZERO, None);
            let mut warned = Vec::new();
            for _ in 0..10 {
                let says = says_again(last.map(|at| clock - at));
                if says {
                    last = Some(clock);
                }
                warned.push(says);
                clock += backoff;
                backoff = (backoff * 2).min(longest);
            }
            assert_eq!(warned, expected, "{longest:?}");
            assert_eq!(backoff, longest);
        }
    }
}
