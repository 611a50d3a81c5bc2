//! The weighing walk: exact on small documents, linear on fragment chains whose inlined size
//! is exponential.

use async_graphql::parser::parse_query;

use super::*;

/// `levels` fragments, each spreading the one before twice, under one query: the document
/// holds `2 * levels + 3` selections and inlines to about `2^levels`.
fn chain(levels: usize) -> String {
    let mut query = format!("query {{ ...F{levels} }}\nfragment F0 on Query {{ node {{ name }} }}\n");
    for level in 1..=levels {
        let before = level - 1;
        query.push_str(&format!("fragment F{level} on Query {{ ...F{before} ...F{before} }}\n"));
    }
    query
}

#[test]
fn fragments_are_weighed_once_however_often_they_are_spread() {
    let levels = 40;
    let doc = parse_query(chain(levels)).unwrap();
    let own = 2 * levels + 3;
    let weighed = weigh(&doc, 20_000);
    assert!(
        weighed.visited <= own,
        "the walk looked at {} selections of a document that holds {own}",
        weighed.visited
    );
    // Its inlined size is far over any budget, even one the walk itself never reaches.
    let weighed = weigh(&doc, usize::MAX);
    assert!(weighed.visited <= own, "{weighed:?}");
    let weight = weighed.weight.unwrap();
    assert!(weight.selections > 1 << levels, "{weight:?}");
    assert_eq!(weight.depth, 2, "{weight:?}");
}

#[test]
fn a_chain_of_fragments_that_inlines_past_the_budget_is_refused() {
    let mut request = Request::new(chain(40));
    let error = check(&mut request, 12, 20_000).unwrap_err();
    assert!(
        error.message.contains("more than 20000 selections"),
        "{}",
        error.message
    );
    let mut small = Request::new(chain(3));
    check(&mut small, 12, 20_000).unwrap();
}

#[test]
fn weight_counts_inlined_selections_and_the_deepest_field_chain() {
    let query = "{ ...A node { name } }
        fragment A on Query { ...B supervisionTree { id } }
        fragment B on Query { supervisionTree { children { id } } __schema { types { name } } }";
    let doc = parse_query(query).unwrap();
    let weighed = weigh(&doc, 20_000);
    // B is 3 + 3 = 6; A is `...B` (1 + 6) + 2 = 9; the operation is `...A` (1 + 9) + 2 = 12.
    // A's and B's definitions are walked inline too, as validation does: 9 + 6.
    assert_eq!(
        weighed.weight,
        Some(Weight {
            depth: 3,
            selections: 12 + 9 + 6
        })
    );
}

#[test]
fn a_fragment_cycle_ends_the_walk_and_counts_nothing() {
    let query = "{ ...A } fragment A on Query { node { name } ...B } fragment B on Query { ...A }";
    let doc = parse_query(query).unwrap();
    let weighed = weigh(&doc, 20_000);
    assert_eq!(weighed.weight.map(|w| w.depth), Some(2));
}
