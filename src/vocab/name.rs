//! Peer names: the one rule for what a node may be called in its network, as the daemon's configuration,
//! the registry's enrollment and `sdwanctl` all check it.
//!
//! A peer name is 1-64 ASCII letters (either case), digits, `-`, `_` or `.`. It is used in logs, metric
//! labels, member lists and as the target of an operator's VIP move, so it must print without quoting and
//! stay short; case is kept as given (`Web-1` and `web-1` are two names).
//!
//! [`PeerName`](crate::vocab::name::PeerName) can only hold a name that follows the rule: it is built by
//! `PeerName::parse` (or `FromStr`, `TryFrom<String>`) and checked again wherever it is deserialised.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The longest peer name, in characters (every allowed character is ASCII, so in bytes too).
pub const MAX_LEN: usize = 64;

/// The rule, as error messages and configuration hints state it.
pub const RULE: &str = "1-64 ASCII letters, digits, '-', '_' or '.'";

/// A peer name that follows the rule (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PeerName(String);

impl PeerName {
    /// Checks `name` against the rule.
    pub fn parse(name: &str) -> Result<PeerName, PeerNameError> {
        match problem(name) {
            None => Ok(PeerName(name.to_owned())),
            Some(problem) => Err(PeerNameError {
                name: name.to_owned(),
                problem,
            }),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What is wrong with a name, or `None` if it follows the rule. The first forbidden character is named
/// before the length, so a long name with a bad character is told about the character.
fn problem(name: &str) -> Option<Problem> {
    if name.is_empty() {
        return Some(Problem::Empty);
    }
    if let Some((i, c)) = name
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Some(Problem::Forbidden { ch: c, position: i + 1 });
    }
    (name.len() > MAX_LEN).then_some(Problem::TooLong { len: name.len() })
}

impl FromStr for PeerName {
    type Err = PeerNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerName::parse(s)
    }
}

impl TryFrom<String> for PeerName {
    type Error = PeerNameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match problem(&name) {
            None => Ok(PeerName(name)),
            Some(problem) => Err(PeerNameError { name, problem }),
        }
    }
}

impl From<PeerName> for String {
    fn from(name: PeerName) -> String {
        name.0
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PeerName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Deref for PeerName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A name that breaks the rule: the name, what is wrong with it, and (in the message) what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer name {name:?} {problem}: use {RULE}")]
pub struct PeerNameError {
    /// The name as given.
    name: String,
    /// What is wrong with it.
    problem: Problem,
}

impl PeerNameError {
    /// The refused name, as given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is wrong with it.
    pub fn problem(&self) -> Problem {
        self.problem
    }
}

/// What is wrong with a refused name; displays as the rest of a sentence that starts with the name
/// ("is empty", "has ' ' at position 3", "is 65 characters long").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The name is empty.
    Empty,
    /// A character outside the allowed set: the first one, and its 1-based position in characters.
    Forbidden {
        /// The character.
        ch: char,
        /// Its position, counting from 1 in characters.
        position: usize,
    },
    /// More than [`MAX_LEN`] characters (all allowed ones).
    TooLong {
        /// The name's length.
        len: usize,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Empty => f.write_str("is empty"),
            Problem::Forbidden { ch, position } => write!(f, "has {ch:?} at position {position}"),
            Problem::TooLong { len } => write!(f, "is {len} characters long"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem_of(name: &str) -> Problem {
        PeerName::parse(name).expect_err(name).problem()
    }

    #[test]
    fn names_within_the_rule_are_kept_as_given() {
        let longest = "a".repeat(MAX_LEN);
        for ok in [
            "a",
            "Z",
            "0",
            "p1",
            "node-a",
            "Web_1",
            "host.example",
            "-",
            "_a_",
            ".",
            "..",
            &longest,
        ] {
            let name = PeerName::parse(ok).expect(ok);
            assert_eq!(name.as_str(), ok);
            assert_eq!(name.to_string(), ok);
            assert_eq!(&*name, ok);
            assert_eq!(ok.parse::<PeerName>(), Ok(name.clone()));
            assert_eq!(PeerName::try_from(ok.to_owned()), Ok(name));
        }
    }

    #[test]
    fn the_boundaries_are_one_and_sixty_four_characters() {
        assert_eq!(problem_of(""), Problem::Empty);
        assert!(PeerName::parse(&"a".repeat(MAX_LEN)).is_ok());
        assert_eq!(
            problem_of(&"a".repeat(MAX_LEN + 1)),
            Problem::TooLong { len: MAX_LEN + 1 }
        );
    }

    #[test]
    fn each_forbidden_class_is_named_with_its_position() {
        let cases = [
            ("no spaces", ' ', 3),
            ("a/b", '/', 2),
            ("a:b", ':', 2),
            ("tab\t", '\t', 4),
            ("nul\0", '\0', 4),
            ("é", 'é', 1),
            ("naïve", 'ï', 3),
            ("a\u{200b}b", '\u{200b}', 2),
            ("ｗeb", 'ｗ', 1),
            ("a@b", '@', 2),
            ("a+b", '+', 2),
        ];
        for (name, ch, position) in cases {
            assert_eq!(problem_of(name), Problem::Forbidden { ch, position }, "{name:?}");
        }
        // The character is named before the length.
        let long = format!("{} ", "a".repeat(MAX_LEN));
        assert_eq!(
            problem_of(&long),
            Problem::Forbidden {
                ch: ' ',
                position: MAX_LEN + 1
            }
        );
    }

    #[test]
    fn the_message_names_the_problem_and_the_rule() {
        let e = PeerName::parse("Web 1").expect_err("space");
        assert_eq!(e.name(), "Web 1");
        assert_eq!(
            e.to_string(),
            "peer name \"Web 1\" has ' ' at position 4: use 1-64 ASCII letters, digits, '-', '_' or '.'"
        );
        assert!(PeerName::parse("")
            .expect_err("empty")
            .to_string()
            .contains("\"\" is empty"));
        let long = PeerName::parse(&"a".repeat(65)).expect_err("long").to_string();
        assert!(long.contains("is 65 characters long"), "{long}");
    }

    #[test]
    fn serde_checks_the_rule() {
        let name: PeerName = serde_json::from_str("\"node-1\"").expect("valid");
        assert_eq!(serde_json::to_string(&name).expect("serialise"), "\"node-1\"");
        let e = serde_json::from_str::<PeerName>("\"node 1\"").expect_err("space");
        assert!(e.to_string().contains("has ' ' at position 5"), "{e}");
        assert!(serde_json::from_str::<PeerName>("\"\"").is_err());
    }
}
