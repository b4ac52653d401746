//! Text rules of BOOKLET.md §4 and §6 that do not touch XML: line breaks, characters XML 1.0
//! forbids, natural and caseless ordering, and the file-name slug.
//!
//! Everything here borrows when the text needs no change, which is the common case, so a
//! large event is scanned rather than copied.

use std::borrow::Cow;
use std::cmp::Ordering;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// A line break: LF, CR (CRLF counts once), VT, FF, NEL, LINE and PARAGRAPH SEPARATOR.
fn is_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// A character XML 1.0 forbids and that is not a break (VT and FF are breaks, §4).
fn is_illegal(c: char) -> bool {
    (c < ' ' && !matches!(c, '\t' | '\n' | '\r' | '\u{0B}' | '\u{0C}'))
        || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// Whether the text holds a break or an illegal character, found on bytes without decoding.
fn may_need_work(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| match c {
        b'\t' => false,
        0..0x20 => true,
        // U+0085 is C2 85; U+2028/2029 are E2 80 A8/A9; U+FFFE/FFFF are EF BF BE/BF.
        0xC2 => b.get(i + 1) == Some(&0x85),
        0xE2 => b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xA8 | 0xA9)),
        0xEF => b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)),
        _ => false,
    })
}

/// The result of cleaning a field: the text, and whether characters were removed.
pub(crate) struct Cleaned<'a> {
    pub(crate) text: Cow<'a, str>,
    pub(crate) removed_illegal: bool,
}

/// A single-line field: each break becomes one space, illegal characters go, ends are trimmed
/// of spaces and tabs (not of NBSP or other spaces, which are kept unchanged).
pub(crate) fn single_line(s: Cow<'_, str>) -> Cleaned<'_> {
    let trim = |s: &str| s.trim_matches([' ', '\t']).len() != s.len();
    if !may_need_work(&s) {
        if !trim(&s) {
            return Cleaned {
                text: s,
                removed_illegal: false,
            };
        }
        let text = match s {
            Cow::Borrowed(b) => Cow::Borrowed(b.trim_matches([' ', '\t'])),
            Cow::Owned(o) => Cow::Owned(o.trim_matches([' ', '\t']).to_owned()),
        };
        return Cleaned {
            text,
            removed_illegal: false,
        };
    }
    let mut out = String::with_capacity(s.len());
    let mut removed_illegal = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' && chars.peek() == Some(&'\n') {
            chars.next();
            out.push(' ');
        } else if is_break(c) {
            out.push(' ');
        } else if is_illegal(c) {
            removed_illegal = true;
        } else {
            out.push(c);
        }
    }
    Cleaned {
        text: Cow::Owned(out.trim_matches([' ', '\t']).to_owned()),
        removed_illegal,
    }
}

/// A multi-line field: illegal characters go, breaks stay (split later by [`lines`]).
pub(crate) fn multi_line(s: Cow<'_, str>) -> Cleaned<'_> {
    if !may_need_work(&s) || !s.chars().any(is_illegal) {
        return Cleaned {
            text: s,
            removed_illegal: false,
        };
    }
    Cleaned {
        text: Cow::Owned(s.chars().filter(|&c| !is_illegal(c)).collect()),
        removed_illegal: true,
    }
}

/// The lines of a multi-line field; a final break adds no empty line, blank lines stay.
pub(crate) fn lines(s: &str) -> Lines<'_> {
    Lines { rest: Some(s) }
}

/// Iterator returned by [`lines`].
pub(crate) struct Lines<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        if rest.is_empty() {
            self.rest = None;
            return None;
        }
        match find_break(rest) {
            None => {
                self.rest = None;
                Some(rest)
            }
            Some((at, len)) => {
                let mut after = at + len;
                if rest.as_bytes()[at] == b'\r' && rest[after..].starts_with('\n') {
                    after += 1;
                }
                self.rest = Some(&rest[after..]);
                Some(&rest[..at])
            }
        }
    }
}

/// The byte offset and length of the first break in `s`.
fn find_break(s: &str) -> Option<(usize, usize)> {
    let b = s.as_bytes();
    b.iter().enumerate().find_map(|(i, &c)| match c {
        b'\n' | b'\r' | 0x0B | 0x0C => Some((i, 1)),
        0xC2 if b.get(i + 1) == Some(&0x85) => Some((i, 2)),
        0xE2 if b.get(i + 1) == Some(&0x80) && matches!(b.get(i + 2), Some(0xA8 | 0xA9)) => {
            Some((i, 3))
        }
        _ => None,
    })
}

/// Natural order: runs of ASCII digits compare as numbers (`PL8 < PL50 < PL120`), everything
/// else by code point (UTF-8 byte order is code point order).
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let end_a = i + a[i..].iter().take_while(|c| c.is_ascii_digit()).count();
            let end_b = j + b[j..].iter().take_while(|c| c.is_ascii_digit()).count();
            let strip = |run: &[u8]| {
                let zeros = run.iter().take_while(|&&c| c == b'0').count();
                run.len() - zeros
            };
            let (sig_a, sig_b) = (strip(&a[i..end_a]), strip(&b[j..end_b]));
            let order = sig_a
                .cmp(&sig_b)
                .then_with(|| a[end_a - sig_a..end_a].cmp(&b[end_b - sig_b..end_b]))
                .then_with(|| (end_a - i).cmp(&(end_b - j)));
            if order != Ordering::Equal {
                return order;
            }
            i = end_a;
            j = end_b;
        } else {
            match a[i].cmp(&b[j]) {
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                other => return other,
            }
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// Case-insensitive order, code points breaking ties.
pub(crate) fn caseless_cmp(a: &str, b: &str) -> Ordering {
    a.chars()
        .flat_map(char::to_lowercase)
        .cmp(b.chars().flat_map(char::to_lowercase))
        .then_with(|| a.cmp(b))
}

/// The file-name slug of §6: NFKD without combining marks, runs of other characters than
/// ASCII letters, digits and `-` as one `_`, trimmed, cut at a `_` to at most 60 characters.
pub(crate) fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfkd().filter(|&c| !is_combining_mark(c)) {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    if trimmed.len() <= 60 {
        return trimmed.to_owned();
    }
    // Only ASCII is left, so byte positions are character positions.
    let cut = trimmed[..=60].rfind('_').unwrap_or(60);
    trimmed[..cut].trim_end_matches('_').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_every_break_once() {
        let got: Vec<&str> = lines("a\r\nb\rc\nd\u{0B}e\u{0C}f\u{85}g\u{2028}h\u{2029}i").collect();
        assert_eq!(got, ["a", "b", "c", "d", "e", "f", "g", "h", "i"]);
        assert_eq!(lines("a\n").collect::<Vec<_>>(), ["a"]);
        assert_eq!(lines("a\n\nb").collect::<Vec<_>>(), ["a", "", "b"]);
        assert_eq!(lines("a\r\n\r\n").collect::<Vec<_>>(), ["a", ""]);
        assert_eq!(lines("").count(), 0);
        assert_eq!(lines("\n").collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn single_line_joins_trims_and_strips() {
        let c = single_line(Cow::Borrowed("  a\r\nb\rc\u{1}d\u{FFFF} "));
        assert_eq!(c.text, "a b cd");
        assert!(c.removed_illegal);
        let c = single_line(Cow::Borrowed("\u{A0}µ 𝜇 \u{F06D}"));
        assert_eq!(c.text, "\u{A0}µ 𝜇 \u{F06D}");
        assert!(matches!(c.text, Cow::Borrowed(_)));
        assert!(!c.removed_illegal);
    }

    #[test]
    fn multi_line_keeps_breaks() {
        let c = multi_line(Cow::Borrowed("a\r\nb\u{0}\u{1F}\u{0B}"));
        assert_eq!(c.text, "a\r\nb\u{0B}");
        assert!(c.removed_illegal);
    }

    #[test]
    fn natural_order() {
        let mut codes = ["PL120", "PL8", "PL50", "PL08", "MOA", "", "MOA10", "MOA9"];
        codes.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            codes,
            ["", "MOA", "MOA9", "MOA10", "PL8", "PL08", "PL50", "PL120"]
        );
    }

    #[test]
    fn slugs() {
        assert_eq!(
            slug("6th Workshop on Free-Electron Lasers and Bright Sources (FELBS2028)"),
            "6th_Workshop_on_Free-Electron_Lasers_and_Bright_Sources"
        );
        assert_eq!(slug("Demo Workshop 2026 (DW26)"), "Demo_Workshop_2026_DW26");
        assert_eq!(slug("Ångström Straße"), "Angstrom_Stra_e");
        assert_eq!(slug("日本"), "");
        assert_eq!(slug(&"x".repeat(70)), "x".repeat(60));
    }
}
