//! Link faults a fault experiment arms on the messages delivered to an agent
//! (`MESSAGE_DELAY`, `MESSAGE_DROP`): checked as each message leaves its mailbox for the agent,
//! from the senders named (every sender when none), each message hit with the fault's
//! probability, drawn from the experiment's seed so a run replays.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rand::{Rng, SeedableRng};
use troupe_runtime::store::Hits;

use super::Message;

/// What a link fault does to a message it hits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkEffect {
    /// Delivered after `delay`, give or take `jitter`.
    Delay { delay: Duration, jitter: Duration },
    /// Lost in transit: never delivered; its sender hears nothing until its time is up.
    Drop,
}

/// A link fault: the messages to `to` from `from` (any sender when empty).
#[derive(Debug, Clone)]
pub struct LinkFault {
    pub to: String,
    pub from: Vec<String>,
    pub effect: LinkEffect,
    /// The share of the messages hit, from 0 to 1.
    pub probability: f64,
    pub seed: u64,
}

struct Armed {
    id: String,
    fault: LinkFault,
    rng: rand::rngs::StdRng,
    hits: Hits,
}

/// The link faults armed on this node's mailboxes.
#[derive(Clone, Default)]
pub struct LinkFaults(Arc<Mutex<Vec<Armed>>>);

impl LinkFaults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Armed>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn arm(&self, id: &str, fault: LinkFault) {
        let mut all = self.lock();
        all.retain(|a| a.id != id);
        all.push(Armed {
            id: id.to_owned(),
            rng: rand::rngs::StdRng::seed_from_u64(fault.seed),
            fault,
            hits: Hits::default(),
        });
    }

    /// Disarms `id`: how often it hit (nothing when it was not armed).
    pub fn disarm(&self, id: &str) -> Option<Hits> {
        let mut all = self.lock();
        let at = all.iter().position(|a| a.id == id)?;
        Some(all.remove(at).hits)
    }

    /// What happens to `message` on its way to its agent: the first armed fault on its link
    /// that hits it (a drop wins over a delay).
    pub fn check(&self, message: &Message) -> Option<LinkEffect> {
        let mut all = self.lock();
        let mut effect = None;
        for a in all.iter_mut() {
            let on_link = a.fault.to == message.to
                && (a.fault.from.is_empty() || message.from.as_ref().is_some_and(|f| a.fault.from.contains(f)));
            if !on_link || !a.rng.random_bool(a.fault.probability.clamp(0.0, 1.0)) {
                continue;
            }
            a.hits.hits += 1;
            a.hits.first.get_or_insert_with(Utc::now);
            let drawn = match a.fault.effect {
                LinkEffect::Delay { delay, jitter } if !jitter.is_zero() => {
                    let spread = a.rng.random_range(0..=jitter.as_millis() as u64 * 2);
                    LinkEffect::Delay {
                        delay: (delay + Duration::from_millis(spread)).saturating_sub(jitter),
                        jitter: Duration::ZERO,
                    }
                }
                other => other,
            };
            if drawn == LinkEffect::Drop {
                return Some(drawn);
            }
            effect = effect.or(Some(drawn));
        }
        effect
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Priority;

    fn message(to: &str, from: Option<&str>) -> Message {
        Message {
            id: "m".into(),
            to: to.into(),
            from: from.map(String::from),
            payload: serde_json::Value::Null,
            priority: Priority::Normal,
            timeout_ms: 1000,
        }
    }

    fn fault(effect: LinkEffect, from: &[&str], probability: f64) -> LinkFault {
        LinkFault {
            to: "b".into(),
            from: from.iter().map(|s| s.to_string()).collect(),
            effect,
            probability,
            seed: 7,
        }
    }

    #[test]
    fn a_link_fault_hits_only_its_link_and_counts_what_it_hit() {
        let faults = LinkFaults::default();
        faults.arm("x", fault(LinkEffect::Drop, &["a"], 1.0));
        assert_eq!(faults.check(&message("b", Some("a"))), Some(LinkEffect::Drop));
        assert_eq!(faults.check(&message("b", Some("c"))), None);
        assert_eq!(faults.check(&message("b", None)), None);
        assert_eq!(faults.check(&message("c", Some("a"))), None);
        let hits = faults.disarm("x").unwrap();
        assert_eq!(hits.hits, 1);
        assert!(hits.first.is_some());
        assert_eq!(faults.check(&message("b", Some("a"))), None);
    }

    #[test]
    fn a_probability_hits_a_share_and_a_seed_replays_it_and_jitter_stays_within_bounds() {
        let draws = |seed_faults: &LinkFaults| -> Vec<bool> {
            (0..200)
                .map(|_| seed_faults.check(&message("b", None)).is_some())
                .collect()
        };
        let (one, two) = (LinkFaults::default(), LinkFaults::default());
        let half = fault(
            LinkEffect::Delay {
                delay: Duration::from_millis(100),
                jitter: Duration::from_millis(20),
            },
            &[],
            0.5,
        );
        one.arm("x", half.clone());
        two.arm("x", half);
        let (a, b) = (draws(&one), draws(&two));
        assert_eq!(a, b, "the same seed hits the same messages");
        let hit = a.iter().filter(|h| **h).count();
        assert!((50..150).contains(&hit), "{hit} of 200");
        for _ in 0..100 {
            if let Some(LinkEffect::Delay { delay, .. }) = one.check(&message("b", None)) {
                assert!((80..=120).contains(&(delay.as_millis() as u64)), "{delay:?}");
            }
        }
    }
}
