//! Shell-style patterns, as Python's `fnmatch.fnmatchcase` reads them (and so
//! as Buildbot's property whitelists do): `*` matches any run of characters (dots
//! included), `?` one character, `[abc]`, `[a-z]` and `[!abc]` one character of a
//! set. Matching is case-sensitive and covers the whole name.

/// One compiled pattern. As an option it is written as a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(Vec<Token>);

impl<'de> serde::Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Glob, D::Error> {
        String::deserialize(deserializer).map(|pattern| Glob::new(&pattern))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Star,
    Any,
    Literal(char),
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Token {
    /// Whether this single-character token matches `c` (never called for `Star`).
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Literal(l) => *l == c,
            Token::Set { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            i += 1;
            tokens.push(match c {
                '*' => Token::Star,
                '?' => Token::Any,
                '[' => match set(&chars[i..]) {
                    Some((token, used)) => {
                        i += used;
                        token
                    }
                    // An unclosed `[` stands for itself.
                    None => Token::Literal('['),
                },
                c => Token::Literal(c),
            });
        }
        Glob(tokens)
    }

    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let tokens = &self.0;
        let (mut t, mut n) = (0, 0);
        // Where to resume after the last `*`: the token after it, and the name
        // position it has swallowed up to.
        let mut resume: Option<(usize, usize)> = None;
        while n < name.len() {
            match tokens.get(t) {
                Some(Token::Star) => {
                    resume = Some((t + 1, n));
                    t += 1;
                    continue;
                }
                Some(token) if token.matches(name[n]) => {
                    t += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
            match resume {
                Some((after_star, swallowed)) => {
                    resume = Some((after_star, swallowed + 1));
                    t = after_star;
                    n = swallowed + 1;
                }
                None => return false,
            }
        }
        tokens[t..].iter().all(|token| *token == Token::Star)
    }
}

/// Reads a set after its `[`: returns it and the number of characters used,
/// including the closing `]`, or `None` when it is not closed. A `]` right after
/// `[` or `[!` belongs to the set.
fn set(chars: &[char]) -> Option<(Token, usize)> {
    let negated = chars.first() == Some(&'!');
    let mut i = usize::from(negated);
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars.get(i)?;
        if c == ']' && !first {
            return Some((Token::Set { negated, ranges }, i + 1));
        }
        first = false;
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;
    use serde::Deserialize;

    fn matches(pattern: &str, name: &str) -> bool {
        Glob::new(pattern).matches(name)
    }

    #[test]
    fn star_matches_across_dots() {
        assert!(matches("github.*", "github.head.repo.full_name"));
        assert!(matches("github.*", "github."));
        assert!(matches("*.sha", "github.head.sha"));
        assert!(matches("github.*.ref", "github.base.ref"));
        assert!(matches("*", ""));
        assert!(!matches("github.*", "github"));
        assert!(!matches("github.*.ref", "github.base.refs"));
    }

    #[test]
    fn the_whole_name_must_match_case_sensitively() {
        assert!(matches("github.number", "github.number"));
        assert!(!matches("github.number", "github.numbers"));
        assert!(!matches("github.number", "x.github.number"));
        assert!(!matches("github.Number", "github.number"));
    }

    #[test]
    fn question_mark_and_sets() {
        assert!(matches("github.?ead.sha", "github.head.sha"));
        assert!(!matches("github.?ead.sha", "github.ead.sha"));
        assert!(matches("github.[hb]*.ref", "github.base.ref"));
        assert!(!matches("github.[!hb]*.ref", "github.base.ref"));
        assert!(matches("v[0-9]", "v7"));
        assert!(!matches("v[0-9]", "vx"));
        assert!(matches("a[]]b", "a]b"));
        assert!(matches("a[-x]", "a-"));
        assert!(matches("a[x", "a[x"));
    }

    #[test]
    fn fnmatch_corner_cases() {
        for (pattern, name) in [
            ("bitbucket.[]]", "bitbucket.]"),
            ("a[b", "a[b"),
            ("*a*b*", "xxaxxbxx"),
            ("", ""),
        ] {
            assert!(matches(pattern, name), "{pattern} should match {name}");
        }
        for (pattern, name) in [("*a*b", "xxaxxbxx"), ("a[b", "ab"), ("", "x")] {
            assert!(!matches(pattern, name), "{pattern} should not match {name}");
        }
    }

    #[test]
    fn a_pattern_option_is_a_string() {
        let glob = Glob::deserialize(serde_json::json!("v[0-9]")).unwrap();
        assert!(glob.matches("v1"));
        assert!(Glob::deserialize(serde_json::json!(1)).is_err());
    }

    #[test]
    fn backtracking_finds_a_later_match() {
        assert!(matches("*a*b", "xaxxaxb"));
        assert!(!matches("*a*b", "xaxxaxc"));
        assert!(matches("**.sha", "github.head.sha"));
    }
}
