//! Topics: names messages are published on, and the patterns agents subscribe with. Pure
//! string matching, no I/O.

use crate::error::ApiError;

/// Checks a topic (dot-separated segments of letters, digits, `-`, `_`), or with `pattern` a
/// topic pattern, where a segment may also be `*` (exactly one segment) or `#` (zero or more).
pub fn check_topic(topic: &str, pattern: bool) -> Result<(), ApiError> {
    let ok = !topic.is_empty()
        && topic.len() <= 255
        && topic.split('.').all(|s| {
            (pattern && (s == "*" || s == "#"))
                || (!s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)))
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{} {topic:?}: dot-separated segments of letters, digits, '-' and '_'{}",
            if pattern { "topic pattern" } else { "topic" },
            if pattern {
                ", or * (one segment) and # (any number of segments)"
            } else {
                ""
            }
        )))
    }
}

/// Whether `topic` matches `pattern` (`*` one segment, `#` zero or more).
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    fn go(p: &[&str], t: &[&str]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    go(&p, &t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_matches_one_segment_and_hash_any_number() {
        assert!(topic_matches("health.*", "health.db"));
        assert!(!topic_matches("health.*", "health.db.latency"));
        assert!(!topic_matches("health.*", "health"));
        assert!(topic_matches("builds.#", "builds"));
        assert!(topic_matches("builds.#", "builds.linux.arm64"));
        assert!(topic_matches("#.failed", "builds.linux.failed"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.b.d"));
        assert!(check_topic("health.*", true).is_ok());
        assert!(check_topic("health.*", false).is_err());
        assert!(check_topic("a..b", true).is_err());
    }
}
