//! Appends that only move the commit index, held back for a moment.
//!
//! openraft 0.9 sends every follower an append of no entries as soon as the commit index
//! moves, for it to apply what committed. With one writer, those and their answers were four
//! of the ten messages an entry cost (an append to each follower and its answer, the commit
//! index to each and its answer, the forwarded group and its answer), and a follower that
//! proposed nothing in them waits for none of it: the next append carries the commit index
//! too. So the leader's client of a member holds such an append back for
//! [`Timing::commit_hold`](super::super::Timing) (5 ms) and sends it then only if nothing
//! else went to the member meanwhile: under load the next append takes its place; idle, the
//! member applies that much later at most.
//!
//! Sent at once, as openraft asks: an append with entries; one that moves no commit index
//! (a heartbeat); one whose commit covers an entry the member proposed (its writer waits
//! until the entry applies there to answer its caller); and any append once the member's
//! last answer, to this leader and for the entries it still holds, is older than the hold.
//! openraft takes a held append as answered: the member's answer stands in, so the leader's
//! account of when a majority last answered it (`status::lead_unconfirmed`) is off by the
//! hold at most, and the entries it holds are those it answered for.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use openraft::raft::AppendEntriesRequest;
use openraft::{EntryPayload, LogId, Vote};
use tokio::time::Instant;

use crate::store::raft::{NodeId, Troupe};

/// One member's held append, and what decides whether the next one may be held.
#[derive(Debug)]
pub(super) struct Hold {
    /// The member.
    member: NodeId,
    /// How long an append may be held; zero holds none.
    hold: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The member's last `Success`: under which vote, the entry it then held, and when.
    answered: Option<(Vote<NodeId>, Option<LogId<NodeId>>, Instant)>,
    /// The highest commit index sent to the member.
    told: Option<u64>,
    /// The entries sent to the member that it proposed and whose commit it was not told.
    proposed: BTreeSet<u64>,
    /// The append held back, and the bound of its answer.
    held: Option<(AppendEntriesRequest<Troupe>, Duration)>,
    /// Whether a timer will send what is held.
    timer: bool,
}

impl State {
    /// The member is sent the commit index `commit`.
    fn told_up_to(&mut self, commit: Option<u64>) {
        self.told = self.told.max(commit);
        if let Some(told) = self.told {
            self.proposed = self.proposed.split_off(&(told + 1));
        }
    }
}

/// What becomes of an append.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It goes now.
    Send,
    /// Held: answered as taken, sent later unless another request goes first; `timer` when
    /// nothing was held yet, so the caller starts the timer that sends it.
    Held { timer: bool },
}

impl Hold {
    pub fn new(member: NodeId, hold: Duration) -> Self {
        Self {
            member,
            hold,
            state: Mutex::default(),
        }
    }

    pub fn hold(&self) -> Duration {
        self.hold
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `rpc`, about to go to the member at `now` with `within` for its answer, is
    /// held back; if it goes, it is counted as sent.
    pub fn consider(&self, rpc: &AppendEntriesRequest<Troupe>, within: Duration, now: Instant) -> Verdict {
        let mut state = self.state();
        let commit = rpc.leader_commit.map(|c| c.index);
        let answered_for = |(vote, matched, at): &(Vote<NodeId>, Option<LogId<NodeId>>, Instant)| {
            *vote == rpc.vote && *matched == rpc.prev_log_id && now.saturating_duration_since(*at) <= self.hold
        };
        let awaited = commit.is_some_and(|c| state.proposed.first().is_some_and(|p| *p <= c));
        let holds = !self.hold.is_zero()
            && rpc.entries.is_empty()
            && commit > state.told
            && !awaited
            && state.answered.as_ref().is_some_and(answered_for);
        if holds {
            let timer = !state.timer;
            state.timer = true;
            state.held = Some((rpc.clone(), within));
            return Verdict::Held { timer };
        }
        state.held = None;
        let proposed = rpc.entries.iter().filter_map(|e| match &e.payload {
            EntryPayload::Normal(p) if p.origin.is_some_and(|o| o.node == self.member) => Some(e.log_id.index),
            _ => None,
        });
        state.proposed.extend(proposed);
        state.told_up_to(commit);
        Verdict::Send
    }

    /// The member answered `rpc`, sent at `at`, holding the log up to `matched` (`None`: it
    /// did not take it).
    pub fn answered(&self, rpc: &AppendEntriesRequest<Troupe>, matched: Option<Option<LogId<NodeId>>>, at: Instant) {
        self.state().answered = matched.map(|m| (rpc.vote, m, at));
    }

    /// The held append, for the timer to send (none when another request went since); the
    /// next one held starts a timer again.
    pub fn due(&self) -> Option<(AppendEntriesRequest<Troupe>, Duration)> {
        let mut state = self.state();
        state.timer = false;
        let due = state.held.take()?;
        state.told_up_to(due.0.leader_commit.map(|c| c.index));
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::{CommittedLeaderId, Entry};

    use super::*;
    use crate::store::raft::{Origin, Proposal};

    const MEMBER: NodeId = 2;
    const HOLD: Duration = Duration::from_millis(5);
    const WITHIN: Duration = Duration::from_millis(100);

    fn id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(3, 1), index)
    }

    fn vote() -> Vote<NodeId> {
        Vote::new_committed(3, 1)
    }

    /// An append of the entries `entries` (each proposed by the member or not) after `prev`,
    /// with `commit` as the leader's commit index.
    fn append(prev: u64, entries: &[(u64, bool)], commit: u64) -> AppendEntriesRequest<Troupe> {
        let entries = entries
            .iter()
            .map(|&(index, mine)| Entry {
                log_id: id(index),
                payload: EntryPayload::Normal(Proposal {
                    batches: Arc::new(Vec::new()),
                    origin: Some(Origin {
                        node: if mine { MEMBER } else { 1 },
                        epoch: 1,
                        seq: index,
                    }),
                }),
            })
            .collect();
        AppendEntriesRequest {
            vote: vote(),
            prev_log_id: Some(id(prev)),
            leader_commit: Some(id(commit)),
            entries,
        }
    }

    /// `hold` after the member took `rpc` at `at`.
    fn took(hold: &Hold, rpc: &AppendEntriesRequest<Troupe>, at: Instant) {
        assert_eq!(hold.consider(rpc, WITHIN, at), Verdict::Send);
        let matched = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
        hold.answered(rpc, Some(matched), at);
    }

    #[test]
    fn the_commit_of_an_entry_another_member_proposed_waits_for_the_next_append_or_the_hold() {
        let now = Instant::now();
        let hold = Hold::new(MEMBER, HOLD);
        took(&hold, &append(4, &[(5, false)], 4), now);
        let commit = append(5, &[], 5);
        assert_eq!(hold.consider(&commit, WITHIN, now), Verdict::Held { timer: true });
        // A second while the first is held rides on the same timer, and replaces it.
        let again = append(5, &[], 6);
        assert_eq!(hold.consider(&again, WITHIN, now), Verdict::Held { timer: false });
        let (due, within) = hold.due().expect("held until the timer");
        assert_eq!((due.leader_commit, within), (Some(id(6)), WITHIN));
        assert!(hold.due().is_none(), "sent once");
        // The next append carries the commit index: nothing held is left to send.
        assert_eq!(
            hold.consider(&append(5, &[], 7), WITHIN, now),
            Verdict::Held { timer: true }
        );
        took(&hold, &append(5, &[(6, false)], 7), now);
        assert!(hold.due().is_none(), "the append took its place");
    }

    #[test]
    fn the_commit_of_an_entry_the_member_proposed_goes_at_once() {
        let now = Instant::now();
        let hold = Hold::new(MEMBER, HOLD);
        took(&hold, &append(4, &[(5, true), (6, false)], 4), now);
        // Its writer waits until entry 5 applies there.
        assert_eq!(hold.consider(&append(6, &[], 5), WITHIN, now), Verdict::Send);
        hold.answered(&append(6, &[], 5), Some(Some(id(6))), now);
        // Told already: the commit of 6 alone may wait.
        assert_eq!(
            hold.consider(&append(6, &[], 6), WITHIN, now),
            Verdict::Held { timer: true }
        );
        // Two of its groups in flight: the commit of the first goes at once, although the
        // second is not committed yet; that of the entry between them may wait.
        took(&hold, &append(6, &[(7, true), (8, false), (9, true)], 6), now);
        assert_eq!(hold.consider(&append(9, &[], 7), WITHIN, now), Verdict::Send);
        hold.answered(&append(9, &[], 7), Some(Some(id(9))), now);
        assert_eq!(
            hold.consider(&append(9, &[], 8), WITHIN, now),
            Verdict::Held { timer: false }
        );
        assert_eq!(hold.consider(&append(9, &[], 9), WITHIN, now), Verdict::Send);
    }

    #[test]
    fn a_heartbeat_a_late_answer_another_vote_or_another_log_goes_at_once() {
        let now = Instant::now();
        let hold = Hold::new(MEMBER, HOLD);
        took(&hold, &append(4, &[(5, false)], 5), now);
        // It moves no commit index: a heartbeat.
        assert_eq!(hold.consider(&append(5, &[], 5), WITHIN, now), Verdict::Send);
        // The member last answered longer ago than the hold.
        assert_eq!(hold.consider(&append(5, &[], 6), WITHIN, now + HOLD * 2), Verdict::Send);
        took(&hold, &append(5, &[(6, false)], 6), now);
        // Another leader's, or after other entries than those the member answered for.
        let mut other = append(6, &[], 7);
        other.vote = Vote::new_committed(4, 3);
        assert_eq!(hold.consider(&other, WITHIN, now), Verdict::Send);
        assert_eq!(hold.consider(&append(5, &[], 8), WITHIN, now), Verdict::Send);
        // A member that did not take the last append.
        hold.answered(&append(6, &[], 8), None, now);
        assert_eq!(hold.consider(&append(6, &[], 9), WITHIN, now), Verdict::Send);
        // No hold at all.
        let never = Hold::new(MEMBER, Duration::ZERO);
        took(&never, &append(4, &[(5, false)], 4), now);
        assert_eq!(never.consider(&append(5, &[], 5), WITHIN, now), Verdict::Send);
    }
}
