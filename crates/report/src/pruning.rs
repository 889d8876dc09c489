//! The report's early-stopping section: the sweep's `[prune]` rules, the compute they saved,
//! and every decision taken at every rung (who went on, who stopped, and why).

use ddlab_config::PruneRules;
use ddlab_store::{RunStatus, RungRow};
use std::fmt::Write;

use crate::data::SweepData;
use crate::page::{html_escape, md_escape};

/// What the section says, computed once for both pages.
struct Pruning<'a> {
    rules: PruneRules,
    rungs: &'a [RungRow],
    pruned: usize,
    saved: i64,
    planned: i64,
}

fn summarise(data: &SweepData) -> Option<Pruning<'_>> {
    let rules: PruneRules = serde_json::from_str(data.sweep.prune_json.as_deref()?).ok()?;
    let pruned = data
        .runs
        .iter()
        .filter(|r| r.row.status() == RunStatus::Pruned)
        .count();
    let saved = data
        .runs
        .iter()
        .filter(|r| r.row.status() == RunStatus::Pruned)
        .map(|r| (r.row.steps_total - r.row.steps_done).max(0))
        .sum();
    let planned = data.runs.iter().map(|r| r.row.steps_total).sum();
    Some(Pruning {
        rules,
        rungs: &data.rungs,
        pruned,
        saved,
        planned,
    })
}

impl Pruning<'_> {
    fn rules_line(&self) -> String {
        let r = &self.rules;
        let within = if r.within.is_empty() {
            "the whole sweep".to_string()
        } else {
            format!("runs with equal {}", r.within.join(", "))
        };
        let metric = match r.metric {
            ddlab_config::PruneMetric::Loss => {
                format!("loss (mean of the last {} steps)", r.window)
            }
            ddlab_config::PruneMetric::NllBpd => "NLL (bits/dim) at the rung".to_string(),
        };
        format!(
            "Asynchronous successive halving on {metric} at steps {}: a run goes on when its \
             trial (seeds averaged) is among the best {:.0}% of those already at the rung, \
             compared within {within}. Ranks and thresholds are of trial means; the value is the \
             run's own.",
            r.rungs
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            100.0 * r.keep
        )
    }

    fn saved_line(&self) -> String {
        format!(
            "{} run(s) pruned; {} of {} planned training steps not taken ({:.0}% of the compute saved).",
            self.pruned,
            self.saved,
            self.planned,
            100.0 * self.saved as f64 / self.planned.max(1) as f64
        )
    }
}

fn run_name(data: &SweepData, run_id: i64) -> String {
    data.runs
        .iter()
        .find(|r| r.row.id == run_id)
        .map_or_else(|| format!("run {run_id}"), |r| r.row.name.clone())
}

fn value(v: Option<f64>) -> String {
    v.map_or("not finite".into(), |v| format!("{v:.5}"))
}

/// The rung table's cells, in the order runs reached their rungs.
fn rows(data: &SweepData, p: &Pruning) -> Vec<[String; 7]> {
    p.rungs
        .iter()
        .map(|g| {
            [
                g.rung.to_string(),
                g.run_id.to_string(),
                run_name(data, g.run_id),
                value(g.value),
                format!("{} of {}", g.rank, g.trials),
                value(g.threshold),
                g.decision.clone(),
            ]
        })
        .collect()
}

/// One line per pruning decision: which run, where, and why.
fn why_pruned(data: &SweepData, p: &Pruning) -> Vec<String> {
    p.rungs
        .iter()
        .filter(|g| g.pruned())
        .map(|g| {
            let name = run_name(data, g.run_id);
            format!(
                "Run {} ({name}) pruned at step {}: {}",
                g.run_id, g.rung, g.reason
            )
        })
        .collect()
}

const HEAD: [&str; 7] = [
    "rung",
    "run",
    "name",
    "value",
    "rank",
    "threshold",
    "decision",
];

pub fn markdown(data: &SweepData) -> String {
    let Some(p) = summarise(data) else {
        return String::new();
    };
    let mut s = String::new();
    let _ = writeln!(s, "\n## Early stopping\n");
    let _ = writeln!(
        s,
        "{}\n\n**{}**\n",
        md_escape(&p.rules_line()),
        p.saved_line()
    );
    let _ = writeln!(s, "| {} |", HEAD.join(" | "));
    let _ = writeln!(s, "|{}|", HEAD.map(|_| "---").join("|"));
    for row in rows(data, &p) {
        let cells: Vec<String> = row.iter().map(|c| md_escape(c)).collect();
        let _ = writeln!(s, "| {} |", cells.join(" | "));
    }
    for why in why_pruned(data, &p) {
        let _ = writeln!(s, "- {}", md_escape(&why));
    }
    s
}

pub fn html(data: &SweepData) -> String {
    let Some(p) = summarise(data) else {
        return String::new();
    };
    let e = html_escape;
    let mut s = String::new();
    let _ = writeln!(s, "<h2 id=\"pruning\">Early stopping</h2>");
    let _ = writeln!(
        s,
        "<p>{}</p><p><strong>{}</strong></p>",
        e(&p.rules_line()),
        e(&p.saved_line())
    );
    let _ = write!(s, "<table><thead><tr>");
    for h in HEAD {
        let _ = write!(s, "<th>{h}</th>");
    }
    let _ = writeln!(s, "</tr></thead><tbody>");
    for row in rows(data, &p) {
        let pruned = row[6] == "pruned";
        let _ = write!(s, "<tr{}>", if pruned { " class=\"pruned\"" } else { "" });
        for c in &row {
            let _ = write!(s, "<td>{}</td>", e(c));
        }
        let _ = writeln!(s, "</tr>");
    }
    let _ = writeln!(s, "</tbody></table><ul>");
    for why in why_pruned(data, &p) {
        let _ = writeln!(s, "<li class=\"pruned\">{}</li>", e(&why));
    }
    let _ = writeln!(s, "</ul>");
    s
}
