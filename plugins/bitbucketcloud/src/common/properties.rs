//! The `bitbucket.*` properties of a pull-request change: the leaves of the
//! `pullrequest` object whose dotted names match a `bitbucket_property_whitelist`
//! pattern. Patterns are shell-style globs as Python's `fnmatch` reads them
//! (`*`, `?`, `[abc]`, `[a-z]`, `[!abc]`; case-sensitive).

use serde_json::{Map, Value};

/// The whitelisted leaves of `pull_request`, named `bitbucket.<dotted path>`.
/// Objects are walked into; every other value, lists included, is a leaf.
pub fn whitelisted(pull_request: &Value, patterns: &[String]) -> Map<String, Value> {
    let mut properties = Map::new();
    if let (Some(object), false) = (pull_request.as_object(), patterns.is_empty()) {
        flatten("bitbucket", object, patterns, &mut properties);
    }
    properties
}

fn flatten(
    base: &str,
    object: &Map<String, Value>,
    patterns: &[String],
    properties: &mut Map<String, Value>,
) {
    for (key, value) in object {
        let name = format!("{base}.{key}");
        match value {
            Value::Object(inner) => flatten(&name, inner, patterns, properties),
            _ if patterns.iter().any(|p| glob_match(p, &name)) => {
                properties.insert(name, value.clone());
            }
            _ => {}
        }
    }
}

/// Whether the whole of `name` matches the glob `pattern`.
fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where to resume after the last `*`: the pattern after it, and the name
    // position it has swallowed up to.
    let mut resume: Option<(usize, usize)> = None;
    while n < name.len() {
        if pattern.get(p) == Some(&'*') {
            resume = Some((p + 1, n));
            p += 1;
            continue;
        }
        if let Some(next) = match_one(&pattern, p, name[n]) {
            p = next;
            n += 1;
            continue;
        }
        match resume {
            Some((after_star, swallowed)) => {
                resume = Some((after_star, swallowed + 1));
                p = after_star;
                n = swallowed + 1;
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches the one-character element of `pattern` at `p` against `c`; returns
/// the position after that element when it matches.
fn match_one(pattern: &[char], p: usize, c: char) -> Option<usize> {
    match *pattern.get(p)? {
        '?' => Some(p + 1),
        '[' => match class_end(pattern, p) {
            Some(end) => class_matches(&pattern[p + 1..end], c).then_some(end + 1),
            // An unclosed `[` is an ordinary character.
            None => (c == '[').then_some(p + 1),
        },
        literal => (literal == c).then_some(p + 1),
    }
}

/// The position of the `]` closing the class opened at `open`. A `]` right after
/// `[` or `[!` belongs to the class.
fn class_end(pattern: &[char], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if pattern.get(i) == Some(&'!') {
        i += 1;
    }
    if pattern.get(i) == Some(&']') {
        i += 1;
    }
    (i..pattern.len()).find(|&j| pattern[j] == ']')
}

fn class_matches(class: &[char], c: char) -> bool {
    let (negated, items) = match class.split_first() {
        Some(('!', rest)) => (true, rest),
        _ => (false, class),
    };
    let mut found = false;
    let mut i = 0;
    while i < items.len() {
        if i + 2 < items.len() && items[i + 1] == '-' {
            found |= items[i] <= c && c <= items[i + 2];
            i += 3;
        } else {
            found |= items[i] == c;
            i += 1;
        }
    }
    found != negated
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_follow_fnmatch() {
        for (pattern, name) in [
            ("bitbucket.*", "bitbucket.a.b.c"),
            ("*.id", "bitbucket.id"),
            ("bitbucket.?d", "bitbucket.id"),
            ("bitbucket.[a-j]d", "bitbucket.id"),
            ("bitbucket.[!x]d", "bitbucket.id"),
            ("bitbucket.[]]", "bitbucket.]"),
            ("a[b", "a[b"),
            ("*a*b*", "xxaxxbxx"),
            ("", ""),
        ] {
            assert!(glob_match(pattern, name), "{pattern} should match {name}");
        }
        for (pattern, name) in [
            ("bitbucket.id", "bitbucket.idx"),
            ("bitbucket.?", "bitbucket.id"),
            ("bitbucket.[!i]d", "bitbucket.id"),
            ("Bitbucket.*", "bitbucket.id"),
            ("*a*b", "xxaxxbxx"),
            ("a[b", "ab"),
        ] {
            assert!(
                !glob_match(pattern, name),
                "{pattern} should not match {name}"
            );
        }
    }

    #[test]
    fn only_matching_leaves_are_kept() {
        let pr = json!({
            "id": 3,
            "title": "T",
            "source": {"branch": {"name": "f"}, "commit": {"hash": "abc"}},
            "reviewers": [{"nickname": "r"}],
            "description": null,
            "empty": {}
        });
        let patterns = ["bitbucket.source.*".to_string(), "*.reviewers".to_string()];
        let props = whitelisted(&pr, &patterns);
        assert_eq!(
            Value::Object(props),
            json!({
                "bitbucket.source.branch.name": "f",
                "bitbucket.source.commit.hash": "abc",
                "bitbucket.reviewers": [{"nickname": "r"}]
            })
        );
        let all = whitelisted(&pr, &["bitbucket.*".to_string()]);
        assert_eq!(all.get("bitbucket.description"), Some(&Value::Null));
        assert_eq!(all.len(), 6);
        assert!(whitelisted(&pr, &[]).is_empty());
    }
}
