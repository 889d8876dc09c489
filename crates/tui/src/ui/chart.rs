//! The chart: the compared runs and the selected one overlaid — the loss by step or by t/T, or
//! the NLL bound over training — on a linear or log scale, optionally smoothed.
//! [`ChartModel::build`] prepares the curves when the state changes; [`draw`] only hands them
//! to ratatui's `Chart`.

use crate::app::App;
use crate::loader::ChartKind;
use crate::snapshot::Snapshot;
use crate::ui::format;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, LegendPosition, Paragraph};

/// EMA weight of the smoothing toggle. The curves are already bucket averages of about two
/// points per column, so this smooths over a handful of columns.
pub const EMA_WEIGHT: f64 = 0.8;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChartModel {
    pub series: Vec<ChartSeries>,
    pub x_bounds: [f64; 2],
    pub y_bounds: [f64; 2],
    pub x_labels: Vec<String>,
    pub y_labels: Vec<String>,
    pub log: bool,
    pub smooth: bool,
    pub kind: ChartKind,
    /// The NLL curves were computed in different ways (their labels say how).
    pub methods_differ: bool,
    /// Shown instead of the chart when there is nothing to draw.
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChartSeries {
    pub run_id: i64,
    pub label: String,
    pub color: Color,
    /// (x, y) with the log and the smoothing applied.
    pub points: Vec<(f64, f64)>,
}

impl ChartModel {
    pub fn build(
        snapshot: Option<&Snapshot>,
        runs: &[(i64, Color)],
        log: bool,
        smooth: bool,
        kind: ChartKind,
    ) -> ChartModel {
        // The loss by t is one window's profile and the NLL a few evaluations: only the loss
        // curve is smoothed.
        let smooth = smooth && kind == ChartKind::Loss;
        let mut m = ChartModel {
            log,
            smooth,
            kind,
            ..Default::default()
        };
        let Some(snap) = snapshot else {
            m.message = Some("loading…".into());
            return m;
        };
        if runs.is_empty() {
            m.message = Some("no run selected".into());
            return m;
        }
        let mut waiting = false;
        let suffixes = method_suffixes(snap, runs, kind);
        for &(id, color) in runs {
            let raw = match kind {
                ChartKind::Loss => snap.series.get(&id).map(|s| s.as_slice()),
                ChartKind::LossByT => snap.profiles.get(&id).map(|s| s.as_slice()),
                ChartKind::Nll => snap.nll.get(&id).map(|c| c.points.as_slice()),
            };
            let Some(raw) = raw else {
                waiting = true;
                continue;
            };
            let mut points: Vec<(f64, f64)> =
                raw.iter().copied().filter(|p| p.1.is_finite()).collect();
            if smooth {
                points = ema(&points, EMA_WEIGHT);
            }
            if log {
                points = points
                    .into_iter()
                    .filter(|p| p.1 > 0.0)
                    .map(|(x, y)| (x, y.log10()))
                    .collect();
            }
            if points.is_empty() {
                continue;
            }
            let name = snap
                .runs
                .iter()
                .find(|r| r.id == id)
                .map_or(String::new(), |r| r.name.clone());
            // How it was computed is what tells the curves apart then: that instead of the
            // name, so the legend stays narrow enough to be shown.
            let label = match suffixes.get(&id) {
                Some(how) => format!("#{id} [{how}]"),
                None => format!("#{id} {name}"),
            };
            m.series.push(ChartSeries {
                run_id: id,
                label,
                color,
                points,
            });
        }
        m.methods_differ = !suffixes.is_empty();
        if m.series.is_empty() {
            m.message = Some(match (waiting, kind) {
                (true, _) => "loading…".into(),
                (false, ChartKind::Loss) => "no loss recorded yet".into(),
                (false, ChartKind::LossByT) => "no loss by t recorded yet".into(),
                (false, ChartKind::Nll) => {
                    "no NLL evaluated yet (eval_nll; eval_every for one over training)".into()
                }
            });
            return m;
        }

        m.set_axes();
        m
    }

    /// Bounds and labels that fit every series (x over [0, 1] by t/T).
    fn set_axes(&mut self) {
        let (log, by_t) = (self.log, self.kind == ChartKind::LossByT);
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = if y1 > y0 {
            (y1 - y0) * 0.05
        } else {
            (y0.abs() * 0.1).max(0.05)
        };
        // A loss axis that dips below zero only because of the padding starts at zero.
        let (y0, y1) = if !log && y0 >= 0.0 {
            ((y0 - pad).max(0.0), y1 + pad)
        } else {
            (y0 - pad, y1 + pad)
        };
        self.y_bounds = [y0, y1];
        if by_t {
            // t/T from 0 to 1 whatever buckets were recorded.
            (x0, x1) = (0.0, 1.0);
        }
        self.x_bounds = [x0, x1];
        self.x_labels = [x0, (x0 + x1) / 2.0, x1]
            .iter()
            .map(|v| {
                if by_t {
                    format!("{v:.1}")
                } else {
                    format::steps(*v)
                }
            })
            .collect();
        self.y_labels = [y0, (y0 + y1) / 2.0, y1]
            .iter()
            .map(|&v| format::value(if log { 10f64.powf(v) } else { v }))
            .collect();
    }
}

/// For NLL curves computed in different ways, each run's settings that not all share
/// (`images=1024 timesteps=1000`); empty when they agree, or for the loss.
fn method_suffixes(
    snap: &Snapshot,
    runs: &[(i64, Color)],
    kind: ChartKind,
) -> std::collections::BTreeMap<i64, String> {
    let mut out = std::collections::BTreeMap::new();
    if kind != ChartKind::Nll {
        return out;
    }
    let methods: Vec<(i64, &str)> = runs
        .iter()
        .filter_map(|(id, _)| snap.nll.get(id).map(|c| (*id, c.method.as_str())))
        .filter(|(_, m)| !m.is_empty())
        .collect();
    if methods.windows(2).all(|w| w[0].1 == w[1].1) {
        return out;
    }
    let shared = |token: &str| {
        methods
            .iter()
            .all(|(_, m)| m.split(' ').any(|t| t == token))
    };
    for (id, method) in &methods {
        let own: Vec<&str> = method.split(' ').filter(|t| !shared(t)).collect();
        out.insert(*id, own.join(" "));
    }
    out
}

/// Debiased exponential moving average (as TensorBoard smooths): early points are not pulled
/// toward zero.
pub fn ema(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let mut acc = 0.0;
    let mut norm = 0.0;
    points
        .iter()
        .map(|&(x, y)| {
            acc = acc * weight + (1.0 - weight) * y;
            norm = norm * weight + (1.0 - weight);
            (x, acc / norm)
        })
        .collect()
}

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let m = &app.chart;
    let (what, by) = match m.kind {
        ChartKind::Loss => (" Loss ", "by step (t: by t/T, n: NLL) "),
        ChartKind::LossByT => (" Loss ", "by t/T, latest window (t: by step) "),
        ChartKind::Nll => (" NLL ", "bits/dim by training step (n: loss) "),
    };
    let mut title = vec![what.bold()];
    if m.methods_differ {
        // First, so that a narrow chart keeps it.
        title.push(Span::styled(
            "⚠ computed differently, see legend ",
            Style::new().fg(Color::Yellow),
        ));
    }
    title.push(by.dark_gray());
    let mut flags = Vec::new();
    if m.log {
        flags.push("log");
    }
    if m.smooth {
        flags.push("EMA");
    }
    if !flags.is_empty() {
        title.push(Span::raw(format!("({}) ", flags.join(", "))));
    }
    if app.compared.is_empty() {
        title.push(" ⏎ adds runs to compare ".dark_gray());
    }
    let block = Block::bordered().title(Line::from(title));
    if let Some(msg) = &m.message {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        frame.render_widget(Paragraph::new(msg.as_str().dark_gray()).centered(), inner);
        return;
    }
    let datasets = m
        .series
        .iter()
        .map(|s| {
            // A single evaluation is a point: a line needs two.
            let graph = if s.points.len() == 1 {
                GraphType::Scatter
            } else {
                GraphType::Line
            };
            Dataset::default()
                .name(s.label.as_str())
                .marker(Marker::Braille)
                .graph_type(graph)
                .style(Style::new().fg(s.color))
                .data(&s.points)
        })
        .collect();
    let axis_style = Style::new().fg(Color::Gray);
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            // No axis title: ratatui puts it at the right end of the axis, over the curves.
            Axis::default()
                .bounds(m.x_bounds)
                .labels(m.x_labels.iter().map(String::as_str))
                .style(axis_style),
        )
        .y_axis(
            Axis::default()
                .bounds(m.y_bounds)
                .labels(m.y_labels.iter().map(String::as_str))
                .style(axis_style),
        )
        .legend_position(Some(LegendPosition::TopRight))
        .hidden_legend_constraints((Constraint::Percentage(60), Constraint::Percentage(50)));
    frame.render_widget(chart, area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_is_debiased_and_smooths() {
        let s = ema(&[(0.0, 1.0), (1.0, 1.0), (2.0, 0.0)], 0.5);
        assert_eq!(s[0], (0.0, 1.0));
        assert_eq!(s[1], (1.0, 1.0));
        // acc = 0.375 + 0, norm = 0.875
        assert!((s[2].1 - 0.75 / 1.75).abs() < 1e-12);
    }
}
