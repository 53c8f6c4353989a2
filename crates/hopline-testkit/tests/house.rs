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

/// The edge's layers are crates that depend downwards only: the engine knows no origin,
/// cache, limit or certificate authority; the cache stores what it is handed and never
/// reaches the proxy; the proxy forwards and never decides to store; none of them reaches
/// the request path, the admin side or the composed config (`hopline-edge`), and the
/// admin side reads the parts, never the request path. Cargo refuses a circle between
/// crates, not a dependency that points the wrong way; this names the crate and what it
/// depends on against the layers, or the file that reached into the engine's HTTP/1.1
/// internals.
#[test]
fn the_edge_layers_depend_downwards_only() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // the request path and the program sit above every layer; the admin side above the
    // parts it reads
    let above = ["hopline-edge", "hopline"];
    let never: &[(&str, &[&str])] = &[
        (
            "hopline-engine",
            &[
                "hopline-proxy",
                "hopline-cache",
                "hopline-limits",
                "hopline-acme",
                "hopline-admin",
                "hopline-dns",
            ],
        ),
        (
            "hopline-cache",
            &[
                "hopline-proxy",
                "hopline-limits",
                "hopline-acme",
                "hopline-admin",
            ],
        ),
        (
            "hopline-proxy",
            &[
                "hopline-cache",
                "hopline-limits",
                "hopline-acme",
                "hopline-admin",
            ],
        ),
        (
            "hopline-limits",
            &[
                "hopline-proxy",
                "hopline-cache",
                "hopline-acme",
                "hopline-admin",
            ],
        ),
        (
            "hopline-acme",
            &[
                "hopline-proxy",
                "hopline-cache",
                "hopline-limits",
                "hopline-admin",
            ],
        ),
        ("hopline-admin", &[]),
    ];
    let mut broken = Vec::new();
    for (layer, also) in never {
        let manifest = std::fs::read_to_string(crates.join(layer).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{layer}/Cargo.toml: {e}"));
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or("")
            .split("\n[")
            .next()
            .unwrap_or("");
        for line in deps.lines() {
            let name = line.split(['.', '=', ' ']).next().unwrap_or("").trim();
            if above.iter().chain(also.iter()).any(|f| *f == name) {
                broken.push(format!("{layer} depends on {name}"));
            }
        }
        // only the engine and the request path use HTTP/1.1's internals
        if matches!(*layer, "hopline-cache" | "hopline-limits" | "hopline-acme") {
            let graph = read_crate(&crates.join(layer).join("src")).expect("read a crate");
            for file in graph.imports.keys() {
                let text = std::fs::read_to_string(crates.join(layer).join("src").join(file))
                    .expect("read a source file");
                if text.contains("hopline_engine::h1") {
                    broken.push(format!("{layer}/src/{file} uses hopline_engine::h1"));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "dependencies against the layers:\n{}",
        broken.join("\n")
    );
}
