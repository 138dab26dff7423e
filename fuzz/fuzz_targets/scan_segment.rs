#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    syncjournal_fuzz::checks::scan_segment::check_scan_segment(data);
});
