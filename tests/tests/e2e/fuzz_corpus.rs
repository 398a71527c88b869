//! The committed fuzz corpus (`fuzz/corpus/<target>/`: seeds, and the inputs
//! fuzzing found worth keeping, crashes included once fixed) replayed
//! through the targets' logic in [`switchboard_tests::fuzz`], so a
//! regression fails here without cargo-fuzz or a nightly compiler.

use std::path::PathBuf;

/// Fewer files than this in a target's directory means the corpus went
/// missing, not that there is nothing to replay.
const MIN_FILES: usize = 5;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= MIN_FILES,
        "{} holds {} files, expected at least {MIN_FILES}",
        dir.display(),
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file reads");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} panicked on {}",
            file.display()
        );
    }
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", switchboard_tests::fuzz::frame_decoder);
}

#[test]
fn token_corpus() {
    replay("token", switchboard_tests::fuzz::token);
}

#[test]
fn config_corpus() {
    replay("config", switchboard_tests::fuzz::config);
}
