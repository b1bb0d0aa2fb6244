#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| underpass::fuzz::http_request(data));
