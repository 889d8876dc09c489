//! Drawing: a pure function of [`App`]; nothing here queries, decodes or resamples.

pub mod chart;
pub mod details;
pub mod diff;
pub mod format;
pub mod grid_view;
pub mod help;
pub mod runs_table;
pub mod sample;

use crate::action::Mode;
use crate::app::App;
use crate::layout::Tab;
use ddlab_store::RunStatus;
use ratatui::backend::Backend;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::{Frame, Terminal};

/// Draws one frame on any backend (the real terminal, or `TestBackend` in tests).
pub fn render<B: Backend>(terminal: &mut Terminal<B>, app: &App) -> Result<(), B::Error> {
    terminal.draw(|f| draw(f, app)).map(|_| ())
}

pub fn draw(frame: &mut Frame, app: &App) {
    // The state lays out for the size it was told; a frame of another size (before the resize
    // event arrives) is laid out on the spot.
    let areas = if frame.area() == app.size {
        app.areas
    } else {
        crate::layout::areas(frame.area(), app.lines.len())
    };
    header(frame, app, areas.header);
    if app.grid_open() {
        grid_view::draw(frame, app, areas.body);
        footer(frame, app, areas.footer);
        if app.mode == Mode::Help {
            help::draw(frame, frame.area(), &app.images_note);
        }
        return;
    }
    runs_table::draw(frame, app, areas.table);
    match areas.tabs {
        Some(tabs) => {
            tab_bar(frame, app, tabs);
            match app.tab {
                Tab::Chart => chart::draw(frame, app, areas.chart),
                Tab::Sample => sample::draw(frame, app, areas.sample),
                Tab::Details => details_or_diff(frame, app, areas.details),
            }
        }
        None => {
            chart::draw(frame, app, areas.chart);
            if app.show_diff {
                // Runs side by side need the width: the diff takes the samples' place too.
                diff::draw(frame, app, areas.sample.union(areas.details));
            } else {
                sample::draw(frame, app, areas.sample);
                details::draw(frame, app, areas.details);
            }
        }
    }
    footer(frame, app, areas.footer);
    if app.mode == Mode::Help {
        help::draw(frame, frame.area(), &app.images_note);
    }
}

fn details_or_diff(frame: &mut Frame, app: &App, area: Rect) {
    if app.show_diff {
        diff::draw(frame, app, area);
    } else {
        details::draw(frame, app, area);
    }
}

fn header(frame: &mut Frame, app: &App, area: Rect) {
    // Most important first: a narrow terminal cuts the end off.
    let mut spans = vec![Span::styled(
        " ddlab ",
        Style::new().fg(Color::Black).bg(Color::Cyan).bold(),
    )];
    if let Some(e) = &app.load_error {
        spans.push(Span::styled(
            format!(" ⚠ {e} "),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    match &app.snapshot {
        None => spans.push(" loading…".dark_gray()),
        Some(s) => {
            spans.push(format!(" {} runs", s.runs.len()).into());
            for status in [
                RunStatus::Running,
                RunStatus::Failed,
                RunStatus::Pending,
                RunStatus::Pruned,
            ] {
                let n = s.runs.iter().filter(|r| r.status == status).count();
                if n > 0 {
                    spans.push(" · ".dark_gray());
                    spans.push(Span::styled(
                        format!("{n} {status}"),
                        Style::new().fg(format::status_color(status, false)),
                    ));
                }
            }
        }
    }
    spans.push(
        format!(
            "  {} ⟳ {}",
            app.source,
            format::duration(app.refresh.as_secs_f64())
        )
        .dark_gray(),
    );
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn tab_bar(frame: &mut Frame, app: &App, area: Rect) {
    let mut spans = Vec::new();
    for (i, tab) in Tab::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, tab.title());
        spans.push(if *tab == app.tab {
            Span::styled(label, Style::new().fg(Color::Black).bg(Color::Gray).bold())
        } else {
            Span::raw(label)
        });
    }
    spans.push(" Tab switches".dark_gray());
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn footer(frame: &mut Frame, app: &App, area: Rect) {
    let key = |k: &'static str| Span::styled(k, Style::new().fg(Color::Cyan).bold());
    let line = if app.mode == Mode::Filter {
        let mut spans = vec![
            key("/"),
            Span::raw(app.filter_text.clone()),
            Span::styled("▏", Style::new().fg(Color::Cyan)),
        ];
        match &app.filter_error {
            Some(e) => spans.push(Span::styled(format!("  {e}"), Style::new().fg(Color::Red))),
            None => spans.push(
                format!(
                    "  {}/{} runs · ⏎ keep · Esc restore",
                    app.visible_runs,
                    app.runs().len()
                )
                .dark_gray(),
            ),
        }
        Line::from(spans)
    } else {
        // The filter in force first: it explains why runs are missing.
        let mut spans = Vec::new();
        if !app.filter.is_empty() {
            spans.push(Span::styled(
                format!(
                    "filter {} ({}/{}) ",
                    app.filter_text,
                    app.visible_runs,
                    app.runs().len()
                ),
                Style::new().fg(Color::Yellow),
            ));
            let unknown = app.filter.unknown_keys(app.runs());
            if !unknown.is_empty() && app.snapshot.is_some() {
                spans.push(Span::styled(
                    format!("no run has {} ", unknown.join(", ")),
                    Style::new().fg(Color::Red),
                ));
            }
        }
        // Then the keys, as many as fit, dropping the least needed first (`?` lists them all).
        let used: usize = spans.iter().map(Span::width).sum();
        let hints: &[Hint] = if app.grid_open() { &GRID_HINTS } else { &HINTS };
        for (k, what) in fitting_hints(hints, area.width as usize - used.min(area.width as usize)) {
            spans.push(key(k));
            spans.push(Span::raw(what));
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// A key hint of the footer: key, what it does, priority (lower goes first when short of room).
type Hint = (&'static str, &'static str, u8);

/// The dashboard's hints in display order.
const HINTS: [Hint; 9] = [
    ("j/k", " move ", 7),
    ("⏎", " compare ", 6),
    ("/", " filter ", 5),
    ("i", " grids ", 4),
    ("s", " sort ", 2),
    ("l", " log ", 1),
    ("m", " smooth ", 0),
    ("?", " help ", 8),
    ("q", " quit ", 9),
];

/// The grid view's.
const GRID_HINTS: [Hint; 7] = [
    ("←↓↑→", " move ", 7),
    ("y/x", " rows/columns ", 6),
    ("+/-", " tiles ", 5),
    ("⏎", " compare ", 2),
    ("i", " back ", 4),
    ("?", " help ", 8),
    ("q", " quit ", 9),
];

/// The hints that fit in `width` columns: the most needed ones, in display order.
fn fitting_hints(hints: &[Hint], width: usize) -> Vec<(&'static str, &'static str)> {
    let len = |(k, what, _): &Hint| k.chars().count() + what.chars().count();
    let mut by_priority: Vec<usize> = (0..hints.len()).collect();
    by_priority.sort_by_key(|&i| std::cmp::Reverse(hints[i].2));
    let mut keep = vec![false; hints.len()];
    let mut used = 0;
    for i in by_priority {
        if used + len(&hints[i]) > width {
            break;
        }
        used += len(&hints[i]);
        keep[i] = true;
    }
    hints
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|((k, what, _), _)| (*k, *what))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_hints_drop_the_least_needed_first() {
        let keys = |w| -> Vec<&str> { fitting_hints(&HINTS, w).iter().map(|h| h.0).collect() };
        assert_eq!(keys(200), ["j/k", "⏎", "/", "i", "s", "l", "m", "?", "q"]);
        // "j/k move ⏎ compare / filter ? help q quit " is 42 columns, " i grids " 8 more.
        assert_eq!(keys(41), ["j/k", "⏎", "?", "q"]);
        assert_eq!(keys(42), ["j/k", "⏎", "/", "?", "q"]);
        assert_eq!(keys(49), ["j/k", "⏎", "/", "?", "q"]);
        assert_eq!(keys(50), ["j/k", "⏎", "/", "i", "?", "q"]);
        assert_eq!(keys(14), ["?", "q"]);
        assert_eq!(keys(13), ["q"]);
        assert_eq!(keys(0), Vec::<&str>::new());
    }
}
