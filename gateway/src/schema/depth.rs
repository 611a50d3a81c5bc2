//! The depth limit, counted on the operation's own fields: introspection (`__schema`,
//! `__type`) is bounded by the schema itself, and the standard introspection query nests far
//! deeper than any ordinary query needs to.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, FragmentDefinition, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Name, Positioned, ServerError, ServerResult, Variables};

pub struct DepthLimit(pub usize);

impl ExtensionFactory for DepthLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DepthCheck(self.0))
    }
}

struct DepthCheck(usize);

#[async_graphql::async_trait::async_trait]
impl Extension for DepthCheck {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let depth = document
            .operations
            .iter()
            .map(|(_, op)| depth_of(&op.node.selection_set, &document, &mut HashSet::new()))
            .max()
            .unwrap_or(0);
        if depth > self.0 {
            let mut error = ServerError::new(
                format!("the query nests {depth} fields deep; at most {} are allowed", self.0),
                None,
            );
            let mut extensions = ErrorExtensionValues::default();
            extensions.set("code", "INVALID_INPUT");
            error.extensions = Some(extensions);
            return Err(error);
        }
        Ok(document)
    }
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
