//! A small Bot API client: one JSON `POST` per method to
//! `<api_url>/bot<token>/<method>`, with Telegram's error fields kept. The
//! address holds the token, so neither it nor any request URL is ever in
//! an error or a log line.

use std::time::Duration;

use serde_json::Value;

use crate::config::TelegramConfig;

/// What a call that did not succeed ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// No usable answer: connection, timeout, or not the Bot API's JSON.
    Transport(String),
    /// Telegram answered `ok: false`.
    Refused {
        code: i64,
        description: String,
        /// Seconds to wait, with a 429.
        retry_after: Option<u64>,
        /// The supergroup a group became.
        migrate_to: Option<i64>,
    },
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Transport(error) => f.write_str(error),
            ApiError::Refused {
                code, description, ..
            } => write!(f, "[{code}] {description}"),
        }
    }
}

/// The Bot API of one bot.
#[derive(Clone)]
pub struct BotApi {
    client: reqwest::Client,
    /// `<api_url>/bot<token>`: a secret.
    base: String,
}

impl BotApi {
    pub fn new(config: &TelegramConfig) -> Result<BotApi, String> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(proxy) = &config.proxy {
            let proxy =
                reqwest::Proxy::all(proxy).map_err(|_| "telegram.proxy: not a proxy URL")?;
            builder = builder.proxy(proxy);
        }
        let client = builder
            .build()
            .map_err(|e| format!("cannot make the Telegram client: {e}"))?;
        Ok(BotApi {
            client,
            base: format!("{}/bot{}", config.api_url, config.bot_token),
        })
    }

    /// Calls `method` with `body` (JSON; `None` sends none); its `result`.
    pub async fn call(
        &self,
        method: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let mut request = self
            .client
            .post(format!("{}/{method}", self.base))
            .timeout(timeout);
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        counted(method, self.answer(request).await)
    }

    /// Calls `method` with a multipart form: text fields and one file.
    pub async fn call_multipart(
        &self,
        method: &str,
        fields: &[(&str, String)],
        file: (&str, &str, Vec<u8>),
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let boundary = format!("buildmaster{:x}", crate::clock::now_precise().to_bits());
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        let (name, filename, bytes) = file;
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let request = self
            .client
            .post(format!("{}/{method}", self.base))
            .timeout(timeout)
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        counted(method, self.answer(request).await)
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<Value, ApiError> {
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::Transport(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ApiError::Transport(e.without_url().to_string()))?;
        let answer: Value = serde_json::from_slice(&bytes).map_err(|_| {
            ApiError::Transport(format!("HTTP {status} without the Bot API's JSON"))
        })?;
        if answer["ok"] == true {
            return Ok(answer.get("result").cloned().unwrap_or(Value::Bool(true)));
        }
        Err(ApiError::Refused {
            code: answer["error_code"].as_i64().unwrap_or(i64::from(status)),
            description: answer["description"]
                .as_str()
                .unwrap_or("no description")
                .to_string(),
            retry_after: answer["parameters"]["retry_after"].as_u64(),
            migrate_to: answer["parameters"]["migrate_to_chat_id"].as_i64(),
        })
    }
}

/// Counts a Bot API call, and its failure, for `/metrics`.
fn counted(method: &str, answer: Result<Value, ApiError>) -> Result<Value, ApiError> {
    // Methods are this module's own names, never user input.
    let method = [("method", method)];
    crate::metrics::count("buildmaster_telegram_api_calls_total", &method);
    if answer.is_err() {
        crate::metrics::count("buildmaster_telegram_api_errors_total", &method);
    }
    answer
}
