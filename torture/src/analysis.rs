//! Figures of a run and the judgement at its end.
//!
//! - Overlapping holds: a hold is the time from the grant's reply to the
//!   end of its critical section, cut at its lease (the latest replicated
//!   grant's *send* time + ttl − drift). Two holds of one key whose writes
//!   the fenced resource all accepted must not overlap: that would be two
//!   clients each rightly believing it had the lock at the same moment.
//! - Fence regressions: a grant whose request was sent after another
//!   grant's reply came (so the server surely granted it later) must carry
//!   a larger fence.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::events::Ledger;
use crate::orchestrator::{FaultKind, Options, ALL_FAULTS, DRIFT_US};
use crate::resource::State;

#[derive(Default)]
pub struct Figures {
    pub elapsed: Duration,
    pub faults: HashMap<FaultKind, u64>,
    pub holders_killed: u64,
    pub holders_stopped: u64,
    pub failovers_aborted: u64,
    pub stats: HashMap<(usize, u32), HashMap<String, u64>>,
    /// Server exits we did not cause.
    pub crashes: Vec<String>,
    /// Crash reports in the servers' logs, and their reasons.
    pub crash_reports: usize,
    pub crash_reasons: Vec<String>,
    pub client_failures: Vec<String>,
    pub notes: Vec<String>,
    pub skipped: Vec<String>,
    pub armed: u64,
    pub armed_in_pause: u64,
    pub grants_in_pause: Vec<String>,
    pub pause_grant_delay_ms: u64,
    pub restart_checked: u64,
    pub restart_lost: Vec<String>,
    pub failover_checked: u64,
    pub failover_lost: Vec<String>,
    pub unacked_checked: u64,
    pub unacked_lost: u64,
    pub extension_checked: u64,
    pub extended: Vec<String>,
    pub overlaps: Vec<String>,
    pub regressions: Vec<String>,
    pub twice: Vec<String>,
    pub never: Vec<String>,
    pub race_disagree: Vec<String>,
    pub missing_faults: Vec<String>,
}

impl Figures {
    /// Must-be-0 figures, added up.
    pub fn violations(&self) -> usize {
        self.overlaps.len()
            + self.regressions.len()
            + self.restart_lost.len()
            + self.failover_lost.len()
            + self.extended.len()
            + self.twice.len()
            + self.never.len()
            + self.race_disagree.len()
            + self.grants_in_pause.len()
            + self.crash_count()
            + self.client_failures.len()
            + self.missing_faults.len()
    }

    /// A crash leaves an exit, a report in the log, or both.
    pub fn crash_count(&self) -> usize {
        self.crashes.len().max(self.crash_reports)
    }

    fn stat(&self, name: &str) -> u64 {
        self.stats.values().filter_map(|m| m.get(name)).sum::<u64>()
    }
}

pub fn judge(
    ledger: &Ledger,
    res: &State,
    fig: &mut Figures,
    o: &Options,
    crash_logs: [(usize, Vec<String>); 2],
) -> String {
    let holds_checked = overlaps(ledger, res, fig);
    let grants_checked = regressions(ledger, fig);
    for (key, token, sent, wait) in &ledger.never {
        fig.never.push(format!(
            "{key}: {token}'s WAIT {wait} sent at {sent} µs got no reply within its timeout + 15 s"
        ));
    }
    for (key, token, t) in &ledger.twice {
        fig.twice.push(format!(
            "{key}: a second reply on {token}'s connection (seen at {t} µs)"
        ));
    }
    // A race probe cut by a server fault may see its lock go with the server.
    for (key, sent, done) in &ledger.race_disagree {
        let during_fault = ledger.faults.iter().any(|f| {
            FaultKind::is_server_fault(&f.kind)
                && f.start.saturating_sub(1_000_000) < *done
                && *sent < f.end + 1_000_000
        });
        if !during_fault {
            fig.race_disagree.push(format!(
                "{key}: the WAIT reply (sent at {sent} µs) disagrees with LOCK.CHECK"
            ));
        }
    }
    for (i, (reports, why)) in crash_logs.into_iter().enumerate() {
        fig.crash_reports += reports;
        for l in why {
            fig.crash_reasons
                .push(format!("server {} log: {l}", ["a", "b"][i]));
        }
    }
    if o.require_all_faults {
        for &k in &o.faults {
            if fig.faults.get(&k).copied().unwrap_or(0) == 0 {
                fig.missing_faults
                    .push(format!("{} never ran (run longer)", k.describe()));
            }
        }
        let pausing = [
            FaultKind::PauseWrite,
            FaultKind::PauseAll,
            FaultKind::Failover,
        ];
        if fig.armed_in_pause == 0 && o.faults.iter().any(|k| pausing.contains(k)) {
            fig.missing_faults
                .push("no lock expired inside a pause with a waiter queued".into());
        }
    }
    report(ledger, res, fig, holds_checked, grants_checked)
}

struct Span {
    token: String,
    fence: u64,
    start: u64,
    end: u64,
}

fn overlaps(ledger: &Ledger, res: &State, fig: &mut Figures) -> u64 {
    let mut by_key: HashMap<&str, Vec<Span>> = HashMap::new();
    for (token, t) in &ledger.tokens {
        if t.cs_start.is_none() {
            continue;
        }
        let Some(first) = t.grants.first() else {
            continue;
        };
        let fence = first.fence;
        let Some(w) = res.holds.get(&(token.clone(), fence)) else {
            continue;
        };
        if w.accepted == 0 || w.rejected > 0 {
            continue;
        }
        let end = t.cs_end.as_ref().map(|e| e.0).unwrap_or(w.last_accepted);
        if t.fence() != Some(fence) {
            // Re-granted under the same token: the section ended as lost.
            continue;
        }
        let lease = t.lease_floor(DRIFT_US, true).unwrap_or(0);
        let end = end.min(lease);
        if end > first.recv {
            by_key.entry(&t.key).or_default().push(Span {
                token: token.clone(),
                fence,
                start: first.recv,
                end,
            });
        }
    }
    let mut checked = 0;
    for (key, mut spans) in by_key {
        spans.sort_by_key(|s| s.start);
        checked += spans.len() as u64;
        let mut latest: Option<&Span> = None;
        for s in &spans {
            if let Some(p) = latest {
                if s.start < p.end {
                    fig.overlaps.push(format!(
                        "{key}: {} (fence {}) held from {} µs while {} (fence {}) held until {} µs",
                        s.token, s.fence, s.start, p.token, p.fence, p.end
                    ));
                }
            }
            if latest.is_none_or(|p| s.end > p.end) {
                latest = Some(s);
            }
        }
    }
    checked
}

fn regressions(ledger: &Ledger, fig: &mut Figures) -> u64 {
    let mut by_key: HashMap<&str, Vec<&crate::events::NewGrant>> = HashMap::new();
    for g in &ledger.new_grants {
        by_key.entry(&g.key).or_default().push(g);
    }
    let mut checked = 0;
    for (key, mut grants) in by_key {
        grants.sort_by_key(|g| g.recv);
        // best[i]: the grant with the largest fence among the first i+1.
        let mut best = Vec::with_capacity(grants.len());
        for (i, g) in grants.iter().enumerate() {
            let prev: Option<usize> = i.checked_sub(1).map(|j| best[j]);
            best.push(match prev {
                Some(p) if grants[p].fence >= g.fence => p,
                _ => i,
            });
        }
        for g in &grants {
            checked += 1;
            // Grants whose reply came before this one was requested.
            let before = grants.partition_point(|h| h.recv < g.sent);
            if before == 0 {
                continue;
            }
            let top = grants[best[before - 1]];
            if top.fence >= g.fence {
                fig.regressions.push(format!(
                    "{key}: {} got fence {} after {} had got {}",
                    g.token, g.fence, top.token, top.fence
                ));
            }
        }
    }
    checked
}

fn report(
    ledger: &Ledger,
    res: &State,
    fig: &Figures,
    holds_checked: u64,
    grants_checked: u64,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<58} {:>10}",
        format!("faults injected in {:.0} s", fig.elapsed.as_secs_f64()),
        "count"
    );
    for k in ALL_FAULTS {
        let _ = writeln!(
            out,
            "  {:<56} {:>10}",
            k.describe(),
            fig.faults.get(&k).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(out, "\n{:<58} {:>10}  must be 0", "figure", "value");
    let mut row = |name: &str, value: String, zero: bool| {
        let _ = writeln!(
            out,
            "{:<58} {:>10}{}",
            name,
            value,
            if zero { "  yes" } else { "" }
        );
    };
    let waits = |k: &str| ledger.waits.get(k).copied().unwrap_or(0);
    let outcome = |k: &str| ledger.cs_outcomes.get(k).copied().unwrap_or(0);
    let rejected: u64 = res.holds.values().map(|h| h.rejected).sum();
    row(
        "client commands (ACQUIRE, RELEASE, WAIT 1)",
        (ledger.acquires + ledger.releases + ledger.acks_sent).to_string(),
        false,
    );
    row(
        "grants to a new holder (client logs)",
        ledger.new_grants.len().to_string(),
        false,
    );
    row("renewals", ledger.renewals.to_string(), false);
    row(
        "refusals and wait timeouts (null)",
        ledger.nulls.to_string(),
        false,
    );
    let errors: u64 = ledger.errors.values().sum();
    row("errors and broken connections", errors.to_string(), false);
    row(
        "acquisitions (INFO lock_acquired, all servers)",
        fig.stat("lock_acquired").to_string(),
        false,
    );
    row(
        "hand-offs to waiters (INFO lock_handoffs)",
        fig.stat("lock_handoffs").to_string(),
        false,
    );
    row(
        "grants taken back, undelivered (lock_grants_undelivered)",
        fig.stat("lock_grants_undelivered").to_string(),
        false,
    );
    row(
        "WAIT calls: granted / null / error / closed",
        format!(
            "{} / {} / {} / {}",
            waits("grant"),
            waits("null"),
            waits("error"),
            waits("closed")
        ),
        false,
    );
    row(
        "critical sections: started / ok / fenced off / lost",
        format!(
            "{} / {} / {} / {}",
            ledger.cs_started,
            outcome("ok"),
            outcome("fenced"),
            outcome("lost")
        ),
        false,
    );
    row(
        "resource writes / refused by fence",
        format!("{} / {rejected}", res.writes),
        false,
    );
    row(
        "holds checked for overlap",
        holds_checked.to_string(),
        false,
    );
    row("overlapping holds", fig.overlaps.len().to_string(), true);
    row(
        "grants checked for fence order",
        grants_checked.to_string(),
        false,
    );
    row("fence regressions", fig.regressions.len().to_string(), true);
    row(
        "live locks checked after AOF restarts",
        fig.restart_checked.to_string(),
        false,
    );
    row(
        "acknowledged locks lost on restart",
        fig.restart_lost.len().to_string(),
        true,
    );
    row(
        "live locks checked after failovers (WAIT 1 / FAILOVER)",
        fig.failover_checked.to_string(),
        false,
    );
    row(
        "acknowledged locks lost on failover",
        fig.failover_lost.len().to_string(),
        true,
    );
    row(
        "unacknowledged grants lost on promotion (allowed)",
        format!("{} of {}", fig.unacked_lost, fig.unacked_checked),
        false,
    );
    row(
        "lock expiries checked after restarts and failovers",
        fig.extension_checked.to_string(),
        false,
    );
    row(
        "leases extended by a restart or failover",
        fig.extended.len().to_string(),
        true,
    );
    row(
        "WAIT calls",
        ledger.waits.values().sum::<u64>().to_string(),
        false,
    );
    row(
        "WAIT calls answered twice",
        fig.twice.len().to_string(),
        true,
    );
    row(
        "WAIT calls never answered (timeout + 15 s)",
        fig.never.len().to_string(),
        true,
    );
    row(
        "race probes (holder 100 ms, WAIT 94-100 ms)",
        ledger.races.to_string(),
        false,
    );
    row(
        "race replies disagreeing with LOCK.CHECK",
        fig.race_disagree.len().to_string(),
        true,
    );
    row(
        "waiters armed / with the lease ending inside a pause",
        format!("{} / {}", fig.armed, fig.armed_in_pause),
        false,
    );
    row(
        "grants written during a write pause",
        fig.grants_in_pause.len().to_string(),
        true,
    );
    row(
        "longest grant after a CLIENT PAUSE ended (ms, at most)",
        fig.pause_grant_delay_ms.to_string(),
        false,
    );
    row(
        "FAILOVERs aborted (timeout)",
        fig.failovers_aborted.to_string(),
        false,
    );
    row("server crashes", fig.crash_count().to_string(), true);
    row(
        "client process failures",
        fig.client_failures.len().to_string(),
        true,
    );
    if !ledger.errors.is_empty() {
        let mut e: Vec<_> = ledger.errors.iter().collect();
        e.sort();
        let list: Vec<String> = e.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "\nerrors by kind: {}", list.join(", "));
    }
    let details: [(&str, &Vec<String>); 13] = [
        ("overlapping holds", &fig.overlaps),
        ("fence regressions", &fig.regressions),
        ("lost on restart", &fig.restart_lost),
        ("lost on failover", &fig.failover_lost),
        ("extended leases", &fig.extended),
        ("answered twice", &fig.twice),
        ("never answered", &fig.never),
        ("race disagreements", &fig.race_disagree),
        ("grants during a pause", &fig.grants_in_pause),
        ("server crashes", &fig.crashes),
        ("why the servers crashed", &fig.crash_reasons),
        ("client failures", &fig.client_failures),
        ("missing faults", &fig.missing_faults),
    ];
    for (what, list) in details {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{what} ({}):", list.len());
        for l in list.iter().take(10) {
            let _ = writeln!(out, "  {l}");
        }
    }
    let mut notes: Vec<&String> = fig.skipped.iter().chain(fig.notes.iter()).collect();
    notes.sort();
    notes.dedup();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nnotes:");
        for n in notes.iter().take(20) {
            let _ = writeln!(out, "  {n}");
        }
    }
    if ledger.bad_lines > 0 {
        let _ = writeln!(out, "unreadable log lines: {}", ledger.bad_lines);
    }
    let _ = writeln!(
        out,
        "\nresult: {}",
        if fig.violations() == 0 {
            "PASS (every must-be-0 figure is 0)".to_owned()
        } else {
            format!("FAIL ({} violations)", fig.violations())
        }
    );
    out
}
