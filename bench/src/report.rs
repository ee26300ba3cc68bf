//! The results, all Markdown: one summary table (a row per figure, a column
//! per server, each figure marked met or missed) and detail tables.

use crate::stats::Latency;

/// How a figure is shown: a ratio, ms, or a difference in bytes or µs.
#[derive(Clone, Copy)]
pub enum Unit {
    Ratio,
    Ms,
    Bytes,
    Us,
}

impl Unit {
    /// Decimals `v` is shown with.
    fn decimals(self, v: f64) -> usize {
        match self {
            Unit::Ms if v >= 10.0 => 0,
            Unit::Bytes if v.fract() == 0.0 => 0,
            Unit::Bytes => 1,
            _ => 2,
        }
    }

    fn format(self, v: f64, d: usize) -> String {
        match self {
            _ if v.is_nan() => "n/a".into(),
            Unit::Ratio => format!("{v:.d$}×"),
            Unit::Ms => format!("{v:.d$} ms"),
            Unit::Bytes => format!("{v:+.d$} B"),
            Unit::Us => format!("{v:+.d$} µs"),
        }
    }

    pub fn show(self, v: f64) -> String {
        self.format(v, self.decimals(v))
    }

    /// A value that missed target `t`, with the decimals it takes to tell
    /// them apart (0.998× against ≥ 1.00×, not 1.00×).
    fn show_against(self, v: f64, t: f64) -> String {
        let apart = |d: &usize| format!("{v:.d$}") != format!("{t:.d$}");
        self.format(v, (self.decimals(v)..6).find(apart).unwrap_or(6))
    }
}

#[derive(Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    fn met(self, v: f64) -> bool {
        match self {
            Target::AtMost(t) => v <= t,
            Target::AtLeast(t) => v >= t,
        }
    }

    fn value(self) -> f64 {
        match self {
            Target::AtMost(t) | Target::AtLeast(t) => t,
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
    fn cells(&self, servers: usize) -> Vec<String> {
        let (unit, values) = (self.unit, &self.values);
        let target = match self.target {
            Some(Target::AtMost(t)) => format!("≤ {}", unit.show(t)),
            Some(Target::AtLeast(t)) => format!("≥ {}", unit.show(t)),
            None => "—".into(),
        };
        let cell = |s: usize| match (values.get(s).copied().flatten(), self.target) {
            (None, _) => "—".into(),
            (Some(v), _) if v.is_nan() => "n/a (failed, see notes)".into(),
            (Some(v), Some(t)) if t.met(v) => format!("{} met", unit.show(v)),
            (Some(v), Some(t)) => format!("{} **MISSED**", unit.show_against(v, t.value())),
            (Some(v), None) => unit.show(v),
        };
        let cells = (0..servers).map(cell);
        [self.id.clone(), self.what.clone(), target]
            .into_iter()
            .chain(cells)
            .collect()
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
    fn current(&self) -> &str {
        self.servers.last().map_or("", String::as_str)
    }

    /// Records the current server's figure of row `id` (created on first use;
    /// rows keep the order in which they first appear). NaN: the run failed.
    pub fn figure(&mut self, id: &str, what: &str, unit: Unit, target: Option<Target>, v: f64) {
        let i = self
            .rows
            .iter()
            .position(|r| r.id == id)
            .unwrap_or_else(|| {
                let (id, what, values) = (id.into(), what.into(), Vec::new());
                self.rows.push(Row {
                    id,
                    what,
                    unit,
                    target,
                    values,
                });
                self.rows.len() - 1
            });
        let (values, server) = (&mut self.rows[i].values, self.servers.len() - 1);
        values.resize(server + 1, None);
        values[server] = Some(v);
    }

    /// Two rows, p50 and p99 (ids `ids`), of a latency measured on the
    /// current server, each with a target in ms or none; `None`: it failed.
    pub fn latency(
        &mut self,
        ids: [&str; 2],
        what: &str,
        targets: [Option<f64>; 2],
        l: Option<Latency>,
    ) {
        let l = l.unwrap_or_else(|| Latency::from_ms(&[]));
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
        let row = format!("{} | {row}", self.current());
        match self.details.iter_mut().find(|d| d.0 == title) {
            Some(table) => table.2.push(row),
            None => self
                .details
                .push((title.into(), format!("server | {header}"), vec![row])),
        }
    }

    pub fn note(&mut self, note: String) {
        eprintln!("  note: {note}");
        self.notes.push(format!("{}: {note}", self.current()));
    }

    /// Every figure on every server, marked met or missed, and the tally.
    pub fn summary(&self) -> String {
        let header = ["#", "figure", "target"].map(String::from);
        let header = [&header[..], &self.servers].concat();
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| r.cells(self.servers.len()))
            .collect();
        let verdicts = self
            .rows
            .iter()
            .filter_map(|r| Some((r.target?, &r.values)));
        let verdicts: Vec<bool> = verdicts
            .flat_map(|(t, v)| v.iter().flatten().map(move |v| t.met(*v)))
            .collect();
        let met = verdicts.iter().filter(|m| **m).count();
        let missed = verdicts.len() - met;
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
        let split = |r: &String| r.split(" | ").map(String::from).collect::<Vec<_>>();
        for (title, header, rows) in &self.details {
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
        r.figure("2", "bytes", Unit::Bytes, Some(Target::AtLeast(9.0)), 8.0);
        r.figure("3", "ratio", Unit::Ratio, Some(Target::AtLeast(1.0)), 0.998);
        r.figure("6", "bytes", Unit::Bytes, Some(Target::AtMost(16.0)), 16.04);
        r.detail("D", "k | l", "v | w".into());
        let md = r.markdown();
        let has = |s: &str| assert!(md.contains(s), "{s:?} in\n{md}");
        has("| 1 | x ÷ y | ≤ 1.00× | 1.25× **MISSED** | 0.50× met |");
        has("| 2 | bytes | ≥ +9 B | — | +8 B **MISSED** |");
        assert_eq!(Unit::Ms.show(0.123), "0.12 ms");
        has("| 4a | hand-off, p50 | ≤ 1.00 ms | n/a (failed, see notes) | — |");
        has("| 4b | hand-off, p99 | — | n/a (failed, see notes) | — |");
        has("| 3 | ratio | ≥ 1.00× | — | 0.998× **MISSED** |");
        has("| 6 | bytes | ≤ +16 B | — | +16.04 B **MISSED** |");
        has("Targets: 1 met, 5 not met.");
        has("| server | k | l |\n|---|---|---|\n| B | v | w |");
    }
}
