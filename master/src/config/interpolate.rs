//! Buildbot's `Interpolate` templates: strings from the configuration whose `%(KEY)s`
//! placeholders are filled from build properties, source stamps and the worker.
//!
//! A template is parsed once when the configuration loads, so syntax errors surface then
//! rather than in the middle of a build, and rendered for each build.
//!
//! Unlike Python's `%` operator, a `%` that does not start `%%` or `%(` is kept as literal
//! text, so shell commands such as `date +%s` need no escaping.

use serde_json::Value;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Literal runs are merged, so a template without placeholders has at most one part.
    parts: Vec<Part>,
}

/// Where placeholders get their values.
pub trait Lookup {
    /// A build property's value; None when the property is not set.
    fn property(&self, name: &str) -> Option<Value>;
    /// An attribute (branch, revision, repository, project, codebase) of the build's source stamp
    /// for `codebase` ("" is the default codebase); None when absent.
    fn source(&self, codebase: &str, attribute: &str) -> Option<String>;
    /// A worker attribute (e.g. "workername"); None when absent.
    fn worker(&self, key: &str) -> Option<String>;
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Placeholder(Placeholder),
}

#[derive(Debug, Clone, PartialEq)]
struct Placeholder {
    key: Key,
    modifier: Option<Modifier>,
}

/// What a placeholder looks up.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Property(String),
    Source { codebase: String, attribute: String },
    Worker(String),
}

/// The attributes a `src` placeholder may name.
const SOURCE_ATTRIBUTES: [&str; 5] = ["branch", "revision", "repository", "project", "codebase"];

/// The part of a placeholder after its key, which decides what an unset or falsy value renders as.
#[derive(Debug, Clone, PartialEq)]
enum Modifier {
    /// `-TEXT` and `~TEXT`: the value when it passes `when`, else `text`.
    Fallback { when: Condition, text: Template },
    /// `+TEXT`, `?|A|B` and `#?|A|B`: `then` when the value passes `when`, else `otherwise`.
    Choose {
        when: Condition,
        then: Template,
        otherwise: Template,
    },
}

/// The test a modifier applies to a placeholder's value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Condition {
    /// The value is set, whatever it is.
    Set,
    /// The value is set and true by Python's rules.
    Truthy,
}

impl Template {
    /// Parses `text`. Errors are one line and quote the offending placeholder, e.g.
    /// "unterminated placeholder '%(prop:x' in '...'", "unknown placeholder kind 'foo' in '%(foo:x)s'
    /// (expected prop, src or worker)", "missing 's' after '%(prop:x)'".
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                literal.push('%');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(') {
                let (body, tail) = split_placeholder(inner, text)?;
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(Part::Placeholder(Placeholder::parse(body)?));
                rest = tail;
            } else {
                literal.push('%');
                rest = after;
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Renders with values from `context`.
    pub fn render(&self, context: &dyn Lookup) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Placeholder(placeholder) => out.push_str(&placeholder.render(context)),
            }
        }
        out
    }

    /// The text back when the template has no placeholder (None otherwise); lets callers skip rendering.
    pub fn as_literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }
}

/// Splits the text after a `%(` into the placeholder's body and the text after its `)s`.
fn split_placeholder<'a>(inner: &'a str, whole: &str) -> Result<(&'a str, &'a str), String> {
    let close = find_unnested(inner, ')').ok_or_else(|| {
        format!(
            "unterminated placeholder {} in {}",
            quote(&format!("%({inner}")),
            quote(whole)
        )
    })?;
    let body = &inner[..close];
    match inner[close + 1..].strip_prefix('s') {
        Some(tail) => Ok((body, tail)),
        None => Err(format!(
            "missing 's' after {}",
            quote(&format!("%({body})"))
        )),
    }
}

/// Byte offset of the first `target` outside parentheses. Parentheses are counted the way
/// Python's `%(key)` parser counts them, so nested placeholders and balanced parentheses in
/// modifier text stay inside the placeholder.
fn find_unnested(text: &str, target: char) -> Option<usize> {
    let mut depth = 0usize;
    for (at, c) in text.char_indices() {
        if depth == 0 && c == target {
            return Some(at);
        }
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// Quotes text for an error message, keeping the message on one line.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\n', "\\n").replace('\r', "\\r"))
}

impl Placeholder {
    /// Parses the body between `%(` and `)s`.
    fn parse(body: &str) -> Result<Placeholder, String> {
        let quoted = quote(&format!("%({body})s"));
        let (kind, rest) = body.split_once(':').unwrap_or((body, ""));
        let (key, modifier) = match kind {
            "prop" => {
                let (name, modifier) = split_modifier(rest);
                let name = required(name, "property name", &quoted)?;
                (Key::Property(name), modifier)
            }
            "worker" => {
                let (name, modifier) = split_modifier(rest);
                let name = required(name, "worker key", &quoted)?;
                (Key::Worker(name), modifier)
            }
            "src" => parse_source(rest, &quoted)?,
            _ => {
                return Err(format!(
                    "unknown placeholder kind {} in {quoted} (expected prop, src or worker)",
                    quote(kind)
                ))
            }
        };
        let modifier = match modifier {
            Some(text) => Some(Modifier::parse(text, &quoted)?),
            None => None,
        };
        Ok(Placeholder { key, modifier })
    }

    fn render(&self, context: &dyn Lookup) -> String {
        let value = self.key.lookup(context);
        match &self.modifier {
            None => value.map(|value| python_str(&value)).unwrap_or_default(),
            Some(Modifier::Fallback { when, text }) => {
                match value.filter(|value| when.accepts(value)) {
                    Some(value) => python_str(&value),
                    None => text.render(context),
                }
            }
            Some(Modifier::Choose {
                when,
                then,
                otherwise,
            }) => {
                if value.is_some_and(|value| when.accepts(&value)) {
                    then.render(context)
                } else {
                    otherwise.render(context)
                }
            }
        }
    }
}

/// Parses what follows `src:`: `CODEBASE:ATTR`, optionally followed by `:MODIFIER`.
fn parse_source<'a>(rest: &'a str, quoted: &str) -> Result<(Key, Option<&'a str>), String> {
    let (codebase, rest) = rest.split_once(':').ok_or_else(|| {
        format!("missing source attribute in {quoted} (expected src:CODEBASE:ATTR)")
    })?;
    let (attribute, modifier) = split_modifier(rest);
    if !SOURCE_ATTRIBUTES.contains(&attribute) {
        return Err(format!(
            "unknown source attribute {} in {quoted} (expected {})",
            quote(attribute),
            SOURCE_ATTRIBUTES.join(", ")
        ));
    }
    let key = Key::Source {
        codebase: codebase.to_string(),
        attribute: attribute.to_string(),
    };
    Ok((key, modifier))
}

/// Splits `NAME[:MODIFIER]`; names cannot contain `:`.
fn split_modifier(text: &str) -> (&str, Option<&str>) {
    match text.split_once(':') {
        Some((name, modifier)) => (name, Some(modifier)),
        None => (text, None),
    }
}

fn required(name: &str, what: &str, quoted: &str) -> Result<String, String> {
    if name.is_empty() {
        Err(format!("missing {what} in {quoted}"))
    } else {
        Ok(name.to_string())
    }
}

impl Key {
    fn lookup(&self, context: &dyn Lookup) -> Option<Value> {
        match self {
            Key::Property(name) => context.property(name),
            Key::Source {
                codebase,
                attribute,
            } => context.source(codebase, attribute).map(Value::String),
            Key::Worker(key) => context.worker(key).map(Value::String),
        }
    }
}

impl Modifier {
    /// Parses the text after the key's `:`.
    fn parse(text: &str, quoted: &str) -> Result<Modifier, String> {
        if let Some(rest) = text.strip_prefix("#?") {
            return Modifier::alternatives(Condition::Truthy, "#?", rest, quoted);
        }
        let mut chars = text.chars();
        let fallback = |when, rest| {
            Ok(Modifier::Fallback {
                when,
                text: Template::parse(rest)?,
            })
        };
        match (chars.next(), chars.as_str()) {
            (Some('-'), rest) => fallback(Condition::Set, rest),
            (Some('~'), rest) => fallback(Condition::Truthy, rest),
            (Some('+'), rest) => Ok(Modifier::Choose {
                when: Condition::Set,
                then: Template::parse(rest)?,
                otherwise: Template { parts: Vec::new() },
            }),
            (Some('?'), rest) => Modifier::alternatives(Condition::Set, "?", rest, quoted),
            _ => Err(format!(
                "unknown modifier {} in {quoted} (expected -TEXT, ~TEXT, +TEXT, ?|A|B or #?|A|B)",
                quote(text)
            )),
        }
    }

    /// Parses `|A|B` after `?` or `#?`. As in Buildbot, the first character is the delimiter,
    /// so a choice containing `|` (a shell pipe) can use another one, e.g. `?:a|b:c`.
    fn alternatives(
        when: Condition,
        prefix: &str,
        text: &str,
        quoted: &str,
    ) -> Result<Modifier, String> {
        let mut chars = text.chars();
        let delimiter = chars.next().filter(|&c| c != '(').ok_or_else(|| {
            format!("missing delimiter after '{prefix}' in {quoted} (expected {prefix}|A|B)")
        })?;
        let choices = chars.as_str();
        let at = find_unnested(choices, delimiter).ok_or_else(|| {
            format!(
                "missing second '{delimiter}' in {quoted} \
                 (expected {prefix}{delimiter}A{delimiter}B)"
            )
        })?;
        Ok(Modifier::Choose {
            when,
            then: Template::parse(&choices[..at])?,
            otherwise: Template::parse(&choices[at + delimiter.len_utf8()..])?,
        })
    }
}

impl Condition {
    fn accepts(self, value: &Value) -> bool {
        match self {
            Condition::Set => true,
            Condition::Truthy => is_truthy(value),
        }
    }
}

/// Python's truthiness, as Buildbot applies it to property values.
fn is_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(entries) => !entries.is_empty(),
    }
}

/// A value as Python's `str()` shows it, except that arrays and objects are compact JSON.
fn python_str(value: &Value) -> String {
    match value {
        Value::Null => "None".to_string(),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::String(text) => text.clone(),
        Value::Number(_) | Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Maps {
        properties: HashMap<String, Value>,
        sources: HashMap<(String, String), String>,
        workers: HashMap<String, String>,
    }

    impl Lookup for Maps {
        fn property(&self, name: &str) -> Option<Value> {
            self.properties.get(name).cloned()
        }
        fn source(&self, codebase: &str, attribute: &str) -> Option<String> {
            let key = (codebase.to_string(), attribute.to_string());
            self.sources.get(&key).cloned()
        }
        fn worker(&self, key: &str) -> Option<String> {
            self.workers.get(key).cloned()
        }
    }

    fn context() -> Maps {
        let properties = [
            ("name", json!("alice")),
            ("other", json!("bob")),
            ("empty", json!("")),
            ("zero", json!(0)),
            ("negative", json!(-7)),
            ("float", json!(1.5)),
            ("zero_float", json!(0.0)),
            ("yes", json!(true)),
            ("no", json!(false)),
            ("nothing", Value::Null),
            ("list", json!([1, "a", null])),
            ("empty_list", json!([])),
            ("object", json!({"k": "v", "n": 2})),
            ("empty_object", json!({})),
        ];
        let sources = [
            ("", "branch", "main"),
            ("", "revision", "abc123"),
            ("", "project", ""),
            ("lib", "branch", "dev"),
            ("lib", "repository", "https://example.org/lib.git"),
        ];
        Maps {
            properties: properties
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
            sources: sources
                .into_iter()
                .map(|(codebase, attribute, value)| {
                    (
                        (codebase.to_string(), attribute.to_string()),
                        value.to_string(),
                    )
                })
                .collect(),
            workers: [("workername", "w1"), ("blank", "")]
                .into_iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
        }
    }

    fn render(text: &str) -> String {
        match Template::parse(text) {
            Ok(template) => template.render(&context()),
            Err(error) => panic!("{text:?} failed to parse: {error}"),
        }
    }

    fn error(text: &str) -> String {
        match Template::parse(text) {
            Ok(template) => panic!("{text:?} parsed as {template:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn plain_text_renders_unchanged() {
        assert_eq!(render("make -j4 all"), "make -j4 all");
        assert_eq!(render(""), "");
        assert_eq!(render("a (b) ) s"), "a (b) ) s");
    }

    #[test]
    fn double_percent_renders_one() {
        assert_eq!(render("100%%"), "100%");
        assert_eq!(render("%%(prop:name)s"), "%(prop:name)s");
        assert_eq!(render("%%%%"), "%%");
    }

    #[test]
    fn lone_percent_is_literal() {
        assert_eq!(render("date +%s"), "date +%s");
        assert_eq!(render("50%"), "50%");
        assert_eq!(render("%"), "%");
        assert_eq!(render("%d %)s"), "%d %)s");
        assert_eq!(render("%%%"), "%%");
    }

    #[test]
    fn as_literal_only_without_placeholders() {
        let literal = |text: &str| Template::parse(text).map(|t| t.as_literal().map(String::from));
        assert_eq!(literal("echo 50%"), Ok(Some("echo 50%".to_string())));
        assert_eq!(literal("a%%b"), Ok(Some("a%b".to_string())));
        assert_eq!(literal(""), Ok(Some(String::new())));
        assert_eq!(literal("%(prop:name)s"), Ok(None));
        assert_eq!(literal("x %(worker:workername)s y"), Ok(None));
    }

    #[test]
    fn literal_runs_are_merged() {
        assert_eq!(Template::parse("a%%b"), Template::parse("a%b"));
        assert_ne!(Template::parse("a%b"), Template::parse("a%%%b"));
    }

    #[test]
    fn property_set_and_unset() {
        assert_eq!(render("hello %(prop:name)s!"), "hello alice!");
        assert_eq!(render("hello %(prop:missing)s!"), "hello !");
        assert_eq!(
            render("%(prop:name)s,%(prop:other)s"),
            "alice,bob",
            "adjacent placeholders"
        );
    }

    #[test]
    fn values_render_like_python_str() {
        assert_eq!(render("%(prop:empty)s"), "");
        assert_eq!(render("%(prop:zero)s"), "0");
        assert_eq!(render("%(prop:negative)s"), "-7");
        assert_eq!(render("%(prop:float)s"), "1.5");
        assert_eq!(render("%(prop:zero_float)s"), "0.0");
        assert_eq!(render("%(prop:yes)s"), "True");
        assert_eq!(render("%(prop:no)s"), "False");
        assert_eq!(render("%(prop:nothing)s"), "None");
        assert_eq!(render("%(prop:list)s"), r#"[1,"a",null]"#);
        assert_eq!(render("%(prop:empty_list)s"), "[]");
        assert_eq!(render("%(prop:object)s"), r#"{"k":"v","n":2}"#);
        assert_eq!(render("%(prop:empty_object)s"), "{}");
    }

    #[test]
    fn source_default_and_named_codebase() {
        assert_eq!(render("%(src::branch)s@%(src::revision)s"), "main@abc123");
        assert_eq!(render("%(src:lib:branch)s"), "dev");
        assert_eq!(
            render("git clone %(src:lib:repository)s"),
            "git clone https://example.org/lib.git"
        );
        assert_eq!(render("[%(src:lib:revision)s]"), "[]");
        assert_eq!(render("[%(src:other:branch)s]"), "[]");
        assert_eq!(render("%(src:lib:codebase:-none)s"), "none");
        assert_eq!(render("%(src::project:~unnamed)s"), "unnamed");
        assert_eq!(render("%(src::project:-unnamed)s"), "");
    }

    #[test]
    fn worker_keys() {
        assert_eq!(render("/build/%(worker:workername)s/src"), "/build/w1/src");
        assert_eq!(render("[%(worker:missing)s]"), "[]");
        assert_eq!(render("%(worker:blank:~anon)s"), "anon");
        assert_eq!(render("%(worker:blank:-anon)s"), "");
    }

    #[test]
    fn dash_replaces_only_unset_values() {
        assert_eq!(render("%(prop:name:-x)s"), "alice");
        assert_eq!(render("%(prop:missing:-x y)s"), "x y");
        assert_eq!(render("%(prop:missing:-)s"), "");
        assert_eq!(render("%(prop:empty:-x)s"), "");
        assert_eq!(render("%(prop:zero:-x)s"), "0");
        assert_eq!(render("%(prop:no:-x)s"), "False");
        assert_eq!(render("%(prop:nothing:-x)s"), "None");
    }

    #[test]
    fn tilde_replaces_unset_and_falsy_values() {
        assert_eq!(render("%(prop:name:~x)s"), "alice");
        assert_eq!(render("%(prop:missing:~x)s"), "x");
        for falsy in [
            "empty",
            "zero",
            "zero_float",
            "no",
            "nothing",
            "empty_list",
            "empty_object",
        ] {
            assert_eq!(render(&format!("%(prop:{falsy}:~x)s")), "x", "{falsy}");
        }
        for truthy in ["negative", "float", "yes", "list", "object"] {
            let rendered = render(&format!("%(prop:{truthy}:~x)s"));
            assert_ne!(rendered, "x", "{truthy}");
            assert_eq!(rendered, render(&format!("%(prop:{truthy})s")), "{truthy}");
        }
    }

    #[test]
    fn plus_renders_text_only_when_set() {
        assert_eq!(render("make%(prop:name:+ -v)s"), "make -v");
        assert_eq!(render("make%(prop:empty:+ -v)s"), "make -v");
        assert_eq!(render("make%(prop:nothing:+ -v)s"), "make -v");
        assert_eq!(render("make%(prop:missing:+ -v)s"), "make");
    }

    #[test]
    fn question_mark_chooses_on_set() {
        assert_eq!(render("%(prop:name:?|yes|no)s"), "yes");
        assert_eq!(render("%(prop:no:?|yes|no)s"), "yes");
        assert_eq!(render("%(prop:empty:?|yes|no)s"), "yes");
        assert_eq!(render("%(prop:missing:?|yes|no)s"), "no");
        assert_eq!(render("%(prop:missing:?||no)s"), "no");
        assert_eq!(render("%(prop:name:?||no)s"), "");
    }

    #[test]
    fn hash_question_mark_chooses_on_truthiness() {
        assert_eq!(render("%(prop:yes:#?|on|off)s"), "on");
        assert_eq!(render("%(prop:list:#?|on|off)s"), "on");
        assert_eq!(render("%(prop:no:#?|on|off)s"), "off");
        assert_eq!(render("%(prop:zero:#?|on|off)s"), "off");
        assert_eq!(render("%(prop:empty_object:#?|on|off)s"), "off");
        assert_eq!(render("%(prop:missing:#?|on|off)s"), "off");
        assert_eq!(render("%(worker:blank:#?|on|off)s"), "off");
        assert_eq!(render("%(worker:workername:#?|on|off)s"), "on");
    }

    #[test]
    fn alternatives_take_any_delimiter() {
        assert_eq!(render("%(prop:name:?:a | b:c)s"), "a | b");
        assert_eq!(render("%(prop:missing:?:a | b:c|d)s"), "c|d");
        assert_eq!(render("%(prop:missing:?|a|b|c)s"), "b|c");
    }

    #[test]
    fn modifier_text_keeps_percent_and_balanced_parentheses() {
        assert_eq!(render("%(prop:missing:-50%)s"), "50%");
        assert_eq!(render("%(prop:missing:-%%)s"), "%");
        assert_eq!(render("%(prop:missing:-(none))s"), "(none)");
        assert_eq!(render("%(prop:name:?|(a|b)|c)s"), "(a|b)");
        assert_eq!(render("%(prop:missing:-a:b)s"), "a:b");
    }

    #[test]
    fn nested_placeholders_two_levels_deep() {
        let chain = "%(prop:missing:-%(prop:absent:-%(prop:name)s)s)s";
        assert_eq!(render(chain), "alice");
        let chain = "%(prop:missing:-%(prop:other:-%(prop:name)s)s)s";
        assert_eq!(render(chain), "bob");
        let choice = "%(prop:yes:#?|%(prop:missing:?|x|%(src::branch)s)s|z)s";
        assert_eq!(render(choice), "main");
        let choice = "%(prop:no:#?|%(prop:missing:?|x|y)s|%(worker:blank:~%(prop:zero)s)s)s";
        assert_eq!(render(choice), "0");
        assert_eq!(
            render("v=%(prop:name:+[%(prop:other:+<%(prop:zero)s>)s])s"),
            "v=[<0>]"
        );
    }

    #[test]
    fn nested_placeholders_render_per_context() {
        let template = Template::parse("%(prop:missing:-%(prop:name)s)s").unwrap();
        let mut other = Maps::default();
        other.properties.insert("name".to_string(), json!("carol"));
        assert_eq!(template.render(&context()), "alice");
        assert_eq!(template.render(&other), "carol");
        assert_eq!(template.render(&Maps::default()), "");
    }

    #[test]
    fn unterminated_placeholder() {
        assert_eq!(
            error("echo %(prop:x"),
            "unterminated placeholder '%(prop:x' in 'echo %(prop:x'"
        );
        assert_eq!(
            error("a %(prop:x:-%(prop:y)s"),
            "unterminated placeholder '%(prop:x:-%(prop:y)s' in 'a %(prop:x:-%(prop:y)s'"
        );
        assert_eq!(
            error("%(prop:x:-(a)s"),
            "unterminated placeholder '%(prop:x:-(a)s' in '%(prop:x:-(a)s'"
        );
    }

    #[test]
    fn missing_s_after_placeholder() {
        assert_eq!(error("%(prop:x)"), "missing 's' after '%(prop:x)'");
        assert_eq!(error("%(prop:x)d"), "missing 's' after '%(prop:x)'");
        assert_eq!(
            error("%(prop:x:-%(prop:y))s"),
            "missing 's' after '%(prop:y)'"
        );
    }

    #[test]
    fn unknown_kinds() {
        assert_eq!(
            error("%(foo:x)s"),
            "unknown placeholder kind 'foo' in '%(foo:x)s' (expected prop, src or worker)"
        );
        assert_eq!(
            error("%(kw:x)s"),
            "unknown placeholder kind 'kw' in '%(kw:x)s' (expected prop, src or worker)"
        );
        assert_eq!(
            error("%(name)s"),
            "unknown placeholder kind 'name' in '%(name)s' (expected prop, src or worker)"
        );
    }

    #[test]
    fn missing_names() {
        assert_eq!(error("%(prop:)s"), "missing property name in '%(prop:)s'");
        assert_eq!(error("%(prop)s"), "missing property name in '%(prop)s'");
        assert_eq!(
            error("%(worker::-x)s"),
            "missing worker key in '%(worker::-x)s'"
        );
    }

    #[test]
    fn source_errors() {
        assert_eq!(
            error("%(src:branch)s"),
            "missing source attribute in '%(src:branch)s' (expected src:CODEBASE:ATTR)"
        );
        assert_eq!(
            error("%(src::author)s"),
            "unknown source attribute 'author' in '%(src::author)s' \
             (expected branch, revision, repository, project, codebase)"
        );
        assert_eq!(
            error("%(src:lib:)s"),
            "unknown source attribute '' in '%(src:lib:)s' \
             (expected branch, revision, repository, project, codebase)"
        );
    }

    #[test]
    fn modifier_errors() {
        let expected = "(expected -TEXT, ~TEXT, +TEXT, ?|A|B or #?|A|B)";
        assert_eq!(
            error("%(prop:x:=y)s"),
            format!("unknown modifier '=y' in '%(prop:x:=y)s' {expected}")
        );
        assert_eq!(
            error("%(prop:x:)s"),
            format!("unknown modifier '' in '%(prop:x:)s' {expected}")
        );
        assert_eq!(
            error("%(prop:x:#|a|b)s"),
            format!("unknown modifier '#|a|b' in '%(prop:x:#|a|b)s' {expected}")
        );
        assert_eq!(
            error("%(prop:x:?|a)s"),
            "missing second '|' in '%(prop:x:?|a)s' (expected ?|A|B)"
        );
        assert_eq!(
            error("%(prop:x:#?:a)s"),
            "missing second ':' in '%(prop:x:#?:a)s' (expected #?:A:B)"
        );
        assert_eq!(
            error("%(prop:x:?)s"),
            "missing delimiter after '?' in '%(prop:x:?)s' (expected ?|A|B)"
        );
        assert_eq!(
            error("%(prop:x:#?(a(b)))s"),
            "missing delimiter after '#?' in '%(prop:x:#?(a(b)))s' (expected #?|A|B)"
        );
    }

    #[test]
    fn errors_inside_modifier_text_are_reported() {
        assert_eq!(
            error("%(prop:x:-%(kw:y)s)s"),
            "unknown placeholder kind 'kw' in '%(kw:y)s' (expected prop, src or worker)"
        );
        assert_eq!(
            error("%(prop:x:?|a|%(src::nope)s)s"),
            "unknown source attribute 'nope' in '%(src::nope)s' \
             (expected branch, revision, repository, project, codebase)"
        );
    }

    #[test]
    fn errors_stay_on_one_line() {
        let message = error("echo a\nb %(prop:x\nc");
        assert_eq!(
            message,
            r"unterminated placeholder '%(prop:x\nc' in 'echo a\nb %(prop:x\nc'"
        );
        assert!(!message.contains('\n'));
    }
}
