//! The lists of tables of the file (`[[site]]`, `[[stream]]`, `[[dns.resolver]]`, …) and
//! the lists inside their entries (`[[site.route]]`), checked before serde reads them: a
//! `[[site.route]]` with no `[[site]]` above it, or a `[site]` written for `[[site]]`, is
//! said in those terms at its line — not as TOML's "expected a list, found map" about a
//! table the file never wrote.

use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Every list of tables of the edge's file (and of the `[dns]` part it hands on), by its
/// dotted path; a path with a dot is a list inside each entry of the list before it.
const LISTS: &[&str] = &[
    "site",
    "site.route",
    "stream",
    "dns.resolver",
    "dns.authoritative",
    "dns.authoritative.zones",
    "dns.pool",
    "dns.pool.addresses",
];

/// A list of `LISTS` written as something else: the span to blame and what was expected.
pub(crate) fn check(root: &DeTable<'_>, text: &str) -> Result<(), (Range<usize>, String)> {
    within(root, "", text)
}

fn within(table: &DeTable<'_>, path: &str, text: &str) -> Result<(), (Range<usize>, String)> {
    // in file order, so the first problem of the file is the one said
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(_, v)| v.span().start);
    for (key, value) in entries {
        let full = if path.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{path}.{}", key.get_ref())
        };
        let leads_to_list = LISTS
            .iter()
            .any(|l| *l == full || l.starts_with(&format!("{full}.")));
        if !leads_to_list {
            continue;
        }
        match value.get_ref() {
            DeValue::Array(items) => {
                for item in items {
                    if let DeValue::Table(t) = item.get_ref() {
                        within(t, &full, text)?;
                    }
                }
            }
            DeValue::Table(t) if LISTS.contains(&full.as_str()) => {
                return Err(not_a_list(&full, value.span(), t, text));
            }
            DeValue::Table(t) => within(t, &full, text)?,
            _ => {}
        }
    }
    Ok(())
}

/// The list `full` is a table in the file: made by a header inside it (`[[site.route]]`
/// with no `[[site]]` above), or written with single brackets (`[site]`).
fn not_a_list(
    full: &str,
    span: Range<usize>,
    table: &DeTable<'_>,
    text: &str,
) -> (Range<usize>, String) {
    let written = text.get(span.clone()).unwrap_or_default();
    if written.starts_with('[') {
        return (
            span,
            format!(
                "[{full}] must be written [[{full}]] (double brackets: each one is an entry of a list)"
            ),
        );
    }
    match first_header(table, text) {
        // not written by the file: made by the header of something inside it
        Some((at, header)) => (
            at,
            format!("a {header} must follow a [[{full}]] (none is above it)"),
        ),
        None => (
            span,
            format!("{full}: expected [[{full}]] sections (a list of tables)"),
        ),
    }
}

/// The first header (`[[site.route]]`, `[site.tls]`) written inside an implicit table.
fn first_header(table: &DeTable<'_>, text: &str) -> Option<(Range<usize>, String)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(_, v)| v.span().start);
    for (_, value) in entries {
        let span = value.span();
        let written = text.get(span.clone()).unwrap_or_default();
        let header = match value.get_ref() {
            DeValue::Array(_) => written.starts_with("[["),
            DeValue::Table(_) => written.starts_with('['),
            _ => false,
        };
        if header {
            let header = written.lines().next().unwrap_or(written).trim().to_string();
            return Some((span, header));
        }
        if let DeValue::Table(t) = value.get_ref()
            && let Some(found) = first_header(t, text)
        {
            return Some(found);
        }
    }
    None
}
