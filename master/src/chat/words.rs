//! The bot's wording: results, fuzzy durations, greetings, denials, and
//! escaping for Telegram's HTML parse mode.

use crate::results::Results;

/// `text` safe inside HTML: `&`, `<` and `>` escaped (Telegram's list).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` as inline code.
pub fn code(text: &str) -> String {
    format!("<code>{}</code>", esc(text))
}

/// A link to `url` reading `label`.
pub fn link(label: &str, url: &str) -> String {
    format!("<a href=\"{}\">{}</a>", esc(url), esc(label))
}

/// Bold.
pub fn bold(text: &str) -> String {
    format!("<b>{}</b>", esc(text))
}

/// How a result is told, and its mark (Buildbot's words; skipped has its
/// own mark here, where upstream fails).
pub fn result(results: Results) -> (&'static str, &'static str) {
    match results {
        Results::Success => ("completed successfully", " ✅"),
        Results::Warnings => ("completed with warnings", " ⚠\u{fe0f}"),
        Results::Failure => ("failed", "❗"),
        Results::Skipped => ("was skipped", " ⏭"),
        Results::Exception => ("stopped with exception", " ‼\u{fe0f}"),
        Results::Retry => ("has been retried", " 🔄"),
        Results::Cancelled => ("was cancelled", " 🚫"),
    }
}

/// A fuzzy interval, as Buildbot says it: "a moment", "12 seconds",
/// "a minute", "3 hours", "a day", …
pub fn ago(seconds: i64) -> String {
    let seconds = seconds.max(0);
    if seconds <= 1 {
        return "a moment".into();
    }
    if seconds < 20 {
        return format!("{seconds} seconds");
    }
    if seconds < 55 {
        return format!("{} seconds", (seconds + 5) / 10 * 10);
    }
    let minutes = (seconds + 30) / 60;
    if minutes == 1 {
        return "a minute".into();
    }
    if minutes < 20 {
        return format!("{minutes} minutes");
    }
    if minutes < 55 {
        return format!("{} minutes", (minutes + 5) / 10 * 10);
    }
    let hours = (minutes + 30) / 60;
    if hours == 1 {
        return "an hour".into();
    }
    if hours < 24 {
        return format!("{hours} hours");
    }
    let days = (hours + 6) / 24;
    if days == 1 {
        return "a day".into();
    }
    if days < 30 {
        return format!("{days} days");
    }
    let months = (days + 15) / 30;
    if months == 1 {
        return "a month".into();
    }
    if months < 12 {
        return format!("{months} months");
    }
    let years = (months + 6) / 12;
    if years == 1 {
        "a year".into()
    } else {
        format!("{years} years")
    }
}

/// "Hello" in many languages, for `/hello` and `/start`.
pub const GREETINGS: [&str; 24] = [
    "Hello",
    "Hi",
    "Hey",
    "Yo",
    "Hola",
    "Bonjour",
    "Salut",
    "Ciao",
    "Hallo",
    "Moin",
    "Hej",
    "Hei",
    "Ahoj",
    "Cześć",
    "Olá",
    "Merhaba",
    "Szia",
    "Sveiki",
    "Labas",
    "Tere",
    "Zdravo",
    "Privet",
    "Namaste",
    "Konnichiwa",
];

/// The answers to a command the user may not run.
pub const DENIALS: [&str; 6] = [
    "🧙\u{200d}♂\u{fe0f} You shall not pass! 👹",
    "😨 Oh NO! You are simply not allowed to this! 😢",
    "⛔ You cannot do this. Better go outside and relax... 🌳",
    "⛔ ACCESS DENIED! This incident has ben reported to NSA, KGB, and George Soros! 🕵",
    "🚫 Unauthorized access detected! Your device will explode in 3... 2... 1... 💣",
    "☢ Radiation level too high! Continuation of the procedure forbidden! 🛑",
];

/// One of `items`, changing with the clock.
pub fn pick<'a>(items: &[&'a str]) -> &'a str {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    items[nanos as usize % items.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_text_is_escaped() {
        assert_eq!(esc("a<b>&\"c_d*"), "a&lt;b&gt;&amp;&quot;c_d*");
        assert_eq!(code("test_foo"), "<code>test_foo</code>");
        assert_eq!(
            link("#3", "http://x/#/a?b=1&c=2"),
            "<a href=\"http://x/#/a?b=1&amp;c=2\">#3</a>"
        );
    }

    #[test]
    fn intervals_are_fuzzy() {
        for (seconds, said) in [
            (0, "a moment"),
            (12, "12 seconds"),
            (33, "30 seconds"),
            (60, "a minute"),
            (600, "10 minutes"),
            (40 * 60, "40 minutes"),
            (3600, "an hour"),
            (5 * 3600, "5 hours"),
            (86_400, "a day"),
            (3 * 86_400, "3 days"),
            (31 * 86_400, "a month"),
            (400 * 86_400, "a year"),
        ] {
            assert_eq!(ago(seconds), said, "{seconds}");
        }
    }
}
