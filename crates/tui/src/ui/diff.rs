//! The compared runs side by side (`d`): only the config keys whose values differ between
//! them, then their progress and final numbers — `ddlab diff` in the dashboard.

use crate::app::App;
use crate::snapshot::RunInfo;
use crate::ui::format;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use serde_json::Value;
use std::collections::BTreeSet;

/// A value as a user would write it; `-` for a key the run does not record.
fn shown(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "-".into(),
    }
}

/// The config keys whose values are not all equal, in key order, with each run's value.
pub fn differing_keys(runs: &[&RunInfo]) -> Vec<(String, Vec<String>)> {
    let keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.config.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let values: Vec<String> = runs.iter().map(|r| shown(r.config.get(k))).collect();
            values
                .iter()
                .any(|v| *v != values[0])
                .then(|| (k.clone(), values))
        })
        .collect()
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), format::value)
}

/// Status (with the rung a pruned run stopped at), steps and the summary numbers.
fn outcome_rows(runs: &[&RunInfo]) -> Vec<(String, Vec<String>)> {
    let status = |r: &RunInfo| match &r.pruned {
        Some((rung, _)) => format!("pruned@{rung}"),
        None => format::status_text(r).to_string(),
    };
    vec![
        ("status".into(), runs.iter().map(|r| status(r)).collect()),
        (
            "steps".into(),
            runs.iter()
                .map(|r| format!("{}/{}", r.steps_done, r.steps_total))
                .collect(),
        ),
        (
            "last loss".into(),
            runs.iter().map(|r| opt(r.last_loss)).collect(),
        ),
        (
            "best loss".into(),
            runs.iter().map(|r| opt(r.best_loss)).collect(),
        ),
        ("NLL".into(), runs.iter().map(|r| opt(r.nll_bpd)).collect()),
    ]
}

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let runs: Vec<&RunInfo> = app
        .compared
        .iter()
        .filter_map(|id| app.runs().iter().find(|r| r.id == *id))
        .collect();
    let block = Block::bordered().title(Line::from(" Diff of the compared runs ".bold()));
    if runs.len() < 2 {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let hint = "mark two or more runs with Enter to see what differs (d: back to the run)";
        frame.render_widget(Paragraph::new(hint.dark_gray()), inner);
        return;
    }
    let head = Style::new().add_modifier(Modifier::BOLD);
    let header = Row::new(
        std::iter::once(Cell::from("")).chain(
            runs.iter()
                .map(|r| Cell::from(format!("#{}", r.id)).style(head)),
        ),
    );
    let keys = differing_keys(&runs);
    let outcomes = outcome_rows(&runs);
    let label_width = keys
        .iter()
        .chain(&outcomes)
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0) as u16;
    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|(k, vs)| row(k, vs, Color::Yellow))
        .collect();
    rows.extend(outcomes.into_iter().map(|(k, vs)| row(k, vs, Color::Cyan)));
    let mut widths = vec![Constraint::Length(label_width)];
    widths.extend(runs.iter().map(|_| Constraint::Fill(1)));
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .column_spacing(1);
    frame.render_widget(table, area);
}

fn row(key: String, values: Vec<String>, color: Color) -> Row<'static> {
    Row::new(
        std::iter::once(Cell::from(key).style(Style::new().fg(color)))
            .chain(values.into_iter().map(Cell::from)),
    )
}
