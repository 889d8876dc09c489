//! The runs table, grouped by sweep. Drawn by hand rather than with ratatui's `Table` because
//! a sweep's heading spans the whole width, which table cells cannot.

use crate::app::{App, GroupHeading, TableLine};
use crate::snapshot::RunInfo;
use crate::ui::format;
use ddlab_store::RunStatus;
use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

/// Background of the selected run's row.
pub const SELECTED_BG: Color = Color::DarkGray;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Col {
    Mark,
    Id,
    Name,
    Status,
    Progress,
    Speed,
    Eta,
    Loss,
    Best,
    Nll,
    Schedule,
    T,
    Device,
    Host,
    /// Slurm's `JOB_TASK`; only when some run ran under Slurm.
    Slurm,
}

impl Col {
    fn title(self) -> &'static str {
        match self {
            Col::Mark => "",
            Col::Id => "id",
            Col::Name => "name",
            Col::Status => "status",
            Col::Progress => "progress",
            Col::Speed => "it/s",
            Col::Eta => "ETA",
            Col::Loss => "loss",
            Col::Best => "best",
            Col::Nll => "NLL b/d",
            Col::Schedule => "schedule",
            Col::T => "T",
            Col::Device => "device",
            Col::Host => "host",
            Col::Slurm => "slurm",
        }
    }

    fn width(self, wide: bool) -> Constraint {
        Constraint::Length(match self {
            Col::Mark => 1,
            Col::Id => 4,
            Col::Name => return Constraint::Fill(1),
            Col::Status => 11,
            Col::Progress if wide => 18,
            Col::Progress => 12,
            Col::Speed => 5,
            Col::Eta => 6,
            Col::Loss | Col::Best => 7,
            Col::Nll => 11,
            Col::Schedule => 9,
            Col::T => 5,
            Col::Device => 7,
            Col::Host => 10,
            Col::Slurm => 10,
        })
    }

    fn right_aligned(self) -> bool {
        matches!(
            self,
            Col::Id | Col::Speed | Col::Eta | Col::Loss | Col::Best | Col::Nll | Col::T
        )
    }
}

/// Columns for a table of this inner width: everything when there is room, the essentials in
/// an 80-column terminal. `slurm`: some run ran under Slurm.
fn columns(width: u16, slurm: bool) -> (Vec<Col>, bool) {
    use Col::*;
    if width >= 150 {
        let mut all = vec![
            Mark, Id, Name, Status, Progress, Speed, Eta, Loss, Best, Nll, Schedule, T, Device,
            Host,
        ];
        if slurm {
            all.push(Slurm);
        }
        (all, true)
    } else if width >= 110 {
        (
            vec![
                Mark, Id, Name, Status, Progress, Speed, Eta, Loss, Nll, Schedule, T, Device,
            ],
            false,
        )
    } else {
        (
            vec![Mark, Id, Name, Status, Progress, Speed, Eta, Loss],
            false,
        )
    }
}

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let block = table_block(app, area);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 {
        return;
    }
    let runs = app.runs();
    if app.lines.is_empty() {
        let msg = empty_message(app, runs.len());
        frame.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), inner);
        return;
    }

    let slurm = runs.iter().any(|r| r.slurm_job.is_some());
    let (cols, wide) = columns(inner.width, slurm);
    let rects = Layout::horizontal(cols.iter().map(|c| c.width(wide)))
        .spacing(1)
        .split(Rect::new(inner.x, 0, inner.width, 1));
    let buf = frame.buffer_mut();

    let header_style = Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED);
    for (c, r) in cols.iter().zip(rects.iter()) {
        put(
            buf,
            *r,
            inner.y,
            Line::styled(c.title(), header_style),
            c.right_aligned(),
        );
    }

    let body_rows = inner.height.saturating_sub(1) as usize;
    let shown = app.lines.iter().skip(app.table_offset).take(body_rows);
    for (row, line) in shown.enumerate() {
        let y = inner.y + 1 + row as u16;
        match line {
            TableLine::Group(g) => {
                buf.set_line(inner.x, y, &group_line(g), inner.width);
            }
            TableLine::Run(i) => {
                let row = Rect::new(inner.x, y, inner.width, 1);
                draw_run(buf, app, &runs[*i], (&cols, &rects), row);
            }
        }
    }
}

/// The bordered block: how many runs are shown and how, and how many lie above and below.
fn table_block(app: &App, area: Rect) -> Block<'static> {
    let title = Line::from(vec![
        " Runs ".bold(),
        Span::raw(format!("{} shown", app.visible_runs)),
        Span::raw(format!(" · sort: {} ", app.sort.label())),
    ]);
    let block = Block::bordered().title(title);
    let rows = area.height.saturating_sub(3) as usize;
    let below = app.lines.len().saturating_sub(app.table_offset + rows);
    if app.table_offset == 0 && below == 0 {
        return block;
    }
    let more = format!(
        " {}{} more ",
        if app.table_offset > 0 { "↑ " } else { "" },
        if below > 0 {
            format!("↓ {below}")
        } else {
            String::new()
        }
    );
    block.title_bottom(Line::from(more).right_aligned())
}

/// What the table says when it has no line to show.
fn empty_message(app: &App, runs: usize) -> Line<'static> {
    match &app.snapshot {
        None => Line::from("loading…".dark_gray()),
        Some(_) if runs == 0 => Line::from(vec![
            "No runs in the store yet. ".into(),
            "Start some with `ddlab sweep` or `ddlab train`; they appear here live.".dark_gray(),
        ]),
        Some(_) => Line::from(vec![
            format!("No run matches the filter `{}` ", app.filter_text).into(),
            format!("({runs} runs hidden). Press / to change it.").dark_gray(),
        ]),
    }
}

/// A sweep's heading: its name, run counts by status, stalled runs, description.
fn group_line(g: &GroupHeading) -> Line<'static> {
    let mut spans = vec![Span::styled(
        format!("▾ {}", g.name),
        Style::new().add_modifier(Modifier::BOLD),
    )];
    let total: usize = g.counts.iter().map(|(_, n)| n).sum();
    spans.push(format!("  {total} run{}", plural(total)).into());
    for (status, n) in &g.counts {
        spans.push(" · ".dark_gray());
        spans.push(Span::styled(
            format!("{n} {status}"),
            Style::new().fg(format::status_color(*status, false)),
        ));
    }
    if g.stalled > 0 {
        spans.push(" · ".dark_gray());
        spans.push(Span::styled(
            format!("{} stalled", g.stalled),
            Style::new().fg(format::status_color(RunStatus::Running, true)),
        ));
    }
    if !g.description.is_empty() {
        spans.push(format!("  {}", g.description).dark_gray());
    }
    Line::from(spans)
}

/// One run's row; the selected one on a grey background, bold.
fn draw_run(
    buf: &mut Buffer,
    app: &App,
    run: &RunInfo,
    (cols, rects): (&[Col], &[Rect]),
    row: Rect,
) {
    let selected = app.selected == Some(run.id);
    if selected {
        buf.set_style(row, Style::new().bg(SELECTED_BG));
    }
    for (c, r) in cols.iter().zip(rects.iter()) {
        put(
            buf,
            *r,
            row.y,
            cell(app, run, *c, r.width),
            c.right_aligned(),
        );
    }
    if selected {
        // After the cells, so it applies to every one of them: bold, and the dim grey of
        // pending runs and empty values lifted off the grey background.
        for x in row.x..row.x + row.width {
            let c = &mut buf[(x, row.y)];
            if c.fg == SELECTED_BG {
                c.set_fg(Color::Gray);
            }
            c.modifier.insert(Modifier::BOLD);
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Writes `line` into column `col` at row `y`, clipped, optionally right-aligned.
fn put(buf: &mut ratatui::buffer::Buffer, col: Rect, y: u16, line: Line, right: bool) {
    let w = line.width() as u16;
    let x = if right && w < col.width {
        col.x + col.width - w
    } else {
        col.x
    };
    buf.set_line(x, y, &line, col.width.saturating_sub(x - col.x));
}

fn cell<'a>(app: &App, run: &'a RunInfo, col: Col, width: u16) -> Line<'a> {
    let dim = |s: String| Line::from(s.dark_gray());
    match col {
        Col::Mark => match app.compare_color(run.id) {
            Some(c) => Line::styled("●", Style::new().fg(c)),
            None => Line::raw(""),
        },
        Col::Id => Line::raw(run.id.to_string()),
        Col::Name => Line::raw(format::run_name(&run.name, width as usize)),
        Col::Status => Line::styled(format::status_text(run), format::status_style(run)),
        Col::Progress => progress_bar(run, width),
        Col::Speed => match run.steps_per_s {
            Some(s) if run.status == RunStatus::Running => Line::raw(format::speed(s)),
            _ => dim("–".into()),
        },
        Col::Eta => match run.eta_secs() {
            Some(s) => Line::raw(format::duration(s)),
            None => dim("–".into()),
        },
        Col::Loss => Line::raw(format::opt_value(run.last_loss)),
        Col::Best => Line::raw(format::opt_value(run.best_loss)),
        Col::Nll => Line::raw(format::nll(run)),
        Col::Schedule => Line::raw(run.schedule.as_str()),
        Col::T => Line::raw(run.t.to_string()),
        Col::Device => Line::raw(run.device.clone().unwrap_or_default()),
        Col::Host => Line::raw(run.host.clone().unwrap_or_default()),
        Col::Slurm => Line::raw(run.slurm().unwrap_or_default()),
    }
}

/// `██████▍░░░  62%`: eighth blocks give the bar sub-cell resolution.
fn progress_bar(run: &RunInfo, width: u16) -> Line<'static> {
    let frac = run.progress();
    let label = format!("{:>4}", format!("{}%", (frac * 100.0).floor() as u32));
    let bar_w = width.saturating_sub(label.len() as u16 + 1) as usize;
    let eighths = (frac * bar_w as f64 * 8.0).round() as usize;
    let (full, part) = (eighths / 8, eighths % 8);
    let mut bar = "█".repeat(full);
    if part > 0 {
        bar.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][part - 1]);
    }
    let filled = bar.chars().count();
    let color = format::status_color(run.status, run.stalled);
    Line::from(vec![
        Span::styled(bar, Style::new().fg(color)),
        Span::styled(
            "░".repeat(bar_w.saturating_sub(filled)),
            Style::new().fg(Color::DarkGray),
        ),
        Span::raw(format!(" {label}")),
    ])
}
