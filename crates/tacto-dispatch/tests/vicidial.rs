//! The Vicidial adapter against a local server that follows the non-agent API's contract:
//! credentials, `add_lead` (required fields, duplicate and DNC checks, hopper), `update_lead`
//! by vendor lead code (a lead in a call is not changed), and the `SUCCESS:` / `NOTICE:` /
//! `ERROR:` text replies.
#![allow(missing_docs)]

use axum::extract::State;
use axum::routing::post;
use axum::{Form, Router};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tacto_dispatch::sink::{Message, SendError};
use tacto_dispatch::vicidial::{RecallResult, Vicidial, VicidialConfig};
use tacto_model::{Channel, Timestamp};

#[derive(Clone, Debug, Default)]
struct Lead {
    phone_code: String,
    phone_number: String,
    vendor_lead_code: String,
    status: String,
    in_hopper: bool,
}

#[derive(Default)]
struct Dialer {
    leads: Vec<Lead>,
    dnc: Vec<String>,
}

async fn api(
    State(d): State<Arc<Mutex<Dialer>>>,
    Form(form): Form<HashMap<String, String>>,
) -> String {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    if get("user") != "api" || get("pass") != "secret" || get("source").is_empty() {
        return format!("ERROR: Invalid Username/Password: |{}|BAD|", get("user"));
    }
    let mut d = d.lock().expect("dialer");
    match get("function").as_str() {
        "add_lead" => {
            let phone = get("phone_number");
            if phone.len() < 6
                || !phone.chars().all(|c| c.is_ascii_digit())
                || get("phone_code").is_empty()
                || get("list_id").is_empty()
            {
                return format!(
                    "ERROR: add_lead INVALID PHONE NUMBER LENGTH - {phone}|{}",
                    get("phone_code")
                );
            }
            if get("dnc_check") == "Y" && d.dnc.contains(&phone) {
                return format!(
                    "ERROR: add_lead PHONE NUMBER IN DNC - {phone}|{}",
                    get("user")
                );
            }
            if get("duplicate_check") == "DUPLIST"
                && d.leads.iter().any(|l| l.phone_number == phone)
            {
                return format!(
                    "ERROR: add_lead DUPLICATE PHONE NUMBER IN LIST - {phone}|{}",
                    get("list_id")
                );
            }
            d.leads.push(Lead {
                phone_code: get("phone_code"),
                phone_number: phone.clone(),
                vendor_lead_code: get("vendor_lead_code"),
                status: "NEW".into(),
                in_hopper: get("add_to_hopper") == "Y",
            });
            format!(
                "SUCCESS: add_lead LEAD HAS BEEN ADDED - {phone}|{}|{}|-5|api\nNOTICE: add_lead ADDED TO HOPPER - {phone}|{}",
                get("list_id"),
                d.leads.len(),
                d.leads.len()
            )
        }
        "update_lead" => {
            if get("search_method") != "VENDOR_LEAD_CODE" {
                return "ERROR: update_lead INVALID SEARCH METHOD".into();
            }
            let code = get("vendor_lead_code");
            let Some(lead) = d.leads.iter_mut().find(|l| l.vendor_lead_code == code) else {
                return format!("NOTICE: update_lead NO MATCHES FOUND IN THE SYSTEM: {code}");
            };
            if lead.status == "INCALL" {
                return format!("ERROR: update_lead LEAD IS IN A LIVE CALL - {code}");
            }
            if !get("status").is_empty() {
                lead.status = get("status");
            }
            if get("remove_from_hopper") == "Y" {
                lead.in_hopper = false;
            }
            format!("SUCCESS: update_lead LEAD HAS BEEN UPDATED - api|{code}")
        }
        f => format!("ERROR: {f} INVALID FUNCTION"),
    }
}

async fn start() -> (String, Arc<Mutex<Dialer>>) {
    let d = Arc::new(Mutex::new(Dialer::default()));
    let app = Router::new()
        .route("/vicidial/non_agent_api.php", post(api))
        .with_state(d.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/vicidial/non_agent_api.php",
        listener.local_addr().expect("addr")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, d)
}

fn adapter(url: String, pass: &str) -> Vicidial {
    Vicidial::new(VicidialConfig {
        url,
        user: "api".into(),
        pass: pass.into(),
        list_id: "101".into(),
        recall_status: "TACREC".into(),
        timeout: Duration::from_secs(5),
    })
    .expect("adapter")
}

fn job(account: &str, phone: &str) -> Message {
    Message {
        job_id: format!("{account}:c0:d5.0:a0"),
        account_id: account.into(),
        channel: Channel::Voice,
        address: phone.into(),
        template: "agent_call".into(),
        language: "es".into(),
        balance_minor: 10_000,
        currency: "MXN".into(),
        sent_at: Timestamp::from_micros(0),
        not_after: Timestamp::from_micros(3_600_000_000),
        due_date: None,
    }
}

#[tokio::test]
async fn leads_are_added_once_and_recalled_out_of_the_hopper() {
    let (url, dialer) = start().await;
    let v = adapter(url.clone(), "secret");
    v.send(&job("A-1", "+5215512345678")).await.expect("added");
    // A replay of the same job finds the lead already in the list: fine.
    v.send(&job("A-1", "+5215512345678"))
        .await
        .expect("duplicate is fine");
    {
        let d = dialer.lock().expect("dialer");
        assert_eq!(d.leads.len(), 1);
        let lead = &d.leads[0];
        assert_eq!(
            (lead.phone_code.as_str(), lead.phone_number.as_str()),
            ("52", "15512345678")
        );
        assert_eq!(lead.vendor_lead_code, "A-1");
        assert!(lead.in_hopper);
    }
    assert_eq!(v.recall("A-1").await, RecallResult::Cancelled);
    {
        let d = dialer.lock().expect("dialer");
        assert_eq!(d.leads[0].status, "TACREC");
        assert!(!d.leads[0].in_hopper, "out of the hopper");
    }
    // A lead in a live call cannot be recalled: the reason is reported.
    v.send(&job("B-2", "+12125550100")).await.expect("added");
    dialer.lock().expect("dialer").leads[1].status = "INCALL".into();
    assert!(
        matches!(v.recall("B-2").await, RecallResult::Failed(why) if why.contains("LIVE CALL"))
    );
    assert!(
        matches!(v.recall("nobody").await, RecallResult::Failed(why) if why.contains("NO MATCHES"))
    );
}

#[tokio::test]
async fn dialer_refusals_are_classified() {
    let (url, dialer) = start().await;
    dialer.lock().expect("dialer").dnc.push("2125550199".into());
    let v = adapter(url.clone(), "secret");
    assert!(matches!(
        v.send(&job("D-1", "+12125550199")).await,
        Err(SendError::OptedOut(why)) if why.contains("DNC")
    ));
    assert!(matches!(
        v.send(&job("D-2", "5550100")).await,
        Err(SendError::Permanent(_))
    ));
    assert!(matches!(
        adapter(url, "wrong").send(&job("D-3", "+12125550100")).await,
        Err(SendError::Permanent(why)) if why.contains("Invalid Username")
    ));
    // Nobody listening: retried.
    let gone = adapter(
        "http://127.0.0.1:9/vicidial/non_agent_api.php".into(),
        "secret",
    );
    assert!(matches!(
        gone.send(&job("D-4", "+12125550100")).await,
        Err(SendError::Retryable(_))
    ));
}
