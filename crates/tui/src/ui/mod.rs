//! Drawing: a pure function of [`App`]; nothing here queries, decodes or resamples.

pub mod chart;
pub mod details;
pub mod format;
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
    runs_table::draw(frame, app, areas.table);
    match areas.tabs {
        Some(tabs) => {
            tab_bar(frame, app, tabs);
            match app.tab {
                Tab::Chart => chart::draw(frame, app, areas.chart),
                Tab::Sample => sample::draw(frame, app, areas.sample),
                Tab::Details => details::draw(frame, app, areas.details),
            }
        }
        None => {
            chart::draw(frame, app, areas.chart);
            sample::draw(frame, app, areas.sample);
            details::draw(frame, app, areas.details);
        }
    }
    footer(frame, app, areas.footer);
    if app.mode == Mode::Help {
        help::draw(frame, frame.area());
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
            for status in [RunStatus::Running, RunStatus::Failed, RunStatus::Pending] {
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
        let mut spans = Vec::new();
        let hints: [(&'static str, &'static str); 8] = [
            ("j/k", " move "),
            ("⏎", " compare "),
            ("/", " filter "),
            ("s", " sort "),
            ("l", " log "),
            ("m", " smooth "),
            ("?", " help "),
            ("q", " quit "),
        ];
        for (k, what) in hints {
            spans.push(key(k));
            spans.push(Span::raw(what));
        }
        if !app.filter.is_empty() {
            spans.push(Span::styled(
                format!(
                    " filter: {} ({}/{})",
                    app.filter_text,
                    app.visible_runs,
                    app.runs().len()
                ),
                Style::new().fg(Color::Yellow),
            ));
            let unknown = app.filter.unknown_keys(app.runs());
            if !unknown.is_empty() && app.snapshot.is_some() {
                spans.push(Span::styled(
                    format!(" no run has {}", unknown.join(", ")),
                    Style::new().fg(Color::Red),
                ));
            }
        }
        Line::from(spans)
    };
    frame.render_widget(Paragraph::new(line), area);
}
