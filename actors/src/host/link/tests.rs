use super::*;

const DOWN_AFTER: Duration = Duration::from_secs(10);

/// A clock the tests move by hand.
struct Clock {
    start: At,
    offset: Duration,
}

impl Clock {
    fn new() -> Self {
        Self {
            start: At::now(),
            offset: Duration::ZERO,
        }
    }

    fn at(&self) -> At {
        At {
            instant: self.start.instant + self.offset,
            wall: self.start.wall + chrono::Duration::from_std(self.offset).unwrap(),
        }
    }

    fn advance(&mut self, by: Duration) -> At {
        self.offset += by;
        self.at()
    }
}

fn up(clock: &Clock) -> LinkMachine {
    let mut m = LinkMachine::new(
        Link::Unreachable { since: clock.at().wall },
        DOWN_AFTER,
        clock.at().instant,
    );
    m.step(Input::Connected(Ok(())), clock.at());
    assert_eq!(m.link(), Link::Up);
    m
}

fn tick(has_vms: bool) -> Input {
    Input::Tick { has_vms }
}

fn failed(why: &str) -> Result<(), String> {
    Err(why.to_owned())
}

#[test]
fn a_connect_sweeps_before_the_host_is_recorded_up() {
    let clock = Clock::new();
    let since = clock.at().wall;
    let mut m = LinkMachine::new(Link::Unreachable { since }, DOWN_AFTER, clock.at().instant);
    let effects = m.step(Input::Connected(Ok(())), clock.at());
    assert_eq!(
        effects,
        vec![
            Effect::Sweep,
            Effect::Record {
                link: Link::Up,
                error: None
            }
        ]
    );
}

#[test]
fn an_up_host_is_probed_once_at_a_time() {
    let mut clock = Clock::new();
    let mut m = up(&clock);
    let at = clock.advance(Duration::from_millis(50));
    assert_eq!(m.step(tick(true), at), vec![Effect::Probe { connect: false }]);
    // The probe has not answered: the next tick starts no other.
    let at = clock.advance(Duration::from_millis(50));
    assert_eq!(m.step(tick(true), at), vec![]);
    assert_eq!(m.step(Input::Swept(Ok(())), at), vec![Effect::Sweep]);
    assert_eq!(m.step(tick(true), at), vec![Effect::Probe { connect: false }]);
}

#[test]
fn a_failed_sweep_makes_the_host_unreachable_and_tells_its_vms() {
    let mut clock = Clock::new();
    let mut m = up(&clock);
    m.step(tick(true), clock.at());
    let at = clock.advance(Duration::from_millis(300));
    let effects = m.step(Input::Swept(failed("no answer")), at);
    let since = at.wall;
    assert_eq!(
        effects,
        vec![
            Effect::Record {
                link: Link::Unreachable { since },
                error: Some("no answer".into())
            },
            Effect::TellUnreachable
        ]
    );
    // The first reconnect waits the base backoff.
    let at = clock.advance(Duration::from_millis(100));
    assert_eq!(m.step(tick(true), at), vec![]);
    let at = clock.advance(Duration::from_millis(100));
    assert_eq!(m.step(tick(true), at), vec![Effect::Probe { connect: true }]);
}

#[test]
fn a_late_sweep_failure_of_a_host_not_up_changes_nothing() {
    let mut clock = Clock::new();
    let since = clock.at().wall;
    let mut m = LinkMachine::new(Link::Down { since }, DOWN_AFTER, clock.at().instant);
    let at = clock.advance(Duration::from_secs(1));
    assert_eq!(m.step(Input::Swept(failed("late")), at), vec![]);
    assert_eq!(m.link(), Link::Down { since });
}

#[test]
fn reconnects_back_off_from_a_fifth_of_a_second_doubling_to_five_seconds() {
    let mut clock = Clock::new();
    let mut m = up(&clock);
    m.step(tick(false), clock.at());
    m.step(Input::Swept(failed("lost")), clock.at());
    // The sweep's failure set the first wait; each failed reconnect doubles the next.
    let mut waits = Vec::new();
    let mut last = clock.at().instant;
    for _ in 0..8 {
        let at = loop {
            let at = clock.advance(Duration::from_millis(50));
            if m.step(tick(false), at) == vec![Effect::Probe { connect: true }] {
                break at;
            }
        };
        waits.push((at.instant - last).as_millis());
        last = at.instant;
        m.step(Input::Connected(failed("refused")), at);
    }
    assert_eq!(waits, vec![200, 200, 400, 800, 1600, 3200, 5000, 5000]);
    // The host went DOWN on the way (after host_down_after); reconnects kept their pace.
    assert!(matches!(m.link(), Link::Down { .. }), "{:?}", m.link());
}

#[test]
fn a_failed_reconnect_of_a_host_not_up_only_notes_the_error() {
    let clock = Clock::new();
    let since = clock.at().wall;
    let mut m = LinkMachine::new(Link::Unreachable { since }, DOWN_AFTER, clock.at().instant);
    assert_eq!(m.step(tick(false), clock.at()), vec![Effect::Probe { connect: true }]);
    assert_eq!(
        m.step(Input::Connected(failed("refused")), clock.at()),
        vec![Effect::NoteError("refused".into())]
    );
    assert_eq!(m.link(), Link::Unreachable { since });
}

#[test]
fn a_failed_reconnect_of_an_up_host_makes_it_unreachable() {
    let clock = Clock::new();
    let mut m = up(&clock);
    let effects = m.step(Input::Connected(failed("refused")), clock.at());
    let since = clock.at().wall;
    assert_eq!(
        effects,
        vec![Effect::Record {
            link: Link::Unreachable { since },
            error: Some("refused".into())
        }]
    );
}

#[test]
fn a_host_gone_for_host_down_after_is_down_and_evacuated_once_at_a_time() {
    let mut clock = Clock::new();
    let mut m = up(&clock);
    m.step(tick(true), clock.at());
    let since = clock.at().wall;
    m.step(Input::Swept(failed("lost")), clock.at());
    // Just before host_down_after the host is still UNREACHABLE.
    let at = clock.advance(DOWN_AFTER - Duration::from_millis(1));
    assert_eq!(m.step(tick(true), at), vec![Effect::Probe { connect: true }]);
    m.step(Input::Connected(failed("lost")), at);
    let at = clock.advance(Duration::from_millis(1));
    assert_eq!(
        m.step(tick(true), at),
        vec![
            Effect::Record {
                link: Link::Down { since },
                error: None
            },
            Effect::Evacuate
        ]
    );
    // While the evacuation runs no other starts; reconnects go on.
    let at = clock.advance(Duration::from_secs(1));
    assert_eq!(m.step(tick(true), at), vec![Effect::Probe { connect: true }]);
    m.step(Input::Connected(failed("lost")), at);
    let at = clock.advance(Duration::from_millis(50));
    assert_eq!(m.step(tick(true), at), vec![]);
    // Once it ends, VMs that found no host are tried again.
    m.step(Input::Evacuated, at);
    assert_eq!(m.step(tick(true), at), vec![Effect::Evacuate]);
    // A host with no VM has nothing to evacuate.
    m.step(Input::Evacuated, at);
    assert_eq!(m.step(tick(false), at), vec![]);
}

#[test]
fn a_down_host_that_answers_again_is_up() {
    let mut clock = Clock::new();
    let since = clock.at().wall;
    let mut m = LinkMachine::new(Link::Down { since }, DOWN_AFTER, clock.at().instant);
    let at = clock.advance(Duration::from_millis(10));
    assert_eq!(m.step(tick(false), at), vec![Effect::Probe { connect: true }]);
    let effects = m.step(Input::Connected(Ok(())), at);
    assert_eq!(
        effects.last(),
        Some(&Effect::Record {
            link: Link::Up,
            error: None
        })
    );
    assert_eq!(m.link(), Link::Up);
}

#[test]
fn a_reset_retries_at_once_from_the_base_backoff() {
    let mut clock = Clock::new();
    let mut m = up(&clock);
    m.step(tick(false), clock.at());
    m.step(Input::Swept(failed("lost")), clock.at());
    // Four failed reconnects: the next one would wait 1.6 s.
    for _ in 0..4 {
        let at = clock.advance(Duration::from_secs(2));
        m.step(tick(false), at);
        m.step(Input::Connected(failed("lost")), at);
    }
    let at = clock.advance(Duration::from_millis(10));
    assert_eq!(m.step(tick(false), at), vec![]);
    m.step(Input::Reset, at);
    assert_eq!(m.step(tick(false), at), vec![Effect::Probe { connect: true }]);
    m.step(Input::Connected(failed("still lost")), at);
    let at = clock.advance(Duration::from_millis(200));
    assert_eq!(m.step(tick(false), at), vec![Effect::Probe { connect: true }]);
}

#[test]
fn a_started_driver_reconnects_at_once_and_ticks_wait_for_the_answer() {
    let mut clock = Clock::new();
    let mut m = LinkMachine::new(Link::Up, DOWN_AFTER, clock.at().instant);
    assert_eq!(m.step(Input::Start, clock.at()), vec![Effect::Probe { connect: true }]);
    let at = clock.advance(Duration::from_secs(1));
    assert_eq!(m.step(tick(true), at), vec![]);
    m.step(Input::Connected(Ok(())), at);
    assert_eq!(m.step(tick(true), at), vec![Effect::Probe { connect: false }]);
}
