//! The results: a summary table of every target, detail tables, the chart.

use std::fmt::Write as _;

/// How a figure is compared with its target.
#[derive(Clone, Copy, Debug)]
pub enum Cmp {
    AtMost,
    AtLeast,
}

#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub cmp: Cmp,
    pub value: f64,
}

impl Target {
    pub fn at_most(value: f64) -> Target {
        Target {
            cmp: Cmp::AtMost,
            value,
        }
    }

    pub fn at_least(value: f64) -> Target {
        Target {
            cmp: Cmp::AtLeast,
            value,
        }
    }

    pub fn met(&self, v: f64) -> bool {
        !v.is_nan()
            && match self.cmp {
                Cmp::AtMost => v <= self.value,
                Cmp::AtLeast => v >= self.value,
            }
    }

    fn describe(&self, unit: &str) -> String {
        let op = match self.cmp {
            Cmp::AtMost => "≤",
            Cmp::AtLeast => "≥",
        };
        format!("{op} {}{unit}", trim_float(self.value))
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// One line of the summary: a figure, its baseline, and its target.
#[derive(Clone, Debug)]
pub struct Row {
    pub id: String,
    pub what: String,
    pub module: String,
    pub baseline: String,
    /// The figure checked against `target` (a ratio, or a latency in ms).
    pub value: f64,
    /// Unit of `value` and the target: "×" or " ms".
    pub unit: &'static str,
    pub target: Option<Target>,
    /// Why the row has no figure.
    pub skipped: Option<String>,
}

impl Row {
    pub fn verdict(&self) -> String {
        if let Some(why) = &self.skipped {
            return format!("skipped ({why})");
        }
        match &self.target {
            Some(t) if t.met(self.value) => "target met".into(),
            Some(_) => "MISSED".into(),
            None => "—".into(),
        }
    }

    fn value_text(&self) -> String {
        if self.skipped.is_some() || self.value.is_nan() {
            "—".into()
        } else if self.unit == "×" {
            format!("{:.2}×", self.value)
        } else if self.unit == " ms" {
            crate::util::ms(self.value)
        } else {
            format!("{:+.2}{}", self.value, self.unit)
        }
    }

    fn target_text(&self) -> String {
        self.target
            .map(|t| t.describe(self.unit))
            .unwrap_or_else(|| "—".into())
    }
}

/// A table rendered as aligned text (console) or markdown (README).
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let line = |cells: &[String]| {
            let escaped: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
            format!("| {} |\n", escaped.join(" | "))
        };
        out.push_str(&line(&self.header));
        out.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }

    pub fn text(&self) -> String {
        let cols = self.header.len();
        let mut width = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = width[i].saturating_sub(c.chars().count());
                    format!("{c}{}", " ".repeat(pad))
                })
                .collect();
            out.push_str(padded.join("  ").trim_end());
            out.push('\n');
        };
        line(&self.header);
        let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
        line(&rule);
        for r in &self.rows {
            line(r);
        }
        out
    }
}

/// A detail section: what was done and its figures.
#[derive(Clone, Debug)]
pub struct Section {
    pub title: String,
    pub method: String,
    pub table: Table,
}

/// A bar of the ratio chart: module ÷ baseline, lower is better.
#[derive(Clone, Debug)]
pub struct RatioBar {
    pub label: String,
    pub value: f64,
    pub target: f64,
    /// Replaces the default "(target ≤ x×, met)" caption.
    pub caption: Option<String>,
    /// Overrides `value <= target` as the verdict.
    pub met: Option<bool>,
}

impl RatioBar {
    pub fn new(label: impl Into<String>, value: f64, target: f64) -> RatioBar {
        RatioBar {
            label: label.into(),
            value,
            target,
            caption: None,
            met: None,
        }
    }
}

/// A bar of the latency chart.
#[derive(Clone, Debug)]
pub struct LatencyBar {
    pub group: String,
    pub mode: String,
    pub p50: f64,
    pub p99: f64,
    /// (p50, p99) targets, drawn for the module's rows.
    pub targets: Option<(f64, f64)>,
}

/// A row of the fairness chart: acquisitions per client.
#[derive(Clone, Debug)]
pub struct FairnessBar {
    pub mode: String,
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub sections: Vec<Section>,
    pub ratio_bars: Vec<RatioBar>,
    pub latency_bars: Vec<LatencyBar>,
    pub fairness_bars: Vec<FairnessBar>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn summary(&self) -> Table {
        let mut t = Table::new(&[
            "#",
            "measurement",
            "module",
            "baseline",
            "figure",
            "target",
            "verdict",
        ]);
        for r in &self.rows {
            t.push(vec![
                r.id.clone(),
                r.what.clone(),
                r.module.clone(),
                r.baseline.clone(),
                r.value_text(),
                r.target_text(),
                r.verdict(),
            ]);
        }
        t
    }

    pub fn missed(&self) -> Vec<&Row> {
        self.rows
            .iter()
            .filter(|r| r.skipped.is_none() && r.target.is_some_and(|t| !t.met(r.value)))
            .collect()
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        out.push_str("\n== Summary ==\n");
        out.push_str(&self.summary().text());
        for s in &self.sections {
            let _ = write!(out, "\n== {} ==\n{}\n", s.title, s.method);
            out.push_str(&s.table.text());
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }

    pub fn markdown(&self, header: &str) -> String {
        let mut out = String::new();
        out.push_str(header);
        out.push_str("\n### Summary\n\n");
        out.push_str(&self.summary().markdown());
        let missed = self.missed();
        if missed.is_empty() {
            out.push_str("\nEvery measured target was met in this run.\n");
        } else {
            out.push_str("\nTargets missed in this run:\n");
            for r in missed {
                let _ = writeln!(
                    out,
                    "- **{} {}**: {} against a target of {}.",
                    r.id,
                    r.what,
                    r.value_text(),
                    r.target_text()
                );
            }
        }
        for r in self.rows.iter().filter(|r| r.skipped.is_some()) {
            let _ = writeln!(out, "- {} {}: {}.", r.id, r.what, r.verdict());
        }
        for s in &self.sections {
            let _ = write!(out, "\n### {}\n\n{}\n\n", s.title, s.method);
            out.push_str(&s.table.markdown());
        }
        if !self.notes.is_empty() {
            out.push_str("\n### Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }

    /// The chart: ratios against targets, then hand-off latencies.
    pub fn svg(&self, subtitle: &str) -> String {
        svg(self, subtitle)
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 1060.0;
const LABEL_W: f64 = 330.0;
const PLOT_X0: f64 = 340.0;
const PLOT_X1: f64 = 760.0;
const ROW_H: f64 = 26.0;
const GOOD: &str = "#2e7d32";
const BAD: &str = "#c62828";
const GREY: &str = "#555";

fn svg(report: &Report, subtitle: &str) -> String {
    let mut body = String::new();
    let mut y = 20.0;
    let _ = writeln!(
        body,
        r#"<text x="10" y="{y}" font-size="17" font-weight="bold">Redis lock module vs bsm/redis-lock's SET NX PX + EVALSHA</text>"#
    );
    y += 18.0;
    let _ = writeln!(
        body,
        r#"<text x="10" y="{y}" font-size="11" fill="{GREY}">{}</text>"#,
        esc(subtitle)
    );
    y += 26.0;
    y = ratio_panel(&mut body, &report.ratio_bars, y);
    y += 24.0;
    y = latency_panel(&mut body, &report.latency_bars, y);
    if !report.fairness_bars.is_empty() {
        y += 24.0;
        y = fairness_panel(&mut body, &report.fairness_bars, y);
    }
    let h = y + 16.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" font-family=\"Helvetica, Arial, sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn ratio_panel(out: &mut String, bars: &[RatioBar], mut y: f64) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="10" y="{y}" font-size="14" font-weight="bold">Module ÷ baseline, same run (lower is better; dashed line = target)</text>"#
    );
    y += 12.0;
    if bars.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" font-size="12">no ratios measured</text>"#,
            y + 16.0
        );
        return y + 24.0;
    }
    let max = bars
        .iter()
        .flat_map(|b| [b.value, b.target])
        .filter(|v| v.is_finite())
        .fold(1.5f64, f64::max)
        * 1.1;
    let max = (max * 2.0).ceil() / 2.0;
    let sx = |v: f64| PLOT_X0 + (v.clamp(0.0, max) / max) * (PLOT_X1 - PLOT_X0);
    let top = y;
    let bottom = y + ROW_H * bars.len() as f64 + 4.0;
    // Grid every 0.5×.
    let mut g = 0.0;
    while g <= max + 1e-9 {
        let x = sx(g);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{}" font-size="10" text-anchor="middle" fill="{GREY}">{g:.1}×</text>"##,
            bottom + 12.0
        );
        g += 0.5;
    }
    let x1 = sx(1.0);
    let _ = writeln!(
        out,
        r##"<line x1="{x1:.1}" y1="{top}" x2="{x1:.1}" y2="{bottom}" stroke="#999"/>"##
    );
    for (i, b) in bars.iter().enumerate() {
        let ry = top + 4.0 + ROW_H * i as f64;
        let met = b.met.unwrap_or(b.value <= b.target);
        let color = if met { GOOD } else { BAD };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"#,
            LABEL_W,
            ry + 15.0,
            esc(&b.label)
        );
        if b.value.is_finite() {
            let _ = writeln!(
                out,
                r#"<rect x="{PLOT_X0}" y="{}" width="{:.1}" height="{}" fill="{color}" opacity="0.85"/>"#,
                ry + 3.0,
                sx(b.value) - PLOT_X0,
                ROW_H - 8.0
            );
        }
        let tx = sx(b.target);
        let _ = writeln!(
            out,
            r#"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="black" stroke-width="2" stroke-dasharray="4,2"/>"#,
            ry,
            ry + ROW_H - 2.0
        );
        let verdict = if met { "met" } else { "MISSED" };
        let caption = b.caption.clone().unwrap_or_else(|| {
            format!(
                "{:.2}× (target ≤ {}×, {verdict})",
                b.value,
                trim_float(b.target)
            )
        });
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="11" fill="{color}">{}</text>"#,
            PLOT_X1 + 8.0,
            ry + 15.0,
            esc(&caption)
        );
    }
    bottom + 18.0
}

fn latency_panel(out: &mut String, bars: &[LatencyBar], mut y: f64) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="10" y="{y}" font-size="14" font-weight="bold">Hand-off latency, log scale (dark bar = p50, light bar = p99; dashed = module's targets, thick p50, thin p99)</text>"#
    );
    y += 12.0;
    if bars.is_empty() {
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" font-size="12">hand-off not measured</text>"#,
            y + 16.0
        );
        return y + 24.0;
    }
    let (lo, hi) = (0.01f64, 1000.0f64);
    let sx = |v: f64| {
        let v = v.clamp(lo, hi);
        PLOT_X0 + (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * (PLOT_X1 - PLOT_X0)
    };
    let row_h = 20.0;
    let mut groups: Vec<&str> = Vec::new();
    for b in bars {
        if !groups.contains(&b.group.as_str()) {
            groups.push(&b.group);
        }
    }
    let rows = bars.len() as f64 + groups.len() as f64;
    let top = y;
    let bottom = y + rows * row_h + 4.0;
    for decade in [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0] {
        let x = sx(decade);
        let label = if decade < 1.0 {
            format!("{decade} ms")
        } else {
            format!("{decade:.0} ms")
        };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{}" font-size="10" text-anchor="middle" fill="{GREY}">{label}</text>"##,
            bottom + 12.0
        );
    }
    let mut ry = top + 2.0;
    for g in groups {
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" font-size="12" font-weight="bold">{}</text>"#,
            ry + 14.0,
            esc(g)
        );
        ry += row_h;
        for b in bars.iter().filter(|b| b.group == g) {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" font-size="12" text-anchor="end">{}</text>"#,
                LABEL_W,
                ry + 14.0,
                esc(&b.mode)
            );
            let color = if b.targets.is_some() {
                "#1565c0"
            } else {
                "#8d6e63"
            };
            if b.p99.is_finite() {
                let _ = writeln!(
                    out,
                    r#"<rect x="{PLOT_X0}" y="{}" width="{:.1}" height="{}" fill="{color}" opacity="0.35"/>"#,
                    ry + 3.0,
                    sx(b.p99) - PLOT_X0,
                    row_h - 6.0
                );
            }
            if b.p50.is_finite() {
                let _ = writeln!(
                    out,
                    r#"<rect x="{PLOT_X0}" y="{}" width="{:.1}" height="{}" fill="{color}"/>"#,
                    ry + 6.0,
                    sx(b.p50) - PLOT_X0,
                    row_h - 12.0
                );
            }
            if let Some((t50, t99)) = b.targets {
                for (t, w) in [(t50, 2.0), (t99, 1.0)] {
                    let tx = sx(t);
                    let _ = writeln!(
                        out,
                        r#"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="black" stroke-width="{w}" stroke-dasharray="3,2"/>"#,
                        ry + 1.0,
                        ry + row_h - 1.0
                    );
                }
            }
            let text = if b.p50.is_finite() {
                format!(
                    "p50 {} / p99 {}",
                    crate::util::ms(b.p50),
                    crate::util::ms(b.p99)
                )
            } else {
                "not measured".into()
            };
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" font-size="11">{}</text>"#,
                PLOT_X1 + 8.0,
                ry + 14.0,
                esc(&text)
            );
            ry += row_h;
        }
    }
    bottom + 18.0
}

fn fairness_panel(out: &mut String, bars: &[FairnessBar], mut y: f64) -> f64 {
    let _ = writeln!(
        out,
        r#"<text x="10" y="{y}" font-size="14" font-weight="bold">Fairness: acquisitions per client, 16 clients on one key (bar = min to max, tick = median)</text>"#
    );
    y += 12.0;
    let max = bars.iter().map(|b| b.max).fold(1.0f64, f64::max) * 1.05;
    let sx = |v: f64| PLOT_X0 + (v.clamp(0.0, max) / max) * (PLOT_X1 - PLOT_X0);
    let top = y;
    let bottom = y + ROW_H * bars.len() as f64 + 4.0;
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let x = sx(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/><text x="{x:.1}" y="{}" font-size="10" text-anchor="middle" fill="{GREY}">{v:.0}</text>"##,
            bottom + 12.0
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let ry = top + 4.0 + ROW_H * i as f64;
        let color = if b.mode.contains("WAIT") {
            "#1565c0"
        } else {
            "#8d6e63"
        };
        let _ = writeln!(
            out,
            r#"<text x="{LABEL_W}" y="{}" font-size="12" text-anchor="end">{}</text>"#,
            ry + 15.0,
            esc(&b.mode)
        );
        let (x0, x1) = (sx(b.min), sx(b.max));
        let _ = writeln!(
            out,
            r#"<rect x="{x0:.1}" y="{}" width="{:.1}" height="{}" fill="{color}" opacity="0.6"/>"#,
            ry + 5.0,
            (x1 - x0).max(2.0),
            ROW_H - 12.0
        );
        let xm = sx(b.median);
        let _ = writeln!(
            out,
            r#"<line x1="{xm:.1}" y1="{}" x2="{xm:.1}" y2="{}" stroke="black" stroke-width="2"/>"#,
            ry + 2.0,
            ry + ROW_H - 4.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="11">min {:.0} / median {:.0} / max {:.0}</text>"#,
            PLOT_X1 + 8.0,
            ry + 15.0,
            b.min,
            b.median,
            b.max
        );
    }
    bottom + 18.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let mut r = Row {
            id: "1".into(),
            what: "x".into(),
            module: "a".into(),
            baseline: "b".into(),
            value: 0.9,
            unit: "×",
            target: Some(Target::at_most(1.0)),
            skipped: None,
        };
        assert_eq!(r.verdict(), "target met");
        r.value = 1.1;
        assert_eq!(r.verdict(), "MISSED");
        r.target = Some(Target::at_least(1.0));
        assert_eq!(r.verdict(), "target met");
        r.value = f64::NAN;
        assert_eq!(r.verdict(), "MISSED");
    }

    #[test]
    fn tables_render() {
        let mut t = Table::new(&["a", "bb"]);
        t.push(vec!["µs".into(), "x|y".into()]);
        assert!(t.markdown().contains("x\\|y"));
        assert!(t.text().starts_with("a   bb\n"));
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let r = Report {
            ratio_bars: vec![RatioBar::new("A < B", 0.8, 1.0)],
            latency_bars: vec![LatencyBar {
                group: "g".into(),
                mode: "WAIT".into(),
                p50: 0.3,
                p99: 1.2,
                targets: Some((1.0, 5.0)),
            }],
            ..Report::default()
        };
        let s = r.svg("sub");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("A &lt; B"));
    }
}
