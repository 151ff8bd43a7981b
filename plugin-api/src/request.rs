//! The incoming request as a dialect sees it.

/// One HTTP request to `/change_hook/<dialect>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET` or `POST`.
    pub method: String,
    /// The path, e.g. `/change_hook/github`.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers as received; use [`Request::header`] for look-ups.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The peer's address, `ip:port`.
    pub remote_addr: String,
}

impl Request {
    /// The first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type of the body, lower-cased and without parameters
    /// (`application/json; charset=utf-8` gives `application/json`).
    pub fn media_type(&self) -> Option<String> {
        self.header("content-type").map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
    }

    /// The request arguments as Buildbot's `request.args` has them: the query
    /// parameters, and for a form-encoded `POST` the body's fields, a body field
    /// replacing every query value of the same name.
    pub fn args(&self) -> Args {
        let mut args = Args::default();
        for (name, value) in &self.query {
            args.push(name, value);
        }
        let is_form = self.media_type().as_deref() == Some("application/x-www-form-urlencoded");
        if self.method.eq_ignore_ascii_case("POST") && is_form {
            let mut body = Args::default();
            for (name, value) in form_urlencoded::parse(&self.body) {
                body.push(&name, &value);
            }
            for (name, values) in body.0 {
                args.0.retain(|(n, _)| *n != name);
                args.0.push((name, values));
            }
        }
        args
    }
}

/// Request arguments: every name with all its values, in first-seen order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args(Vec<(String, Vec<String>)>);

impl Args {
    fn push(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(n, _)| n == name) {
            Some((_, values)) => values.push(value.to_string()),
            None => self.0.push((name.to_string(), vec![value.to_string()])),
        }
    }

    /// The first value of `name`, if present (blank values are kept).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.all(name).first().map(String::as_str)
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> &[String] {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .unwrap_or_default()
    }

    /// Whether `name` was given at all.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_post(query: &[(&str, &str)], body: &str) -> Request {
        Request {
            method: "POST".into(),
            path: "/change_hook/base".into(),
            query: query
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            headers: vec![(
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: body.as_bytes().to_vec(),
            remote_addr: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn body_field_replaces_query_field_of_the_same_name() {
        let req = form_post(&[("a", "q1"), ("a", "q2"), ("b", "q")], "a=b1&c=%3Cx%3E+y");
        let args = req.args();
        assert_eq!(args.all("a"), ["b1"]);
        assert_eq!(args.first("b"), Some("q"));
        assert_eq!(args.first("c"), Some("<x> y"));
    }

    #[test]
    fn get_body_and_non_form_body_are_not_parsed() {
        let mut req = form_post(&[], "a=1");
        req.method = "GET".into();
        assert!(!req.args().contains("a"));
        let mut req = form_post(&[], "a=1");
        req.headers = vec![("content-type".into(), "application/json".into())];
        assert!(!req.args().contains("a"));
    }

    #[test]
    fn blank_values_are_kept_and_headers_are_case_insensitive() {
        let req = form_post(&[], "a=&b");
        assert_eq!(req.args().first("a"), Some(""));
        assert_eq!(req.args().first("b"), Some(""));
        assert_eq!(
            req.media_type().as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(req.header("CONTENT-TYPE"), req.header("content-type"));
    }
}
