//! What a plugin library offers, readable from the file without loading it.
//!
//! [`export_plugin!`](crate::export_plugin) writes a short text into the
//! library's ELF section [`SECTION`]:
//!
//! ```text
//! buildmaster-plugin 1
//! abi 1.1
//! sdk 1.1.0
//! name github
//! version 0.1.0
//! dialect github
//! ```
//!
//! one `dialect` or `reporter` line per kind offered. The master reads it to
//! learn which library offers what, and maps only the libraries its
//! configuration uses. Libraries built before ABI 1.1 have no such section;
//! the master loads those to ask them.

use std::fmt;

/// The ELF section holding the text.
pub const SECTION: &str = ".buildmaster_plugin";

/// The first line of the text: its format and the format's version.
const HEADER: &str = "buildmaster-plugin 1";

/// A library's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The plugin ABI it was built for, `major.minor`.
    pub abi_version: String,
    /// The version of this crate it was built with.
    pub sdk_version: String,
    pub name: String,
    pub version: String,
    pub dialects: Vec<String>,
    pub reporters: Vec<String>,
}

impl Metadata {
    /// Reads the section's text; trailing NUL padding is ignored.
    pub fn parse(bytes: &[u8]) -> Result<Metadata, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "the plugin description is not UTF-8".to_string())?
            .trim_end_matches('\0');
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!(
                "the plugin description does not start with '{HEADER}'"
            ));
        }
        let mut metadata = Metadata {
            abi_version: String::new(),
            sdk_version: String::new(),
            name: String::new(),
            version: String::new(),
            dialects: Vec::new(),
            reporters: Vec::new(),
        };
        for line in lines.filter(|l| !l.is_empty()) {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("unreadable plugin description line '{line}'"))?;
            let value = value.to_string();
            match key {
                "abi" => metadata.abi_version = value,
                "sdk" => metadata.sdk_version = value,
                "name" => metadata.name = value,
                "version" => metadata.version = value,
                "dialect" => metadata.dialects.push(value),
                "reporter" => metadata.reporters.push(value),
                // Keys from later formats are skipped.
                _ => {}
            }
        }
        if metadata.abi_version.is_empty() || metadata.name.is_empty() {
            return Err("the plugin description lacks its ABI version or name".into());
        }
        Ok(metadata)
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{HEADER}")?;
        writeln!(f, "abi {}", self.abi_version)?;
        writeln!(f, "sdk {}", self.sdk_version)?;
        writeln!(f, "name {}", self.name)?;
        writeln!(f, "version {}", self.version)?;
        for kind in &self.dialects {
            writeln!(f, "dialect {kind}")?;
        }
        for kind in &self.reporters {
            writeln!(f, "reporter {kind}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Compile-time encoding, for the export macro.

/// The text's parts before the kinds, in order, as the export macro passes them.
#[doc(hidden)]
pub const PREAMBLE: [&str; 4] = [HEADER, "\nabi ", crate::ABI_VERSION, "\nsdk "];

/// The length of `parts` joined.
#[doc(hidden)]
pub const fn encoded_len(parts: &[&str]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < parts.len() {
        total += parts[i].len();
        i += 1;
    }
    total
}

/// `parts` joined into an array of exactly `N` bytes.
#[doc(hidden)]
pub const fn encode<const N: usize>(parts: &[&str]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut i = 0;
    while i < parts.len() {
        let bytes = parts[i].as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            out[at] = bytes[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(at == N, "plugin description length mismatch");
    out
}

/// Fails the build when a plugin name, version or kind is empty or holds
/// whitespace, which the text could not carry.
#[doc(hidden)]
pub const fn check_word(word: &str) {
    let bytes = word.as_bytes();
    assert!(
        !bytes.is_empty(),
        "plugin names, versions and kinds must not be empty"
    );
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            !bytes[i].is_ascii_whitespace(),
            "plugin names, versions and kinds must not contain whitespace"
        );
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_reads_back() {
        let metadata = Metadata {
            abi_version: "1.1".into(),
            sdk_version: "1.1.0".into(),
            name: "bitbucket".into(),
            version: "0.1.0".into(),
            dialects: vec!["bitbucketcloud".into(), "bitbucketserver".into()],
            reporters: vec!["bitbucket_status".into()],
        };
        let text = metadata.to_string();
        assert_eq!(Metadata::parse(text.as_bytes()).unwrap(), metadata);
        let padded = format!("{text}later-key x\n\0\0");
        assert_eq!(Metadata::parse(padded.as_bytes()).unwrap(), metadata);
        assert!(Metadata::parse(b"something else").is_err());
        assert!(Metadata::parse(b"buildmaster-plugin 1\nname x\n").is_err());
    }

    #[test]
    fn compile_time_encoding_joins_the_parts() {
        const PARTS: [&str; 3] = ["a", "bc", "\n"];
        const BYTES: [u8; encoded_len(&PARTS)] = encode(&PARTS);
        assert_eq!(&BYTES, b"abc\n");
    }
}
