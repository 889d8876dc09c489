//! The `?` overlay.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

const KEYS: [(&str, &str); 19] = [
    ("j / k, ↓ / ↑", "move the selection"),
    ("g / G, PgUp / PgDn", "first / last run, page up / down"),
    (
        "Enter, Space",
        "add the run to the chart / remove it; c clears them",
    ),
    ("d", "the compared runs' differences / the run's details"),
    ("/", "filter: words, key=value, key!=value"),
    ("", "  e.g. schedule=cosine T=1000 status=running"),
    ("", "  Enter keeps it, Esc restores, Ctrl-U clears"),
    ("Esc", "clear the filter"),
    ("s", "sort: id → name → status → loss → NLL"),
    ("l / m", "log scale / smooth the loss (EMA)"),
    ("t", "the loss by noise level t/T (latest window) / by step"),
    ("n", "the NLL bound over training / the loss"),
    ("i", "grid view: every run's newest grid, rows × columns"),
    ("", "  arrows or h/j/k/l move, y / x the keys of rows /"),
    ("", "  columns, + / - more or fewer tiles, i or Esc back"),
    ("r", "reload from the database now"),
    ("Tab / Shift-Tab", "next / previous panel (small terminals)"),
    ("?", "this help"),
    ("q, Ctrl-C", "quit"),
];

/// The keys, and how images are drawn (`images_note`).
pub fn draw(frame: &mut Frame, area: Rect, images_note: &str) {
    let width = 76.min(area.width);
    let height = (KEYS.len() as u16 + 3).min(area.height);
    let [row] = Layout::vertical([Constraint::Length(height)])
        .flex(Flex::Center)
        .areas(area);
    let [popup] = Layout::horizontal([Constraint::Length(width)])
        .flex(Flex::Center)
        .areas(row);
    let key_style = Style::new().add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<19}"), key_style),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(vec![
        Span::styled(format!(" {:<19}", "images"), key_style),
        Span::raw(images_note.to_string()),
    ]));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" Keys ".bold())
                .title(" the data refreshes by itself; nothing here writes to it ".dark_gray()),
        ),
        popup,
    );
}
