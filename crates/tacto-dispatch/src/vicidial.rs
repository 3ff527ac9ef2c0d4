//! The dialer feed through Vicidial's non-agent API (`non_agent_api.php`).
//!
//! A voice job becomes a lead: `function=add_lead` with the account id as `vendor_lead_code`,
//! the phone split into country code and national number, `add_to_hopper=Y`,
//! `hopper_local_call_time_check=Y` (the dialer also keeps the lead's local calling hours),
//! `dnc_check=Y` and `duplicate_check=DUPLIST` (a lead already in the list is not added twice).
//! A recall is `function=update_lead` found by `vendor_lead_code`, with a non-dialable status,
//! `remove_from_hopper=Y` and `callback=REMOVE` (without the status change the hopper would take
//! the lead again). Replies are HTTP 200 with text lines starting `SUCCESS:`, `NOTICE:` or
//! `ERROR:`.

use crate::sink::{Message, SendError};
use std::time::Duration;

/// Settings of the Vicidial adapter.
#[derive(Clone, Debug)]
pub struct VicidialConfig {
    /// The API's URL, e.g. `https://dialer.example/vicidial/non_agent_api.php`.
    pub url: String,
    /// API user (needs API access and `modify_leads`).
    pub user: String,
    /// Its password.
    pub pass: String,
    /// The list new leads go to.
    pub list_id: String,
    /// A non-dialable status set on recalled leads (define it in the dialer as not dialable).
    pub recall_status: String,
    /// Request timeout.
    pub timeout: Duration,
}

/// What a recall achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecallResult {
    /// The provider will not contact the customer for this job.
    Cancelled,
    /// The provider could not cancel it (e.g. the lead is in a call), with its reason.
    Failed(String),
}

/// The meaningful line of a reply: `Ok(SUCCESS text)` or `Err(ERROR text)`; NOTICE lines are
/// informational.
pub fn parse_reply(text: &str) -> Result<String, String> {
    let mut notices = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("SUCCESS:") {
            return Ok(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("ERROR:") {
            return Err(rest.trim().to_owned());
        }
        if let Some(rest) = line.strip_prefix("NOTICE:") {
            notices.push(rest.trim().to_owned());
        }
    }
    Err(if notices.is_empty() {
        format!(
            "unreadable reply: {:?}",
            text.chars().take(120).collect::<String>()
        )
    } else {
        notices.join("; ")
    })
}

/// The Vicidial adapter.
pub struct Vicidial {
    client: reqwest::Client,
    config: VicidialConfig,
}

impl Vicidial {
    /// An adapter with these settings.
    pub fn new(config: VicidialConfig) -> Result<Self, SendError> {
        let client = crate::sink::http_client(config.timeout)?;
        Ok(Self { client, config })
    }

    async fn call(&self, params: &[(&str, String)]) -> Result<Result<String, String>, SendError> {
        let mut all: Vec<(&str, String)> = vec![
            ("source", "tacto".into()),
            ("user", self.config.user.clone()),
            ("pass", self.config.pass.clone()),
        ];
        all.extend(params.iter().cloned());
        let resp = self
            .client
            .post(&self.config.url)
            .form(&all)
            .send()
            .await
            // `duplicate_check` makes a repeated add_lead harmless: a request without an
            // answer is tried again.
            .map_err(|e| SendError::without_answer("dialer", &e, true))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(SendError::Retryable(format!("dialer answered {status}")));
        }
        if !status.is_success() {
            return Err(SendError::Permanent(format!("dialer answered {status}")));
        }
        Ok(parse_reply(&resp.text().await.unwrap_or_default()))
    }

    /// Adds the job's lead to the dialer's list and hopper.
    pub async fn send(&self, m: &Message) -> Result<(), SendError> {
        let number = phonenumber::parse(None, &m.address)
            .map_err(|_| SendError::Permanent("the phone number is not in E.164".into()))?;
        let reply = self
            .call(&[
                ("function", "add_lead".into()),
                ("phone_code", number.code().value().to_string()),
                ("phone_number", number.national().to_string()),
                ("list_id", self.config.list_id.clone()),
                ("vendor_lead_code", m.account_id.clone()),
                ("source_id", m.job_id.clone()),
                ("add_to_hopper", "Y".into()),
                ("hopper_local_call_time_check", "Y".into()),
                ("dnc_check", "Y".into()),
                ("duplicate_check", "DUPLIST".into()),
            ])
            .await?;
        match reply {
            Ok(_) => Ok(()),
            // Already in the list (a replay, or an earlier step's lead): it is queued there.
            Err(e) if e.contains("DUPLICATE") => Ok(()),
            Err(e) if e.contains("DNC") => Err(SendError::OptedOut(format!("dialer: {e}"))),
            Err(e) => Err(SendError::Permanent(format!("dialer: {e}"))),
        }
    }

    /// Takes the account's lead out of the hopper with a non-dialable status.
    pub async fn recall(&self, account: &str) -> RecallResult {
        let reply = self
            .call(&[
                ("function", "update_lead".into()),
                ("search_method", "VENDOR_LEAD_CODE".into()),
                ("vendor_lead_code", account.to_owned()),
                ("list_id_field", self.config.list_id.clone()),
                ("status", self.config.recall_status.clone()),
                ("remove_from_hopper", "Y".into()),
                ("callback", "REMOVE".into()),
            ])
            .await;
        match reply {
            Ok(Ok(_)) => RecallResult::Cancelled,
            Ok(Err(e)) => RecallResult::Failed(format!("dialer: {e}")),
            Err(e) => RecallResult::Failed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_by_their_first_meaningful_line() {
        assert_eq!(
            parse_reply(
                "SUCCESS: add_lead LEAD HAS BEEN ADDED - 6012345678|101|1234|-5|6666\nNOTICE: add_lead ADDED TO HOPPER - 6012345678|101|1234|5678|6666\n"
            ),
            Ok("add_lead LEAD HAS BEEN ADDED - 6012345678|101|1234|-5|6666".into())
        );
        assert_eq!(
            parse_reply("ERROR: add_lead DUPLICATE PHONE NUMBER IN LIST - 6012345678|101|1234"),
            Err("add_lead DUPLICATE PHONE NUMBER IN LIST - 6012345678|101|1234".into())
        );
        assert_eq!(
            parse_reply("NOTICE: update_lead NO MATCHES FOUND IN THE SYSTEM"),
            Err("update_lead NO MATCHES FOUND IN THE SYSTEM".into())
        );
        assert!(parse_reply("<html>502</html>").is_err());
    }
}
