//! Which agent runs a task: the target agent if it has room, or the least-loaded agent that
//! has the capability and room (ties go to the smaller id, so the choice is deterministic).

/// One agent as assignment sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub capabilities: &'a [String],
    pub running: u32,
    pub max: u32,
}

/// What a task asks for.
#[derive(Debug, Clone, Copy)]
pub enum Want<'a> {
    Agent(&'a str),
    Capability(&'a str),
}

pub fn pick<'a>(want: Want<'_>, agents: impl IntoIterator<Item = Candidate<'a>>) -> Option<&'a str> {
    let mut best: Option<Candidate<'a>> = None;
    for c in agents {
        if c.running >= c.max {
            continue;
        }
        let fits = match want {
            Want::Agent(id) => c.id == id,
            Want::Capability(cap) => c.capabilities.iter().any(|x| x == cap),
        };
        if !fits {
            continue;
        }
        // Compare load as a fraction of capacity: running/max, cross-multiplied.
        let better = match best {
            None => true,
            Some(b) => {
                let (l, r) = (
                    u64::from(c.running) * u64::from(b.max),
                    u64::from(b.running) * u64::from(c.max),
                );
                l < r || (l == r && c.id < b.id)
            }
        };
        if better {
            best = Some(c);
        }
    }
    best.map(|c| c.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_least_loaded_capable_agent_with_room_wins() {
        let echo = caps(&["echo"]);
        let other = caps(&["other"]);
        let agents = [
            Candidate {
                id: "a",
                capabilities: &echo,
                running: 2,
                max: 4,
            },
            Candidate {
                id: "b",
                capabilities: &echo,
                running: 1,
                max: 4,
            },
            Candidate {
                id: "c",
                capabilities: &other,
                running: 0,
                max: 4,
            },
            Candidate {
                id: "d",
                capabilities: &echo,
                running: 1,
                max: 1,
            },
        ];
        assert_eq!(pick(Want::Capability("echo"), agents), Some("b"));
        assert_eq!(pick(Want::Capability("none"), agents), None);
    }

    #[test]
    fn a_targeted_task_waits_for_its_agent() {
        let echo = caps(&["echo"]);
        let agents = [
            Candidate {
                id: "a",
                capabilities: &echo,
                running: 1,
                max: 1,
            },
            Candidate {
                id: "b",
                capabilities: &echo,
                running: 0,
                max: 1,
            },
        ];
        assert_eq!(pick(Want::Agent("a"), agents), None);
        assert_eq!(pick(Want::Agent("b"), agents), Some("b"));
    }

    #[test]
    fn ties_break_on_the_smaller_id() {
        let echo = caps(&["echo"]);
        let agents = [
            Candidate {
                id: "z",
                capabilities: &echo,
                running: 0,
                max: 2,
            },
            Candidate {
                id: "m",
                capabilities: &echo,
                running: 0,
                max: 2,
            },
        ];
        assert_eq!(pick(Want::Capability("echo"), agents), Some("m"));
    }
}
