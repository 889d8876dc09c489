//! Where runs differ across the noise level: the training loss by bucket of t (the last tenth
//! of training, pooled over seeds), the NLL bound's terms by t, and per run a heatmap of
//! training step × t bucket. Drawn against t/T so that runs of different T share an axis.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::charts::{Chart, colour, log_ticks, plot_err, range, tick_label};
use crate::data::{RunData, SweepData};

/// A bound's decoder term L_0 and prior term L_T, when recorded.
pub type Ends = (Option<f64>, Option<f64>);

/// One group's profile: (t/T, mean, low, high) per bucket, and optional end markers.
pub struct ProfileLine {
    pub label: String,
    pub points: Vec<(f64, f64, f64, f64)>,
    /// Values drawn as single markers at t/T = 0 (a triangle) and 1 (a square): the bound's
    /// decoder term L_0 and its prior term L_T.
    pub ends: Ends,
}

/// Profiles against t/T, log-scale values.
pub struct ProfileChart {
    pub title: String,
    pub y_desc: String,
    pub lines: Vec<ProfileLine>,
}

/// The windows of the last tenth of a run's recorded steps, pooled per bucket (count-weighted):
/// (t/T of the bucket's centre, mean loss).
pub fn final_loss_profile(run: &RunData) -> Vec<(f64, f64)> {
    let Some(last) = run.loss_buckets.last() else {
        return vec![];
    };
    let from = last.step - (last.step / 10).max(1) + 1;
    let t_steps = run.config.t.max(1) as f64;
    let mut acc: std::collections::BTreeMap<i64, (f64, f64, f64)> = Default::default();
    for r in run
        .loss_buckets
        .iter()
        .filter(|r| r.step >= from.min(last.step))
    {
        if let Some(loss) = r.loss {
            let e = acc.entry(r.bucket).or_insert((0.0, 0.0, 0.0));
            e.0 += loss * r.count as f64;
            e.1 += r.count as f64;
            e.2 = (r.t_lo + r.t_hi) as f64 / 2.0 / t_steps;
        }
    }
    acc.into_values().map(|(s, n, x)| (x, s / n)).collect()
}

/// The bound's terms of a run's own final NLL: KL sums by bucket at their centres, and
/// (decoder, prior). Empty for an NLL recorded before the terms were.
pub fn bound_profile(run: &RunData) -> (Vec<(f64, f64)>, Ends) {
    let Some((_, details)) = run.evals.get("nll_bpd") else {
        return (vec![], (None, None));
    };
    let terms: Vec<f64> = details["kl_by_t"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let n = terms.len() as f64;
    let points = terms
        .iter()
        .enumerate()
        .map(|(i, &v)| ((i as f64 + 0.5) / n, v))
        .collect();
    let ends = (
        details["decoder_bpd"].as_f64(),
        details["prior_bpd"].as_f64(),
    );
    (points, ends)
}

/// Per group, the mean (and min..max over seeds) of each run's profile, point by point.
pub fn pooled(
    data: &SweepData,
    profile: &dyn Fn(&RunData) -> Vec<(f64, f64)>,
    ends: &dyn Fn(&RunData) -> Ends,
) -> Vec<ProfileLine> {
    data.groups(&["seed"])
        .into_iter()
        .filter_map(|(label, runs)| {
            let profiles: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| profile(r)).collect();
            let longest = profiles.iter().max_by_key(|p| p.len())?;
            if longest.is_empty() {
                return None;
            }
            let points = longest
                .iter()
                .enumerate()
                .map(|(i, &(x, _))| {
                    let vals: Vec<f64> = profiles
                        .iter()
                        .filter(|p| p.len() == longest.len())
                        .map(|p| p[i].1)
                        .collect();
                    let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (x, mean, lo, hi)
                })
                .collect();
            let mean_of = |pick: &dyn Fn(&RunData) -> Option<f64>| {
                let v: Vec<f64> = runs.iter().filter_map(|r| pick(r)).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            let ends = (mean_of(&|r| ends(r).0), mean_of(&|r| ends(r).1));
            Some(ProfileLine {
                label,
                points,
                ends,
            })
        })
        .collect()
}

impl Chart for ProfileChart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let ys = self.lines.iter().flat_map(|l| {
            l.points
                .iter()
                .flat_map(|p| [p.1, p.2, p.3])
                .chain([l.ends.0, l.ends.1].into_iter().flatten())
        });
        let (y0, y1) = range(ys, true);
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 24))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                -0.02f64..1.02f64,
                (y0..y1).log_scale().with_key_points(log_ticks(y0, y1)),
            )
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("t / T (noise level: 0 clean, 1 pure noise)")
            .x_labels(11)
            .x_label_formatter(&|x| tick_label(*x))
            .y_desc(self.y_desc.as_str())
            .y_label_formatter(&|y| tick_label(*y))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        for (i, l) in self.lines.iter().enumerate() {
            draw_profile(&mut chart, l, colour(i))?;
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

type ProfileCtx<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::combinators::WithKeyPoints<plotters::coord::combinators::LogCoord<f64>>,
    >,
>;

/// One line with its seeds' band, its markers and its end markers.
fn draw_profile<DB: DrawingBackend>(
    chart: &mut ProfileCtx<'_, DB>,
    l: &ProfileLine,
    c: RGBColor,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    if l.points.iter().any(|p| p.3 > p.2) {
        let mut band: Vec<(f64, f64)> = l.points.iter().map(|p| (p.0, p.3)).collect();
        band.extend(l.points.iter().rev().map(|p| (p.0, p.2)));
        chart
            .draw_series(std::iter::once(Polygon::new(band, c.mix(0.15))))
            .map_err(plot_err)?;
    }
    chart
        .draw_series(LineSeries::new(
            l.points.iter().map(|p| (p.0, p.1)),
            c.stroke_width(2),
        ))
        .map_err(plot_err)?
        .label(l.label.clone())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    chart
        .draw_series(
            l.points
                .iter()
                .map(|p| Circle::new((p.0, p.1), 3, c.filled())),
        )
        .map_err(plot_err)?;
    if let Some(v) = l.ends.0 {
        chart
            .draw_series(std::iter::once(TriangleMarker::new(
                (0.0, v),
                7,
                c.filled(),
            )))
            .map_err(plot_err)?;
    }
    if let Some(v) = l.ends.1 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.995, v * 0.93), (1.005, v * 1.07)],
                c.filled(),
            )))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// A run's training loss by step window (x) and t bucket (y), coloured by log loss.
pub struct Heatmap {
    pub title: String,
    /// (window's last step, bucket, loss), bucket in 0..buckets.
    pub cells: Vec<(i64, i64, f64)>,
    pub buckets: i64,
}

impl Heatmap {
    pub fn of(run: &RunData, title: String) -> Option<Heatmap> {
        let buckets = run.loss_buckets.iter().map(|r| r.buckets).max()?;
        let cells = run
            .loss_buckets
            .iter()
            .filter_map(|r| r.loss.map(|l| (r.step, r.bucket, l)))
            .filter(|c| c.2 > 0.0)
            .collect();
        Some(Heatmap {
            title,
            cells,
            buckets,
        })
    }
}

/// Viridis, by linear interpolation between five of its colours; `f` in [0, 1].
fn viridis(f: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let x = f.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let (a, b, w) = (STOPS[i], STOPS[i + 1], x - i as f64);
    let mix = |p: f64, q: f64| (p + (q - p) * w).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

impl Chart for Heatmap {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (main, legend) = root.split_horizontally(root.dim_in_pixel().0 - 110);
        let mut steps: Vec<i64> = self.cells.iter().map(|c| c.0).collect();
        steps.sort_unstable();
        steps.dedup();
        let (lo, hi) = range(self.cells.iter().map(|c| c.2.ln()), false);
        let last = steps.last().copied().unwrap_or(1) as f64;
        let mut chart = ChartBuilder::on(&main)
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..last, 0f64..1f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("training step (flush windows)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_desc("t / T")
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(plot_err)?;
        let n = self.buckets.max(1) as f64;
        let cells = self.cells.iter().map(|&(step, b, v)| {
            let i = steps.partition_point(|&s| s < step);
            let x0 = if i == 0 { 0.0 } else { steps[i - 1] as f64 };
            let colour = viridis((v.ln() - lo) / (hi - lo).max(1e-12));
            Rectangle::new(
                [(x0, b as f64 / n), (step as f64, (b + 1) as f64 / n)],
                colour.filled(),
            )
        });
        chart.draw_series(cells).map_err(plot_err)?;
        draw_colour_bar(&legend, lo.exp(), hi.exp())
    }
}

/// The colour scale of the heatmap: loss from `lo` to `hi`, log-spaced.
fn draw_colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lo: f64,
    hi: f64,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let mut bar = ChartBuilder::on(area)
        .margin_top(50)
        .margin_bottom(52)
        .margin_right(8)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0f64..1f64,
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
        )
        .map_err(plot_err)?;
    bar.configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc("loss")
        // Fixed sizes: plotters scales its default fonts with the area, and this one is narrow.
        .y_label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .y_label_formatter(&|y| tick_label(*y))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(plot_err)?;
    let steps = 64;
    let ratio = (hi / lo).max(1.0 + 1e-12);
    bar.draw_series((0..steps).map(|i| {
        let (a, b) = (i as f64 / steps as f64, (i + 1) as f64 / steps as f64);
        Rectangle::new(
            [(0.0, lo * ratio.powf(a)), (1.0, lo * ratio.powf(b))],
            viridis((a + b) / 2.0).filled(),
        )
    }))
    .map_err(plot_err)?;
    Ok(())
}
