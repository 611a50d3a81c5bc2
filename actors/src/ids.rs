//! Entity ids say which node holds the entity: `<uuid v7>@<node name>`. A lookup goes to that
//! one node, never to all of them. The uuid comes first, so ids sort by creation time.

/// A new id for an entity held by `node`.
pub fn new_id(node: &str) -> String {
    format!("{}@{node}", uuid::Uuid::now_v7())
}

/// The node an id says holds its entity.
pub fn home(id: &str) -> Option<&str> {
    id.rsplit_once('@').map(|(_, node)| node).filter(|n| !n.is_empty())
}

/// Whether the node `node` holds the entity `id`: the one its id names. (Every member's
/// store holds every entity's records; each node runs only what it holds.) An id that names
/// no node comes from a store that had one member, and is held by whichever node reads it.
pub fn held_by(id: &str, node: &str) -> bool {
    home(id).is_none_or(|home| home == node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_home_and_sort_by_creation() {
        let a = new_id("alpha");
        let b = new_id("beta.2");
        assert_eq!(home(&a), Some("alpha"));
        assert_eq!(home(&b), Some("beta.2"));
        assert!(a < b, "{a} then {b}");
        assert_eq!(home("no-home"), None);
        assert_eq!(home("x@"), None);
        assert!(held_by(&a, "alpha") && !held_by(&a, "beta.2") && held_by("no-home", "beta.2"));
    }
}
