//! Command arguments split and quoted as a POSIX shell does, as Buildbot's
//! chat bots read them.

/// The words of `text`: split at blanks, with `'...'`, `"..."` and `\`
/// quoting. An unbalanced quote is an error worded as Python's `shlex`.
pub fn split(text: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("No closing quotation"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("No closing quotation"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => return Err("No escaped character"),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `word` quoted so that [`split`] gives it back whole.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\"'\"'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            split(r#"build b1 'my reason' "a \"b\"" c\ d"#).unwrap(),
            vec!["build", "b1", "my reason", "a \"b\"", "c d"]
        );
        assert_eq!(split("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split("x=''").unwrap(), vec!["x="]);
        assert_eq!(split("'unclosed"), Err("No closing quotation"));
    }

    #[test]
    fn quoted_words_come_back_whole() {
        for word in ["plain", "my reason", "it's", "", "a\"b", "x=1"] {
            assert_eq!(split(&quote(word)).unwrap(), vec![word.to_string()]);
        }
        assert_eq!(quote("my reason"), "'my reason'");
    }
}
