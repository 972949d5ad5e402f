//! Replays every saved fuzz input under fixtures/fuzz/<target>/ through the checks of
//! that cargo-fuzz target, on the stable toolchain: crashers once found, and hand-made
//! edge cases. The checks live in fuzz/src/lib.rs, included here as a module, so each
//! input runs through exactly the calls the fuzzer made. See fixtures/fuzz/README.md.

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::panic;
use std::path::{Path, PathBuf};

/// What a fuzz target checks of one input; panics when a property fails.
type Check = fn(&[u8]);

/// Every fuzz target, by folder name, with its check.
const TARGETS: [(&str, Check); 9] = [
    ("client_frame", checks::client_frame),
    ("relay_frame", checks::relay_frame),
    ("message", checks::message),
    ("open_sealed", checks::open_sealed),
    ("content", checks::content),
    ("address_and_lookup", checks::address_and_lookup),
    ("smtp_input", checks::smtp_input),
    ("mime", checks::mime),
    ("imap_input", checks::imap_input),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fuzz")
}

/// The saved inputs of `target`, as `target/file` names, sorted; none if no folder.
fn inputs(target: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(fixtures().join(target)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .map(|e| e.expect("readable fixtures/fuzz entry").file_name())
        .map(|n| format!("{target}/{}", n.to_string_lossy()))
        .collect();
    names.sort();
    names
}

/// Runs `check` on each input and fails naming every input that panicked.
fn replay(check: Check, names: &[String]) {
    let failed: Vec<&String> = names
        .iter()
        .filter(|name| {
            let data = std::fs::read(fixtures().join(name)).expect("readable fixture");
            panic::catch_unwind(|| check(&data)).is_err()
        })
        .collect();
    assert!(
        failed.is_empty(),
        "inputs that fail their check: {failed:?}"
    );
}

fn replay_target(target: &str) {
    let check = TARGETS
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, check)| *check)
        .expect("a known target");
    replay(check, &inputs(target));
}

#[test]
fn client_frame() {
    replay_target("client_frame");
}

#[test]
fn relay_frame() {
    replay_target("relay_frame");
}

#[test]
fn message() {
    replay_target("message");
}

#[test]
fn open_sealed() {
    replay_target("open_sealed");
}

#[test]
fn content() {
    replay_target("content");
}

#[test]
fn address_and_lookup() {
    replay_target("address_and_lookup");
}

#[test]
fn smtp_input() {
    replay_target("smtp_input");
}

#[test]
fn mime() {
    replay_target("mime");
}

#[test]
fn imap_input() {
    replay_target("imap_input");
}

/// A folder that names no target would silently replay nothing.
#[test]
fn every_fixture_belongs_to_a_target() {
    let known = |t: &str| TARGETS.iter().any(|(name, _)| *name == t);
    for entry in std::fs::read_dir(fixtures()).expect("fixtures/fuzz exists") {
        let entry = entry.expect("readable fixtures/fuzz entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            assert!(known(&name), "fixtures/fuzz/{name} is not a fuzz target");
        }
    }
}
