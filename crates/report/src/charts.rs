//! The report's charts. Each chart is drawn by one generic function, rendered twice: a PNG for
//! quick viewing and an SVG for papers.

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// Tableau-10: distinct, colour-blind-friendly line colours.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

pub fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Registers the embedded font once (plotters' bitmap text needs one; SVG text does not).
fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

/// Something drawable on any plotters backend.
pub trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// The two files a chart was written to.
#[derive(Debug, Clone)]
pub struct ChartFiles {
    pub png: PathBuf,
    pub svg: PathBuf,
}

pub(crate) fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart failed: {e:?}")
}

/// Renders `chart` to `<dir>/<stem>.png` and `<dir>/<stem>.svg`.
pub fn render(chart: &impl Chart, dir: &Path, stem: &str, size: (u32, u32)) -> Result<ChartFiles> {
    fonts();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        chart.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        chart.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    Ok(ChartFiles { png, svg })
}

/// A tick label without trailing zeros: 1000, 2.5, 0.001.
fn tidy(x: f64) -> String {
    if x.fract().abs() < 1e-9 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A tick value as a person writes it: a log axis steps by 0.1 and prints 0.7000000000000001
/// and 0.30000000000000004 otherwise.
pub(crate) fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Tick values of a log axis over [lo, hi]: the decades, and inside them 2 and 5 (or every
/// digit when the range spans less than a decade), so a range such as 0.01..0.1 is labelled
/// inside (plotters alone labels only the powers of ten).
pub(crate) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return vec![];
    }
    let ticks = |mantissas: &[f64]| -> Vec<f64> {
        let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (d0..=d1)
            .flat_map(|d| mantissas.iter().map(move |m| m * 10f64.powi(d)))
            // Rounded to a few significant digits, so labels print as 0.02, not 0.0200000004.
            .map(|v| format!("{v:.3e}").parse::<f64>().unwrap_or(v))
            .filter(|&v| v >= lo && v <= hi)
            .collect()
    };
    let coarse = ticks(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 4 || hi / lo > 1e3 {
        return if hi / lo > 1e3 { ticks(&[1.0]) } else { coarse };
    }
    ticks(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
}

/// (min, max) of finite values, padded; a fallback range when empty or flat.
pub(crate) fn range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return if log { (0.1, 1.0) } else { (0.0, 1.0) };
    }
    if log {
        (lo / 1.2, hi * 1.2)
    } else {
        let pad = ((hi - lo) * 0.08).max(1e-9 + hi.abs() * 0.02);
        (lo - pad, hi + pad)
    }
}

/// One group's loss: the mean over its seeds, with the seeds' min..max as a band.
pub struct LossSeries {
    pub label: String,
    /// (step, mean, min, max)
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// Training loss against step, one line per group, log-scale loss.
pub struct LossChart {
    pub title: String,
    pub series: Vec<LossSeries>,
}

impl Chart for LossChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (x0, x1) = range(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().map(|p| p.0)),
            false,
        );
        let (y0, y1) = range(
            self.series
                .iter()
                .flat_map(|s| s.points.iter().flat_map(|p| [p.2, p.3])),
            true,
        );
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                x0.max(0.0)..x1,
                (y0..y1).log_scale().with_key_points(log_ticks(y0, y1)),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("training step")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("loss (log scale)")
            .y_label_formatter(&|y| tick_label(*y))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        for (i, s) in self.series.iter().enumerate() {
            let c = colour(i);
            if s.points.iter().any(|p| p.3 > p.2) {
                let mut band: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.3)).collect();
                band.extend(s.points.iter().rev().map(|p| (p.0, p.2)));
                chart
                    .draw_series(std::iter::once(Polygon::new(band, c.mix(0.15))))
                    .map_err(plot_err)?;
            }
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|p| (p.0, p.1)),
                    c.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

/// One line of a metric-against-x chart: (x, mean, low, high) per point.
pub struct MetricLine {
    pub label: String,
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// A final metric against a numeric key (T, or guidance scale), one line per group, with
/// error bars.
pub struct MetricChart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub log_x: bool,
    pub lines: Vec<MetricLine>,
}

impl Chart for MetricChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let xs = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let (x0, x1) = range(xs, self.log_x);
        let (y0, y1) = range(
            self.lines
                .iter()
                .flat_map(|l| l.points.iter().flat_map(|p| [p.2, p.3, p.1])),
            false,
        );
        let mut b = ChartBuilder::on(root);
        b.caption(&self.title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70);
        macro_rules! body {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(self.x_desc.as_str())
                    .x_labels(8)
                    .x_label_formatter(&|x| tidy(*x))
                    .y_desc(self.y_desc.as_str())
                    .light_line_style(WHITE.mix(0.0))
                    .draw()
                    .map_err(plot_err)?;
                for (i, l) in self.lines.iter().enumerate() {
                    let c = colour(i);
                    chart
                        .draw_series(LineSeries::new(
                            l.points.iter().map(|p| (p.0, p.1)),
                            c.stroke_width(2),
                        ))
                        .map_err(plot_err)?
                        .label(l.label.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                        });
                    chart
                        .draw_series(
                            l.points
                                .iter()
                                .map(|p| Circle::new((p.0, p.1), 4, c.filled())),
                        )
                        .map_err(plot_err)?;
                    chart
                        .draw_series(l.points.iter().filter(|p| p.3 > p.2).map(|p| {
                            ErrorBar::new_vertical(p.0, p.2, p.1, p.3, c.stroke_width(1), 8)
                        }))
                        .map_err(plot_err)?;
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.3))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()
                    .map_err(plot_err)?;
            }};
        }
        if self.log_x {
            body!(
                b.build_cartesian_2d((x0..x1).log_scale(), y0..y1)
                    .map_err(plot_err)?
            );
        } else {
            body!(b.build_cartesian_2d(x0..x1, y0..y1).map_err(plot_err)?);
        }
        Ok(())
    }
}

/// A metric per group when there is no numeric axis: one dot (± error) per group.
pub struct GroupChart {
    pub title: String,
    pub y_desc: String,
    /// (group label, mean, low, high)
    pub groups: Vec<(String, f64, f64, f64)>,
}

impl Chart for GroupChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let n = self.groups.len().max(1);
        let (y0, y1) = range(self.groups.iter().flat_map(|g| [g.1, g.2, g.3]), false);
        let labels: Vec<String> = self.groups.iter().map(|g| g.0.clone()).collect();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(60)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), y0..y1)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .y_desc(self.y_desc.as_str())
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        for (i, g) in self.groups.iter().enumerate() {
            let c = colour(i);
            let x = i as f64;
            chart
                .draw_series(std::iter::once(Circle::new((x, g.1), 6, c.filled())))
                .map_err(plot_err)?;
            if g.3 > g.2 {
                chart
                    .draw_series(std::iter::once(ErrorBar::new_vertical(
                        x,
                        g.2,
                        g.1,
                        g.3,
                        c.stroke_width(1),
                        10,
                    )))
                    .map_err(plot_err)?;
            }
        }
        Ok(())
    }
}

/// One schedule's curve: its label and (t/T, ᾱ_t, log SNR) points.
pub type ScheduleCurve = (String, Vec<(f64, f64, f64)>);

/// The noise schedules themselves: ᾱ_t and log SNR against t/T.
pub struct ScheduleChart {
    pub schedules: Vec<ScheduleCurve>,
}

impl Chart for ScheduleChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
        let panels: [(&DrawingArea<DB, Shift>, &str, usize); 2] =
            [(&left, "ᾱ_t", 1), (&right, "log SNR", 2)];
        for (area, title, col) in panels {
            let ys = self
                .schedules
                .iter()
                .flat_map(|s| s.1.iter().map(move |p| if col == 1 { p.1 } else { p.2 }));
            let (y0, y1) = range(ys, false);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{title} against t/T"), ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..1f64, y0..y1)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("t / T")
                .y_desc(title)
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(plot_err)?;
            for (i, (label, pts)) in self.schedules.iter().enumerate() {
                let c = colour(i);
                let series = pts
                    .iter()
                    .map(|p| (p.0, if col == 1 { p.1 } else { p.2 }))
                    .filter(|p| p.1.is_finite());
                chart
                    .draw_series(LineSeries::new(series, c.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .position(if col == 1 {
                    SeriesLabelPosition::UpperRight
                } else {
                    SeriesLabelPosition::LowerLeft
                })
                .draw()
                .map_err(plot_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{log_ticks, tick_label};

    #[test]
    fn log_ticks_label_inside_a_decade() {
        // The quickstart's loss range: no power of ten inside, yet labelled.
        assert_eq!(
            log_ticks(0.012, 0.09),
            [0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09]
        );
        assert_eq!(log_ticks(0.01, 1.0), [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        assert_eq!(log_ticks(1e-4, 10.0), [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]);
        assert!(log_ticks(0.0, 1.0).is_empty());
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.7000000000000001), "0.7");
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(1.0), "1");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(2500.0), "2500");
        assert_eq!(tick_label(0.00012), "1.2e-4");
    }
}
