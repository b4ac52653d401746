//! The booklet task's input, as a client sends it: `check` (at submit) and
//! `build` (in the worker) on any text. Seeds cover the three shapes (Indico
//! export, its `HTTPAPIResult` envelope, the PURR plugin's event).
//!
//! Besides "never panics": `check` and `build` refuse the same inputs
//! (`BuildError::InvalidInput`'s documented contract), progress never goes
//! backwards, and a built booklet's file name has the documented form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskwire::booklet::{BuildError, Observer, Progress, build, check};

struct Watch {
    last: f64,
}

impl Observer for Watch {
    fn progress(&mut self, p: Progress) {
        assert!(
            (0.0..=1.0).contains(&p.fraction) && p.fraction >= self.last,
            "progress went from {} to {}",
            self.last,
            p.fraction
        );
        self.last = p.fraction;
    }
    fn cancelled(&self) -> bool {
        false
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = check(text);
    let built = build(text, &mut Watch { last: 0.0 });
    match (&checked, &built) {
        (Ok(()), Ok(booklet)) => {
            let name = &booklet.filename;
            let stem = name.strip_suffix(".odt").expect("ends in .odt");
            assert!(
                !stem.is_empty()
                    && stem
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "file name {name:?}"
            );
        }
        (Err(_), Err(BuildError::InvalidInput(_))) => {}
        (checked, built) => panic!("check: {checked:?}, build: {built:?}"),
    }
});
