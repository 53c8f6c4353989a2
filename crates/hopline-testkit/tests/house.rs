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
