//! Small server-side SVG bar charts for the console (no JavaScript). Each chart has a `<title>`
//! and `role="img"`; the pages put the same numbers in a table beside it for screen readers.

use std::fmt::Write;

/// One coloured series of a stacked bar chart.
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Fill colour (CSS).
    pub color: &'static str,
    /// One value per bar.
    pub values: Vec<u64>,
}

/// Colours that stay distinct for colour-blind readers (Okabe–Ito).
pub const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Vertical bars, one per label, each stacking every series.
pub fn stacked_bars(title: &str, labels: &[String], series: &[Series]) -> String {
    let (w, h, left, bottom, top) = (640.0_f64, 220.0_f64, 40.0, 40.0, 10.0);
    let totals: Vec<u64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1) as f64;
    let plot_h = h - bottom - top;
    let slot = (w - left) / labels.len().max(1) as f64;
    let bar = (slot * 0.7).max(1.0);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-labelledby="c-{id}"><title id="c-{id}">{t}</title>"#,
        id = title.len() ^ labels.len(),
        t = esc(title)
    );
    let _ = write!(
        out,
        r##"<line x1="{left}" y1="{y}" x2="{w}" y2="{y}" stroke="#888"/><text x="{x}" y="{ty}" text-anchor="end">{max}</text><text x="{x}" y="{y}" text-anchor="end">0</text>"##,
        y = h - bottom,
        x = left - 4.0,
        ty = top + 10.0,
        max = max as u64
    );
    for (i, label) in labels.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar) / 2.0;
        let mut y = h - bottom;
        for s in series {
            let v = s.values.get(i).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let bh = plot_h * v as f64 / max;
            y -= bh;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{bh:.1}" fill="{c}"><title>{l}: {n} {v}</title></rect>"#,
                c = s.color,
                l = esc(label),
                n = esc(&s.name)
            );
        }
        if labels.len() <= 16 || i % 2 == 0 {
            let _ = write!(
                out,
                r#"<text x="{cx:.1}" y="{ly}" text-anchor="middle">{l}</text>"#,
                cx = x + bar / 2.0,
                ly = h - bottom + 14.0,
                l = esc(label)
            );
        }
    }
    let mut lx = left;
    for s in series {
        let _ = write!(
            out,
            r#"<rect x="{lx}" y="{ly}" width="10" height="10" fill="{c}"/><text x="{tx}" y="{ty}">{n}</text>"#,
            ly = h - 14.0,
            c = s.color,
            tx = lx + 14.0,
            ty = h - 5.0,
            n = esc(&s.name)
        );
        lx += 24.0 + 7.0 * s.name.len() as f64;
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bars, one per row, longest first.
pub fn horizontal_bars(title: &str, rows: &[(String, u64)], color: &str) -> String {
    let mut rows: Vec<&(String, u64)> = rows.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let row_h = 22.0;
    let (w, left) = (640.0_f64, 190.0_f64);
    let h = (rows.len().max(1) as f64) * row_h + 8.0;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg viewBox="0 0 {w} {h}" width="100%" role="img" aria-labelledby="h-{id}"><title id="h-{id}">{t}</title>"#,
        id = title.len() ^ rows.len(),
        t = esc(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 4.0 + i as f64 * row_h;
        let bw = (w - left - 60.0) * (*v as f64) / max;
        let _ = write!(
            out,
            r#"<text x="{tx}" y="{ty}" text-anchor="end">{l}</text><rect x="{left}" y="{y}" width="{bw:.1}" height="{bh}" fill="{color}"/><text x="{vx:.1}" y="{ty}">{v}</text>"#,
            tx = left - 6.0,
            ty = y + 14.0,
            l = esc(label),
            bh = row_h - 6.0,
            vx = left + bw + 4.0
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_escaped_labels_and_a_title() {
        let svg = stacked_bars(
            "Contacts <per> day",
            &["11-30".into(), "12-01".into()],
            &[
                Series {
                    name: "sms".into(),
                    color: PALETTE[0],
                    values: vec![3, 0],
                },
                Series {
                    name: "voice".into(),
                    color: PALETTE[1],
                    values: vec![1, 4],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("Contacts &lt;per&gt; day"));
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 2,
            "three bars and two legend keys"
        );
        let h = horizontal_bars(
            "Why",
            &[("quiet_hours".into(), 5), ("<x>".into(), 2)],
            "#000",
        );
        assert!(h.contains("&lt;x&gt;") && !h.contains("<x>"));
    }
}
