//! The shape limits, checked on the parsed document before async-graphql sees it: how deep
//! the operation's own fields nest, and how many selections the document holds once its
//! fragments are inlined.
//!
//! The depth leaves introspection (`__schema`, `__type`) out: it is bounded by the schema
//! itself, and the standard introspection query nests far deeper than any ordinary query
//! needs to.
//!
//! The inlined size is what async-graphql's own checks walk (its recursion check, its
//! complexity and depth visitors) and what execution resolves, fragment by fragment, at every
//! spread: a 2 KB chain of fragments that each spread the one before twice inlines to 2^N
//! selections. This walk looks at each fragment once (its weight does not depend on where it
//! is spread), so it costs the document's size, and it refuses a document whose inlined size
//! is over the budget before anything walks it inline.
//!
//! It is checked on the request's parsed document (which async-graphql keeps and does not
//! parse again) rather than as a schema extension: any extension takes every field
//! resolution off async-graphql's fast path.

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Positioned, Request, ServerError};

/// Parses the request (once; the schema reuses the document) and refuses it if it nests
/// deeper than `max_depth` fields or inlines to more than `max_selections` selections.
pub fn check(request: &mut Request, max_depth: usize, max_selections: usize) -> Result<(), ServerError> {
    let document = request.parsed_query()?;
    let weight = weigh(document, max_selections).weight;
    let Some(weight) = weight.filter(|w| w.selections <= max_selections) else {
        return Err(ServerError::new(
            format!("the query holds more than {max_selections} selections once its fragments are inlined"),
            None,
        ));
    };
    if weight.depth > max_depth {
        return Err(ServerError::new(
            format!(
                "the query nests {} fields deep; at most {max_depth} are allowed",
                weight.depth
            ),
            None,
        ));
    }
    Ok(())
}

/// A selection set with its fragments inlined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Weight {
    /// The deepest chain of non-introspection fields.
    depth: usize,
    /// Fields, fragment spreads and inline fragments, saturating.
    selections: usize,
}

/// What one walk of a document found.
#[derive(Debug)]
struct Weighed {
    /// The whole document's weight: `None` once the walk itself went over the budget.
    weight: Option<Weight>,
    /// Selections this walk looked at: at most the document's own, each fragment once.
    #[cfg(test)]
    visited: usize,
}

/// Weighs every operation and every fragment definition (async-graphql walks both inline);
/// the depth is the operations' alone. The walk stops once it has looked at more than `budget` selections: the inlined size is
/// at least that, so the document is refused anyway.
fn weigh(doc: &ExecutableDocument, budget: usize) -> Weighed {
    let mut walk = Walk {
        doc,
        fragments: HashMap::new(),
        path: HashSet::new(),
        visited: 0,
        budget,
    };
    let mut whole = || {
        let mut total = Weight::default();
        for (_, operation) in doc.operations.iter() {
            total = total.add(walk.set(&operation.node.selection_set)?);
        }
        // A definition's own depth is not the query's: it counts only where it is spread.
        for name in doc.fragments.keys() {
            let selections = walk.fragment(name)?.selections;
            total.selections = total.selections.saturating_add(selections);
        }
        Some(total)
    };
    let weight = whole();
    Weighed {
        weight,
        #[cfg(test)]
        visited: walk.visited,
    }
}

impl Weight {
    fn add(self, other: Weight) -> Weight {
        Weight {
            depth: self.depth.max(other.depth),
            selections: self.selections.saturating_add(other.selections),
        }
    }
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    /// Each fragment's weight, once known.
    fragments: HashMap<&'a Name, Weight>,
    /// The fragments being weighed: one spread again inside itself counts nothing (a cycle,
    /// which validation refuses).
    path: HashSet<&'a Name>,
    visited: usize,
    budget: usize,
}

impl<'a> Walk<'a> {
    fn set(&mut self, set: &'a Positioned<SelectionSet>) -> Option<Weight> {
        let mut total = Weight::default();
        for item in &set.node.items {
            self.visited += 1;
            if self.visited > self.budget {
                return None;
            }
            let inner = match &item.node {
                Selection::Field(field) => {
                    let inner = self.set(&field.node.selection_set)?;
                    let name = field.node.name.node.as_str();
                    let depth = if name == "__schema" || name == "__type" {
                        0
                    } else {
                        1 + inner.depth
                    };
                    Weight { depth, ..inner }
                }
                Selection::InlineFragment(inline) => self.set(&inline.node.selection_set)?,
                Selection::FragmentSpread(spread) => self.fragment(&spread.node.fragment_name.node)?,
            };
            total = total.add(Weight {
                selections: inner.selections.saturating_add(1),
                ..inner
            });
        }
        Some(total)
    }

    fn fragment(&mut self, name: &'a Name) -> Option<Weight> {
        if let Some(known) = self.fragments.get(name) {
            return Some(*known);
        }
        let Some((name, fragment)) = self.doc.fragments.get_key_value(name) else {
            // An unknown fragment: validation refuses it.
            return Some(Weight::default());
        };
        if !self.path.insert(name) {
            return Some(Weight::default());
        }
        let weight = self.set(&fragment.node.selection_set);
        self.path.remove(name);
        let weight = weight?;
        self.fragments.insert(name, weight);
        Some(weight)
    }
}

#[cfg(test)]
mod tests;
