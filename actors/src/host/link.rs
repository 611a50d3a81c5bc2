//! Whether a host's driver can talk to its host, as a pure state machine: the driver turns
//! its timer and its probes' answers into [`Input`]s, and carries out the [`Effect`]s
//! [`LinkMachine::step`] returns.
//!
//! ```text
//!            probe fails                 gone for host_down_after_ms
//!   UP ───────────────────▶ UNREACHABLE ─────────────────────────────▶ DOWN ──▶ evacuate
//!    ▲                          │  reconnect every 0.2 s, doubling to 5 s  │   (one at a time,
//!    └──────── reconnect ok ────┴──────────────────────────────────────────┘    again each tick)
//! ```
//!
//! An UP host is probed (its domains listed) at each tick; an UNREACHABLE or DOWN one is
//! reconnected to when its backoff allows. A host DOWN is evacuated: one evacuation at a time,
//! tried again at each tick for the VMs that found no host the last time.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Reconnect attempts start this far apart and double up to [`RECONNECT_MAX`].
pub const RECONNECT_BASE: Duration = Duration::from_millis(200);
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Whether the driver can talk to the host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Link {
    Up,
    Unreachable { since: DateTime<Utc> },
    Down { since: DateTime<Utc> },
}

/// When an input happens: the monotonic instant paces reconnects; the wall-clock time is the
/// link's `since`, which the fleet keeps across driver restarts.
#[derive(Debug, Clone, Copy)]
pub struct At {
    pub instant: Instant,
    pub wall: DateTime<Utc>,
}

impl At {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: troupe_runtime::clock::now(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The driver started: it looks at the host at once, reconnecting first.
    Start,
    /// The reconcile timer fired; `has_vms` says whether the host holds a VM to evacuate.
    Tick { has_vms: bool },
    /// A listing of the host's domains answered, or failed with this error.
    Swept(Result<(), String>),
    /// A reconnect (connection, capacity and domains) answered, or failed with this error.
    Connected(Result<(), String>),
    /// An evacuation ended.
    Evacuated,
    /// A fault was injected or healed: the host is tried again at the next tick.
    Reset,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Hand the domains the probe found to the VM actors, and destroy stale copies.
    Sweep,
    /// Record the link (UP with the capacity the probe found), with the reason it is not UP.
    Record { link: Link, error: Option<String> },
    /// Keep the error as the host's last one; its state does not change.
    NoteError(String),
    /// Tell every VM actor its host cannot be asked.
    TellUnreachable,
    /// Look at the host in a task of its own: list its domains, or reconnect first.
    Probe { connect: bool },
    /// Evacuate the host's VMs; an [`Input::Evacuated`] must follow.
    Evacuate,
}

#[derive(Debug, Clone)]
pub struct LinkMachine {
    link: Link,
    down_after: Duration,
    backoff: Duration,
    next_attempt: Instant,
    /// A probe is under way: ticks start no other until it reports.
    probing: bool,
    evacuating: bool,
}

impl LinkMachine {
    /// A machine for a host whose link is `link` (as the fleet last knew it), ready to
    /// reconnect at once.
    pub fn new(link: Link, down_after: Duration, now: Instant) -> Self {
        Self {
            link,
            down_after,
            backoff: RECONNECT_BASE,
            next_attempt: now,
            probing: false,
            evacuating: false,
        }
    }

    pub fn link(&self) -> Link {
        self.link
    }

    /// What `input` at `at` changes, and what the driver must do, in order.
    pub fn step(&mut self, input: Input, at: At) -> Vec<Effect> {
        match input {
            Input::Start => vec![self.probe(true)],
            Input::Tick { has_vms } => self.tick(has_vms, at),
            Input::Swept(Ok(())) => {
                self.probing = false;
                vec![Effect::Sweep]
            }
            Input::Swept(Err(error)) => {
                self.probing = false;
                if self.link != Link::Up {
                    return Vec::new();
                }
                self.link = Link::Unreachable { since: at.wall };
                self.next_attempt = at.instant + self.backoff;
                vec![
                    Effect::Record {
                        link: self.link,
                        error: Some(error),
                    },
                    Effect::TellUnreachable,
                ]
            }
            Input::Connected(Ok(())) => {
                self.probing = false;
                self.backoff = RECONNECT_BASE;
                self.link = Link::Up;
                // Stale copies go before the host takes new VMs again.
                vec![
                    Effect::Sweep,
                    Effect::Record {
                        link: Link::Up,
                        error: None,
                    },
                ]
            }
            Input::Connected(Err(error)) => {
                self.probing = false;
                self.next_attempt = at.instant + self.backoff;
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                if self.link == Link::Up {
                    self.link = Link::Unreachable { since: at.wall };
                    vec![Effect::Record {
                        link: self.link,
                        error: Some(error),
                    }]
                } else {
                    vec![Effect::NoteError(error)]
                }
            }
            Input::Evacuated => {
                self.evacuating = false;
                Vec::new()
            }
            Input::Reset => {
                self.next_attempt = at.instant;
                self.backoff = RECONNECT_BASE;
                Vec::new()
            }
        }
    }

    fn tick(&mut self, has_vms: bool, at: At) -> Vec<Effect> {
        if self.probing {
            return Vec::new();
        }
        let mut effects = Vec::new();
        match self.link {
            Link::Up => effects.push(self.probe(false)),
            Link::Unreachable { since } => {
                let gone_for = (at.wall - since).to_std().unwrap_or_default();
                if gone_for >= self.down_after {
                    self.link = Link::Down { since };
                    effects.push(Effect::Record {
                        link: self.link,
                        error: None,
                    });
                    effects.extend(self.evacuate(has_vms));
                } else if at.instant >= self.next_attempt {
                    effects.push(self.probe(true));
                }
            }
            Link::Down { .. } => {
                // VMs that found no host last time are tried again.
                effects.extend(self.evacuate(has_vms));
                if at.instant >= self.next_attempt {
                    effects.push(self.probe(true));
                }
            }
        }
        effects
    }

    fn probe(&mut self, connect: bool) -> Effect {
        self.probing = true;
        Effect::Probe { connect }
    }

    fn evacuate(&mut self, has_vms: bool) -> Option<Effect> {
        if self.evacuating || !has_vms {
            return None;
        }
        self.evacuating = true;
        Some(Effect::Evacuate)
    }
}

#[cfg(test)]
mod tests;
