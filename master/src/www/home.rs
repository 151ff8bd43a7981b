//! `/`: a small page naming the master, linking the main REST collections and
//! showing how the last reconfiguration went.

use crate::reconfig::Status;

/// The page, rendered for the master `title` and its reload `status`.
pub fn page(title: &str, status: &Status) -> String {
    let title = escape(title);
    let version = env!("CARGO_PKG_VERSION");
    let links: String = ["builders", "builds", "changes", "workers"]
        .iter()
        .map(|name| format!("    <li><a href=\"/api/v2/{name}\">{name}</a></li>\n"))
        .collect();
    let mut reload = format!(
        "generation {}, last attempt: {}",
        status.generation, status.result
    );
    if let Some(trigger) = &status.trigger {
        reload.push_str(&format!(" ({trigger})"));
    }
    let details: String = status
        .changes
        .iter()
        .chain(&status.errors)
        .map(|line| format!("    <li>{}</li>\n", escape(line)))
        .collect();
    let details = if details.is_empty() {
        String::new()
    } else {
        format!("  <ul>\n{details}  </ul>\n")
    };
    document(
        &title,
        &format!(
            "  <h1>{title}</h1>
  <p>buildmaster {version}</p>
  <h2>REST API</h2>
  <ul>
{links}    <li><a href=\"/api/v2\">every collection</a></li>
  </ul>
  <h2>Configuration</h2>
  <p><a href=\"/api/v2/reconfig\">{reload}</a></p>
{details}"
        ),
    )
}

/// A whole page: `title` (escaped already) and the body's content.
pub(super) fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>
<html lang=\"en\">
<head>
  <meta charset=\"utf-8\">
  <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
  <meta name=\"color-scheme\" content=\"light dark\">
  <title>{title}</title>
</head>
<body>
{body}</body>
</html>
"
    )
}

/// Escapes text for HTML element content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconfig::Trigger;

    #[test]
    fn the_page_names_the_master_and_escapes_what_it_shows() {
        let status = Status::started(0)
            .attempt(Trigger::Signal, 1)
            .failed(vec!["master.toml:2:1: unknown field `<x>`".into()]);
        let page = page("CI & <friends>", &status);
        assert!(page.contains("<title>CI &amp; &lt;friends&gt;</title>"));
        assert!(page.contains(&format!("buildmaster {}", env!("CARGO_PKG_VERSION"))));
        for name in ["builders", "builds", "changes", "workers"] {
            assert!(
                page.contains(&format!("<a href=\"/api/v2/{name}\">")),
                "{name}"
            );
        }
        assert!(page.contains("generation 1, last attempt: failed (SIGHUP)"));
        assert!(page.contains("unknown field `&lt;x&gt;`"));
    }
}
