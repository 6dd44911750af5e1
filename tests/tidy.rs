//! House rules that no compiler checks: every source file opens with a `//!` header saying what
//! it owns, and no stubs or debugging leftovers are committed.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "src",
        "tests",
        "supervisors/src",
        "supervisors/tests",
        "supervisors/benches",
        "walbuf/src",
        "walbuf/tests",
        "benches",
    ] {
        if root.join(dir).exists() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    files
}

#[test]
fn every_source_file_starts_with_a_module_header() {
    let missing: Vec<_> = all_sources()
        .into_iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! header: {missing:?}"
    );
}

#[test]
fn no_stubs_or_debug_leftovers_are_committed() {
    // Spelled in pieces so this file does not match itself.
    let banned = [
        ["to", "do!("].concat(),
        ["unimpl", "emented!("].concat(),
        ["db", "g!("].concat(),
        ["#[ig", "nore"].concat(),
    ];
    let mut hits = Vec::new();
    for p in all_sources() {
        let text = std::fs::read_to_string(&p).unwrap();
        for b in &banned {
            if text.contains(b.as_str()) {
                hits.push(format!("{}: {b}", p.display()));
            }
        }
    }
    assert!(hits.is_empty(), "{hits:?}");
}
