//! The house check: which files of a crate import which, and the circles among them.
//!
//! A file imports another when its code names an item of the other by a path: `use
//! crate::cache::store::Entry`, `super::config::Pool`, `crate::proxy::pick(..)`, or a child
//! module declared in the file (`use server::Server` in `lib.rs`). A path is resolved to the
//! file of its longest module prefix, so `crate::cache::store::Entry` lands in
//! `cache/store.rs` and `crate::cache::Cache` in `cache/mod.rs`. Inline modules (`mod tests
//! { .. }`) belong to their file. Declaring a child module (`mod child;`) is not an import.
//!
//! The reading is lexical (comments and literals skipped, no macro expansion): enough for
//! this workspace's code, which names modules by plain paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One crate's files and the imports between them.
#[derive(Debug, Default)]
pub struct Graph {
    /// Each file (relative to the crate's `src`) → the files it imports, with the names.
    pub imports: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

/// One circle: its files, and for each import inside it the names taken.
#[derive(Debug)]
pub struct Circle {
    pub files: Vec<String>,
    pub arrows: Vec<(String, String, Vec<String>)>,
}

impl std::fmt::Display for Circle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "circle of {} files: {}",
            self.files.len(),
            self.files.join(", ")
        )?;
        for (from, to, names) in &self.arrows {
            writeln!(f, "  {from} -> {to}: {}", names.join(", "))?;
        }
        Ok(())
    }
}

/// Reads every `.rs` file under `src` (a crate's source folder) and its imports.
pub fn read_crate(src: &Path) -> std::io::Result<Graph> {
    let mut files = Vec::new();
    collect(src, &mut files)?;
    let mut modules: BTreeMap<Vec<String>, String> = BTreeMap::new();
    for file in &files {
        let rel = rel_name(src, file);
        modules.insert(module_path(&rel), rel);
    }
    let mut graph = Graph::default();
    for file in &files {
        let rel = rel_name(src, file);
        let text = std::fs::read_to_string(file)?;
        let here = module_path(&rel);
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for path in paths_in(&text, &here) {
            if let Some((target, name)) = resolve(&modules, &path)
                && target != rel
            {
                out.entry(target).or_default().insert(name);
            }
        }
        graph.imports.insert(rel, out);
    }
    Ok(graph)
}

/// The circles of a graph (strongly connected groups of two files or more).
pub fn circles(graph: &Graph) -> Vec<Circle> {
    let names: Vec<&String> = graph.imports.keys().collect();
    let index: BTreeMap<&String, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let edges: Vec<Vec<usize>> = names
        .iter()
        .map(|n| {
            graph.imports[*n]
                .keys()
                .filter_map(|t| index.get(t).copied())
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    for group in tarjan(&edges) {
        if group.len() < 2 {
            continue;
        }
        let members: BTreeSet<usize> = group.iter().copied().collect();
        let mut files: Vec<String> = group.iter().map(|&i| names[i].clone()).collect();
        files.sort();
        let mut arrows = Vec::new();
        for &i in &members {
            for (to, taken) in &graph.imports[names[i]] {
                if index.get(to).is_some_and(|j| members.contains(j)) {
                    arrows.push((
                        names[i].clone(),
                        to.clone(),
                        taken.iter().cloned().collect(),
                    ));
                }
            }
        }
        arrows.sort();
        out.push(Circle { files, arrows });
    }
    out.sort_by(|a, b| a.files.cmp(&b.files));
    out
}

fn tarjan(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.edges[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                group.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(group);
        }
    }
    let n = edges.len();
    let mut s = State {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

fn rel_name(src: &Path, file: &Path) -> String {
    file.strip_prefix(src)
        .unwrap_or(file)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// `lib.rs`/`main.rs` → [], `a.rs`/`a/mod.rs` → [a], `a/b.rs` → [a, b]; `bin/x.rs` is its
/// own root.
fn module_path(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(str::to_owned).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if parts.first().is_some_and(|p| p == "bin") {
        return vec![format!("bin:{stem}")];
    }
    if !matches!(stem, "lib" | "main" | "mod") {
        parts.push(stem.to_owned());
    }
    parts
}

fn resolve(modules: &BTreeMap<Vec<String>, String>, path: &[String]) -> Option<(String, String)> {
    for len in (0..=path.len()).rev() {
        if let Some(file) = modules.get(&path[..len]) {
            let name = path
                .get(len)
                .cloned()
                .unwrap_or_else(|| path.last().cloned().unwrap_or_else(|| "crate".to_owned()));
            return Some((file.clone(), name));
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Colons,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other,
}

fn tokens(text: &str) -> Vec<Tok> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0usize;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' => i = skip_string(b, i),
            b'r' | b'b' if raw_string_start(b, i).is_some() => {
                i = skip_raw(b, raw_string_start(b, i).unwrap_or(i));
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    i += 2;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                } else if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                } else if let Some(len) = char_len_literal(b, i) {
                    i += len;
                } else {
                    i += 1;
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                }
            }
            b'{' => {
                out.push(Tok::Open);
                i += 1;
            }
            b'}' => {
                out.push(Tok::Close);
                i += 1;
            }
            b',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            b';' => {
                out.push(Tok::Semi);
                i += 1;
            }
            b'*' => {
                out.push(Tok::Star);
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b':') => {
                out.push(Tok::Colons);
                i += 2;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &text[start..i];
                let word = word.strip_prefix("r#").unwrap_or(word);
                out.push(Tok::Ident(word.to_owned()));
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                out.push(Tok::Other);
                i += 1;
            }
        }
    }
    out
}

/// A multi-byte char literal such as '→': its length in bytes, quotes included.
fn char_len_literal(b: &[u8], i: usize) -> Option<usize> {
    let first = *b.get(i + 1)?;
    let width = match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None,
    };
    (b.get(i + 1 + width) == Some(&b'\'')).then_some(width + 2)
}

fn skip_string(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Where a raw string (`r"`, `r#"`, `br#"`) starts at `i`: the index of its `r`.
fn raw_string_start(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return None;
    }
    let r = if b[i] == b'b' { i + 1 } else { i };
    if b.get(r) != Some(&b'r') {
        if b[i] == b'b' && b.get(i + 1) == Some(&b'"') {
            return Some(i);
        }
        return None;
    }
    let mut j = r + 1;
    while b.get(j) == Some(&b'#') {
        j += 1;
    }
    (b.get(j) == Some(&b'"')).then_some(r)
}

fn skip_raw(b: &[u8], r: usize) -> usize {
    if b[r] == b'b' {
        return skip_string(b, r + 1);
    }
    let mut j = r + 1;
    let mut hashes = 0;
    while b.get(j) == Some(&b'#') {
        hashes += 1;
        j += 1;
    }
    j += 1;
    while j < b.len() {
        if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
            return j + 1 + hashes;
        }
        j += 1;
    }
    j
}

/// Every module path the file names, made absolute (from the crate root).
fn paths_in(text: &str, file_module: &[String]) -> Vec<Vec<String>> {
    let toks = tokens(text);
    // Child modules declared in this file (`mod name;`), named without `self::`.
    let mut children = BTreeSet::new();
    for w in toks.windows(3) {
        if let [Tok::Ident(m), Tok::Ident(name), Tok::Semi] = w
            && m == "mod"
        {
            children.insert(name.clone());
        }
    }
    let mut out = Vec::new();
    // The inline module stack: (name, brace depth at which it opened).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Tok::Ident(m)
                if m == "mod"
                    && matches!(toks.get(i + 2), Some(Tok::Open))
                    && matches!(toks.get(i + 1), Some(Tok::Ident(_))) =>
            {
                if let Some(Tok::Ident(name)) = toks.get(i + 1) {
                    inline.push((name.clone(), depth));
                }
                i += 2;
                continue;
            }
            Tok::Ident(first) => {
                let preceded_by_colons = i > 0 && toks[i - 1] == Tok::Colons;
                let starts = matches!(first.as_str(), "crate" | "super" | "self")
                    || (inline.is_empty() && children.contains(first));
                if !preceded_by_colons && starts && toks.get(i + 1) == Some(&Tok::Colons) {
                    let mut here: Vec<String> = file_module.to_vec();
                    here.extend(inline.iter().map(|(n, _)| n.clone()));
                    let prefix: Vec<String> = Vec::new();
                    i = read_path(&toks, i, &here, &prefix, &mut out);
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    // Inline modules map to their file: drop their segments by resolving through files.
    out
}

/// Reads a path (or use tree) at `i`; pushes each full path; returns the index after it.
fn read_path(
    toks: &[Tok],
    mut i: usize,
    here: &[String],
    prefix: &[String],
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut path = prefix.to_vec();
    let mut first = prefix.is_empty();
    loop {
        match toks.get(i) {
            Some(Tok::Ident(seg)) => {
                match (first, seg.as_str()) {
                    (true, "crate") => path.clear(),
                    (true, "self") => path = here.to_vec(),
                    (true, "super") => {
                        path = here.to_vec();
                        path.pop();
                    }
                    (false, "super") => {
                        path.pop();
                    }
                    (false, "self") => {}
                    (true, name) => {
                        path = here.to_vec();
                        path.push(name.to_owned());
                    }
                    (false, name) => path.push(name.to_owned()),
                }
                first = false;
                i += 1;
                if toks.get(i) == Some(&Tok::Colons) {
                    i += 1;
                    continue;
                }
                out.push(path);
                return i;
            }
            Some(Tok::Star) => {
                out.push(path);
                return i + 1;
            }
            Some(Tok::Open) => {
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Close) => return i + 1,
                        Some(Tok::Comma) => i += 1,
                        None => return i,
                        Some(_) => {
                            let mut inner = path.clone();
                            let before = i;
                            i = read_group_item(toks, i, &mut inner, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                if !first {
                    out.push(path);
                }
                return i;
            }
        }
    }
}

/// One item of a use group, relative to `path`.
fn read_group_item(
    toks: &[Tok],
    mut i: usize,
    path: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(i) {
            Some(Tok::Ident(seg)) if seg == "self" => {
                out.push(path.clone());
                return i + 1;
            }
            Some(Tok::Ident(seg)) => {
                path.push(seg.clone());
                i += 1;
                if toks.get(i) == Some(&Tok::Colons) {
                    i += 1;
                    continue;
                }
                // `as alias`
                if matches!(toks.get(i), Some(Tok::Ident(a)) if a == "as") {
                    i += 2;
                }
                out.push(path.clone());
                return i;
            }
            Some(Tok::Star) => {
                out.push(path.clone());
                return i + 1;
            }
            Some(Tok::Open) => {
                let prefix = path.clone();
                return read_path(toks, i, &[], &prefix, out);
            }
            _ => return i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn finds_a_circle_through_groups_super_and_children() {
        let dir = tree(&[
            ("lib.rs", "mod a; mod b; pub use a::A;"),
            ("a.rs", "use crate::{b::{B, other}};\npub struct A;"),
            ("b/mod.rs", "mod c; pub struct B; fn f() { c::go() }"),
            ("b/c.rs", "use super::super::a::A; pub fn go() {}"),
        ]);
        let g = read_crate(dir.path()).unwrap();
        assert!(g.imports["lib.rs"].contains_key("a.rs"));
        assert!(g.imports["a.rs"].contains_key("b/mod.rs"));
        assert!(g.imports["b/c.rs"].contains_key("a.rs"));
        let c = circles(&g);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].files, ["a.rs", "b/c.rs", "b/mod.rs"]);
    }

    #[test]
    fn comments_strings_and_inline_test_modules_do_not_mislead() {
        let dir = tree(&[
            ("lib.rs", "mod a; mod b;"),
            (
                "a.rs",
                "// crate::b::B\nconst S: &str = \"crate::b::B\"; const R: &str = r#\"super::b\"#;\n\
                 fn f<'a>(x: &'a str) -> char { '{' }\n#[cfg(test)] mod tests { use super::*; }",
            ),
            ("b.rs", "use crate::a::f;"),
        ]);
        let g = read_crate(dir.path()).unwrap();
        assert!(g.imports["a.rs"].is_empty(), "{:?}", g.imports["a.rs"]);
        assert!(circles(&g).is_empty());
    }
}
