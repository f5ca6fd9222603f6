//! Problems the TOML parser and serde report (syntax, unknown keys, wrong types), turned into a
//! [`ConfigError`] like a validator's: the line, the section-qualified key at that place
//! (`daemon.resync_interval`, `members[1].endpoint`), and a hint that helps (the key meant, a duration
//! example, the reference an installed system has).

use std::path::Path;

use super::ConfigError;

/// Keys that take a duration, by their last component, with the example a hint gives.
const DURATIONS: &[(&str, &str)] = &[
    ("resync_interval", "10s"),
    ("preempt_delay", "5s"),
    ("report_interval", "5s"),
    ("timeout", "500ms"),
    ("interval", "1s"),
    ("ephemeral_ttl", "10m"),
    ("spot_ttl", "2m"),
    ("silent_after", "15s"),
    ("header_read_timeout", "10s"),
    ("max_connection_age", "10m"),
    ("request_timeout", "10s"),
    ("report_min_interval", "500ms"),
];

/// The parser's error `e` of `text` (the contents of `path`) as a problem: its line, the key there, and a
/// hint; `reference(key)` names where the key's section is documented (a file or URL that exists where the
/// program is installed).
pub fn toml_problem(path: &Path, text: &str, e: &toml::de::Error, reference: &dyn Fn(&str) -> String) -> ConfigError {
    let message = e.message().trim_end().to_owned();
    let (line, key) = match e.span() {
        Some(span) => locate(text, span.start),
        None => (0, String::new()),
    };
    let hint = hint(&key, &message, &reference(&key));
    ConfigError {
        path: path.to_owned(),
        line,
        key,
        message,
        hint,
    }
}

/// The 1-based line of `offset` in `text` and the dotted key that line (or, inside a multi-line value, the
/// line that opened it) sets, qualified by its table: `daemon.resync_interval`, `members[1].endpoint`,
/// `vip[0].health.kind`. On a table header, the table itself (`k3`); empty when nothing can be told.
pub fn locate(text: &str, offset: usize) -> (usize, String) {
    let offset = offset.min(text.len());
    let line_no = text.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count() + 1;
    let lines: Vec<&str> = text.lines().collect();
    let mut table = String::new();
    // Arrays of tables seen so far, with how many entries each has.
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut key = String::new();
    for (i, raw) in lines.iter().enumerate().take(line_no) {
        let l = raw.trim();
        if let Some(name) = header(l) {
            let array = l.starts_with("[[");
            if array {
                match arrays.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, count)) => *count += 1,
                    None => arrays.push((name.clone(), 1)),
                }
            }
            table = qualify(&name, &arrays);
            key = if i + 1 == line_no { table.clone() } else { String::new() };
            continue;
        }
        if let Some(k) = assigned_key(l) {
            key = if table.is_empty() { k } else { format!("{table}.{k}") };
        } else if i + 1 == line_no && key.is_empty() {
            key = table.clone();
        }
    }
    (line_no, key)
}

/// The table a header line names (`[daemon]` → `daemon`, `[[members]]` → `members`), if it is one.
fn header(line: &str) -> Option<String> {
    let inner = if let Some(rest) = line.strip_prefix("[[") {
        rest.split("]]").next()?
    } else {
        line.strip_prefix('[')?.split(']').next()?
    };
    let name: String = inner.split('.').map(str::trim).collect::<Vec<_>>().join(".");
    (!name.is_empty()).then_some(name)
}

/// `name` with its array-of-tables components indexed: `vip.health` after two `[[vip]]` → `vip[1].health`.
fn qualify(name: &str, arrays: &[(String, usize)]) -> String {
    let (mut out, mut plain) = (String::new(), String::new());
    for part in name.split('.') {
        if !plain.is_empty() {
            out.push('.');
            plain.push('.');
        }
        out.push_str(part);
        plain.push_str(part);
        if let Some((_, count)) = arrays.iter().find(|(n, _)| *n == plain) {
            out.push_str(&format!("[{}]", count - 1));
        }
    }
    out
}

/// The bare or dotted key a `key = value` line sets.
fn assigned_key(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    let ok = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' '));
    ok.then(|| k.split('.').map(str::trim).collect::<Vec<_>>().join("."))
}

/// What to do about `message` at `key`: the key meant (an unknown key close to a known one), a duration's
/// form, a duplicate removed; else where every key is documented.
fn hint(key: &str, message: &str, reference: &str) -> String {
    let see = format!("see {reference} for every key and its type");
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (unknown, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        if let Some(best) = closest(unknown, &known) {
            return format!("did you mean `{best}`? ({see})");
        }
        return see;
    }
    if message.contains("duplicate key") {
        return "keep one of the two lines that set it".into();
    }
    let last = key.rsplit('.').next().unwrap_or(key);
    if message.contains("expected a string") || message.contains("expected a duration") {
        let example = if key.starts_with("failover.") && last == "interval" {
            Some("50ms")
        } else {
            DURATIONS.iter().find(|(k, _)| *k == last).map(|(_, e)| *e)
        };
        if let Some(example) = example {
            return format!("a duration is a quoted string with its unit, e.g. {last} = \"{example}\" (ms, s, m, h)");
        }
    }
    see
}

/// The candidate within edit distance 2 (or a third of its length) of `word`, if one is closest.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.len() / 3).max(2);
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance between two short ASCII-ish strings.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_qualifies_keys_by_table_and_array_index() {
        let text = "top = 1\n[daemon]\nresync_interval = 5\n[[members]]\nname = \"a\"\n[[members]]\nname = \"b\"\n\
                    endpoint = 3\n[[vip]]\naddress = \"x\"\n[vip.health]\nkind = 1\ncandidates = [\n  \"a\",\n  2,\n]\n";
        let at = |needle: &str| locate(text, text.find(needle).unwrap());
        assert_eq!(at("top"), (1, "top".into()));
        assert_eq!(at("5"), (3, "daemon.resync_interval".into()));
        assert_eq!(at("3\n"), (8, "members[1].endpoint".into()));
        assert_eq!(at("kind = 1"), (12, "vip[0].health.kind".into()));
        assert_eq!(
            at("2,"),
            (15, "vip[0].health.candidates".into()),
            "inside a multi-line value"
        );
        assert_eq!(
            at("[vip.health]"),
            (11, "vip[0].health".into()),
            "a header names its table"
        );
    }

    #[test]
    fn hints_name_the_key_meant_and_the_duration_form() {
        let h = hint(
            "registry.enrolment_token_file",
            "unknown field `enrolment_token_file`, expected one of `url`, `insecure`, `enrollment_token_file`, `name`",
            "REF",
        );
        assert_eq!(
            h,
            "did you mean `enrollment_token_file`? (see REF for every key and its type)"
        );
        let h = hint(
            "interface.zzz",
            "unknown field `zzz`, expected one of `name`, `mtu`",
            "REF",
        );
        assert_eq!(h, "see REF for every key and its type");
        let h = hint(
            "registry.report_interval",
            "invalid type: integer `5`, expected a string",
            "REF",
        );
        assert!(h.contains("report_interval = \"5s\""), "{h}");
        let h = hint(
            "failover.interval",
            "invalid type: integer `5`, expected a string",
            "REF",
        );
        assert!(h.contains("interval = \"50ms\""), "{h}");
        assert!(hint("spot_ttl", "duplicate key", "REF").contains("keep one"));
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("listen_prot", "listen_port"), 2);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(closest("k3", &["interface", "k3s"]), Some("k3s"));
        assert_eq!(closest("zzzzzz", &["interface", "k3s"]), None);
    }
}
