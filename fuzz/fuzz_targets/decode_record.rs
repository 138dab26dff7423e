#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    syncjournal_fuzz::checks::decode_record::check_decode_record(data);
});
