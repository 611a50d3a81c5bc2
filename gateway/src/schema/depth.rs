//! The depth limit, counted on the operation's own fields: introspection (`__schema`,
//! `__type`) is bounded by the schema itself, and the standard introspection query nests far
//! deeper than any ordinary query needs to.
//!
//! It is checked before execution, on the request's parsed document (which async-graphql
//! keeps and does not parse again), rather than as a schema extension: any extension takes
//! every field resolution off async-graphql's fast path.

use std::collections::HashSet;

use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Name, Positioned, Request, ServerError};

/// Parses the request (once; the schema reuses the document) and refuses it if it nests
/// deeper than `max` fields.
pub fn check(request: &mut Request, max: usize) -> Result<(), ServerError> {
    let document = request.parsed_query()?;
    let depth = document
        .operations
        .iter()
        .map(|(_, op)| depth_of(&op.node.selection_set, document, &mut HashSet::new()))
        .max()
        .unwrap_or(0);
    if depth > max {
        let mut error = ServerError::new(
            format!("the query nests {depth} fields deep; at most {max} are allowed"),
            None,
        );
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", "INVALID_INPUT");
        error.extensions = Some(extensions);
        return Err(error);
    }
    Ok(())
}
/// The deepest chain of non-introspection fields under `set`, fragments inlined. A fragment
/// already on the current path counts nothing more (a cycle is refused by validation).
fn depth_of<'a>(set: &'a Positioned<SelectionSet>, doc: &'a ExecutableDocument, path: &mut HashSet<&'a Name>) -> usize {
    set.node
        .items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                if name == "__schema" || name == "__type" {
                    0
                } else {
                    1 + depth_of(&field.node.selection_set, doc, path)
                }
            }
            Selection::InlineFragment(inline) => depth_of(&inline.node.selection_set, doc, path),
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let fragment: Option<&Positioned<FragmentDefinition>> = doc.fragments.get(name);
                match fragment {
                    Some(f) if path.insert(name) => {
                        let d = depth_of(&f.node.selection_set, doc, path);
                        path.remove(name);
                        d
                    }
                    _ => 0,
                }
            }
        })
        .max()
        .unwrap_or(0)
}
