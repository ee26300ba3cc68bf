//! The results, all Markdown: one summary table (a row per figure, a column
//! per server, each figure marked met or missed) and detail tables.

use crate::stats::{ms, Latency};

/// How a figure is shown.
#[derive(Clone, Copy)]
pub enum Unit {
    Ratio,
    Ms,
    /// A difference in bytes.
    Bytes,
    /// A difference in µs.
    Us,
}

impl Unit {
    pub fn show(self, v: f64) -> String {
        match self {
            _ if v.is_nan() => "n/a".into(),
            Unit::Ratio => format!("{v:.2}×"),
            Unit::Ms => ms(v),
            Unit::Bytes if v.fract() == 0.0 => format!("{v:+.0} B"),
            Unit::Bytes => format!("{v:+.1} B"),
            Unit::Us => format!("{v:+.2} µs"),
        }
    }
}

#[derive(Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    pub fn met(self, v: f64) -> bool {
        match self {
            Target::AtMost(t) => v <= t,
            Target::AtLeast(t) => v >= t,
        }
    }

    fn show(self, unit: Unit) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {}", unit.show(t)),
            Target::AtLeast(t) => format!("≥ {}", unit.show(t)),
        }
    }
}

/// One figure, measured on each server.
struct Row {
    id: String,
    what: String,
    unit: Unit,
    target: Option<Target>,
    /// Indexed like `Report::servers`.
    values: Vec<Option<f64>>,
}

impl Row {
    fn cell(&self, server: usize) -> String {
        match (self.values.get(server).copied().flatten(), self.target) {
            (None, _) => "—".into(),
            (Some(v), _) if v.is_nan() => "n/a (failed, see notes)".into(),
            (Some(v), Some(t)) if t.met(v) => format!("{} met", self.unit.show(v)),
            (Some(v), Some(_)) => format!("{} **MISSED**", self.unit.show(v)),
            (Some(v), None) => self.unit.show(v),
        }
    }
}

fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(header) + &format!("|{}\n", "---|".repeat(header.len()));
    rows.iter().for_each(|r| out.push_str(&line(r)));
    out
}

#[derive(Default)]
pub struct Report {
    /// The servers measured, e.g. "Redis 7.0.15"; the last is the current one.
    pub servers: Vec<String>,
    rows: Vec<Row>,
    /// Title, header, rows: cells separated by " | ".
    details: Vec<(String, String, Vec<String>)>,
    notes: Vec<String>,
}

impl Report {
    fn current(&self) -> String {
        self.servers.last().cloned().unwrap_or_default()
    }

    /// Records the current server's figure of row `id` (created on first use;
    /// rows keep the order in which they first appear). NaN: the run failed.
    pub fn figure(&mut self, id: &str, what: &str, unit: Unit, target: Option<Target>, v: f64) {
        if !self.rows.iter().any(|r| r.id == id) {
            let (id, what, values) = (id.into(), what.into(), Vec::new());
            self.rows.push(Row {
                id,
                what,
                unit,
                target,
                values,
            });
        }
        let server = self.servers.len() - 1;
        let row = self.rows.iter_mut().find(|r| r.id == id).expect("row");
        row.values.resize(server + 1, None);
        row.values[server] = Some(v);
    }

    /// Two rows, p50 and p99 (ids `ids`), of a latency measured on the
    /// current server, with a target in ms for each (`None`: no target).
    pub fn latency(
        &mut self,
        ids: [&str; 2],
        what: &str,
        targets: [Option<f64>; 2],
        l: Option<Latency>,
    ) {
        let l = l.unwrap_or(Latency::FAILED);
        for ((id, p, v), t) in [(ids[0], "p50", l.p50), (ids[1], "p99", l.p99)]
            .into_iter()
            .zip(targets)
        {
            self.figure(
                id,
                &format!("{what}, {p}"),
                Unit::Ms,
                t.map(Target::AtMost),
                v,
            );
        }
    }

    /// Adds a row (cells separated by " | "), after a column naming the
    /// current server, to the detail table `title` (created with `header`,
    /// written the same way, on first use).
    pub fn detail(&mut self, title: &str, header: &str, row: String) {
        eprintln!("  {row}");
        if !self.details.iter().any(|d| d.0 == title) {
            self.details
                .push((title.into(), format!("server | {header}"), Vec::new()));
        }
        let row = format!("{} | {row}", self.current());
        self.details
            .iter_mut()
            .find(|d| d.0 == title)
            .expect("table")
            .2
            .push(row);
    }

    pub fn note(&mut self, note: String) {
        eprintln!("  note: {note}");
        self.notes.push(format!("{}: {note}", self.current()));
    }

    /// Every figure on every server, marked met or missed, and the tally.
    pub fn summary(&self) -> String {
        let header = [
            vec!["#".into(), "figure".into(), "target".into()],
            self.servers.clone(),
        ]
        .concat();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let target = r.target.map_or("—".into(), |t| t.show(r.unit));
                let cells = (0..self.servers.len()).map(|s| r.cell(s));
                [r.id.clone(), r.what.clone(), target]
                    .into_iter()
                    .chain(cells)
                    .collect()
            })
            .collect();
        let verdicts = self
            .rows
            .iter()
            .filter_map(|r| Some((r.target?, r)))
            .flat_map(|(t, r)| r.values.iter().flatten().map(move |v| t.met(*v)));
        let (met, missed) = verdicts.fold(
            (0, 0),
            |(m, x), ok| if ok { (m + 1, x) } else { (m, x + 1) },
        );
        format!(
            "{}\nTargets: {met} met, {missed} not met.\n",
            table(&header, &rows)
        )
    }

    /// The summary, the notes, then the detail tables.
    pub fn markdown(&self) -> String {
        let mut out = self.summary();
        if !self.notes.is_empty() {
            out += &format!("\nNotes:\n- {}\n", self.notes.join("\n- "));
        }
        for (title, header, rows) in &self.details {
            let split = |r: &String| r.split(" | ").map(String::from).collect::<Vec<_>>();
            let rows: Vec<_> = rows.iter().map(split).collect();
            out += &format!("\n### {title}\n\n{}", table(&split(header), &rows));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_land_in_their_server_column_with_a_verdict() {
        let mut r = Report::default();
        r.servers.push("A".into());
        r.figure("1", "x ÷ y", Unit::Ratio, Some(Target::AtMost(1.0)), 1.25);
        r.latency(["4a", "4b"], "hand-off", [Some(1.0), None], None);
        r.servers.push("B".into());
        r.figure("1", "x ÷ y", Unit::Ratio, Some(Target::AtMost(1.0)), 0.5);
        r.figure("2", "bytes", Unit::Bytes, None, 8.0);
        r.detail("D", "k | l", "v | w".into());
        let md = r.markdown();
        assert!(
            md.contains("| 1 | x ÷ y | ≤ 1.00× | 1.25× **MISSED** | 0.50× met |"),
            "{md}"
        );
        assert!(md.contains("| 2 | bytes | — | — | +8 B |"), "{md}");
        assert!(
            md.contains("| 4a | hand-off, p50 | ≤ 1.00 ms | n/a (failed, see notes) | — |"),
            "{md}"
        );
        assert!(md.contains("Targets: 1 met, 2 not met."), "{md}");
        assert!(
            md.contains("| server | k | l |\n|---|---|---|\n| B | v | w |"),
            "{md}"
        );
    }
}
