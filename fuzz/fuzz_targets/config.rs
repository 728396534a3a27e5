//! Settings from TOML: any text either loads and validates, or is refused with an error. Never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(settings) = hubbub_server::settings::Settings::from_toml(text) {
            // What loads must also turn into a hub configuration.
            let _ = settings.hub_config();
        }
    }
});
