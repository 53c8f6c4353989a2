//! No file of any crate imports a file that imports it back, directly or through others:
//! each crate reads bottom-up. A failure names the files of each circle and what ties them.

use hopline_testkit::house::{circles, read_crate};
use std::path::Path;

#[test]
fn no_import_circle_inside_any_crate() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut read = 0;
    for entry in std::fs::read_dir(&crates).expect("read crates/") {
        let src = entry.expect("crates/ entry").path().join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = read_crate(&src).expect("read a crate's sources");
        read += graph.imports.len();
        for circle in circles(&graph) {
            found.push(format!("{}: {circle}", src.display()));
        }
    }
    assert!(
        read > 50,
        "read only {read} files: is the workspace where it was?"
    );
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

/// The edge's layers import downwards only: the engine knows no origin, cache or config;
/// the cache stores what it is handed and never reaches the proxy; the proxy forwards and
/// never decides to store; neither reaches the request path, the admin side or the
/// composed config. A failure names the file, the file it reached and what it took.
#[test]
fn the_edge_layers_import_downwards_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hopline-edge/src");
    let graph = read_crate(&src).expect("read the edge's sources");
    let above = [
        "request/",
        "admin/",
        "config/",
        "server.rs",
        "error.rs",
        "lib.rs",
    ];
    let never: &[(&str, &[&str])] = &[
        ("engine/", &["proxy/", "cache/", "limits/"]),
        ("cache/", &["proxy/", "limits/", "engine/h1/"]),
        ("proxy/", &["cache/", "limits/"]),
        ("limits/", &["proxy/", "cache/", "engine/h1/"]),
        ("acme/", &["proxy/", "cache/", "limits/", "engine/h1/"]),
    ];
    let mut broken = Vec::new();
    for (layer, also) in never {
        for (file, imports) in &graph.imports {
            if !file.starts_with(layer) {
                continue;
            }
            for (to, names) in imports {
                if above.iter().chain(also.iter()).any(|f| to.starts_with(f)) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    broken.push(format!("{file} -> {to}: {}", names.join(", ")));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the layers:\n{}",
        broken.join("\n")
    );
}
