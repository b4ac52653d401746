//! A generated Indico event (the HTTP export shape, `detail=sessions`, as
//! in shared BOOKLET.md §2 shape (a)) for the `booklet` mode.
//!
//! This is the bench's own minimal generator: the main crate is to get
//! `taskwire::booklet::generate::event(seed, contributions)`, and once it
//! exists the bench should call it instead, so both measure the same input.
//! Until then the sizes follow BOOKLET.md §8: about 12 contributions per
//! block, a few primary authors and a dozen co-authors each (now and then
//! 55 and 140), abstracts of about 940 characters, 1% of contributions
//! outside every session and a few unscheduled; 3,000 contributions come to
//! roughly 15 MB of JSON.

use serde_json::{Value, json};

/// SplitMix64: deterministic, good enough to vary the data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const FIRST: &[&str] = &[
    "Ana", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kwame",
    "Li", "Marta", "Nils", "Olga", "Pedro", "Qing", "Rosa", "Sam", "Tariq", "Ulla", "Vikram",
    "Wen", "Yara", "Zoltán", "",
];
const LAST: &[&str] = &[
    "Silva",
    "Okafor",
    "Wu",
    "Martin",
    "Keller",
    "Novak",
    "Berg",
    "Nakamura",
    "Schmidt",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Andersson",
    "García",
    "Müller",
    "Ivanova",
    "Chen",
    "Haddad",
    "Kim",
    "O'Brien",
    "Papadopoulos",
    "Van der Berg",
    "Fernández",
    "Yilmaz",
    "Singh",
    "Zhang",
];
const AFFILIATIONS: &[&str] = &[
    "CERN",
    "DESY",
    "PSI",
    "ESRF",
    "Diamond Light Source",
    "Fermilab",
    "SLAC",
    "KEK",
    "IHEP",
    "GSI",
    "Brookhaven National Laboratory",
    "Argonne National Laboratory",
    "ELETTRA",
    "SOLEIL",
    "MAX IV",
    "HZB",
    "ISIS Neutron and Muon Source",
    "TRIUMF",
    "J-PARC",
    "ESS",
    "",
];
const WORDS: &[&str] = &[
    "beam",
    "dynamics",
    "injector",
    "linac",
    "cavity",
    "superconducting",
    "lattice",
    "emittance",
    "commissioning",
    "storage",
    "ring",
    "undulator",
    "magnet",
    "vacuum",
    "diagnostics",
    "feedback",
    "control",
    "system",
    "upgrade",
    "design",
    "performance",
    "measurement",
    "simulation",
    "results",
    "high",
    "brightness",
    "luminosity",
    "collider",
    "source",
    "electron",
    "proton",
    "ion",
    "laser",
    "plasma",
    "wakefield",
    "stability",
    "orbit",
    "tune",
    "chromaticity",
    "instability",
    "impedance",
    "radiation",
    "cryogenic",
    "power",
    "RF",
    "klystron",
    "timing",
    "synchronization",
    "machine",
    "learning",
    "operation",
    "status",
    "new",
    "first",
    "novel",
];

fn sentence(rng: &mut Rng, words: u64) -> String {
    let mut out = String::new();
    for i in 0..words {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(rng.pick(WORDS));
    }
    if let Some(first) = out.get(..1) {
        let upper = first.to_uppercase();
        out.replace_range(..1, &upper);
    }
    out
}

fn abstract_text(rng: &mut Rng) -> String {
    // About 940 characters: ~135 words in sentences, a line break or two.
    let mut out = String::new();
    let target = 600 + rng.below(700) as usize;
    while out.len() < target {
        if !out.is_empty() {
            out.push_str(if rng.below(8) == 0 { "\r\n" } else { " " });
        }
        let n = 8 + rng.below(14);
        out.push_str(&sentence(rng, n));
        out.push('.');
    }
    out
}

fn person(rng: &mut Rng, people: u64) -> Value {
    let n = rng.below(people);
    let first = FIRST[(n % FIRST.len() as u64) as usize];
    let last = LAST[((n / FIRST.len() as u64) % LAST.len() as u64) as usize];
    let affiliation = AFFILIATIONS[((n * 7) % AFFILIATIONS.len() as u64) as usize];
    let full = if first.is_empty() {
        last.to_owned()
    } else {
        format!("{last}, {first}")
    };
    json!({
        "_type": "ContributionParticipation",
        "_fossil": "contributionParticipationMetadata",
        "id": format!("{n}"),
        "person_id": n,
        "first_name": first,
        "last_name": last,
        "fullName": full,
        "affiliation": affiliation,
        "emailHash": format!("{:032x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15),
        "db_id": n + 100_000,
    })
}

fn people(rng: &mut Rng, count: u64, pool: u64) -> Vec<Value> {
    (0..count).map(|_| person(rng, pool)).collect()
}

fn date(day: u64, minutes: u64) -> Value {
    let day_of_month = 1 + day % 28;
    json!({
        "date": format!("2028-08-{day_of_month:02}"),
        "time": format!("{:02}:{:02}:00", minutes / 60, minutes % 60),
        "tz": "Europe/Zurich",
    })
}

/// An event with `contributions` contributions, the same for the same seed.
pub fn event(seed: u64, contributions: usize) -> Value {
    let mut rng = Rng(seed);
    let pool = (contributions as u64 * 4).max(50);
    let outside = contributions / 100;
    let in_sessions = contributions - outside;
    let per_block = 12usize;
    let n_blocks = in_sessions.div_ceil(per_block).max(1);
    let mut next_id = 1u64;
    let mut contribution = |rng: &mut Rng, code: String, start: Option<(u64, u64)>| {
        let id = next_id;
        next_id += 1;
        let primary = if rng.below(100) == 0 {
            55
        } else {
            1 + rng.below(4)
        };
        let coauthors = if rng.below(100) == 0 {
            140
        } else {
            rng.below(24)
        };
        let authors = people(rng, primary, pool);
        let speaker = authors
            .first()
            .cloned()
            .unwrap_or_else(|| person(rng, pool));
        let mut speakers = vec![speaker];
        if rng.below(20) == 0 {
            speakers.push(person(rng, pool)); // a speaker who is not an author
        }
        let title_words = 5 + rng.below(10);
        json!({
            "_type": "Contribution",
            "_fossil": "contributionMetadata",
            "id": format!("{id}"),
            "db_id": id,
            "friendly_id": id,
            "code": code,
            "title": sentence(rng, title_words),
            "description": abstract_text(rng),
            "startDate": start.map(|(d, m)| date(d, m)),
            "endDate": start.map(|(d, m)| date(d, m + 15)),
            "duration": 15,
            "type": "Talk",
            "track": null,
            "room": "",
            "roomFullname": "",
            "location": "",
            "speakers": speakers,
            "primaryauthors": authors,
            "coauthors": people(rng, coauthors, pool),
            "keywords": [],
            "references": [],
            "material": [],
            "url": format!("https://indico.example.org/event/1/contributions/{id}/"),
        })
    };

    let mut blocks = Vec::with_capacity(n_blocks);
    let mut left = in_sessions;
    for b in 0..n_blocks {
        let day = (b / 6) as u64;
        let start_min = 8 * 60 + 30 + (b % 6) as u64 * 120;
        let poster = b % 6 == 5;
        let session_code = format!("S{}{}", day + 1, (b'A' + (b % 6) as u8) as char);
        let n = left.min(per_block);
        left -= n;
        let list: Vec<Value> = (0..n)
            .map(|i| {
                let code = format!("{session_code}{:02}", i + 1);
                let at = if poster {
                    start_min
                } else {
                    start_min + 10 * i as u64
                };
                contribution(&mut rng, code, Some((day, at)))
            })
            .collect();
        let n_conveners = 1 + rng.below(2);
        let conveners = people(&mut rng, n_conveners, pool);
        blocks.push(json!({
            "_type": "SessionSlot",
            "id": b + 1,
            "code": if b % 3 == 0 { String::new() } else { session_code.clone() },
            "title": format!("Session {session_code}"),
            "startDate": date(day, start_min),
            "endDate": date(day, start_min + 120),
            "conveners": conveners,
            "session": {"code": session_code, "title": format!("Session {session_code}"), "isPoster": poster,
                        "sessionConveners": []},
            "contributions": list,
        }));
    }
    let outside_list: Vec<Value> = (0..outside)
        .map(|i| {
            let start = if i % 2 == 0 { None } else { Some((0, 8 * 60)) };
            contribution(&mut rng, String::new(), start)
        })
        .collect();
    json!({
        "_type": "Conference",
        "id": format!("{seed}"),
        "title": format!("Benchmark Conference {contributions}"),
        "timezone": "Europe/Zurich",
        "startDate": date(0, 8 * 60),
        "endDate": date(n_blocks as u64 / 6, 18 * 60),
        "sessions": blocks,
        "contributions": outside_list,
    })
}

#[cfg(test)]
mod tests {
    use super::event;

    #[test]
    fn same_seed_same_event_and_every_contribution_is_there() {
        let a = event(7, 250);
        assert_eq!(a, event(7, 250));
        assert_ne!(a, event(8, 250));
        let in_blocks: usize = a["sessions"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .map(|b| b["contributions"].as_array().map_or(0, Vec::len))
            .sum();
        let outside = a["contributions"].as_array().map_or(0, Vec::len);
        assert_eq!(in_blocks + outside, 250);
        assert_eq!(outside, 2);
    }

    #[test]
    fn size_is_about_five_kilobytes_per_contribution() {
        let bytes = event(1, 300).to_string().len();
        assert!((300 * 3_500..300 * 7_000).contains(&bytes), "{bytes} bytes");
    }
}
