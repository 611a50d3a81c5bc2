//! This process's own pauses: stretches during which it did not run at all (stopped by
//! SIGSTOP, its VM paused, a machine so overloaded that a thread waking every 100 ms did not
//! run for a second). A wait that timed out across one says so, rather than blame whom it
//! waited for: a node frozen for 8 s while it waited for a peer said "node a did not answer
//! within 5000 ms" of a peer that was fine.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the watcher wakes.
const TICK: Duration = Duration::from_millis(100);
/// A gap between two wakes longer than this is a pause.
const PAUSED_PAST: Duration = Duration::from_secs(1);
/// The pauses kept, the newest last.
const KEPT: usize = 16;

#[derive(Debug)]
struct Watched {
    /// When the watcher last woke.
    last: Instant,
    /// Each pause seen: when it ended and how long it lasted.
    pauses: VecDeque<(Instant, Duration)>,
}

static WATCHED: OnceLock<Mutex<Watched>> = OnceLock::new();

fn watched() -> &'static Mutex<Watched> {
    WATCHED.get_or_init(|| {
        std::thread::Builder::new()
            .name("troupe-pauses".into())
            .spawn(watch)
            .expect("the pause watcher's thread starts");
        Mutex::new(Watched {
            last: Instant::now(),
            pauses: VecDeque::new(),
        })
    })
}

fn watch() {
    loop {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let mut w = watched().lock().unwrap_or_else(|p| p.into_inner());
        let gap = now.saturating_duration_since(w.last);
        if gap > PAUSED_PAST {
            if w.pauses.len() == KEPT {
                w.pauses.pop_front();
            }
            w.pauses.push_back((now, gap - TICK));
        }
        w.last = now;
    }
}

/// Starts watching, if nobody did yet: a pause before this is not seen.
pub fn watch_from_now() {
    watched();
}

/// How long this process did not run since `since`: the pauses seen that ended after it
/// (the part after it), and one under way that the watcher has not woken from yet (a
/// process just resumed runs its other threads first, maybe this caller's). Zero for short
/// stalls.
pub fn paused_since(since: Instant) -> Duration {
    let w = watched().lock().unwrap_or_else(|p| p.into_inner());
    paused(&w.pauses, w.last, since, Instant::now())
}

fn paused(pauses: &VecDeque<(Instant, Duration)>, last: Instant, since: Instant, now: Instant) -> Duration {
    let seen: Duration = pauses
        .iter()
        .filter(|(ended, _)| *ended > since)
        .map(|(ended, lasted)| (*lasted).min(ended.saturating_duration_since(since)))
        .sum();
    let under_way = now.saturating_duration_since(last);
    let under_way = match under_way > PAUSED_PAST {
        true => (under_way - TICK).min(now.saturating_duration_since(since)),
        false => Duration::ZERO,
    };
    seen + under_way
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_counts_the_pauses_within_it_and_one_not_seen_yet() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut pauses: VecDeque<_> = [(at(10), Duration::from_secs(8))].into();
        // A wait from 1 s to 12 s, the watcher awake: the pause from 2 s to 10 s.
        assert_eq!(paused(&pauses, at(12), at(1), at(12)), Duration::from_secs(8));
        // Begun during that pause (at 4 s of its 8): only what came after.
        assert_eq!(paused(&pauses, at(12), at(6), at(12)), Duration::from_secs(4));
        // Another, of 3 s, ended at 30 s: a wait from 1 s counts both.
        pauses.push_back((at(30), Duration::from_secs(3)));
        assert_eq!(paused(&pauses, at(30), at(1), at(30)), Duration::from_secs(11));
        // After both, nothing; a short stall is none.
        assert_eq!(paused(&pauses, at(31), at(31), at(31) + TICK), Duration::ZERO);
        // Resumed a moment ago, before the watcher woke: the pause under way counts.
        let under_way = paused(&pauses, at(31), at(32), at(40));
        assert_eq!(under_way, Duration::from_secs(8));
    }
}
