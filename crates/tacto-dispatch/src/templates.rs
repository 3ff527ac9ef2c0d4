//! Message templates per channel, template name and language (`minijinja`), and SMS segment
//! counting.
//!
//! Built-in templates exist for the `reminder` template in Spanish, English and Portuguese for
//! SMS, email (subject and body) and voice (the script a dialer agent or IVR reads). A language
//! without a template falls back to English. Every SMS and email carries opt-out instructions:
//! they are part of the layout, not of each template, so no template can leave them out.
//! Context: `amount` (formatted with the currency's decimals), `currency`, `link` (the
//! self-service link, when configured), `job_id`.

use crate::sink::{Message, SendError};
use minijinja::{Environment, context};
use tacto_model::Channel;

/// A template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("template {name}: {reason}")]
pub struct TemplateError {
    /// The template looked up.
    pub name: String,
    /// Why it failed.
    pub reason: String,
}

impl From<TemplateError> for SendError {
    /// A message that cannot be rendered is refused: retrying cannot help.
    fn from(e: TemplateError) -> Self {
        SendError::Permanent(e.to_string())
    }
}

/// A rendered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Email subject.
    pub subject: Option<String>,
    /// The text (SMS body, email body, voice script), opt-out instructions included.
    pub body: String,
    /// For SMS: how it will be encoded and split.
    pub sms: Option<Segments>,
}

/// SMS encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsEncoding {
    /// The GSM 03.38 7-bit alphabet (160 characters in one segment, 153 per segment beyond).
    Gsm7,
    /// UCS-2 (70 UTF-16 units in one segment, 67 per segment beyond).
    Ucs2,
}

/// How an SMS body is encoded and split into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    /// The encoding the text needs.
    pub encoding: SmsEncoding,
    /// Encoded units (GSM-7 septets or UTF-16 units).
    pub units: usize,
    /// Segments (billed messages).
    pub count: usize,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The encoding and segment count of an SMS body (GSM 03.38; checked against the
/// `sms-segments-calculator` npm package in the tests).
pub fn sms_segments(text: &str) -> Segments {
    let gsm = text
        .chars()
        .all(|c| GSM7_BASIC.contains(c) || GSM7_EXTENSION.contains(c));
    // Each character's size in the encoding's units: a character is never split between two
    // segments (an escaped GSM character, a UTF-16 surrogate pair).
    let size = |c: char| match gsm {
        true if GSM7_EXTENSION.contains(c) => 2,
        true => 1,
        false => c.len_utf16(),
    };
    let (encoding, single, multi) = if gsm {
        (SmsEncoding::Gsm7, 160, 153)
    } else {
        (SmsEncoding::Ucs2, 70, 67)
    };
    let units: usize = text.chars().map(size).sum();
    let count = if units <= single {
        1
    } else {
        let (mut count, mut used) = (1, 0);
        for c in text.chars() {
            let s = size(c);
            if used + s > multi {
                count += 1;
                used = 0;
            }
            used += s;
        }
        count
    };
    Segments {
        encoding,
        units,
        count,
    }
}

/// The built-in texts: `(template, language, text)`. A template's text is the same on every
/// channel (a cadence step's fallback channel uses the step's template); the layout around it
/// (self-service link, greeting, opt-out instructions) is per channel. Covers every template of
/// `policy.example.toml`; a tenant's own go in a templates directory.
const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "reminder",
        "en",
        "Your account has an overdue balance of {{ amount }}{% if due_date %}, due {{ due_date }}{% endif %}.",
    ),
    (
        "reminder",
        "es",
        "Su cuenta tiene un saldo vencido de {{ amount }}{% if due_date %}, con vencimiento el {{ due_date }}{% endif %}.",
    ),
    (
        "reminder",
        "pt",
        "Sua conta tem um saldo em atraso de {{ amount }}{% if due_date %}, com vencimento em {{ due_date }}{% endif %}.",
    ),
    (
        "reminder_soft",
        "en",
        "A friendly reminder: your account has a balance of {{ amount }} past its due date{% if due_date %} of {{ due_date }}{% endif %}.",
    ),
    (
        "reminder_soft",
        "es",
        "Le recordamos que su cuenta tiene un saldo de {{ amount }} con la fecha de pago{% if due_date %} del {{ due_date }}{% endif %} vencida.",
    ),
    (
        "reminder_soft",
        "pt",
        "Lembrete: sua conta tem um saldo de {{ amount }} com o vencimento{% if due_date %} de {{ due_date }}{% endif %} em atraso.",
    ),
    (
        "reminder_email",
        "en",
        "Your account has an overdue balance of {{ amount }}. If you have already paid, thank you, and please ignore this message.",
    ),
    (
        "reminder_email",
        "es",
        "Su cuenta tiene un saldo vencido de {{ amount }}. Si ya pagó, gracias, y por favor ignore este mensaje.",
    ),
    (
        "reminder_email",
        "pt",
        "Sua conta tem um saldo em atraso de {{ amount }}. Se você já pagou, obrigado, e por favor ignore esta mensagem.",
    ),
    (
        "reminder_firm",
        "en",
        "Your account is still past due with a balance of {{ amount }}. Please pay or contact us to agree on a plan.",
    ),
    (
        "reminder_firm",
        "es",
        "Su cuenta sigue vencida con un saldo de {{ amount }}. Por favor pague o contáctenos para acordar un plan.",
    ),
    (
        "reminder_firm",
        "pt",
        "Sua conta continua em atraso com um saldo de {{ amount }}. Por favor pague ou fale conosco para combinar um plano.",
    ),
    (
        "final_notice",
        "en",
        "Final notice: your account has an overdue balance of {{ amount }}. Please pay or contact us.",
    ),
    (
        "final_notice",
        "es",
        "Último aviso: su cuenta tiene un saldo vencido de {{ amount }}. Por favor pague o contáctenos.",
    ),
    (
        "final_notice",
        "pt",
        "Último aviso: sua conta tem um saldo em atraso de {{ amount }}. Por favor pague ou fale conosco.",
    ),
    (
        "promise_missed",
        "en",
        "We did not receive the payment you promised. Your balance is {{ amount }}.",
    ),
    (
        "promise_missed",
        "es",
        "No recibimos el pago que nos prometió. Su saldo es de {{ amount }}.",
    ),
    (
        "promise_missed",
        "pt",
        "Não recebemos o pagamento que você prometeu. Seu saldo é de {{ amount }}.",
    ),
    (
        "agent_call",
        "en",
        "This is a call about your account's overdue balance of {{ amount }}.",
    ),
    (
        "agent_call",
        "es",
        "Le llamamos por el saldo vencido de su cuenta, de {{ amount }}.",
    ),
    (
        "agent_call",
        "pt",
        "Estamos ligando sobre o saldo em atraso da sua conta, de {{ amount }}.",
    ),
];

/// The self-service sentence, per language.
fn link_sentence(language: &str, link: &str) -> String {
    match language {
        "es" => format!("Pague, prometa una fecha o acuerde un plan: {link}"),
        "pt" => format!("Pague, prometa uma data ou combine um plano: {link}"),
        _ => format!("Pay, promise a date or set up a plan: {link}"),
    }
}

/// The email subject, per language.
fn subject(language: &str) -> &'static str {
    match language {
        "es" => "Sobre su cuenta",
        "pt" => "Sobre sua conta",
        _ => "About your account",
    }
}

/// Opt-out instructions, per channel and language (always appended to SMS and email).
fn opt_out(channel: Channel, language: &str) -> &'static str {
    match (channel, language) {
        (Channel::Sms, "es") => " Responda BAJA para no recibir más SMS.",
        (Channel::Sms, "pt") => " Responda SAIR para não receber mais SMS.",
        (Channel::Sms, _) => " Reply STOP to opt out.",
        (Channel::Email, "es") => {
            "\n\n--\nPara no recibir más correos sobre esta cuenta, use el enlace de baja de este mensaje."
        }
        (Channel::Email, "pt") => {
            "\n\n--\nPara não receber mais e-mails sobre esta conta, use o link de descadastro desta mensagem."
        }
        (Channel::Email, _) => {
            "\n\n--\nTo stop emails about this account, use the unsubscribe link of this message."
        }
        _ => "",
    }
}

/// How the self-service link in every SMS and email is made: `{base_url}/s/{token}`, the token
/// signed with the link secret (`tacto_ingest::links`), naming the job and valid for
/// `valid_days` from the send.
#[derive(Clone, Debug)]
pub struct SelfServiceLinks {
    /// Base URL of the self-service page (the ingest service's public URL).
    pub base_url: String,
    /// The link secret (the same as ingest's).
    pub secret: String,
    /// Days a link works after its message is sent.
    pub valid_days: u32,
}

impl SelfServiceLinks {
    /// The link of a job's message sent at `sent_at`.
    pub fn url(&self, job_id: &str, sent_at: tacto_model::Timestamp) -> String {
        let expires =
            sent_at.as_micros().div_euclid(1_000_000) + i64::from(self.valid_days) * 86_400;
        tacto_ingest::links::self_service_url(
            &self.base_url,
            self.secret.as_bytes(),
            job_id,
            expires,
        )
    }
}

/// The templates and what they need.
pub struct Templates {
    env: Environment<'static>,
    links: Option<SelfServiceLinks>,
}

impl Templates {
    /// The built-in templates; with `links`, every SMS and email carries a self-service link.
    pub fn builtin(links: Option<SelfServiceLinks>) -> Self {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        for (name, language, source) in BUILTIN {
            // The built-in sources are checked by the tests below.
            if let Err(e) = env.add_template_owned(format!("{name}.{language}"), *source) {
                tracing::error!(template = name, error = %e, "invalid built-in template");
            }
        }
        Self { env, links }
    }

    /// Adds (or replaces) templates from a directory: `NAME.LANG.j2` for every channel, or
    /// `CHANNEL/NAME.LANG.j2` (`sms`, `email`, `voice`) for one.
    pub fn with_directory(mut self, dir: &std::path::Path) -> Result<Self, TemplateError> {
        let error = |name: &str, reason: String| TemplateError {
            name: name.to_owned(),
            reason,
        };
        let mut files = Vec::new();
        for entry in
            std::fs::read_dir(dir).map_err(|e| error(&dir.display().to_string(), e.to_string()))?
        {
            let path = entry
                .map_err(|e| error(&dir.display().to_string(), e.to_string()))?
                .path();
            if path.is_dir() {
                for inner in std::fs::read_dir(&path)
                    .map_err(|e| error(&path.display().to_string(), e.to_string()))?
                {
                    let p = inner
                        .map_err(|e| error(&path.display().to_string(), e.to_string()))?
                        .path();
                    files.push(p);
                }
            } else {
                files.push(path);
            }
        }
        for path in files {
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let rel = rel.to_string_lossy().replace('\\', "/");
            let Some(name) = rel.strip_suffix(".j2") else {
                continue;
            };
            let source = std::fs::read_to_string(&path).map_err(|e| error(name, e.to_string()))?;
            self.env
                .add_template_owned(name.to_owned(), source)
                .map_err(|e| error(name, e.to_string()))?;
        }
        Ok(self)
    }

    /// The template to use: the channel's own, else the shared one; the language's, else
    /// English. Returns the name and the language it is in.
    fn lookup(&self, channel: Channel, template: &str, language: &str) -> Option<(String, String)> {
        for lang in [language, "en"] {
            for name in [
                format!("{}/{template}.{lang}", channel.as_str()),
                format!("{template}.{lang}"),
            ] {
                if self.env.get_template(&name).is_ok() {
                    return Some((name, lang.to_owned()));
                }
            }
        }
        None
    }

    fn render_one(&self, name: &str, ctx: &minijinja::Value) -> Result<String, TemplateError> {
        let error = |e: minijinja::Error| TemplateError {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        self.env
            .get_template(name)
            .map_err(error)?
            .render(ctx)
            .map_err(error)
    }

    /// Renders a message's template in its language, in the channel's layout. An unknown
    /// template is an error (never a generic text in its place).
    pub fn render(&self, m: &Message) -> Result<Rendered, TemplateError> {
        let link = self.links.as_ref().map(|l| l.url(&m.job_id, m.sent_at));
        let wanted = m.language.split(['-', '_']).next().unwrap_or("en");
        let ctx = context! {
            amount => format_amount(m.balance_minor, &m.currency),
            due_date => m.due_date.map(|d| format_date(d, wanted)),
            currency => m.currency.clone(),
            link => link.clone(),
            job_id => m.job_id.clone(),
        };
        let (name, language) =
            self.lookup(m.channel, &m.template, wanted)
                .ok_or_else(|| TemplateError {
                    name: m.template.clone(),
                    reason: format!("no template for {} in {wanted} or en", m.channel.as_str()),
                })?;
        let text = self.render_one(&name, &ctx)?;
        let link_text = link.as_deref().map(|l| link_sentence(&language, l));
        let body = match m.channel {
            Channel::Sms => {
                let mut b = text;
                if let Some(l) = link_text {
                    b.push(' ');
                    b.push_str(&l);
                }
                b.push_str(opt_out(m.channel, &language));
                b
            }
            Channel::Email => {
                let mut b = text;
                if let Some(l) = link_text {
                    b.push_str("\n\n");
                    b.push_str(&l);
                }
                b.push_str(opt_out(m.channel, &language));
                b
            }
            _ => text,
        };
        let subject = match m.channel {
            Channel::Email => {
                let custom = format!("email/{}.{language}.subject", m.template);
                Some(match self.env.get_template(&custom) {
                    Ok(_) => self.render_one(&custom, &ctx)?,
                    Err(_) => subject(&language).to_owned(),
                })
            }
            _ => None,
        };
        let sms = (m.channel == Channel::Sms).then(|| sms_segments(&body));
        Ok(Rendered { subject, body, sms })
    }
}

pub use tacto_model::display::{format_amount, format_date};

#[cfg(test)]
mod tests {
    use super::*;
    use tacto_model::Timestamp;

    fn links(base: &str) -> SelfServiceLinks {
        SelfServiceLinks {
            base_url: base.into(),
            secret: "links".into(),
            valid_days: 14,
        }
    }

    fn message(channel: Channel, language: &str, currency: &str) -> Message {
        Message {
            job_id: "A:c0:d0.0:a0".into(),
            account_id: "A".into(),
            channel,
            address: "+12125550100".into(),
            template: "reminder".into(),
            language: language.into(),
            balance_minor: 12_345,
            currency: currency.into(),
            sent_at: Timestamp::from_micros(0),
            not_after: Timestamp::from_micros(3_600_000_000),
            due_date: None,
        }
    }

    #[test]
    fn every_template_of_the_example_policy_renders_on_every_channel_and_language() {
        let t = Templates::builtin(Some(links("https://pay.example")));
        let policy = tacto_policy::Policy::example();
        let names: std::collections::BTreeSet<String> = tacto_policy::policy::EXAMPLE_POLICY
            .lines()
            .filter_map(|l| l.split("template = \"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect();
        assert!(names.len() >= 6, "{names:?} from {}", policy.version());
        for name in names {
            for channel in [Channel::Sms, Channel::Email, Channel::Voice] {
                for language in ["en", "es", "pt"] {
                    let mut m = message(channel, language, "USD");
                    m.template = name.clone();
                    let r = t.render(&m).unwrap_or_else(|e| panic!("{e}"));
                    assert!(
                        r.body.contains("USD 123.45"),
                        "{name} {language}: {}",
                        r.body
                    );
                }
            }
        }
        let mut unknown = message(Channel::Sms, "en", "USD");
        unknown.template = "no_such_template".into();
        assert!(
            t.render(&unknown).is_err(),
            "never a generic text for an unknown template"
        );
    }

    #[test]
    fn a_templates_directory_overrides_per_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("sms")).expect("dir");
        std::fs::write(
            dir.path().join("sms/reminder.en.j2"),
            "Pay {{ amount }} now.",
        )
        .expect("write");
        std::fs::write(dir.path().join("welcome.en.j2"), "Welcome!").expect("write");
        let t = Templates::builtin(None)
            .with_directory(dir.path())
            .expect("load");
        let sms = t.render(&message(Channel::Sms, "en", "USD")).expect("sms");
        assert_eq!(sms.body, "Pay USD 123.45 now. Reply STOP to opt out.");
        // Email keeps the built-in text.
        let mail = t
            .render(&message(Channel::Email, "en", "USD"))
            .expect("email");
        assert!(mail.body.starts_with("Your account has an overdue balance"));
        let mut w = message(Channel::Email, "en", "USD");
        w.template = "welcome".into();
        assert!(t.render(&w).expect("welcome").body.starts_with("Welcome!"));
    }

    #[test]
    fn sms_and_email_carry_opt_out_instructions_in_their_language() {
        let t = Templates::builtin(Some(links("https://pay.example/")));
        let es = t
            .render(&message(Channel::Sms, "es-MX", "MXN"))
            .expect("es");
        // The link is signed, names the job and works for 14 days from the send.
        let token = tacto_ingest::links::sign_self_service(b"links", "A:c0:d0.0:a0", 14 * 86_400);
        assert_eq!(
            es.body,
            format!(
                "Su cuenta tiene un saldo vencido de MXN 123.45. Pague, prometa una fecha o acuerde un plan: https://pay.example/s/{token} Responda BAJA para no recibir más SMS."
            )
        );
        let en = t.render(&message(Channel::Sms, "en", "USD")).expect("en");
        assert!(en.body.ends_with("Reply STOP to opt out."));
        // No template in German: English, with English opt-out instructions.
        let de = t.render(&message(Channel::Sms, "de", "EUR")).expect("de");
        assert!(de.body.starts_with("Your account") && de.body.ends_with("STOP to opt out."));
        let mail = t.render(&message(Channel::Email, "pt", "BRL")).expect("pt");
        assert_eq!(mail.subject.as_deref(), Some("Sobre sua conta"));
        assert!(mail.body.contains("descadastro"));
        assert!(mail.sms.is_none());
    }

    #[test]
    fn the_due_date_is_written_as_the_language_writes_dates() {
        let t = Templates::builtin(None);
        let mut m = message(Channel::Sms, "es", "MXN");
        m.due_date = tacto_model::Date::from_ymd(2026, 11, 30);
        let es = t.render(&m).expect("es");
        assert!(
            es.body.starts_with(
                "Su cuenta tiene un saldo vencido de MXN 123.45, con vencimiento el 30/11/2026."
            ),
            "{}",
            es.body
        );
        m.language = "en".into();
        assert!(t.render(&m).expect("en").body.contains(", due 2026-11-30."));
    }

    #[test]
    fn amounts_use_the_currency_decimals() {
        assert_eq!(format_amount(50_000, "USD"), "USD 500.00");
        assert_eq!(format_amount(50_000, "CLP"), "CLP 50000");
        assert_eq!(format_amount(5, "EUR"), "EUR 0.05");
        assert_eq!(format_amount(-150, "MXN"), "MXN -1.50");
        assert_eq!(format_amount(1_000, "XYZ"), "XYZ 10.00");
    }

    #[test]
    fn segments_follow_gsm_7_and_ucs_2_limits() {
        let s = sms_segments(&"a".repeat(160));
        assert_eq!((s.encoding, s.units, s.count), (SmsEncoding::Gsm7, 160, 1));
        assert_eq!(sms_segments(&"a".repeat(161)).count, 2);
        assert_eq!(sms_segments(&"a".repeat(306)).count, 2);
        assert_eq!(sms_segments(&"a".repeat(307)).count, 3);
        // Extension characters take two septets.
        assert_eq!(sms_segments(&"€".repeat(80)).units, 160);
        assert_eq!(sms_segments(&"€".repeat(81)).count, 2);
        let u = sms_segments("saldo vencido ú");
        assert_eq!((u.encoding, u.count), (SmsEncoding::Ucs2, 1));
        assert_eq!(sms_segments(&"ú".repeat(71)).count, 2);
        assert_eq!(sms_segments("").count, 1);
        // An escaped character is not split between segments.
        let edge = format!("{}€{}", "a".repeat(152), "a".repeat(152));
        assert_eq!(sms_segments(&edge).count, 3);
    }
}
