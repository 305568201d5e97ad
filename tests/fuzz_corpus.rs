//! Replays the fuzz corpus (`tests/fuzz-corpus/<reader>/`: seeds and the inputs the fuzzer
//! found failing, since fixed) through every registered reader, each file in a child
//! process: no panic, no signal, no hang, memory within the bound (see `losscape::fuzz`).
//! See: issue #19.

use std::path::Path;

use losscape::fuzz::{self, Limits, Outcome};

#[test]
fn every_corpus_file_is_read_or_rejected_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let scratch = tempfile::tempdir().unwrap();
    let limits = Limits::default();
    // as the fuzzer does: a libhdf5 loop is stopped well within the execution's deadline
    losscape::io::contain::set_containment(losscape::io::contain::Containment::Fork {
        deadline: std::time::Duration::from_secs(3),
    });
    let mut failures = Vec::new();
    let mut replayed = 0;
    for reader in fuzz::readers() {
        let files = fuzz::corpus_files(&root, &reader);
        assert!(
            files
                .iter()
                .any(|f| f.file_name().unwrap().to_string_lossy().starts_with("seed")),
            "reader '{}' has no seed in {}",
            reader.name,
            fuzz::corpus_dir(&root, &reader).display()
        );
        for file in files {
            let dir = scratch.path().join(reader.name).join(replayed.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(reader.file_name);
            std::fs::copy(&file, &path).unwrap();
            let ex = fuzz::run_isolated(&reader, &path, &limits).unwrap();
            replayed += 1;
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if ex.outcome.is_failure() {
                failures.push(format!("{}/{name}: {:?}", reader.name, ex.outcome));
            }
            // every seed is a valid file of its format and must be accepted
            if name.starts_with("seed") && ex.outcome != Outcome::Accepted {
                failures.push(format!(
                    "{}/{name} (a seed) not accepted: {:?}",
                    reader.name, ex.outcome
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} corpus files failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
