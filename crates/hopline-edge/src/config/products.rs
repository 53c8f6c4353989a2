//! Product sections in the edge's file, without the edge knowing any product: a top-level
//! table of named tables that is not one of the edge's own (`[realtime.live]`,
//! `[notify.main]`, …) is a product kind's. Its sections are lifted out before the edge
//! reads the file (the product reads them itself); the edge keeps their names, to check
//! the routes that name them, and where they are, for errors. A route's `KIND = "NAME"`,
//! where the file has `[KIND.NAME]`, is `service = "KIND:NAME"` written shorter.
//!
//! Which kinds exist is the binary's to say: it registers a service per kind and name,
//! and the server refuses a file whose sections no registered product serves.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// The top-level keys of the edge's own config (the fields of `Config`).
const EDGE_KEYS: &[&str] = &[
    "threads",
    "access_log",
    "limits",
    "file_cache",
    "site",
    "upstream",
    "admin",
    "stream",
    "cache",
    "limit",
    "dns",
    "acme",
];

/// The sections of one product kind in the file.
#[derive(Debug, Clone, Default)]
pub struct ProductSections {
    /// Their names (`live` for `[realtime.live]`).
    pub names: BTreeSet<String>,
    /// Where the kind's first section is: (line, column), 1-based.
    pub at: (usize, usize),
}

/// Lifts the product sections out of `root` and rewrites routes' `KIND = "NAME"` into
/// `service = "KIND:NAME"`. An error is a span of `text` and what was expected.
pub(crate) fn lift(
    root: &mut DeTable<'_>,
    text: &str,
) -> Result<BTreeMap<String, ProductSections>, (Range<usize>, String)> {
    let kinds: Vec<String> = root
        .iter()
        .filter(|(k, v)| {
            !EDGE_KEYS.contains(&k.get_ref().as_ref())
                && matches!(v.get_ref(), DeValue::Table(t)
                    if !t.is_empty() && t.values().all(|s| matches!(s.get_ref(), DeValue::Table(_))))
        })
        .map(|(k, _)| k.get_ref().to_string())
        .collect();
    let mut products = BTreeMap::new();
    for kind in kinds {
        let Some((key, value)) = root.remove_entry(kind.as_str()) else {
            continue;
        };
        let DeValue::Table(sections) = value.into_inner() else {
            continue;
        };
        let (line, col) = crate::config::error::line_col(text, key.span().start);
        products.insert(
            kind,
            ProductSections {
                names: sections.keys().map(|k| k.get_ref().to_string()).collect(),
                at: (line, col),
            },
        );
    }
    if let Some(sites) = root.get_mut("site")
        && let DeValue::Array(sites) = sites.get_mut()
    {
        for site in sites.iter_mut() {
            let DeValue::Table(site) = site.get_mut() else {
                continue;
            };
            let Some(routes) = site.get_mut("route") else {
                continue;
            };
            let DeValue::Array(routes) = routes.get_mut() else {
                continue;
            };
            for route in routes.iter_mut() {
                if let DeValue::Table(route) = route.get_mut() {
                    shorthand(route, &products)?;
                }
            }
        }
    }
    Ok(products)
}

/// `KIND = "NAME"` in a route → `service = "KIND:NAME"`.
fn shorthand(
    route: &mut DeTable<'_>,
    products: &BTreeMap<String, ProductSections>,
) -> Result<(), (Range<usize>, String)> {
    for kind in products.keys() {
        let Some((key, value)) = route.remove_entry(kind.as_str()) else {
            continue;
        };
        let span = value.span();
        let DeValue::String(name) = value.into_inner() else {
            return Err((
                span,
                format!("`{kind}` names a [{kind}.NAME] section: expected a string"),
            ));
        };
        if route.contains_key("service") {
            return Err((
                key.span(),
                format!(
                    "`{kind} = \"{name}\"` and `service` both name this route's handler: keep one"
                ),
            ));
        }
        route.insert(
            Spanned::new(key.span(), Cow::Borrowed("service")),
            Spanned::new(span, DeValue::String(Cow::Owned(format!("{kind}:{name}")))),
        );
    }
    Ok(())
}
