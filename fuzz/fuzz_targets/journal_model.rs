#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    syncjournal_fuzz::checks::journal_model::check_journal_model(data);
});
