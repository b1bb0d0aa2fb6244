#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| underpass::fuzz::tls_hello(data));
