//! The leader's judgement of the members at one beat, as pure code: from each member's
//! committed state and how long it has been silent (no lease granted), the changes to
//! commit, each with the members that survive it (those UP after this beat's judgement, so
//! nothing moves to a member found lost in the same beat).

use std::time::Duration;

use super::{MemberState, DOWN_AFTER, SUSPECT_AFTER};
use crate::cluster::lease::Silence;

/// A member's state to commit, and who takes over its work when it is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    pub(super) node: String,
    pub(super) from: MemberState,
    pub(super) to: MemberState,
    pub(super) silent: Duration,
    pub(super) survivors: Vec<String>,
}

/// At most this many log entries that the leader had applied when it sent a beat may be
/// unapplied by a member back from DOWN when it answers, for it to be UP again: one append
/// request. Its log alone within 64 entries (what the leader counts a member caught up by)
/// showed a member UP 1–2 s before its work ran when the entries were big: it still had
/// them to apply, and it starts its work only once it has applied what the leader had when
/// it granted the lease.
pub(super) const APPLIED_WITHIN: u64 = 16;

/// Whether a member back from DOWN has caught up with the leader: its log within what the
/// leader counts caught up (`log_within`), and its applied state within [`APPLIED_WITHIN`]
/// as its answer to the last beat said (`applied_behind`; `None`: it did not answer it).
pub(super) fn caught_up(log_within: bool, applied_behind: Option<u64>) -> bool {
    log_within && applied_behind.is_some_and(|behind| behind <= APPLIED_WITHIN)
}

/// How far a member has come, as the leader knows it: from its log, and from its answer to
/// the last beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ready {
    /// Its log and its applied state have caught up with the leader's (see [`caught_up`]).
    pub(super) caught_up: bool,
    /// Its work runs: it holds a lease and has started it.
    pub(super) working: bool,
    /// It restarted, and has not said its work runs since (see `Cluster::restarted`).
    pub(super) restarted: bool,
}

/// The leader itself, or a member that has come all the way.
pub(super) const READY: Ready = Ready {
    caught_up: true,
    working: true,
    restarted: false,
};

/// The state a member in `state`, silent as `silence` says, is judged to be in. A SUSPECT
/// or DOWN member is UP again only once heard from: a leader that judges its members afresh
/// (a majority back after a gap, its own pause) counts their silence from then, and found a
/// member dead for 51 s silent for 141 ms, UP, and SUSPECT and DOWN again seconds later.
/// UP says a member runs its work. A DOWN member is UP again only once it has caught up
/// with the leader (see [`caught_up`]): one back from a long absence starts its work only
/// once it has applied what moved meanwhile (one restarted behind about 2 GB of log was UP
/// for the 15 s it took to catch up, running nothing), and only once it is UP (its work
/// cannot be waited for here). A SUSPECT one may start it at any time: it is UP again once
/// its answer to a beat says its work runs (one restarted before it was declared DOWN, or
/// thawed after its lease lapsed, starts it again a moment after its first beat, and was
/// UP before it had). An UP member that restarted is SUSPECT until its work runs again,
/// however short its silence: one back within 1.5 s was never anything but UP.
pub(super) fn next(state: MemberState, silence: Silence, ready: Ready) -> MemberState {
    let Silence { silent, heard } = silence;
    match state {
        MemberState::Left => MemberState::Left,
        _ if silent >= DOWN_AFTER => MemberState::Down,
        MemberState::Up if silent >= SUSPECT_AFTER || ready.restarted => MemberState::Suspect,
        MemberState::Down if !ready.caught_up => MemberState::Down,
        MemberState::Suspect if !ready.working => MemberState::Suspect,
        MemberState::Suspect | MemberState::Down if heard && silent < SUSPECT_AFTER => MemberState::Up,
        other => other,
    }
}

/// The leader itself, heard from now.
const HEARD_NOW: Silence = Silence {
    silent: Duration::ZERO,
    heard: true,
};

/// A wait for the next beat this much longer than a beat means the leader itself was
/// paused (its process frozen or starved, its VM paused): the members were silent to it
/// because it heard nothing, not because they went.
pub(super) const PAUSED_PAST: Duration = Duration::from_secs(1);

/// From when the leader of `term` judges its members' silence, at `now`: since it took the
/// lead (`leading`, the term it led and since when), or from now when it just took it or
/// was itself paused (its wait for this beat took `waited`, more than a beat past
/// [`PAUSED_PAST`]). A leader thawed after 28 s declared every member DOWN, the one never
/// frozen too, and moved all the work to itself.
pub(super) fn judged_from<I: Copy>(leading: Option<(u64, I)>, term: u64, now: I, waited: Duration) -> I {
    match leading {
        Some((led, since)) if led == term && waited <= super::BEAT + PAUSED_PAST => since,
        _ => now,
    }
}

/// When the leader first found each member in the membership, to judge one that joined
/// after it took the lead from when it joined: it was declared DOWN the moment it joined a
/// leader that had led for over 4 s, its silence counted from the leader's start, and the
/// hosts it had just registered moved away for good.
#[derive(Debug)]
pub(super) struct Joined<I>(std::collections::HashMap<String, I>);

impl<I: Copy + Ord> Joined<I> {
    pub(super) fn new() -> Self {
        Self(std::collections::HashMap::new())
    }

    /// The members in the membership at `now`: the new ones are first seen now, and those
    /// gone are forgotten (one that comes back joins afresh).
    pub(super) fn saw<'a>(&mut self, members: impl IntoIterator<Item = &'a str> + Clone, now: I) {
        self.0.retain(|name, _| members.clone().into_iter().any(|m| m == name));
        for member in members {
            self.0.entry(member.to_owned()).or_insert(now);
        }
    }

    /// From when `member` is judged: the later of `since` (see [`judged_from`]) and when
    /// it was first seen.
    pub(super) fn since(&self, member: &str, since: I) -> I {
        self.0.get(member).map_or(since, |at| since.max(*at))
    }
}

/// Whether a leader that a majority confirms again, after `unconfirmed_for` without one (in
/// the term it leads), judges its members afresh: past a beat and the margin, none of them
/// could renew a lease meanwhile.
pub(super) fn regained(unconfirmed_for: Option<Duration>) -> bool {
    unconfirmed_for.is_some_and(|gap| gap > super::BEAT + PAUSED_PAST)
}

/// Judges every member from its committed state, its silence and how far it has come
/// (see [`next`]); `me`, the leader, is heard from now: a
/// leader whose record a previous leader made SUSPECT or DOWN just before it lost its
/// leadership is UP again (no other member judges it while it leads).
pub(super) fn tick(
    me: &str,
    members: &[(String, MemberState)],
    silence: impl Fn(&str) -> Silence,
    ready: impl Fn(&str) -> Ready,
) -> Vec<Change> {
    let judged: Vec<(&str, MemberState, MemberState, Duration)> = members
        .iter()
        .map(|(name, state)| {
            let (silence, ready) = match name == me {
                true => (HEARD_NOW, READY),
                false => (silence(name), ready(name)),
            };
            (name.as_str(), *state, next(*state, silence, ready), silence.silent)
        })
        .collect();
    let up_after: Vec<&str> = judged
        .iter()
        .filter(|(_, _, to, _)| *to == MemberState::Up)
        .map(|(name, ..)| *name)
        .collect();
    judged
        .iter()
        .filter(|(_, from, to, _)| from != to)
        .map(|(name, from, to, silent)| Change {
            node: (*name).to_owned(),
            from: *from,
            to: *to,
            silent: *silent,
            survivors: up_after
                .iter()
                .filter(|n| *n != name)
                .map(|n| (*n).to_owned())
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_leader_judges_from_when_it_took_the_lead_or_from_its_own_pause() {
        use super::{judged_from, PAUSED_PAST};
        let beat = super::super::BEAT;
        // The same term, a beat waited: from when it took the lead.
        assert_eq!(judged_from(Some((4, 10)), 4, 90, beat), 10);
        assert_eq!(judged_from(Some((4, 10)), 4, 90, beat + PAUSED_PAST), 10);
        // Paused past a beat and the margin: from now.
        assert_eq!(judged_from(Some((4, 10)), 4, 90, beat + PAUSED_PAST * 2), 90);
        // A new term, or the first look as leader: from now.
        assert_eq!(judged_from(Some((3, 10)), 4, 90, beat), 90);
        assert_eq!(judged_from(None, 4, 90, beat), 90);
    }

    #[test]
    fn a_member_that_joined_after_the_leader_took_the_lead_is_judged_from_when_it_joined() {
        use super::Joined;
        let mut joined = Joined::new();
        joined.saw(["a", "b"], 10);
        assert_eq!(joined.since("b", 10), 10, "there when it took the lead");
        // c joins at 60, the leader having led since 10: silent since 60, not 10.
        joined.saw(["a", "b", "c"], 60);
        assert_eq!(joined.since("c", 10), 60);
        assert_eq!(joined.since("b", 10), 10);
        // Judged afresh later (a pause, a majority regained): from then, for all.
        assert_eq!(joined.since("c", 90), 90);
        // c leaves and joins again: from its new join.
        joined.saw(["a", "b"], 100);
        joined.saw(["a", "b", "c"], 120);
        assert_eq!(joined.since("c", 10), 120);
    }

    #[test]
    fn a_leader_confirmed_again_after_a_gap_judges_afresh() {
        use super::{regained, PAUSED_PAST};
        let beat = super::super::BEAT;
        assert!(
            !regained(None),
            "its first confirmation: judged from when it took the lead"
        );
        assert!(!regained(Some(beat)));
        assert!(!regained(Some(beat + PAUSED_PAST)));
        assert!(regained(Some(beat + PAUSED_PAST * 2)));
        assert!(regained(Some(std::time::Duration::from_secs(30))));
    }

    use proptest::prelude::*;

    use super::*;

    /// Heard from, after `silent`.
    fn heard_after(silent: Duration) -> Silence {
        Silence { silent, heard: true }
    }

    /// A member that did not restart, caught up and working or not.
    fn readiness(caught_up: bool, working: bool) -> Ready {
        Ready {
            caught_up,
            working,
            restarted: false,
        }
    }

    fn state() -> impl Strategy<Value = MemberState> {
        prop_oneof![
            Just(MemberState::Up),
            Just(MemberState::Suspect),
            Just(MemberState::Down),
            Just(MemberState::Left)
        ]
    }

    proptest! {
        #[test]
        fn a_member_is_judged_by_its_silence_and_its_log_and_its_work_goes_only_to_members_up_after_the_beat(
            members in proptest::collection::vec(
                (state(), 0u64..6000, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
                1..6,
            ),
        ) {
            let named: Vec<(String, MemberState)> =
                members.iter().enumerate().map(|(i, (s, ..))| (format!("n{i}"), *s)).collect();
            let index = |name: &str| -> usize { name[1..].parse().unwrap() };
            let silence = |name: &str| {
                let i = index(name);
                Silence { silent: Duration::from_millis(members[i].1), heard: members[i].2 }
            };
            let ready = |name: &str| {
                let (_, _, _, caught_up, working, restarted) = members[index(name)];
                Ready { caught_up, working, restarted }
            };
            let judged = |i: usize, name: &str| match i {
                0 => next(named[0].1, HEARD_NOW, READY),
                _ => next(named[i].1, silence(name), ready(name)),
            };
            let changes = tick("n0", &named, silence, ready);
            for change in &changes {
                // The leader is heard from now: it can only be found UP again.
                if change.node == "n0" {
                    prop_assert_eq!(change.to, MemberState::Up);
                    prop_assert_eq!(change.silent, Duration::ZERO);
                }
                // A member that left stays gone.
                prop_assert!(change.from != MemberState::Left && change.to != MemberState::Left);
                prop_assert_ne!(change.from, change.to);
                // DOWN only past DOWN_AFTER; SUSPECT only past SUSPECT_AFTER or restarted; UP again only
                // once heard from within SUSPECT_AFTER, from DOWN only caught up, and from
                // SUSPECT only with its work running.
                let heard = change.node == "n0" || silence(&change.node).heard;
                let Ready { caught_up: caught, working, restarted } = match change.node == "n0" {
                    true => READY,
                    false => ready(&change.node),
                };
                match change.to {
                    MemberState::Down => prop_assert!(change.silent >= DOWN_AFTER),
                    MemberState::Suspect => {
                        prop_assert!((change.silent >= SUSPECT_AFTER || restarted) && change.silent < DOWN_AFTER)
                    }
                    MemberState::Up => {
                        prop_assert!(change.silent < SUSPECT_AFTER && heard);
                        prop_assert!(change.from != MemberState::Down || caught);
                        prop_assert!(change.from != MemberState::Suspect || working);
                    }
                    MemberState::Left => {}
                }
                // Survivors are UP after this beat, and never the member itself.
                for s in &change.survivors {
                    prop_assert!(s != &change.node);
                    prop_assert_eq!(judged(index(s), s), MemberState::Up);
                }
            }
            // Every member whose judgement differs from its record is in the changes, once.
            for (i, (name, state)) in named.iter().enumerate() {
                let found = changes.iter().filter(|c| &c.node == name).count();
                prop_assert_eq!(found, usize::from(judged(i, name) != *state));
            }
        }
    }

    #[test]
    fn a_leader_whose_record_the_leader_before_made_suspect_finds_itself_up() {
        // b's record says SUSPECT: a's last judgement as leader, committed as b was elected.
        let members = [
            ("a".to_owned(), MemberState::Up),
            ("b".to_owned(), MemberState::Suspect),
        ];
        let changes = tick("b", &members, |_| HEARD_NOW, |_| READY);
        assert_eq!(
            changes,
            [Change {
                node: "b".into(),
                from: MemberState::Suspect,
                to: MemberState::Up,
                silent: Duration::ZERO,
                survivors: vec!["a".into()],
            }]
        );
    }

    #[test]
    fn a_member_judged_afresh_comes_back_up_only_once_heard_from() {
        let afresh = Silence {
            silent: Duration::from_millis(141),
            heard: false,
        };
        for lost in [MemberState::Down, MemberState::Suspect] {
            assert_eq!(next(lost, afresh, READY), lost, "{lost:?} without a beat");
            assert_eq!(next(lost, Silence { heard: true, ..afresh }, READY), MemberState::Up);
        }
        // Still declared DOWN by its silence alone, heard from or not.
        let long = Silence {
            silent: DOWN_AFTER,
            heard: false,
        };
        assert_eq!(next(MemberState::Suspect, long, READY), MemberState::Down);
        assert_eq!(next(MemberState::Up, afresh, READY), MemberState::Up);
    }

    #[test]
    fn a_member_back_from_down_is_up_only_once_its_log_caught_up() {
        let heard = heard_after(Duration::from_millis(100));
        let behind = readiness(false, false);
        // Restarted behind a long log: it beats, and runs nothing until it caught up. Its
        // work starts once it is UP, so that is not waited for.
        assert_eq!(next(MemberState::Down, heard, behind), MemberState::Down);
        let caught = readiness(true, false);
        assert_eq!(next(MemberState::Down, heard, caught), MemberState::Up);
        // A SUSPECT member whose work runs: heard from, it is UP whatever its log.
        let working = readiness(false, true);
        assert_eq!(next(MemberState::Suspect, heard, working), MemberState::Up);
        // An UP member that lags (a load) stays UP: its lease is all that counts.
        assert_eq!(next(MemberState::Up, heard, behind), MemberState::Up);
        let members = [("a".to_owned(), MemberState::Up), ("c".to_owned(), MemberState::Down)];
        let ready = |n: &str| match n {
            "c" => behind,
            _ => READY,
        };
        assert!(tick("a", &members, |_| heard, ready).is_empty());
        let changes = tick("a", &members, |_| heard, |_| READY);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].node.as_str(), changes[0].to), ("c", MemberState::Up));
    }

    #[test]
    fn a_suspect_member_heard_again_is_up_only_once_its_work_runs_again() {
        let heard = heard_after(Duration::from_millis(100));
        // Restarted before it was declared DOWN: it beats, and starts its work a moment later.
        let starting = readiness(true, false);
        assert_eq!(next(MemberState::Suspect, heard, starting), MemberState::Suspect);
        assert_eq!(next(MemberState::Suspect, heard, READY), MemberState::Up);
        // Still declared DOWN once silent long enough, working or not.
        let long = heard_after(DOWN_AFTER);
        assert_eq!(next(MemberState::Suspect, long, READY), MemberState::Down);
    }

    #[test]
    fn an_up_member_that_restarted_is_suspect_until_its_work_runs_again() {
        // Back within 1.5 s: never silent long enough to be SUSPECT for it.
        let heard = heard_after(Duration::from_millis(300));
        let restarted = Ready {
            caught_up: true,
            working: false,
            restarted: true,
        };
        assert_eq!(next(MemberState::Up, heard, restarted), MemberState::Suspect);
        assert_eq!(next(MemberState::Suspect, heard, restarted), MemberState::Suspect);
        assert_eq!(next(MemberState::Suspect, heard, READY), MemberState::Up);
        // Back from DOWN it starts its work only once UP: its restart is not held against it.
        let back = Ready {
            restarted: false,
            ..restarted
        };
        assert_eq!(next(MemberState::Down, heard, back), MemberState::Up);
        assert_eq!(next(MemberState::Up, heard, back), MemberState::Up);
    }

    #[test]
    fn a_member_is_caught_up_once_it_has_applied_the_log_not_only_held_it() {
        assert!(caught_up(true, Some(0)));
        assert!(caught_up(true, Some(APPLIED_WITHIN)));
        // Its log holds the entries, its state does not yet: its work would not run.
        assert!(!caught_up(true, Some(APPLIED_WITHIN + 1)));
        // It did not answer the last beat: how far it applied is not known.
        assert!(!caught_up(true, None));
        assert!(!caught_up(false, Some(0)));
    }

    #[test]
    fn two_members_lost_in_one_beat_do_not_take_each_others_work() {
        let members = [
            ("a".to_owned(), MemberState::Up),
            ("b".to_owned(), MemberState::Up),
            ("c".to_owned(), MemberState::Up),
            ("d".to_owned(), MemberState::Up),
        ];
        let silence = |n: &str| match n {
            "b" | "c" => heard_after(DOWN_AFTER),
            _ => HEARD_NOW,
        };
        let changes = tick("a", &members, silence, |_| READY);
        let survivors: Vec<&Vec<String>> = changes.iter().map(|c| &c.survivors).collect();
        assert_eq!(survivors, [&vec!["a".to_owned(), "d".to_owned()]; 2]);
    }
}
