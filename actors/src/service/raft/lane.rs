//! Raft's own lane between members: a TCP connection (TLS when the cluster has it) that
//! carries the log's messages straight to the other member's Raft runtime. Over the
//! ractor_cluster link, each message and its answer passed through five actor and task hops
//! on each side, most of them on the node's main workers and then back to the Raft runtime;
//! on the lane, a message is read, served and answered by one task on the Raft runtime.
//! Three nodes with one client, in one session: 0.9 against 1.3 ms of the leader's CPU per
//! task (BENCHMARKS.md).
//!
//! A member learns another's lane (its address and a key drawn when that member started)
//! by asking over the cluster link, which the cookie (and TLS) already guards; a connection
//! that does not present the key is closed. A member whose link is not up, or that a
//! partition gate cuts off, is not reached on the lane either, and a HANG of the link's
//! endpoints holds the lane's requests too.
//!
//! On a connection: the dialler sends `TRL1` and the key, and the listener answers one byte
//! once it took them. Then requests, one at a time: the kind (one byte), the length (four
//! bytes, big-endian) and the bytes; each answered by a status (0: served, 1: an error whose
//! text follows), a length and the bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use troupe_runtime::store::raft::{self, RpcKind, SendError};
use troupe_runtime::store::{Store, WeakStore};
use troupe_runtime::tls::ClusterTls;

const MAGIC: &[u8; 4] = b"TRL1";
const KEY_LEN: usize = 32;
/// The longest message either way: a snapshot chunk is 1 MiB, an append request at most 16
/// entries, each a group of batches.
const MAX_FRAME: usize = 256 << 20;
/// Idle connections kept per member: one for its replication stream, a few for forwarded
/// writes and reads.
const MAX_IDLE: usize = 8;
/// How long a connection to a member's lane may take (its greeting included): a lane that a
/// firewall drops silently costs a message this much, once per [`SHUNNED_FOR`], not the
/// message's whole deadline (a forwarded write's is seconds).
const CONNECT_WITHIN: Duration = Duration::from_secs(1);
/// How long the link carries the messages to a member whose lane took no connection.
const SHUNNED_FOR: Duration = Duration::from_secs(10);
/// Connections that may be greeting at once (as the cluster listener's TLS handshakes).
const MAX_GREETING: usize = 64;
/// How long the listener waits for a new connection's greeting.
const GREETING_WITHIN: Duration = Duration::from_secs(5);

/// What another member needs to reach this member's lane.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaneInfo {
    pub addr: String,
    pub key: ByteBuf,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Conn = BufStream<Box<dyn Io>>;

/// The listening side: serves the lane's requests with the store's Raft, on the Raft
/// runtime, while the link's endpoints are not held.
pub struct Listener {
    pub info: LaneInfo,
    held: Arc<Mutex<watch::Receiver<bool>>>,
}

impl Listener {
    /// Listens at `addr` (`--raft-listen`; by default the cluster address's IP, on a port
    /// the system picks), advertised at `advertise` (`--advertise-host`) when given.
    pub async fn start(
        store: Store,
        addr: SocketAddr,
        advertise: Option<&str>,
        tls: Option<&ClusterTls>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let key: [u8; KEY_LEN] = rand::random();
        let held = Arc::new(Mutex::new(watch::channel(false).1));
        let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(t.server.clone()));
        // Each connection's TLS handshake and greeting run on the runtime that starts the
        // listener (the node's), not on the Raft runtime's one worker, where a handshake's
        // milliseconds of CPU held up the heartbeats and appends behind it.
        let greeters = tokio::runtime::Handle::current();
        let accepting = accept(listener, acceptor, store.downgrade(), key, held.clone(), greeters);
        // The listener lives as long as the Raft runtime, which ends with the store (it
        // holds no handle that would keep the store open).
        store.raft_runtime().spawn(accepting);
        Ok(Self {
            info: LaneInfo {
                addr: match advertise {
                    Some(host) => crate::cluster::host_port(host, addr.port()),
                    None => addr.to_string(),
                },
                key: ByteBuf::from(key.to_vec()),
            },
            held,
        })
    }

    /// From now on, requests wait while `held` is true (the link's endpoints' HANG).
    pub fn hold_with(&self, held: watch::Receiver<bool>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    store: WeakStore,
    key: [u8; KEY_LEN],
    held: Arc<Mutex<watch::Receiver<bool>>>,
    greeters: tokio::runtime::Handle,
) {
    // This loop, and each greeted connection's requests, run on the Raft runtime.
    let raft = tokio::runtime::Handle::current();
    let greeting = Arc::new(tokio::sync::Semaphore::new(MAX_GREETING));
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // A store gone, failed or stopping stops its Raft runtime, and the lane with
                // it: no warning then, which would follow the node's last word on why it
                // stopped.
                if store
                    .upgrade()
                    .is_none_or(|s| s.failure().is_some() || s.raft_stopped())
                {
                    return;
                }
                tracing::warn!(error = %e, "the Raft lane could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Bounded in number as in time: connections that never greet cannot pile up.
        let Ok(permit) = greeting.clone().try_acquire_owned() else {
            tracing::warn!("too many Raft lane connections are greeting: closing a new one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, store, held, raft) = (acceptor.clone(), store.clone(), held.clone(), raft.clone());
        greeters.spawn(async move {
            #[cfg(test)]
            tests::greeted_on(std::thread::current().name());
            let greeted = tokio::time::timeout(GREETING_WITHIN, async {
                let io: Box<dyn Io> = match acceptor {
                    Some(acceptor) => Box::new(acceptor.accept(tcp).await?),
                    None => Box::new(tcp),
                };
                let mut conn = BufStream::new(io);
                let mut greeting = [0u8; MAGIC.len() + KEY_LEN];
                conn.read_exact(&mut greeting).await?;
                if &greeting[..MAGIC.len()] != MAGIC || !same(&greeting[MAGIC.len()..], &key) {
                    return Err(std::io::Error::other("a connection without this member's lane key"));
                }
                conn.write_u8(0).await?;
                conn.flush().await?;
                Ok::<_, std::io::Error>(conn)
            })
            .await;
            drop(permit);
            match greeted {
                Ok(Ok(conn)) => {
                    raft.spawn(serve(conn, store, held));
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "a Raft lane connection was refused"),
                Err(_) => tracing::debug!("a Raft lane connection sent no greeting in time"),
            }
        });
    }
}

/// Keeps `conn` for the next request to `to` (a few per member: more are closed).
fn put_back(peers: &Mutex<HashMap<String, Peer>>, to: &str, conn: Conn) {
    if let Some(peer) = peers.lock().unwrap_or_else(|p| p.into_inner()).get_mut(to) {
        if peer.idle.len() < MAX_IDLE {
            peer.idle.push(conn);
        }
    }
}

/// A connection whose request went and whose answer has not begun to come: dropped so (its
/// sender stopped waiting), it reads the answer in a task of its own, until the request's
/// deadline, and keeps the connection once it came.
struct Pending {
    conn: Option<Conn>,
    peers: Arc<Mutex<HashMap<String, Peer>>>,
    to: String,
    deadline: tokio::time::Instant,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (Some(mut conn), Ok(runtime)) = (self.conn.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let (peers, to, deadline) = (self.peers.clone(), std::mem::take(&mut self.to), self.deadline);
        runtime.spawn(async move {
            if let Ok(Ok(_)) = tokio::time::timeout_at(deadline, read_frame(&mut conn)).await {
                put_back(&peers, &to, conn);
            }
        });
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The address to dial for a lane that listens at `lane`: a member that listens on every
/// interface (0.0.0.0) is dialled at the host of its cluster address.
pub fn reachable(lane: &str, cluster_address: Option<&str>) -> String {
    let Ok(lane) = lane.parse::<SocketAddr>() else {
        return lane.to_owned();
    };
    let host = cluster_address
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .map(|a| a.ip());
    match host {
        Some(ip) if lane.ip().is_unspecified() && !ip.is_unspecified() => SocketAddr::new(ip, lane.port()).to_string(),
        _ => lane.to_string(),
    }
}

/// Compares two keys in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Answers one connection's requests, one after another.
async fn serve(mut conn: Conn, store: WeakStore, held: Arc<Mutex<watch::Receiver<bool>>>) {
    loop {
        let Ok((kind, request)) = read_frame(&mut conn).await else {
            return;
        };
        let mut held = held.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Held: the request waits unanswered, as the link's service actors' do.
        while *held.borrow_and_update() {
            if held.changed().await.is_err() {
                break;
            }
        }
        let Some(live) = store.upgrade() else {
            return;
        };
        let (status, answer) = match kind_of(kind) {
            Some(kind) => match raft::serve(&live, kind, &request).await {
                Ok(answer) => (0, answer),
                Err(e) => (1, e.to_string().into_bytes()),
            },
            None => (1, format!("unknown Raft message kind {kind}").into_bytes()),
        };
        if write_frame(&mut conn, status, &answer).await.is_err() {
            return;
        }
    }
}

async fn read_frame(conn: &mut Conn) -> std::io::Result<(u8, Vec<u8>)> {
    let head = conn.read_u8().await?;
    let len = conn.read_u32().await? as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a message of {len} bytes")));
    }
    let mut bytes = vec![0; len];
    conn.read_exact(&mut bytes).await?;
    Ok((head, bytes))
}

async fn write_frame(conn: &mut Conn, head: u8, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME)
        .ok_or_else(|| std::io::Error::other(format!("a message of {} bytes", bytes.len())))?;
    conn.write_u8(head).await?;
    conn.write_u32(len).await?;
    conn.write_all(bytes).await?;
    conn.flush().await
}

fn kind_byte(kind: RpcKind) -> u8 {
    match kind {
        RpcKind::Append => 0,
        RpcKind::Vote => 1,
        RpcKind::Snapshot => 2,
        RpcKind::Propose => 3,
        RpcKind::ReadIndex => 4,
        RpcKind::Succeed => 5,
        RpcKind::PreVote => 6,
    }
}

fn kind_of(byte: u8) -> Option<RpcKind> {
    Some(match byte {
        0 => RpcKind::Append,
        1 => RpcKind::Vote,
        2 => RpcKind::Snapshot,
        3 => RpcKind::Propose,
        4 => RpcKind::ReadIndex,
        5 => RpcKind::Succeed,
        6 => RpcKind::PreVote,
        _ => return None,
    })
}

/// The dialling side: the lanes of the other members this node learnt, and their idle
/// connections.
pub struct Lanes {
    tls: Option<tokio_rustls::TlsConnector>,
    /// Where connections are made (TCP and the TLS handshake): the runtime that made this
    /// (the node's), not the Raft runtime that sends the messages. A connection made is
    /// then handed to the runtime that sends on it (see [`Lanes::connect`]).
    dialers: tokio::runtime::Handle,
    /// Shared with the tasks that read answers (see [`Lanes::send`]).
    peers: Arc<Mutex<HashMap<String, Peer>>>,
    /// Members whose lane took no connection, and until when the link carries their messages.
    shunned: Mutex<HashMap<String, tokio::time::Instant>>,
}

struct Peer {
    info: LaneInfo,
    idle: Vec<Conn>,
}

impl Lanes {
    pub fn new(tls: Option<&ClusterTls>) -> Self {
        Self {
            tls: tls.map(|t| tokio_rustls::TlsConnector::from(t.client.clone())),
            dialers: tokio::runtime::Handle::current(),
            peers: Arc::default(),
            shunned: Mutex::default(),
        }
    }

    /// Whether the lane of the member named `to` is known.
    pub fn knows(&self, to: &str) -> bool {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).contains_key(to)
    }

    /// Keeps `info` as the lane of the member named `to`.
    pub fn learn(&self, to: &str, info: LaneInfo) {
        let peer = Peer { info, idle: Vec::new() };
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(to.to_owned(), peer);
    }

    /// Whether the lane of `to` took no connection lately: the link carries its messages
    /// meanwhile.
    pub fn shuns(&self, to: &str) -> bool {
        let mut shunned = self.shunned.lock().unwrap_or_else(|p| p.into_inner());
        match shunned.get(to) {
            Some(until) if tokio::time::Instant::now() < *until => true,
            Some(_) => {
                shunned.remove(to);
                false
            }
            None => false,
        }
    }

    /// Whether a message to `to` goes on its lane: its lane is known, or `ask` learns it
    /// now. A member that does not say where its lane is (an earlier build, or one whose
    /// lane is not listening yet) is not asked again for [`SHUNNED_FOR`]: asked before every
    /// message, each of them waited for the question first.
    async fn on_lane<F: std::future::Future<Output = bool>>(&self, to: &str, ask: impl FnOnce() -> F) -> bool {
        if self.knows(to) {
            return true;
        }
        if self.shuns(to) {
            return false;
        }
        if ask().await {
            return true;
        }
        self.shun(to);
        false
    }

    /// Sends a message on `to`'s lane when its lane is known or `ask` learns it (see
    /// [`Lanes::on_lane`]); `None` when the link must carry it. When the lane known took no
    /// connection (the member restarted, its lane elsewhere now), nothing was sent: where
    /// its lane is now is asked at once and the message sent there, rather than lost (a
    /// candidate's vote request to a member restarted since it last wrote to it was, and
    /// its election took a second term).
    pub async fn send_on_lane<F, Fut>(
        &self,
        to: &str,
        kind: RpcKind,
        request: &[u8],
        within: Duration,
        ask: F,
    ) -> Option<Result<Vec<u8>, SendError>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + within;
        if !self.on_lane(to, &ask).await {
            return None;
        }
        match self.send(to, kind, request, within).await {
            Err(SendError::NotSent(why)) if !self.knows(to) => {
                tracing::debug!(node = %to, %why, "the Raft lane known took no connection: asking where it is now");
                self.shunned.lock().unwrap_or_else(|p| p.into_inner()).remove(to);
                if !self.on_lane(to, &ask).await {
                    return None;
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                Some(self.send(to, kind, request, left).await)
            }
            sent => Some(sent),
        }
    }

    /// Sends the messages to `to` over the link for [`SHUNNED_FOR`].
    fn shun(&self, to: &str) {
        let until = tokio::time::Instant::now() + SHUNNED_FOR;
        self.shunned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(to.to_owned(), until);
    }

    /// Forgets the lane of `to`, which took no connection (it may have restarted, with
    /// another port and key, or a firewall lets only the cluster port through), and sends
    /// its messages over the link for a while, before its lane is asked for again.
    fn forget(&self, to: &str) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).remove(to);
        self.shun(to);
    }

    /// Sends one request to `to` on its lane and waits at most `within` for the answer.
    pub async fn send(&self, to: &str, kind: RpcKind, request: &[u8], within: Duration) -> Result<Vec<u8>, SendError> {
        let deadline = tokio::time::Instant::now() + within;
        let mut conn = match self.idle(to) {
            Some(conn) => conn,
            None => match tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + CONNECT_WITHIN),
                self.connect(to),
            )
            .await
            {
                Ok(connected) => connected?,
                Err(_) => {
                    self.forget(to);
                    return Err(SendError::NotSent(format!(
                        "node {to}'s Raft lane did not take a connection in time"
                    )));
                }
            },
        };
        let lost = |e: std::io::Error| SendError::Lost(format!("node {to}'s Raft lane: {e}"));
        let late = || SendError::Lost(format!("node {to} did not answer within {} ms", within.as_millis()));
        match tokio::time::timeout_at(deadline, write_frame(&mut conn, kind_byte(kind), request)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(lost(e)),
            Err(_) => return Err(late()),
        }
        // Should this wait be dropped before the answer comes, the connection is kept: its
        // answer is read then by a task of its own, which puts it back. A forwarded write
        // that applied here before the leader's answer came back stops waiting for it, and
        // each of those cost a new connection (its TCP handshake and greeting) when the
        // connection went with the wait. (Read by such a task every time, each answer to
        // the store's writer cost a wake of the Raft runtime's thread.)
        let mut pending = Pending {
            conn: Some(conn),
            peers: self.peers.clone(),
            to: to.to_owned(),
            deadline,
        };
        let conn = pending.conn.as_mut().expect("held until the answer begins");
        // Its first byte, left unread, so a wait dropped meanwhile leaves a whole answer.
        match tokio::time::timeout_at(deadline, conn.fill_buf()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(lost(e)),
            Err(_) => return Err(late()),
        }
        let mut conn = pending.conn.take().expect("held until the answer begins");
        match tokio::time::timeout_at(deadline, read_frame(&mut conn)).await {
            Ok(Ok((0, answer))) => {
                put_back(&self.peers, to, conn);
                Ok(answer)
            }
            Ok(Ok((_, why))) => Err(SendError::Lost(String::from_utf8_lossy(&why).into_owned())),
            Ok(Err(e)) => Err(lost(e)),
            Err(_) => Err(late()),
        }
    }

    /// An idle connection to `to` that is still open (one the other side closed, when it
    /// stopped, reads as ended at once, before anything is sent on it).
    fn idle(&self, to: &str) -> Option<Conn> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let idle = &mut peers.get_mut(to)?.idle;
        while let Some(mut conn) = idle.pop() {
            let mut byte = [0u8; 1];
            if conn.read(&mut byte).now_or_never().is_none() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self, to: &str) -> Result<Conn, SendError> {
        let info = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(to)
            .map(|p| p.info.clone());
        let info = info.ok_or_else(|| SendError::NotSent(format!("node {to}'s Raft lane is not known")))?;
        let (tls, key) = (self.tls.clone(), info.key.clone());
        let addr = info.addr.clone();
        // The runtime that sends on the connection (the Raft runtime, or the store's writer
        // within it) also watches its socket, so an answer wakes the sender at once. Watched
        // by the node's runtime where it was dialled, every answer woke one of the node's
        // workers first, which then woke the sender: two thread hand-offs a message.
        let sender = tokio::runtime::Handle::current();
        let connected = async move {
            #[cfg(test)]
            tests::dialed_on(std::thread::current().name());
            // An address, or a host name (`--advertise-host`) tried at each address it
            // resolves to; the name its certificate must hold is the one it advertised.
            let (host, _) = addr
                .rsplit_once(':')
                .ok_or_else(|| std::io::Error::other(format!("{addr} has no port")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let mut tcp = Err(std::io::Error::other(format!("{addr} resolves to no address")));
            for resolved in tokio::net::lookup_host(addr.as_str()).await? {
                tcp = TcpStream::connect(resolved).await;
                if tcp.is_ok() {
                    break;
                }
            }
            let tcp = tcp?.into_std()?;
            let tcp = {
                let _sender = sender.enter();
                TcpStream::from_std(tcp)?
            };
            tcp.set_nodelay(true)?;
            let io: Box<dyn Io> = match &tls {
                Some(connector) => {
                    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host)
                        .map_err(|e| std::io::Error::other(format!("{addr}: {e}")))?;
                    Box::new(connector.connect(name, tcp).await?)
                }
                None => Box::new(tcp),
            };
            let mut conn = BufStream::new(io);
            conn.write_all(MAGIC).await?;
            conn.write_all(&key).await?;
            conn.flush().await?;
            conn.read_u8().await?;
            Ok::<_, std::io::Error>(conn)
        };
        // Dropping the wait (the send's deadline) drops the connection it would have made.
        let dialing = self.dialers.spawn(connected);
        let aborted = dialing.abort_handle();
        let _abort_on_drop = AbortOnDrop(aborted);
        let connected = dialing.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        connected.map_err(|e| {
            self.forget(to);
            SendError::NotSent(format!("node {to}'s Raft lane at {}: {e}", info.addr))
        })
    }
}

#[cfg(test)]
mod tests;
