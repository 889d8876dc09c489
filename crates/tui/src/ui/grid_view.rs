//! The grid view: the newest sample grid of every run in the selected run's sweep, as a matrix
//! by two config keys ([`crate::matrix`]); the pictures were encoded by the state for the
//! cells [`cells`] lays out, so drawing only places them.

use crate::app::App;
use crate::matrix::Matrix;
use crate::ui::format;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

/// Columns between two cells.
const GAP: u16 = 1;
/// The row labels' column is at most this wide.
const MAX_LABEL: u16 = 16;

/// Where one cell of the matrix goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellArea {
    /// Row and column in the matrix (not in the window).
    pub at: (usize, usize),
    /// Its caption line.
    pub caption: Rect,
    /// Below the caption: the picture's.
    pub picture: Rect,
}

/// The matrix's inner area, inside the view's border.
fn inner(area: Rect) -> Rect {
    Block::bordered().inner(area)
}

/// The row labels' width for `m`.
fn label_width(m: &Matrix, inner_width: u16) -> u16 {
    let widest = m.row_window.clone().map(|i| m.rows[i].chars().count());
    let corner = corner(m).chars().count();
    let w = widest.chain([corner]).max().unwrap_or(0) as u16 + 1;
    w.min(MAX_LABEL).min(inner_width / 4)
}

fn corner(m: &Matrix) -> String {
    match (&m.row_key, &m.col_key) {
        (Some(r), Some(c)) => format!("{r}↓ {c}→"),
        (Some(r), None) => format!("{r}↓"),
        _ => String::new(),
    }
}

/// The cells of the rows and columns shown, laid out in `area` (the whole view).
pub fn cells(area: Rect, m: &Matrix) -> Vec<CellArea> {
    let inner = inner(area);
    let (n_rows, n_cols) = (m.row_window.len() as u16, m.col_window.len() as u16);
    if n_rows == 0 || n_cols == 0 || inner.height < 3 {
        return Vec::new();
    }
    let label = label_width(m, inner.width);
    // One line for the column values on top.
    let (x0, y0) = (inner.x + label, inner.y + 1);
    let width = inner.width.saturating_sub(label);
    let height = inner.height.saturating_sub(1);
    let cell_w = (width + GAP) / n_cols;
    let cell_h = height / n_rows;
    if cell_w <= GAP || cell_h < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (r, i) in m.row_window.clone().enumerate() {
        for (c, j) in m.col_window.clone().enumerate() {
            let x = x0 + c as u16 * cell_w;
            let y = y0 + r as u16 * cell_h;
            let w = cell_w - GAP;
            out.push(CellArea {
                at: (i, j),
                caption: Rect::new(x, y, w, 1),
                picture: Rect::new(x, y + 1, w, cell_h - 1),
            });
        }
    }
    out
}

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let Some(m) = &app.matrix else {
        let block = Block::bordered().title(" Grids ".bold());
        let msg = if app.snapshot.is_none() {
            "loading…"
        } else {
            "no run selected"
        };
        frame.render_widget(
            Paragraph::new(msg.dark_gray()).block(block).centered(),
            area,
        );
        return;
    };
    frame.render_widget(Block::bordered().title(title(app, m)), area);
    let cells = cells(area, m);
    if cells.is_empty() {
        let msg = "too small for the grid view: enlarge the terminal or choose fewer values";
        frame.render_widget(Paragraph::new(msg.dark_gray()), inner(area));
        return;
    }
    labels(frame, m, area, &cells);
    for cell in &cells {
        draw_cell(frame, app, m, cell);
    }
}

fn title<'a>(app: &App, m: &'a Matrix) -> Line<'a> {
    let sweep = app
        .selected_run()
        .and_then(|r| r.sweep.clone())
        .unwrap_or_else(|| "runs outside sweeps".into());
    let mut spans = vec![" Grids ".bold(), format!("{sweep} ").into()];
    let mut key = |k: &str, what: String| {
        spans.push(Span::styled(
            k.to_string(),
            Style::new().fg(Color::Cyan).bold(),
        ));
        spans.push(format!(" {what} ").dark_gray());
    };
    if !m.keys.is_empty() {
        key("y", m.row_key.clone().unwrap_or_else(|| "–".into()));
        key("x", m.col_key.clone().unwrap_or_else(|| "–".into()));
    }
    let side = app.grid_side_shown;
    let auto = if app.grid_side.is_none() { " auto" } else { "" };
    key("+/-", format!("{side}×{side} tiles{auto}"));
    let fixed: Vec<String> = m.fixed.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !fixed.is_empty() {
        spans.push(format!("· {} ", fixed.join(" ")).into());
    }
    let (hidden_r, hidden_c) = (
        m.rows.len() - m.row_window.len(),
        m.cols.len() - m.col_window.len(),
    );
    if hidden_r + hidden_c > 0 {
        spans.push(
            format!(
                "· showing {} of {} × {} of {} ",
                m.row_window.len(),
                m.rows.len(),
                m.col_window.len(),
                m.cols.len()
            )
            .yellow(),
        );
    }
    Line::from(spans)
}

/// Column values above the cells, row values beside them, the keys in the corner.
fn labels(frame: &mut Frame, m: &Matrix, area: Rect, cells: &[CellArea]) {
    let inner = inner(area);
    let first_x = cells.iter().map(|c| c.caption.x).min().unwrap_or(inner.x);
    let corner_area = Rect::new(inner.x, inner.y, first_x - inner.x, 1);
    frame.render_widget(Paragraph::new(corner(m).dark_gray()), corner_area);
    let label = Style::new().add_modifier(Modifier::BOLD);
    for c in cells.iter().filter(|c| c.at.0 == m.row_window.start) {
        let text = &m.cols[c.at.1];
        let at = Rect::new(c.caption.x, inner.y, c.caption.width, 1);
        frame.render_widget(Paragraph::new(Span::styled(text.clone(), label)), at);
    }
    for c in cells.iter().filter(|c| c.at.1 == m.col_window.start) {
        let at = Rect::new(inner.x, c.caption.y, first_x - inner.x, 1);
        let text = &m.rows[c.at.0];
        frame.render_widget(Paragraph::new(Span::styled(text.clone(), label)), at);
    }
}

fn draw_cell(frame: &mut Frame, app: &App, m: &Matrix, cell: &CellArea) {
    let Some(id) = m.cell(cell.at.0, cell.at.1) else {
        frame.render_widget(Paragraph::new("–".dark_gray()), cell.caption);
        return;
    };
    let run = app.runs().iter().find(|r| r.id == id);
    let selected = m.selected == Some(cell.at);
    let mut id_style = match app.compare_color(id) {
        Some(c) => Style::new().fg(c).bold(),
        None => Style::new().bold(),
    };
    if selected {
        id_style = id_style.add_modifier(Modifier::REVERSED);
    }
    let mut caption = vec![Span::styled(format!("#{id}"), id_style)];
    if let Some(run) = run {
        caption.push(Span::styled(
            format!(" {}", format::status_text(run)),
            format::status_style(run),
        ));
    }
    let grid = app.snapshot.as_ref().and_then(|s| s.grids.get(&id));
    if let Some(g) = grid {
        caption.push(format!(" step {}", g.step).dark_gray());
    }
    frame.render_widget(Paragraph::new(Line::from(caption)), cell.caption);
    match (grid, app.grid_pictures.get(&id)) {
        (None, _) => frame.render_widget(Paragraph::new("no grid yet".dark_gray()), cell.picture),
        (Some(_), Some(Ok(picture))) => {
            // Centred across the cell, at the top.
            let (w, h) = picture.size();
            let area = cell.picture;
            let at = Rect {
                x: area.x + area.width.saturating_sub(w) / 2,
                width: w.min(area.width),
                height: h.min(area.height),
                ..area
            };
            frame.render_widget(picture, at)
        }
        (Some(_), Some(Err(e))) => {
            frame.render_widget(Paragraph::new(e.as_str().red()), cell.picture)
        }
        (Some(_), None) => frame.render_widget(Paragraph::new("…".dark_gray()), cell.picture),
    }
}
