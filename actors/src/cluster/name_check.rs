//! A joining node's first question: is its name a live member's? Asked of each `--join`
//! address before the link dials under the name. The cluster's links (ractor_cluster's) keep
//! one session per node name and may keep the newcomer's, so a node that dialled under a
//! live member's name displaced that member's sessions: its beats and Raft messages reached
//! nobody, and it was declared DOWN and lost its work, or was deposed if it led, before the
//! leader could refuse the newcomer admission.
//!
//! The question travels on the cluster port itself, in the clear and signed with the
//! cluster's cookie. A member tells it from a session by its first byte: a session opens
//! with ractor_cluster's frame length (a big-endian `u64` under 16 MiB, whose first byte is
//! 0) or a TLS handshake record (0x16), the question with [`MAGIC`]. A member of an earlier
//! release reads the question as a frame far too long and closes the connection: the
//! joining node cannot tell then, and joins as before.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::lease::{member_in, MemberState, SUSPECT_AFTER};
use super::Cluster;

/// The first bytes of a question.
pub(super) const MAGIC: &[u8; 8] = b"TRPNAME1";
/// How long a member has to answer.
const ASK_WITHIN: Duration = Duration::from_secs(3);
/// The longest question or answer read, in bytes.
const MAX_SAID: u32 = 16 * 1024;

/// What a joining node refused for its name is told, and how it knows to stop at once.
pub(crate) const NAME_OF_A_LIVE_MEMBER: &str = "is a member that is up";

/// The refusal of a node joining under the name of member `name` (Raft id `id`), which is up.
pub(crate) fn refusal(name: &str, id: u64) -> String {
    format!(
        "{name} {NAME_OF_A_LIVE_MEMBER} (raft id {id}): a node joining under its name displaces its sessions \
         with the others; start this node under another name (--node-name), or make the member leave first \
         (leaveCluster; forgetMember once it is DOWN)"
    )
}

#[derive(Debug, Serialize, Deserialize)]
struct Question {
    name: String,
    raft_id: u64,
    /// HMAC-SHA256 of the name and id under the cluster's cookie.
    mac: Vec<u8>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Answer {
    /// Why the name is refused, when a live member holds it.
    live: Option<String>,
}

fn signer(cookie: &str, name: &str, raft_id: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("troupe name check\n{name}\n{raft_id}").as_bytes());
    mac
}

/// Asks each of `join` in turn whether `name` is a live member's: the refusal of the first
/// that says so. Those that cannot be reached, or cannot tell (an earlier release), are
/// passed over: the leader's admission checks the name again.
pub async fn ask(join: &[String], name: &str, raft_id: u64, cookie: &str) -> Result<(), String> {
    let question = Question {
        name: name.to_owned(),
        raft_id,
        mac: signer(cookie, name, raft_id).finalize().into_bytes().to_vec(),
    };
    for peer in join {
        match tokio::time::timeout(ASK_WITHIN, ask_one(peer, &question)).await {
            Ok(Ok(Answer { live: Some(why) })) => return Err(format!("{peer} refused to admit this node: {why}")),
            Ok(Ok(_)) => tracing::debug!(%peer, "no live member has this node's name"),
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "could not ask whether this node's name is a member's"),
            Err(_) => tracing::debug!(%peer, "no answer whether this node's name is a member's"),
        }
    }
    Ok(())
}

async fn ask_one(peer: &str, question: &Question) -> std::io::Result<Answer> {
    let mut tcp = tokio::net::TcpStream::connect(peer).await?;
    let mut said = MAGIC.to_vec();
    said.extend(framed(question)?);
    tcp.write_all(&said).await?;
    read_framed(&mut tcp).await
}

fn framed<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let body = serde_json::to_vec(value)?;
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    Ok(out)
}

async fn read_framed<T: for<'de> Deserialize<'de>>(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<T> {
    let len = r.read_u32().await?;
    if len > MAX_SAID {
        return Err(std::io::Error::other(format!(
            "{len} bytes said, at most {MAX_SAID} read"
        )));
    }
    let mut body = vec![0; len as usize];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// What a member needs to answer the question.
pub(super) struct Answerer {
    pub cluster: Cluster,
    pub store: troupe_runtime::store::Store,
    pub cookie: String,
}

impl Answerer {
    /// Answers the question that `stream` opens with (its [`MAGIC`] not read yet). One not
    /// signed with the cluster's cookie is not answered.
    pub(super) async fn answer(&self, mut stream: impl AsyncRead + AsyncWrite + Unpin, from: std::net::SocketAddr) {
        let answered = tokio::time::timeout(ASK_WITHIN, async {
            let mut magic = [0u8; 8];
            stream.read_exact(&mut magic).await?;
            if &magic != MAGIC {
                return Err(std::io::Error::other("not a question of Troupe's"));
            }
            let q: Question = read_framed(&mut stream).await?;
            if signer(&self.cookie, &q.name, q.raft_id).verify_slice(&q.mac).is_err() {
                return Err(std::io::Error::other("not signed with this cluster's cookie"));
            }
            let live = self.live(&q.name, q.raft_id).await;
            if live.is_some() {
                tracing::warn!(node = %q.name, %from, "a node asked to join under the name of a member that is up: refused");
            }
            stream.write_all(&framed(&Answer { live })?).await?;
            stream.shutdown().await
        })
        .await;
        match answered {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%from, error = %e, "a question on the cluster port was not answered"),
            Err(_) => tracing::debug!(%from, "a question on the cluster port was not asked in time"),
        }
    }

    /// The refusal, when `name` is this member's, or another member's (not Raft id `raft_id`)
    /// that is up as this node sees it: recorded UP (not judged SUSPECT, DOWN or LEFT), and
    /// heard from within [`SUSPECT_AFTER`]. A member gone silent may be replaced (the
    /// leader's admission waits until it is forgotten): one the leader judged SUSPECT is
    /// left to that admission, although this node may have heard it a moment later than
    /// the leader did.
    async fn live(&self, name: &str, raft_id: u64) -> Option<String> {
        if name == self.cluster.name() {
            return Some(refusal(name, self.store.raft_id()));
        }
        let other = self
            .store
            .status()
            .members
            .into_iter()
            .find(|m| m.name == name && m.id != raft_id)?;
        let named = name.to_owned();
        let record = self.store.view(move |v| member_in(v, &named)).await.ok()?;
        let up = record.map_or(MemberState::Up, |r| r.state) == MemberState::Up;
        let leases = &self.cluster.leases;
        let heard = leases.heard(name).is_some_and(|at| at.elapsed() <= SUSPECT_AFTER)
            || leases.granted_within(name, SUSPECT_AFTER);
        (up && heard).then(|| refusal(name, other.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_opens_unlike_a_session_and_is_signed_with_the_cookie() {
        // A session opens with a frame length under 16 MiB (first byte 0) or a TLS record.
        assert!(MAGIC[0] != 0 && MAGIC[0] != 0x16);
        let mac = signer("cookie", "gamma", 7).finalize().into_bytes().to_vec();
        assert!(signer("cookie", "gamma", 7).verify_slice(&mac).is_ok());
        assert!(signer("other", "gamma", 7).verify_slice(&mac).is_err());
        assert!(signer("cookie", "gamma", 8).verify_slice(&mac).is_err());
    }

    #[tokio::test]
    async fn a_member_of_an_earlier_release_that_closes_the_connection_cannot_tell() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let closing = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 8];
            let _ = tcp.read_exact(&mut first).await;
        });
        assert_eq!(ask(&[addr, "127.0.0.1:1".into()], "gamma", 7, "cookie").await, Ok(()));
        closing.await.unwrap();
    }
}
