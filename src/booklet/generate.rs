//! Test events: deterministic by seed, 1 to 10,000 contributions, in one of the three input
//! shapes (seed % 3: Indico export, its envelope, the PURR plugin shape).
//!
//! Used by the tests and the benchmark, never by [`crate::booklet::build`]. Sizes follow
//! BOOKLET.md §8 (about 6 KB of JSON per contribution in the Indico shape, up to 55 primary
//! authors and 140 co-authors, abstracts around 940 characters). The first contributions of
//! every event carry the awkward cases one each, so even a small event has them all: markup,
//! CRLF / CR / LF / U+2028 breaks, non-BMP and private-use characters, bidi text, characters
//! XML forbids, empty and null fields, non-author speakers, speakers without authors, huge
//! author lists, nameless and non-object people, a literal `{start}`, runs of spaces and tabs,
//! a malformed date and a duplicated contribution. Blocks and contributions are shuffled, as
//! Indico's creation order is not time order.

use jiff::Span;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use serde_json::{Map, Value, json};

/// The task input `{"event": ..., "settings": ...}` for a generated event with
/// `contributions` contributions (clamped to 1..=10,000).
pub fn event(seed: u64, contributions: usize) -> Value {
    let contributions = contributions.clamp(1, 10_000);
    let shape = match seed % 3 {
        0 => Shape::Indico,
        1 => Shape::Envelope,
        _ => Shape::Plugin,
    };
    let mut g = Generator {
        rng: Rng(seed ^ 0x9E37_79B9_7F4A_7C15),
        plugin: shape == Shape::Plugin,
        next_id: 9000,
        zone: ZONES[(seed as usize / 3) % ZONES.len()],
    };
    let event = g.event(contributions);
    let event = match shape {
        Shape::Envelope => json!({
            "_type": "HTTPAPIResult", "count": 1, "complete": true,
            "url": "https://indico.example.org/export/event/1443.json?detail=sessions",
            "ts": 1_800_000_000, "additionalInfo": {}, "results": [event],
        }),
        _ => event,
    };
    json!({
        "event": event,
        "cookies": {"session": "never-used"},
        "settings": {
            "custom_fields": [{"id": 1, "name": "Footnotes"}, "Funding Agency"],
            "ab_session_h1": null,
            "ab_toc_title": "  ",
            "api_key": "secret-api-key-never-echoed",
            "api_url": "https://indico.example.org",
            "pdf_page_width": 210,
        },
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Indico,
    Envelope,
    Plugin,
}

/// Display zones, with the dates they make interesting.
const ZONES: [(&str, &str); 4] = [
    ("Europe/Rome", "2028-10-27"), // crosses the end of DST (29 October)
    ("America/Chicago", "2028-08-21"),
    ("Asia/Tokyo", "2028-03-24"),
    ("Europe/Rome", "2028-03-24"), // crosses the start of DST (26 March)
];

/// The zone the plugin writes dates in (the Indico server's), unlike the event's.
const SERVER_ZONE: &str = "Europe/Zurich";

const FIRST: [&str; 24] = [
    "Ana",
    "Björn",
    "Chloé",
    "Dvořák",
    "Ágnes",
    "Marie-Ève",
    "Yūko",
    "Zsófia",
    "Thảo",
    "José",
    "Päivi",
    "Kwame",
    "Ørjan",
    "Anaïs",
    "Li",
    "Sam",
    "Ines",
    "Jean-Luc",
    "Conceição",
    "Yusuf",
    "Aroha",
    "Ilse",
    "",
    "Μαρία",
];
const LAST: [&str; 24] = [
    "Silva",
    "Okafor",
    "Wu",
    "Martin",
    "Großmann",
    "Peña",
    "ter Haar",
    "Dubois-Van 't hof",
    "Nguyễn",
    "Đorđević",
    "Wróblewski",
    "de la Fuente",
    "Székely",
    "Tanaka",
    "Fernández",
    "Lindqvist",
    "Šimůnek",
    "Chen-Bernard",
    "Haddad",
    "GALLO",
    "Álvarez",
    "Trần",
    "Kowalski",
    "O'Brien",
];
const AFFILIATIONS: [&str; 12] = [
    "Laboratoire de l'Accélérateur Linéaire de Montréal-Nord",
    "Instituto Tecnológico de Física de Aveiro",
    "Magyar Gyorsító Kutatóintézet, Debrecen",
    "Deutsches Elektronen-Labor Hamburg-Süd",
    "Brookfield Light Source Facility",
    "High Energy Accelerator Organization (KEK-South), Tsukuba",
    "Boğaziçi Hızlandırıcı Merkezi, İstanbul",
    "Universidad Autónoma de Cádiz",
    "Fermiland Accelerator Research Center",
    "Laboratoire des Faisceaux d'Orsay-Ouest (CNRS)",
    "University of Northern Alberta, Department of Physics",
    "",
];
const TOPICS: [&str; 12] = [
    "Beam Position Monitors",
    "Space-Charge Compensation",
    "the Cryogenic Plant",
    "Top-Up Injection",
    "the Low-Emittance Lattice",
    "Energy Recovery Linacs",
    "Laser-Plasma Acceleration",
    "the ECR Ion Source",
    "Coherent Synchrotron Radiation",
    "the Timing Distribution System",
    "Beam-Based Alignment",
    "the Injector Linac",
];
const OPENINGS: [&str; 6] = [
    "A Novel Approach to",
    "Status of",
    "Commissioning of",
    "First Results from",
    "Lessons Learned from",
    "Design and Performance of",
];
const SENTENCES: [&str; 10] = [
    "The cryomodule prototype was commissioned in two 12-hour shifts, and the vacuum pressure dropped to 2×10⁻¹⁰ mbar after 20 A·h.",
    "The beam-based alignment procedure has been operated routinely since the spring commissioning period, and the orbit stability improved to better than 0.5 µm rms.",
    "Les mesures ont été réalisées à l'aide d'un moniteur à fibre optique, et la dérive thermique reste inférieure à 0,1 K par heure.",
    "Das Verfahren wurde außerdem an der Teststrecke in Süd-Halle überprüft, wobei die Strahllage über acht Stunden stabil blieb.",
    "Поведение пучка было исследовано в широком диапазоне токов, и результаты согласуются с моделированием.",
    "The injector upgrade was installed before the winter shutdown, and the normalized emittance was reduced to 0.35 mm·mrad.",
    "A comparison of the “old” and “new” configuration is given in Table 1 of the proceedings; the vertical tune shift Δν_y stayed below 0.002.",
    "The 𝛽-beat correction uses a response matrix measured with 24 correctors, and the residual beating is below 1 %.",
    "The low-level RF controller reached its design parameters in a dedicated machine-development shift, with amplitude stability of 0.01 %.",
    "Tests at 4.2 K and 2 K confirmed the expected behaviour; see also ref. [3] and the discussion of systematic errors in the appendix.",
];

/// SplitMix64: small, fast, and the same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// One planned contribution before it becomes JSON.
struct Plan {
    index: usize,
    code: String,
    /// Day offset and minutes after midnight, or unscheduled.
    start: Option<(usize, usize)>,
    minutes: usize,
    poster: bool,
}

struct Generator {
    rng: Rng,
    plugin: bool,
    next_id: u64,
    zone: (&'static str, &'static str),
}

impl Generator {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn key<'k>(&self, indico: &'k str, plugin: &'k str) -> &'k str {
        if self.plugin { plugin } else { indico }
    }

    fn event(&mut self, n: usize) -> Value {
        let outside = if n == 1 { 0 } else { (n / 8).max(2) };
        let in_blocks = n - outside;
        let sessions = (in_blocks / 30).clamp(1, 120);
        let mut blocks = Vec::new();
        let mut index = 0;
        let per_session = in_blocks / sessions;
        for s in 0..sessions {
            let count = if s + 1 == sessions {
                in_blocks - per_session * s
            } else {
                per_session
            };
            blocks.extend(self.session(s, count, &mut index));
        }
        // An empty block, as Indico exports blocks that have no contributions yet.
        let empty_session = self.session(sessions, 0, &mut index);
        blocks.extend(empty_session);
        self.rng.shuffle(&mut blocks);

        let mut loose = Vec::new();
        for k in 0..outside {
            let scheduled = k % 3 == 0;
            let plan = Plan {
                index,
                code: if k.is_multiple_of(2) {
                    String::new()
                } else {
                    format!("FRX{:02}", k)
                },
                start: scheduled.then_some((k % 3, 17 * 60 + 30)),
                minutes: 20,
                poster: false,
            };
            index += 1;
            loose.push(self.contribution(&plan, None));
        }
        if let Some(first) = loose.first().cloned() {
            loose.push(first); // the same contribution twice: printed once, with a warning
        }
        self.rng.shuffle(&mut loose);

        let (zone, date) = self.zone;
        let start = json!({"date": date, "time": "08:00:00", "tz": zone});
        let mut event = Map::new();
        event.insert("id".into(), json!("1443"));
        event.insert(
            "title".into(),
            json!("6th Workshop on Free-Electron Lasers & Bright Sources (FELBS2028) — Ωmega"),
        );
        event.insert("timezone".into(), json!(zone));
        event.insert("description".into(), json!("<p>Welcome &amp; enjoy.</p>"));
        event.insert("sessions".into(), Value::Array(blocks));
        event.insert("contributions".into(), Value::Array(loose));
        if self.plugin {
            event.insert("start_dt".into(), start);
        } else {
            event.insert("_type".into(), json!("Conference"));
            event.insert("startDate".into(), start);
            event.insert("chairs".into(), json!([]));
        }
        Value::Object(event)
    }

    /// The blocks of session `s` holding `count` contributions (numbered from `index`).
    fn session(&mut self, s: usize, count: usize, index: &mut usize) -> Vec<Value> {
        let poster = s % 5 == 1;
        let day = s % 3;
        let day_code = ["MO", "TU", "WE"][day];
        let letter = char::from(b'A' + (s / 3 % 26) as u8);
        let code = format!("{day_code}{}{letter}", if poster { "P" } else { "" });
        let title = format!(
            "{} {}",
            if poster {
                "Poster Session:"
            } else {
                "Session on"
            },
            self.rng.pick(&TOPICS)
        );
        let n_blocks = if poster || count < 4 {
            1
        } else {
            1 + self.rng.below(3)
        };
        let session_id = json!((s + 1).to_string());
        let chairs: Vec<Value> = (0..1 + self.rng.below(3))
            .map(|_| self.convener())
            .collect();
        let mut blocks = Vec::new();
        let mut left = count;
        for b in 0..n_blocks {
            let here = if b + 1 == n_blocks {
                left
            } else {
                count / n_blocks
            };
            left -= here;
            let start = (8 + 2 * ((s / 3 + b) % 5)) * 60 + 30;
            let step = (480 / here.max(1)).clamp(1, 15);
            let mut plans: Vec<Plan> = (0..here)
                .map(|k| {
                    let i = *index;
                    *index += 1;
                    Plan {
                        index: i,
                        code: if poster && k % 9 == 8 {
                            String::new()
                        } else {
                            format!(
                                "{code}{}{:02}",
                                if n_blocks > 1 {
                                    (b + 1).to_string()
                                } else {
                                    String::new()
                                },
                                k + 1
                            )
                        },
                        start: Some((day, if poster { start } else { start + k * step })),
                        minutes: step,
                        poster,
                    }
                })
                .collect();
            self.rng.shuffle(&mut plans);
            let block_code = if n_blocks > 1 && b % 2 == 0 {
                format!("{code}{}", b + 1)
            } else {
                String::new()
            };
            let block_title = if n_blocks > 1 {
                format!("{title}: Slot {}", b + 1)
            } else {
                title.clone()
            };
            let contributions: Vec<Value> = plans
                .iter()
                .map(|p| self.contribution(p, Some(&code)))
                .collect();
            let end = start + (here.max(1) * step).max(90);
            let mut block = Map::new();
            block.insert("id".into(), json!(100 + s * 3 + b));
            block.insert("title".into(), json!(block_title));
            block.insert("contributions".into(), Value::Array(contributions));
            block.insert(
                "conveners".into(),
                if b == 0 {
                    Value::Array(chairs.clone())
                } else {
                    json!([])
                },
            );
            let (s_key, e_key) = (
                self.key("startDate", "start_dt"),
                self.key("endDate", "end_dt"),
            );
            block.insert(s_key.into(), self.date(day, start));
            block.insert(e_key.into(), self.date(day, end));
            let mut session = Map::new();
            session.insert("id".into(), session_id.clone());
            session.insert("code".into(), json!(code));
            session.insert("title".into(), json!(title));
            session.insert(self.key("isPoster", "is_poster").into(), json!(poster));
            session.insert(
                self.key("sessionConveners", "session_conveners").into(),
                Value::Array(chairs.clone()),
            );
            if self.plugin {
                block.insert(
                    "code".into(),
                    json!(if block_code.is_empty() {
                        code.clone()
                    } else {
                        block_code
                    }),
                );
            } else {
                block.insert("_type".into(), json!("SessionSlot"));
                block.insert("code".into(), json!(block_code));
                block.insert("slotTitle".into(), json!(""));
                block.insert(
                    "conference".into(),
                    json!({"_type": "Conference", "id": "1443", "title": "FELBS2028"}),
                );
            }
            block.insert("session".into(), Value::Object(session));
            blocks.push(Value::Object(block));
        }
        blocks
    }

    /// A date `day` days after the event's first day, `minutes` after midnight, as a wall
    /// time: in the event's zone for Indico, converted to the server's zone for the plugin.
    fn date(&mut self, day: usize, minutes: usize) -> Value {
        let (zone, first) = self.zone;
        let first = first
            .parse::<Date>()
            .unwrap_or(jiff::civil::date(2028, 8, 21));
        let offset = Span::new().days(day as i64).minutes(minutes as i64);
        let wall = first
            .to_datetime(Time::midnight())
            .checked_add(offset)
            .unwrap_or_default();
        let (wall, tz) = match (TimeZone::get(zone), TimeZone::get(SERVER_ZONE)) {
            (Ok(event), Ok(server)) if self.plugin => {
                match event.to_ambiguous_timestamp(wall).compatible() {
                    Ok(instant) => (server.to_datetime(instant), SERVER_ZONE),
                    Err(_) => (wall, zone),
                }
            }
            _ => (wall, zone),
        };
        let date = wall.date().to_string();
        let (h, m) = (wall.hour(), wall.minute());
        let time = match self.rng.below(10) {
            0 => format!("{h:02}:{m:02}"),
            1 => format!("{h:02}:{m:02}:00.000000"),
            _ => format!("{h:02}:{m:02}:00"),
        };
        json!({"date": date, "time": time, "tz": tz})
    }

    fn contribution(&mut self, plan: &Plan, session_code: Option<&str>) -> Value {
        let k = plan.index;
        let id = 600 + k as u64;
        let mut title = format!("{} {}", self.rng.pick(&OPENINGS), self.rng.pick(&TOPICS));
        let mut description = self.description();
        let mut code = plan.code.clone();
        let (s_key, e_key) = (
            self.key("startDate", "start_dt"),
            self.key("endDate", "end_dt"),
        );
        let mut start = match plan.start {
            Some((day, minutes)) => self.date(day, minutes),
            None => Value::Null,
        };
        let end = match plan.start {
            Some((day, minutes)) if !plan.poster => self.date(day, minutes + plan.minutes),
            _ => Value::Null,
        };
        let n_primary = match k % 97 {
            9 => 55,
            _ => 1 + self.rng.below(5),
        };
        let n_co = match k % 97 {
            9 => 140,
            _ => self.rng.below(22),
        };
        let mut primary: Vec<Value> = (0..n_primary).map(|_| self.person()).collect();
        let mut coauthors: Vec<Value> = (0..n_co).map(|_| self.person()).collect();
        let mut speakers = vec![primary[0].clone()];
        match k {
            0 => title = "Gantries <b>&amp; \"quoted\"</b> & <i>more</i>".into(),
            1 => description = "First paragraph.\r\nSecond after CRLF.\rThird after CR.\nFourth after LF.\u{2028}Fifth after LS.\r\n\r\nAfter a blank line.\u{0B}After VT.\u{0C}After FF.\u{85}After NEL.\n".into(),
            2 => title = "Measuring 𝜇 with \u{F06D} glyphs, e\u{301}, \u{202B}قياس الحزمة\u{202C} and \u{05E9}\u{05DC}\u{05D5}\u{05DD}\u{200F}".into(),
            3 => {
                title = "Control\u{1} characters\u{1F} in\u{FFFE} titles\u{7}".into();
                description = "Bell\u{7} and NUL\u{0} and escape\u{1B} removed.\nKept: tab\there, NBSP\u{A0}here.".into();
            }
            4 => title = String::new(),
            5 => title = "\r\n".into(),
            6 => {
                code.clear();
                description = String::new();
            }
            7 => speakers.push(self.person()), // a speaker who is not an author
            8 => {
                primary.clear();
                coauthors.clear();
                speakers.push(self.person());
            }
            10 => {
                coauthors.push(json!({"id": "nameless", "first_name": "", "last_name": "", "affiliation": "Nowhere"}));
                coauthors.push(json!(42));
            }
            11 => title = "  Braces {start} and {code}  stay,\tliteral  ".into(),
            12 => start = json!({"date": "2028-02-30", "time": "25:99", "tz": self.zone.0}),
            _ => {}
        }
        let mut c = Map::new();
        c.insert("id".into(), json!(id.to_string()));
        c.insert("friendly_id".into(), json!(k + 1));
        c.insert("code".into(), json!(code));
        c.insert(
            "title".into(),
            if k == 5 { Value::Null } else { json!(title) },
        );
        c.insert(s_key.into(), start);
        c.insert(e_key.into(), end);
        c.insert("duration".into(), json!(plan.minutes));
        c.insert(
            "description".into(),
            if k == 6 {
                Value::Null
            } else {
                json!(description)
            },
        );
        c.insert("speakers".into(), Value::Array(speakers));
        c.insert(
            self.key("primaryauthors", "primary_authors").into(),
            Value::Array(primary),
        );
        c.insert("coauthors".into(), Value::Array(coauthors));
        c.insert("keywords".into(), json!(["FEL", "diagnostics"]));
        c.insert("board_number".into(), json!(""));
        c.insert(
            "type".into(),
            json!(if plan.poster { "Poster" } else { "Oral" }),
        );
        if self.plugin || k.is_multiple_of(4) {
            c.insert("field_values".into(), self.field_values(k));
        }
        if self.plugin {
            c.insert("session_code".into(), json!(session_code));
            c.insert("sub_contributions".into(), json!([]));
        } else {
            c.insert("_type".into(), json!("Contribution"));
            c.insert(
                "_fossil".into(),
                json!("contributionMetadataWithSubContribs"),
            );
            c.insert("db_id".into(), json!(id));
            c.insert(
                "url".into(),
                json!(format!(
                    "https://indico.example.org/event/1443/contributions/{id}/"
                )),
            );
            c.insert("session".into(), json!(session_code));
            c.insert("material".into(), json!([]));
            c.insert("subContributions".into(), json!([]));
        }
        Value::Object(c)
    }

    fn field_values(&mut self, k: usize) -> Value {
        let footnote = match k % 5 {
            0 => json!("* corresponding author\n† now at another laboratory"),
            1 => Value::Null,
            2 => json!(""),
            _ => json!(
                "Work supported by grant FSF-2026-0042.\r\nSee also <https://example.org/?a=1&b=2>."
            ),
        };
        json!([
            {"id": 1, "name": "Footnotes", "value": footnote},
            {"id": 2, "name": "Funding Agency", "value": if k.is_multiple_of(2) { json!("Gefördert durch die Stiftung für Strahlphysik (SfS).") } else { json!(null) }},
            {"id": 3, "name": "Comments", "value": "not configured, never printed"},
        ])
    }

    fn description(&mut self) -> String {
        let mut text = String::new();
        for i in 0..5 + self.rng.below(5) {
            if i > 0 {
                text.push_str(match self.rng.below(8) {
                    0 => "\n",
                    1 => "\r\n",
                    2 => "\n\n",
                    _ => " ",
                });
            }
            text.push_str(self.rng.pick(&SENTENCES));
        }
        text
    }

    fn person(&mut self) -> Value {
        let id = self.id();
        let (first, last) = (self.rng.pick(&FIRST), self.rng.pick(&LAST));
        let affiliation = self.rng.pick(&AFFILIATIONS);
        if self.plugin {
            let multiple = if self.rng.chance(10) {
                json!([affiliation, self.rng.pick(&AFFILIATIONS[..11])])
            } else {
                json!([])
            };
            return json!({
                "id": id.to_string(), "email": format!("p{id}@example.org"),
                "first_name": first, "last_name": last, "affiliation": affiliation,
                "multiple_affiliations": multiple,
            });
        }
        json!({
            "_type": "ContributionParticipation", "_fossil": "contributionParticipationMetadata",
            "first_name": first, "last_name": last, "fullName": format!("{last}, {first}"),
            "id": id.to_string(), "affiliation": affiliation,
            "emailHash": format!("{:032x}", u128::from(id) * 0x9E37_79B9_7F4A_7C15),
            "db_id": id, "person_id": id / 2,
        })
    }

    fn convener(&mut self) -> Value {
        let id = self.id();
        let (first, last) = (self.rng.pick(&FIRST), self.rng.pick(&LAST));
        let affiliation = self.rng.pick(&AFFILIATIONS);
        if self.plugin {
            return json!({
                "id": id, "title": "Dr.", "first_name": first, "last_name": last,
                "affiliation": affiliation, "email": null, "multiple_affiliations": [],
            });
        }
        json!({
            "_type": "SlotChair", "_fossil": "conferenceParticipation", "id": id, "title": "Dr.",
            "first_name": first, "last_name": last, "firstName": first, "familyName": last,
            "fullName": format!("{last}, {first}"), "affiliation": affiliation, "emailHash": null,
        })
    }
}
