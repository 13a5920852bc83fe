//! A configuration file as `tailgate validate` reads it: parsed with every unknown key and type error reported by
//! path, then validated. No panic, whatever the YAML. Inputs naming a file or an environment variable are parsed
//! but not validated: validation reads them, and the fuzzer must not read `/dev/zero`.
//! `tests/fuzz/run.sh config 60`

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = tailgate::config::Config::parse(text) else { return };
    if ["file", "env", "jwks", "path", "dir"].iter().any(|word| text.contains(word)) {
        return;
    }
    let _ = config.validate();
});
