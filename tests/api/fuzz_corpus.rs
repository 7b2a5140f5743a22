//! Replays the fuzz corpus (`fuzz/corpus/<target>/`) through the same targets cargo-fuzz
//! runs, so that every input once found interesting keeps passing on a stable toolchain.

#[path = "../../fuzz/targets.rs"]
mod targets;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in targets::TARGETS {
        let folder = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&folder)
            .unwrap_or_else(|e| panic!("corpus of {name} ({}): {e}", folder.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .filter(|path| path.is_file())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "the corpus of {name} is empty");
        for input in inputs {
            let data = std::fs::read(&input).expect("corpus input");
            let replayed = std::panic::catch_unwind(|| target(&data));
            assert!(replayed.is_ok(), "{name} panicked on {}", input.display());
        }
    }
}
