//! Email through a real SMTP server on loopback (Python's `aiosmtpd`, installed by
//! `make test`), read back from its Maildir by Python's own email parser; and what each kind
//! of failure means, against a scripted SMTP server.
#![allow(missing_docs)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tacto_dispatch::email::{SmtpConfig, SmtpEmail, SmtpSecurity, UnsubscribeLinks};
use tacto_dispatch::sink::{Message, SendError};
use tacto_dispatch::templates::{SelfServiceLinks, Templates};
use tacto_model::{Channel, Timestamp};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn smtp_server(maildir: &std::path::Path) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 -m aiosmtpd (installed by `make test`)");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "aiosmtpd did not start (is it installed?)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (Server(child), port)
}

fn adapter(port: u16) -> SmtpEmail {
    adapter_with_timeout(port, Duration::from_secs(5))
}

fn adapter_with_timeout(port: u16, timeout: Duration) -> SmtpEmail {
    SmtpEmail::new(
        SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            credentials: None,
            from: "Cobranzas <cobranzas@lender.example>".into(),
            unsubscribe: UnsubscribeLinks {
                public_url: Some("https://tacto.example".into()),
                link_secret: Some("links".into()),
                mailto: Some("unsubscribe@lender.example".into()),
            },
            timeout,
        },
        Arc::new(Templates::builtin(Some(SelfServiceLinks {
            base_url: "https://pay.example".into(),
            secret: "links".into(),
            valid_days: 14,
        }))),
    )
    .expect("adapter")
}

fn message(to: &str) -> Message {
    Message {
        job_id: "A-1:c0:d3.0:a0".into(),
        account_id: "A-1".into(),
        channel: Channel::Email,
        address: to.into(),
        template: "reminder_email".into(),
        language: "es".into(),
        balance_minor: 150_000,
        currency: "MXN".into(),
        sent_at: Timestamp::from_micros(0),
        not_after: Timestamp::from_micros(3_600_000_000),
        due_date: None,
    }
}

const READ: &str = r#"
import json, mailbox, sys
box = mailbox.Maildir(sys.argv[1], create=False)
out = []
for key in box.keys():
    m = box.get_message(key)
    body = m.get_payload(decode=True).decode(m.get_content_charset() or 'utf-8')
    out.append({'from': m['From'], 'to': m['To'], 'subject': str(m['Subject']), 'message_id': m['Message-ID'],
                'list_unsubscribe': m['List-Unsubscribe'], 'list_unsubscribe_post': m['List-Unsubscribe-Post'],
                'body': body})
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_email_arrives_with_its_unsubscribe_headers_and_opt_out_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("maildir");
    let (_server, port) = smtp_server(&maildir);
    adapter(port)
        .send(&message("deudor@example.com"))
        .await
        .expect("sent");
    let out = Command::new("python3")
        .args(["-c", READ])
        .arg(&maildir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mails: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(mails.len(), 1);
    let m = &mails[0];
    assert_eq!(m["to"], "deudor@example.com");
    assert_eq!(m["from"], "Cobranzas <cobranzas@lender.example>");
    assert_eq!(m["subject"], "Sobre su cuenta");
    assert_eq!(m["message_id"], "<A-1.c0.d3.0.a0@lender.example>");
    let body = m["body"].as_str().unwrap_or_default();
    assert!(body.contains("MXN 1500.00"), "{body}");
    // The self-service link is signed and names the job.
    let token = body
        .split("https://pay.example/s/")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no self-service link in {body}"));
    let link = tacto_ingest::links::verify_self_service(b"links", token, 0).expect("a valid link");
    assert_eq!(link.job_id, "A-1:c0:d3.0:a0");
    assert!(body.contains("Para no recibir más correos"), "{body}");
    assert_eq!(m["list_unsubscribe_post"], "List-Unsubscribe=One-Click");
    let list = m["list_unsubscribe"].as_str().unwrap_or_default();
    assert!(
        list.contains("<mailto:unsubscribe@lender.example?subject=unsubscribe>"),
        "{list}"
    );
    // The one-click link is signed for this account's email channel.
    let url = list
        .split(['<', '>'])
        .find(|p| p.starts_with("https://"))
        .expect("one-click URL");
    let sig = url.rsplit("sig=").next().unwrap_or_default();
    assert!(url.starts_with("https://tacto.example/v1/unsubscribe?account=A-1&channel=email&sig="));
    assert!(tacto_ingest::links::verify_unsubscribe(
        b"links",
        "A-1",
        Channel::Email,
        sig
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn smtp_failures_are_retried_or_refused() {
    // Nobody listening: worth retrying.
    let port = free_port();
    assert!(matches!(
        adapter(port).send(&message("deudor@example.com")).await,
        Err(SendError::Retryable(_))
    ));
    // Not an address: refused without a connection.
    assert!(matches!(
        adapter(port).send(&message("not an address")).await,
        Err(SendError::Permanent(_))
    ));
}

/// Where a scripted SMTP server fails.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Accepts the connection and never greets.
    SilentGreeting,
    /// Refuses the recipient (550).
    RefuseRecipient,
    /// Closes the connection when asked for `DATA`.
    CloseAtData,
    /// Reads the message and never answers.
    SilentAfterMessage,
    /// Reads the message and closes the connection.
    CloseAfterMessage,
    /// Reads the message and answers 451.
    TryLaterAfterMessage,
    /// Reads the message and answers 554.
    RefuseAfterMessage,
}

/// A scripted SMTP server on loopback, one connection at a time; counts the messages whose
/// final dot it read.
async fn scripted_smtp(script: Script) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let messages = Arc::new(AtomicUsize::new(0));
    let counted = messages.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            if let Script::SilentGreeting = script {
                tokio::time::sleep(Duration::from_secs(60)).await;
                continue;
            }
            let _ = write.write_all(b"220 stub ESMTP\r\n").await;
            let mut in_message = false;
            while let Ok(Some(line)) = lines.next_line().await {
                if in_message {
                    if line != "." {
                        continue;
                    }
                    in_message = false;
                    counted.fetch_add(1, Ordering::SeqCst);
                    match script {
                        Script::SilentAfterMessage => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        Script::CloseAfterMessage => break,
                        Script::TryLaterAfterMessage => {
                            let _ = write.write_all(b"451 4.3.0 try later\r\n").await;
                        }
                        Script::RefuseAfterMessage => {
                            let _ = write.write_all(b"554 5.7.1 refused\r\n").await;
                        }
                        _ => {
                            let _ = write.write_all(b"250 2.0.0 queued\r\n").await;
                        }
                    }
                    continue;
                }
                let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                let reply: &[u8] = match (verb.as_str(), script) {
                    ("EHLO", _) => b"250-stub\r\n250 8BITMIME\r\n",
                    ("RCPT", Script::RefuseRecipient) => b"550 5.1.1 no such user\r\n",
                    ("DATA", Script::CloseAtData) => break,
                    ("DATA", _) => {
                        in_message = true;
                        b"354 go ahead\r\n"
                    }
                    ("QUIT", _) => {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                let _ = write.write_all(reply).await;
            }
        }
    });
    (port, messages)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_means_what_the_moment_it_came_says() {
    use std::sync::atomic::Ordering;
    let cases = [
        (Script::SilentGreeting, "retryable", 0),
        (Script::RefuseRecipient, "permanent", 0),
        (Script::CloseAtData, "retryable", 0),
        (Script::SilentAfterMessage, "ambiguous", 1),
        (Script::CloseAfterMessage, "ambiguous", 1),
        (Script::TryLaterAfterMessage, "retryable", 1),
        (Script::RefuseAfterMessage, "permanent", 1),
    ];
    for (script, expected, handed_over) in cases {
        let (port, messages) = scripted_smtp(script).await;
        let result = adapter_with_timeout(port, Duration::from_millis(500))
            .send(&message("deudor@example.com"))
            .await;
        let got = match &result {
            Err(SendError::Retryable(_)) => "retryable",
            Err(SendError::Permanent(_)) => "permanent",
            Err(SendError::Ambiguous(_)) => "ambiguous",
            _ => "other",
        };
        assert_eq!(got, expected, "{script:?}: {result:?}");
        assert_eq!(
            messages.load(Ordering::SeqCst),
            handed_over,
            "{script:?}: messages the server read"
        );
    }
}
