//! The selected run: where and how it runs, its error, its evals and its config, with the keys
//! its sweep varies or sets first (the rest are defaults).

use crate::app::App;
use crate::snapshot::{RunInfo, SweepInfo};
use crate::ui::format;
use ddlab_store::EvalRow;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use serde_json::Value;

/// From this inner width on, the config goes beside the run's state instead of below it.
const SIDE_BY_SIDE_MIN: u16 = 70;

/// Why a config key is where it is in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A `[grid]` key of the run's sweep (or one whose value differs between its runs).
    Varied,
    /// Set in the sweep's `[base]`.
    Set,
    /// Neither: the default, as far as the store can tell.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// The run's config keys, varied ones first, then those set by the sweep, then the rest; in
/// spec order within the first two groups and key order within the last.
pub fn config_entries(
    run: &RunInfo,
    sweep: Option<&SweepInfo>,
    siblings: &[RunInfo],
) -> Vec<ConfigEntry> {
    let varies = |key: &str| -> bool {
        let Some(sweep_id) = run.sweep_id else {
            return false;
        };
        let mine = run.config.get(key);
        siblings
            .iter()
            .any(|o| o.sweep_id == Some(sweep_id) && o.config.get(key) != mine)
    };
    let rank = |key: &str| -> (Origin, usize) {
        if let Some(s) = sweep {
            if let Some(i) = s.grid_keys.iter().position(|k| k == key) {
                return (Origin::Varied, i);
            }
            if varies(key) {
                return (Origin::Varied, usize::MAX);
            }
            if let Some(i) = s.base_keys.iter().position(|k| k == key) {
                return (Origin::Set, i);
            }
        }
        (Origin::Other, 0)
    };
    let mut entries: Vec<(usize, usize, ConfigEntry)> = run
        .config
        .iter()
        .enumerate()
        .map(|(n, (k, v))| {
            let (origin, i) = rank(k);
            (
                i,
                n,
                ConfigEntry {
                    key: k.clone(),
                    value: show_value(v),
                    origin,
                },
            )
        })
        .collect();
    entries.sort_by(|a, b| {
        a.2.origin
            .cmp(&b.2.origin)
            .then(a.0.cmp(&b.0))
            .then(a.1.cmp(&b.1))
    });
    entries.into_iter().map(|e| e.2).collect()
}

fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// Evals as `name value`, folding `X_stderr` into `X ± stderr`.
pub fn eval_lines(evals: &[EvalRow]) -> Vec<(String, String)> {
    let value = |name: &str| evals.iter().find(|e| e.name == name).and_then(|e| e.value);
    evals
        .iter()
        .filter(|e| {
            !e.name
                .strip_suffix("_stderr")
                .is_some_and(|base| evals.iter().any(|o| o.name == base))
        })
        .map(|e| {
            let shown = match (e.value, value(&format!("{}_stderr", e.name))) {
                (Some(v), Some(s)) => format!("{v:.4} ± {s:.4}"),
                (Some(v), None) => format!("{v:.4}"),
                (None, _) => "–".into(),
            };
            (e.name.clone(), shown)
        })
        .collect()
}

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let block = Block::bordered().title(Line::from(" Run ".bold()));
    let Some(run) = app.selected_run() else {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        frame.render_widget(Paragraph::new("no run selected".dark_gray()), inner);
        return;
    };
    let mut lines = header_lines(run);
    lines.push(Line::default());
    lines.extend(eval_section(app, run));
    let config = config_section(app, run);

    let inner = block.inner(area);
    frame.render_widget(block, area);
    // A wide, low panel (the compact layout's tab) puts the config beside the rest, so that
    // neither is cut off; a narrow, tall one lists it below.
    if inner.width >= SIDE_BY_SIDE_MIN {
        let [left, right] = Layout::horizontal([Constraint::Percentage(55), Constraint::Fill(1)])
            .spacing(1)
            .areas(inner);
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), left);
        frame.render_widget(Paragraph::new(config).wrap(Wrap { trim: false }), right);
    } else {
        lines.push(Line::default());
        lines.extend(config);
        frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
    }
}

/// Who the run is, where and when it ran, and its error.
fn header_lines(run: &RunInfo) -> Vec<Line<'_>> {
    let dim = Style::new().fg(Color::DarkGray);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line> = vec![Line::styled(format!("#{} {}", run.id, run.name), bold)];
    let mut status = vec![
        Span::styled(format::status_text(run), format::status_style(run)),
        Span::raw(format!(" · {}/{} steps", run.steps_done, run.steps_total)),
    ];
    if run.attempts > 1 {
        status.push(Span::raw(format!(" · attempt {}", run.attempts)));
    }
    lines.push(Line::from(status));
    lines.push(Line::from(vec![Span::raw(format!(
        "{} · {} · {} · seed {}",
        run.sweep.as_deref().unwrap_or("no sweep"),
        run.dataset,
        run.model,
        run.seed
    ))]));
    if let Some(device) = &run.device {
        lines.push(Line::raw(where_it_ran(run, device)));
    }
    let mut times = Vec::new();
    if let Some(t) = &run.started_at {
        times.push(format!("started {}", format::timestamp(t)));
    }
    if let Some(t) = &run.finished_at {
        times.push(format!("finished {}", format::timestamp(t)));
    }
    if !times.is_empty() {
        lines.push(Line::styled(times.join(" · "), dim));
    }
    if let Some((rung, why)) = &run.pruned {
        lines.push(Line::from(vec![
            Span::styled(
                format!("pruned at step {rung}: "),
                Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            ),
            Span::raw(why.as_str()),
        ]));
    }
    if let Some(e) = &run.error {
        lines.push(Line::from(vec![
            Span::styled(
                "error: ",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Span::styled(e.as_str(), Style::new().fg(Color::Red)),
        ]));
    }
    lines
}

/// Device, host, worker and Slurm task.
fn where_it_ran(run: &RunInfo, device: &str) -> String {
    let mut s = device.to_string();
    if let Some(h) = &run.host {
        s.push_str(&format!(" on {h}"));
    }
    if let Some(w) = &run.worker {
        s.push_str(&format!(" ({w})"));
    }
    if let Some(job) = run.slurm() {
        s.push_str(&format!(" · Slurm {job}"));
    }
    s
}

/// The run's evals, or why there are none to show.
fn eval_section(app: &App, run: &RunInfo) -> Vec<Line<'static>> {
    let dim = Style::new().fg(Color::DarkGray);
    let detail = app
        .snapshot
        .as_ref()
        .and_then(|s| s.detail.as_ref())
        .filter(|d| d.run_id == run.id);
    match detail.map(|d| eval_lines(&d.evals)) {
        None => vec![Line::styled("evals: loading…", dim)],
        Some(evals) if evals.is_empty() => vec![Line::styled("evals: none yet", dim)],
        Some(evals) => {
            let bold = Style::new().add_modifier(Modifier::BOLD);
            let mut lines = vec![Line::styled("Evals", bold)];
            let w = evals.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in evals {
                lines.push(Line::raw(format!("  {k:<w$}  {v}")));
            }
            lines
        }
    }
}

/// The run's configuration, the keys its sweep varies and sets marked.
fn config_section(app: &App, run: &RunInfo) -> Vec<Line<'static>> {
    let dim = Style::new().fg(Color::DarkGray);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let snap = app.snapshot.as_ref();
    let sweep = snap.and_then(|s| s.sweeps.iter().find(|w| Some(w.id) == run.sweep_id));
    let mut config = vec![Line::from(vec![
        Span::styled("Config ", bold),
        Span::styled("★ varies · • set in [base]", dim),
    ])];
    let entries = config_entries(run, sweep, app.runs());
    let w = entries
        .iter()
        .map(|e| e.key.len())
        .max()
        .unwrap_or(0)
        .min(16);
    for e in entries {
        let (mark, style) = match e.origin {
            Origin::Varied => ("★ ", Style::new().fg(Color::Yellow)),
            Origin::Set => ("• ", Style::new()),
            Origin::Other => ("  ", dim),
        };
        config.push(Line::from(vec![
            Span::styled(mark, style),
            Span::styled(format!("{:<w$} ", e.key), style),
            Span::styled(e.value, style),
        ]));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, sweep_id: Option<i64>, config: Value) -> RunInfo {
        let Value::Object(config) = config else {
            panic!("a config is a JSON object");
        };
        RunInfo {
            sweep_id,
            config,
            ..RunInfo::blank(id)
        }
    }

    #[test]
    fn varied_then_set_then_defaults() {
        let sweep = SweepInfo {
            id: 1,
            name: "s".into(),
            description: String::new(),
            grid_keys: vec!["schedule".into(), "T".into()],
            base_keys: vec!["steps".into(), "lr".into()],
        };
        let cfg = |sched: &str, seed: i64| {
            serde_json::json!({"T": 100, "batch_size": 64, "lr": 0.001, "schedule": sched,
                               "seed": seed, "steps": 1500, "data_dir": null})
        };
        let a = run(1, Some(1), cfg("linear", 0));
        // seed is not in the spec but differs between the runs: varied too.
        let b = run(2, Some(1), cfg("cosine", 1));
        let entries = config_entries(&a, Some(&sweep), &[a.clone(), b]);
        let got: Vec<(&str, &str, Origin)> = entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str(), e.origin))
            .collect();
        assert_eq!(
            got,
            vec![
                ("schedule", "linear", Origin::Varied),
                ("T", "100", Origin::Varied),
                ("seed", "0", Origin::Varied),
                ("steps", "1500", Origin::Set),
                ("lr", "0.001", Origin::Set),
                ("batch_size", "64", Origin::Other),
                ("data_dir", "–", Origin::Other),
            ]
        );
        // Outside a sweep nothing is known: key order.
        let lone = run(3, None, cfg("linear", 0));
        assert!(
            config_entries(&lone, None, &[])
                .iter()
                .all(|e| e.origin == Origin::Other)
        );
    }

    #[test]
    fn evals_fold_stderr() {
        let e = |name: &str, v: f64| EvalRow {
            run_id: 1,
            name: name.into(),
            step: 10,
            method: String::new(),
            value: Some(v),
            details_json: "{}".into(),
            created_at: String::new(),
        };
        let lines = eval_lines(&[
            e("fid", 12.5),
            e("nll_bpd", 3.25),
            e("nll_bpd_stderr", 0.02),
        ]);
        assert_eq!(
            lines,
            vec![
                ("fid".to_string(), "12.5000".to_string()),
                ("nll_bpd".to_string(), "3.2500 ± 0.0200".to_string()),
            ]
        );
    }
}
