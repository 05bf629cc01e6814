//! Any byte string as a request frame: decoding must return, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tern_broker::decode_frame(bytes::Bytes::copy_from_slice(data));
});
