//! The config loader (`Config::from_toml`) on any text.
//!
//! Besides "never panics": what `taskwire config` prints for an accepted
//! file (less the key list, whose digests it leaves out) is itself accepted,
//! and prints the same again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskwire::config::{Config, Overrides};

/// The printed configuration up to the key list (or the note that there is none).
fn without_keys(shown: &str) -> &str {
    let cut = ["\n[[api_keys]]", "\n# api_keys"]
        .iter()
        .filter_map(|marker| shown.find(marker))
        .min();
    cut.map_or(shown, |at| &shown[..at])
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml(text, &Overrides::default()) else {
        return;
    };
    let shown = config.to_toml();
    let first = without_keys(&shown);
    assert!(!first.is_empty(), "the effective configuration printed nothing");
    let again = Config::from_toml(first, &Overrides::default())
        .unwrap_or_else(|e| panic!("printed config refused: {e}\n{first}"));
    let shown_again = again.to_toml();
    assert_eq!(without_keys(&shown_again), first);
});
