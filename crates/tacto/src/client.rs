//! A small HTTP client for the commands that talk to a running `tacto run`.

use anyhow::{Context, bail};

/// Where the API is and how to authenticate.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// Base URL of a running Tacto.
    #[arg(long, env = "TACTO_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key.
    #[arg(long, env = "TACTO_API_KEY")]
    pub api_key: String,
}

impl Connection {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut resp = Self::agent()
            .get(&url)
            .header("Authorization", &format!("Bearer {}", self.api_key))
            .call()
            .with_context(|| format!("cannot reach {url}"))?;
        Self::json(
            resp.status().as_u16(),
            resp.body_mut().read_to_string()?,
            &url,
        )
    }

    /// POST a body with a content type, returning the JSON answer.
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut resp = Self::agent()
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.api_key))
            .header("Content-Type", content_type)
            .send(body)
            .with_context(|| format!("cannot reach {url}"))?;
        Self::json(
            resp.status().as_u16(),
            resp.body_mut().read_to_string()?,
            &url,
        )
    }

    fn json(status: u16, text: String, url: &str) -> anyhow::Result<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        if status >= 400 {
            let detail = v["detail"].as_str().unwrap_or(text.as_str());
            bail!("{url}: HTTP {status}: {detail}");
        }
        Ok(v)
    }
}
