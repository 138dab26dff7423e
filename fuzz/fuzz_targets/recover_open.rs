#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    syncjournal_fuzz::checks::recover_open::check_recover_open(data);
});
