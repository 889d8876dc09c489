//! The `?` overlay.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

const KEYS: [(&str, &str); 19] = [
    ("j / k, ↓ / ↑", "move the selection"),
    ("g / G, PgUp / PgDn", "first / last run, page up / down"),
    ("Enter, Space", "add the run to the chart / remove it"),
    ("c", "clear the compared runs"),
    ("d", "the compared runs' differences / the run's details"),
    ("/", "filter: words, key=value, key!=value"),
    ("", "  e.g. schedule=cosine T=1000 status=running"),
    ("", "  Enter keeps it, Esc restores, Ctrl-U clears"),
    ("Esc", "clear the filter"),
    ("s", "sort: id → name → status → loss → NLL"),
    ("l", "log scale for the loss"),
    ("m", "smooth the loss (EMA)"),
    ("t", "the loss by noise level t/T (latest window) / by step"),
    ("r", "reload from the database now"),
    ("Tab / Shift-Tab", "next / previous panel (small terminals)"),
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
    ("", ""),
    ("", "Data refreshes by itself; nothing here writes to it."),
];

pub fn draw(frame: &mut Frame, area: Rect) {
    let width = 76.min(area.width);
    let height = (KEYS.len() as u16 + 2).min(area.height);
    let [row] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [popup] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(row);
    let key_style = Style::new().add_modifier(Modifier::BOLD);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<19}"), key_style),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Keys ".bold())),
        popup,
    );
}
