//! `buildmaster new-plugin dialect|reporter NAME DIR`: writes a plugin crate
//! that builds with `cargo build` and loads in a master as it is.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// What the new plugin offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Dialect,
    Reporter,
}

const CARGO_TOML: &str = include_str!("../templates/plugin/Cargo.toml.in");
const GITIGNORE: &str = include_str!("../templates/plugin/gitignore.in");
const README: &str = include_str!("../templates/plugin/README.md.in");
const DIALECT: &str = include_str!("../templates/plugin/dialect.rs.in");
const REPORTER: &str = include_str!("../templates/plugin/reporter.rs.in");

/// Writes the crate of plugin `name` into `dir`, which must not exist or be
/// empty. `sdk` is the SDK's source directory, for a dependency by path as
/// well as by version; by default the one this master was built from, when
/// it is still there.
pub fn create(kind: Kind, name: &str, dir: &Path, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    check_name(name)?;
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = match sdk {
        Some(path) => Some(path),
        None => {
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api");
            built_from
                .join("Cargo.toml")
                .is_file()
                .then_some(built_from)
        }
    };
    // The SDK's major.minor: a newer 1.x is fine, an older one lacks API.
    let version = buildmaster_plugin_api::SDK_VERSION
        .rsplit_once('.')
        .map_or(buildmaster_plugin_api::SDK_VERSION, |(minor, _patch)| minor);
    let dependency = match &sdk {
        Some(path) => {
            let path = std::fs::canonicalize(path)
                .with_context(|| format!("cannot find the SDK at {}", path.display()))?;
            let path = toml::Value::String(path.display().to_string());
            format!("{{ version = \"{version}\", path = {path} }}")
        }
        None => format!("\"{version}\""),
    };
    let header: String = name
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or(String::new(), |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    // Suffixed, so that no name can clash with the template's own types.
    let type_name = match kind {
        Kind::Dialect => format!("{header}Dialect"),
        Kind::Reporter => format!("{header}Reporter"),
    };
    let enable = match kind {
        Kind::Dialect => format!(
            "Enable it in `master.toml`:\n\n```toml\n[www.change_hook_dialects.{name}]\ntoken = \"change-me\"\n```\n\n\
             then run `buildmaster reconfig /path/to/basedir` (or restart the master)."
        ),
        Kind::Reporter => format!(
            "Add it to `master.toml`:\n\n```toml\n[[reporters]]\nname = \"{name}\"\ntype = \"{name}\"\n\
             url = \"https://chat.example.org/hooks/ci\"\n```\n\n\
             then run `buildmaster reconfig /path/to/basedir` (or restart the master)."
        ),
    };
    let fill = |template: &str| {
        template
            .replace("{{crate}}", &name.replace('_', "-"))
            .replace("{{sdk}}", &dependency)
            .replace("{{name}}", name)
            .replace("{{Name}}", &header)
            .replace("{{Type}}", &type_name)
            .replace("{{lib}}", name)
            .replace("{{enable}}", &enable)
            .replace(
                "{{kind}}",
                match kind {
                    Kind::Dialect => "change-hook dialect",
                    Kind::Reporter => "reporter",
                },
            )
    };
    let source = match kind {
        Kind::Dialect => DIALECT,
        Kind::Reporter => REPORTER,
    };
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    for (file, template) in [
        ("Cargo.toml", CARGO_TOML),
        (".gitignore", GITIGNORE),
        ("README.md", README),
        ("src/lib.rs", source),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, fill(template))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if sdk.is_none() {
        eprintln!(
            "warning: the plugin SDK's sources are not on this machine and buildmaster-plugin-api \
             is not published: give its directory with --sdk DIR (plugin-api/ in a buildmaster \
             checkout) or edit Cargo.toml"
        );
    }
    println!(
        "created {} plugin '{name}' in {}; build it with: cd {} && cargo build",
        match kind {
            Kind::Dialect => "dialect",
            Kind::Reporter => "reporter",
        },
        dir.display(),
        dir.display()
    );
    Ok(())
}

/// Names Cargo refuses for a package: Rust's keywords and the standard crates.
const RESERVED: &[&str] = &[
    "abstract",
    "alloc",
    "as",
    "async",
    "await",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "do",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "proc_macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "try",
    "type",
    "typeof",
    "unsafe",
    "unsized",
    "use",
    "virtual",
    "where",
    "while",
    "yield",
];

/// A name is a kind in `master.toml`, a crate name and part of a Rust type
/// name: lower-case ASCII letters, digits and `_`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        bail!(
            "plugin name '{name}': use lower-case letters, digits and '_', starting with a letter"
        );
    }
    if RESERVED.contains(&name) {
        bail!("plugin name '{name}' is reserved by Rust; choose another");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_directories_are_checked() {
        assert!(check_name("hello_world2").is_ok());
        for bad in ["", "Hello", "2go", "my-plugin", "a b", "self", "type"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "").unwrap();
        let error = create(Kind::Dialect, "hello", dir.path(), None).unwrap_err();
        assert!(
            error.to_string().ends_with("exists and is not empty"),
            "{error}"
        );
    }

    #[test]
    fn every_placeholder_is_filled() {
        let dir = tempfile::tempdir().unwrap();
        for kind in [Kind::Dialect, Kind::Reporter] {
            let target = dir.path().join(format!("{kind:?}"));
            create(kind, "my_hook", &target, None).unwrap();
            for file in ["Cargo.toml", "README.md", "src/lib.rs"] {
                let text = std::fs::read_to_string(target.join(file)).unwrap();
                assert!(!text.contains("{{"), "{file}: {text}");
            }
            let lib = std::fs::read_to_string(target.join("src/lib.rs")).unwrap();
            assert!(lib.contains(&format!("pub struct MyHook{kind:?}")));
        }
    }
}
