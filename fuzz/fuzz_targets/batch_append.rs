//! Any bytes offered to `Log::append` as a produce payload: the validator must reject or accept
//! without panicking, and a rejected append must leave the log exactly as it was.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tern_storage::{Log, LogConfig};

fn log() -> &'static Log {
    static LOG: OnceLock<(tempfile::TempDir, Log)> = OnceLock::new();
    let (_, log) = LOG.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = Log::open(&dir.path().join("fuzz-0"), LogConfig::default(), 0).expect("open log");
        (dir, log)
    });
    log
}

fuzz_target!(|data: &[u8]| {
    let log = log();
    let before = log.log_end_offset();
    if log.append(data, 0, 0).is_err() {
        assert_eq!(log.log_end_offset(), before, "a rejected append changed the log");
    }
});
