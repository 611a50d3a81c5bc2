//! Entity ids say which node made the entity: `<uuid v7>@<node name>`; it lives there until
//! the cluster moves it (see [`crate::cluster::directory`]). A lookup goes to one node, never
//! to all of them. The uuid comes first, so ids sort by creation time.

/// A new id for an entity held by `node`.
pub fn new_id(node: &str) -> String {
    format!("{}@{node}", uuid::Uuid::now_v7())
}

/// The node an id says holds its entity.
pub fn home(id: &str) -> Option<&str> {
    id.rsplit_once('@').map(|(_, node)| node).filter(|n| !n.is_empty())
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
    }
}
