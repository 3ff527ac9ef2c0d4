//! The self-service page's texts in Spanish, English and Portuguese (`i18n/*.toml`, compiled in),
//! and the choice of language: the account's, else the browser's, else English.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The languages the page speaks, in the order the language menu lists them.
pub const LANGUAGES: [&str; 3] = ["es", "en", "pt"];

const SOURCES: [(&str, &str); 3] = [
    ("es", include_str!("../../i18n/es.toml")),
    ("en", include_str!("../../i18n/en.toml")),
    ("pt", include_str!("../../i18n/pt.toml")),
];

type Texts = HashMap<String, String>;

fn catalog() -> &'static HashMap<&'static str, Texts> {
    static CATALOG: OnceLock<HashMap<&'static str, Texts>> = OnceLock::new();
    CATALOG.get_or_init(|| {
        SOURCES
            .iter()
            .map(|(lang, text)| {
                // The files are compiled in and checked by the tests below.
                let texts: Texts = toml::from_str(text).unwrap_or_else(|e| {
                    tracing::error!(lang, error = %e, "invalid built-in texts");
                    Texts::new()
                });
                (*lang, texts)
            })
            .collect()
    })
}

/// The text `key` in `lang` (English when the language lacks it, the key itself when nobody
/// has it), with `{name}` placeholders replaced from `args`.
pub fn text(lang: &str, key: &str, args: &[(&str, &str)]) -> String {
    let c = catalog();
    let raw = c
        .get(lang)
        .and_then(|t| t.get(key))
        .or_else(|| c.get("en").and_then(|t| t.get(key)))
        .map_or(key, String::as_str);
    let mut out = raw.to_owned();
    for (name, value) in args {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// The supported language of a BCP 47 tag (`es-MX` → `es`), if any.
pub fn supported(tag: &str) -> Option<&'static str> {
    let primary = tag.split(['-', '_']).next()?.trim().to_ascii_lowercase();
    LANGUAGES.into_iter().find(|l| *l == primary)
}

/// The first supported language of an `Accept-Language` header, by preference weight.
pub fn from_accept_language(header: Option<&str>) -> Option<&'static str> {
    let mut best: Option<(f32, &'static str)> = None;
    for part in header?.split(',') {
        let mut it = part.split(';');
        let tag = it.next().unwrap_or_default();
        let q = it
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if let Some(lang) = supported(tag)
            && best.is_none_or(|(bq, _)| q > bq)
        {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_text_with_the_same_placeholders() {
        let c = catalog();
        let en = &c["en"];
        assert!(en.len() > 80, "{}", en.len());
        let holes = |s: &str| {
            let mut v: Vec<String> = s
                .split('{')
                .skip(1)
                .filter_map(|p| p.split_once('}').map(|(n, _)| n.to_owned()))
                .collect();
            v.sort();
            v
        };
        for lang in LANGUAGES {
            let texts = &c[lang];
            assert_eq!(texts.len(), en.len(), "{lang} has another set of texts");
            for (k, v) in en {
                let other = texts.get(k).unwrap_or_else(|| panic!("{lang} lacks {k}"));
                assert_eq!(holes(v), holes(other), "{lang}.{k}");
                assert!(!other.trim().is_empty(), "{lang}.{k} is empty");
            }
        }
        assert_eq!(
            text("es", "err_amount_low", &[("amount", "USD 5.00")]),
            "El importe debe ser de al menos USD 5.00."
        );
        assert_eq!(text("de", "done_title", &[]), "Done");
        assert_eq!(text("en", "no_such_key", &[]), "no_such_key");
    }

    #[test]
    fn the_language_comes_from_the_tag_or_the_browser() {
        assert_eq!(supported("pt-BR"), Some("pt"));
        assert_eq!(supported("de"), None);
        assert_eq!(
            from_accept_language(Some("de-DE,de;q=0.9,pt;q=0.8,en;q=0.7")),
            Some("pt")
        );
        assert_eq!(from_accept_language(Some("fr")), None);
        assert_eq!(from_accept_language(Some("es;q=0.2, en")), Some("en"));
        assert_eq!(from_accept_language(None), None);
    }
}
