//! Message templates per channel, template name and language (`minijinja`), and SMS segment
//! counting.
//!
//! Built-in templates exist for the `reminder` template in Spanish, English and Portuguese for
//! SMS, email (subject and body) and voice (the script a dialer agent or IVR reads). A language
//! without a template falls back to English. Every SMS and email carries opt-out instructions:
//! they are part of the layout, not of each template, so no template can leave them out.
//! Context: `amount` (formatted with the currency's decimals), `currency`, `link` (the
//! self-service link, when configured), `job_id`.

use crate::sink::Message;
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

/// The built-in templates: `(name, source)`, names `channel/template.language`.
const BUILTIN: &[(&str, &str)] = &[
    (
        "sms/reminder.en",
        "Your account has an overdue balance of {{ amount }}.{% if link %} Pay or set up a plan: {{ link }}{% endif %}",
    ),
    (
        "sms/reminder.es",
        "Su cuenta tiene un saldo vencido de {{ amount }}.{% if link %} Pague o acuerde un plan: {{ link }}{% endif %}",
    ),
    (
        "sms/reminder.pt",
        "Sua conta tem um saldo em atraso de {{ amount }}.{% if link %} Pague ou combine um plano: {{ link }}{% endif %}",
    ),
    (
        "email/reminder.en.subject",
        "Your overdue balance of {{ amount }}",
    ),
    (
        "email/reminder.es.subject",
        "Su saldo vencido de {{ amount }}",
    ),
    (
        "email/reminder.pt.subject",
        "Seu saldo em atraso de {{ amount }}",
    ),
    (
        "email/reminder.en",
        "Hello,\n\nYour account has an overdue balance of {{ amount }}.\n{% if link %}You can pay, promise a date or set up a plan here: {{ link }}\n{% endif %}\nIf something is wrong, reply to this email and we will look into it.",
    ),
    (
        "email/reminder.es",
        "Hola:\n\nSu cuenta tiene un saldo vencido de {{ amount }}.\n{% if link %}Puede pagar, prometer una fecha o acordar un plan aquí: {{ link }}\n{% endif %}\nSi algo no es correcto, responda a este correo y lo revisaremos.",
    ),
    (
        "email/reminder.pt",
        "Olá,\n\nSua conta tem um saldo em atraso de {{ amount }}.\n{% if link %}Você pode pagar, prometer uma data ou combinar um plano aqui: {{ link }}\n{% endif %}\nSe algo estiver errado, responda a este e-mail e vamos verificar.",
    ),
    (
        "voice/reminder.en",
        "This is a call about your account's overdue balance of {{ amount }}.",
    ),
    (
        "voice/reminder.es",
        "Le llamamos por el saldo vencido de su cuenta, de {{ amount }}.",
    ),
    (
        "voice/reminder.pt",
        "Estamos ligando sobre o saldo em atraso da sua conta, de {{ amount }}.",
    ),
];

/// Opt-out instructions, per channel and language (always appended).
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

/// The templates and what they need.
pub struct Templates {
    env: Environment<'static>,
    self_service_url: Option<String>,
}

impl Templates {
    /// The built-in templates; `self_service_url` is the base of the self-service link.
    pub fn builtin(self_service_url: Option<String>) -> Self {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        for (name, source) in BUILTIN {
            // The built-in sources are checked by the tests below.
            if let Err(e) = env.add_template(name, source) {
                tracing::error!(template = name, error = %e, "invalid built-in template");
            }
        }
        Self {
            env,
            self_service_url,
        }
    }

    fn source(&self, channel: Channel, template: &str, language: &str, suffix: &str) -> String {
        let wanted = format!("{}/{template}.{language}{suffix}", channel.as_str());
        if self.env.get_template(&wanted).is_ok() {
            wanted
        } else {
            format!("{}/{template}.en{suffix}", channel.as_str())
        }
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

    /// Renders a message's template in its language.
    pub fn render(&self, m: &Message) -> Result<Rendered, TemplateError> {
        let link = self
            .self_service_url
            .as_ref()
            .map(|base| format!("{}/s/{}", base.trim_end_matches('/'), m.job_id));
        let ctx = context! {
            amount => format_amount(m.balance_minor, &m.currency),
            currency => m.currency.clone(),
            link => link,
            job_id => m.job_id.clone(),
        };
        let language = m.language.split(['-', '_']).next().unwrap_or("en");
        let body_name = self.source(m.channel, &m.template, language, "");
        let mut body = self.render_one(&body_name, &ctx)?;
        let used_language = body_name.rsplit('.').next().unwrap_or("en").to_owned();
        body.push_str(opt_out(m.channel, &used_language));
        let subject = match m.channel {
            Channel::Email => {
                let name = self.source(m.channel, &m.template, language, ".subject");
                Some(self.render_one(&name, &ctx)?)
            }
            _ => None,
        };
        let sms = (m.channel == Channel::Sms).then(|| sms_segments(&body));
        Ok(Rendered { subject, body, sms })
    }
}

/// `12345` USD → `USD 123.45`; zero-decimal currencies (CLP, JPY, …) keep their units.
pub fn format_amount(minor: i64, currency: &str) -> String {
    let exponent = iso_currency::Currency::from_code(currency)
        .and_then(|c| c.exponent())
        .unwrap_or(2) as u32;
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{currency} {sign}{minor}");
    }
    let div = 10u64.pow(exponent);
    format!(
        "{currency} {sign}{}.{:0width$}",
        minor / div,
        minor % div,
        width = exponent as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tacto_model::Timestamp;

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
        }
    }

    #[test]
    fn every_builtin_template_parses() {
        let t = Templates::builtin(None);
        for (name, _) in BUILTIN {
            assert!(t.env.get_template(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn sms_and_email_carry_opt_out_instructions_in_their_language() {
        let t = Templates::builtin(Some("https://pay.example/".into()));
        let es = t
            .render(&message(Channel::Sms, "es-MX", "MXN"))
            .expect("es");
        assert_eq!(
            es.body,
            "Su cuenta tiene un saldo vencido de MXN 123.45. Pague o acuerde un plan: https://pay.example/s/A:c0:d0.0:a0 Responda BAJA para no recibir más SMS."
        );
        let en = t.render(&message(Channel::Sms, "en", "USD")).expect("en");
        assert!(en.body.ends_with("Reply STOP to opt out."));
        // No template in German: English, with English opt-out instructions.
        let de = t.render(&message(Channel::Sms, "de", "EUR")).expect("de");
        assert!(de.body.starts_with("Your account") && de.body.ends_with("STOP to opt out."));
        let mail = t.render(&message(Channel::Email, "pt", "BRL")).expect("pt");
        assert_eq!(
            mail.subject.as_deref(),
            Some("Seu saldo em atraso de BRL 123.45")
        );
        assert!(mail.body.contains("descadastro"));
        assert!(mail.sms.is_none());
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
