#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| genprm_fuzz::pack_manifest(data));
