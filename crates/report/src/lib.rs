//! Comparison reports of a sweep, written under `reports/<sweep>/`: PNG and SVG charts made
//! with plotters, every run's latest sample grid, a self-contained `index.html` (images beside
//! it, no network) and a `summary.md` table.
//!
//! Runs are grouped by the config keys that vary across the sweep; seeds are pooled within a
//! group (mean line, spread band or error bar).

pub mod by_t;
pub mod charts;
pub mod data;
pub mod diff;
pub mod grids;
pub mod page;
mod pruning;
mod reevals;

use anyhow::{Context, Result};
use ddlab_store::Store;
use std::path::{Path, PathBuf};

use charts::{
    ChartFiles, GroupChart, LossChart, LossSeries, MetricChart, MetricLine, ScheduleChart,
    ScheduleCurve, render,
};
use data::{RunData, SweepData};

/// What was written.
#[derive(Debug, Clone)]
pub struct Report {
    pub dir: PathBuf,
    pub index: PathBuf,
    pub summary: PathBuf,
    pub charts: Vec<(String, ChartFiles)>,
    pub runs: usize,
}

/// Builds the report of `sweep` into `dir` (created if needed).
pub async fn build(store: &Store, sweep: &str, dir: &Path) -> Result<Report> {
    let data = data::load(store, sweep).await?;
    write(&data, dir)
}

/// A chart's caption and its files.
type Charts = Vec<(String, ChartFiles)>;

const CHART_SIZE: (u32, u32) = (1000, 600);

/// Writes the report of already-loaded sweep data.
pub fn write(data: &SweepData, dir: &Path) -> Result<Report> {
    std::fs::create_dir_all(dir.join("samples"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut charts = Vec::new();
    if data.runs.iter().any(|r| !r.loss.is_empty()) {
        let chart = LossChart {
            title: format!("Training loss — {}", data.sweep.name),
            series: loss_series(data),
        };
        charts.push((
            "Training loss (mean over seeds, band: min–max)".to_string(),
            render(&chart, dir, "loss", CHART_SIZE)?,
        ));
    }
    metric_charts(data, dir, &mut charts)?;
    by_t_charts(data, dir, &mut charts)?;
    nll_over_training(data, dir, &mut charts)?;
    guidance_charts(data, dir, &mut charts)?;
    sampling_step_charts(data, dir, &mut charts)?;
    let schedules = schedule_curves(data)?;
    if !schedules.is_empty() {
        let chart = ScheduleChart { schedules };
        charts.push((
            "The noise schedules: ᾱ_t and log SNR".to_string(),
            render(&chart, dir, "schedules", (1200, 500))?,
        ));
    }
    let samples = write_samples(data, dir)?;
    if !samples.is_empty() {
        let strips = grids::write_strips(data, dir)?;
        std::fs::write(dir.join("grids.html"), grids::html(data, &samples, &strips))?;
    }
    let index = dir.join("index.html");
    std::fs::write(&index, page::html(data, &charts, &samples, dir))?;
    let summary = dir.join("summary.md");
    std::fs::write(&summary, page::markdown(data, &charts, dir))?;
    Ok(Report {
        dir: dir.to_path_buf(),
        index,
        summary,
        charts,
        runs: data.runs.len(),
    })
}

/// NLL and final loss: against T when T varies, else per group.
fn metric_charts(data: &SweepData, dir: &Path, charts: &mut Charts) -> Result<()> {
    for (metric, title, file) in [
        ("nll_bpd", "NLL (bits/dim, held-out)", "nll"),
        ("final_loss", "Final training loss", "final_loss"),
    ] {
        let value = |r: &RunData| {
            if metric == "final_loss" {
                r.final_loss
            } else {
                r.eval(metric)
            }
        };
        if !data.runs.iter().any(|r| value(r).is_some()) {
            continue;
        }
        if data.varies("T") {
            let chart = MetricChart {
                title: format!("{title} against T — {}", data.sweep.name),
                x_desc: "diffusion steps T".into(),
                y_desc: title.into(),
                log_x: log_axis(data.runs.iter().map(|r| r.config.t as f64)),
                lines: metric_lines(data, "T", &value, metric),
            };
            charts.push((
                format!(
                    "{title} against T, one line per group{}",
                    method_note(data, metric)
                ),
                render(&chart, dir, &format!("{file}_vs_T"), CHART_SIZE)?,
            ));
        } else {
            let chart = GroupChart {
                title: format!("{title} — {}", data.sweep.name),
                y_desc: title.into(),
                groups: group_points(data, &value, metric),
            };
            charts.push((
                format!("{title} per group"),
                render(&chart, dir, file, CHART_SIZE)?,
            ));
        }
    }
    Ok(())
}

/// The guidance trade-off: what the judge reads against the scale, one line per guidance kind
/// (and any other varying key).
fn guidance_charts(data: &SweepData, dir: &Path, charts: &mut Charts) -> Result<()> {
    for (metric, title, file) in [
        (
            "prompt_accuracy",
            "Prompt accuracy (the judge's reading)",
            "prompt_accuracy_vs_scale",
        ),
        (
            "frechet_distance",
            "Fréchet distance of judge features",
            "frechet_vs_scale",
        ),
    ] {
        let value = |r: &RunData| r.eval(metric);
        if !data.runs.iter().any(|r| value(r).is_some()) || !data.varies("guidance_scale") {
            continue;
        }
        let chart = MetricChart {
            title: format!("{title} against guidance scale — {}", data.sweep.name),
            x_desc: "guidance scale (CLIP s, classifier-free w)".into(),
            y_desc: title.into(),
            log_x: false,
            lines: metric_lines(data, "guidance_scale", &value, metric),
        };
        charts.push((
            format!("{title} against the guidance scale, one line per guidance kind"),
            render(&chart, dir, file, CHART_SIZE)?,
        ));
    }
    Ok(())
}

/// The few-step sampler study: what the judge reads and what a sample costs against the
/// sampling steps S, one line per sampler (and schedule, variance, …).
fn sampling_step_charts(data: &SweepData, dir: &Path, charts: &mut Charts) -> Result<()> {
    if !data.varies("sample_steps") {
        return Ok(());
    }
    for (metric, title, file) in [
        (
            "frechet_distance",
            "Fréchet distance of judge features",
            "frechet_vs_steps",
        ),
        (
            "seconds_per_sample",
            "Seconds per sample",
            "seconds_vs_steps",
        ),
        (
            "prompt_accuracy",
            "Prompt accuracy",
            "prompt_accuracy_vs_steps",
        ),
    ] {
        let value = |r: &RunData| r.eval(metric);
        if !data.runs.iter().any(|r| value(r).is_some()) {
            continue;
        }
        let chart = MetricChart {
            title: format!("{title} against sampling steps — {}", data.sweep.name),
            x_desc: "sampling steps S".into(),
            y_desc: title.into(),
            log_x: true,
            lines: metric_lines(data, "sample_steps", &value, metric),
        };
        charts.push((
            format!("{title} against the sampling steps S, one line per sampler"),
            render(&chart, dir, file, CHART_SIZE)?,
        ));
    }
    Ok(())
}

/// The loss and the bound across t/T per group, and each run's loss heatmap (step × t).
fn by_t_charts(data: &SweepData, dir: &Path, charts: &mut Charts) -> Result<()> {
    let loss = by_t::pooled(data, &by_t::final_loss_profile, &|_| (None, None));
    if !loss.is_empty() {
        let chart = by_t::ProfileChart {
            title: format!("Final training loss across t — {}", data.sweep.name),
            y_desc: "loss (log scale)".into(),
            lines: loss,
        };
        charts.push((
            "Training loss by noise level over the last tenth of training (mean over seeds, \
             band: min–max): where the groups' objectives differ"
                .to_string(),
            render(&chart, dir, "loss_by_t", CHART_SIZE)?,
        ));
    }
    let bound = by_t::pooled(data, &|r| by_t::bound_profile(r).0, &|r| {
        by_t::bound_profile(r).1
    });
    if !bound.is_empty() {
        let chart = by_t::ProfileChart {
            title: format!("The NLL bound's terms across t — {}", data.sweep.name),
            y_desc: "bits/dim per bucket (log scale)".into(),
            lines: bound,
        };
        let mut caption = "The bound's terms by t: KL terms summed per bucket of t/T, the \
                           decoder L_0 (triangle, t = 0) and the prior L_T (square, t = T)"
            .to_string();
        caption.push_str(&method_note(data, "nll_bpd"));
        charts.push((caption, render(&chart, dir, "bound_by_t", CHART_SIZE)?));
    }
    for r in &data.runs {
        let title = format!("Run {}: loss by step × t — {}", r.row.id, r.row.name);
        if let Some(heat) = by_t::Heatmap::of(r, title) {
            charts.push((
                format!(
                    "Run {} ({}): training loss by flush window and t bucket (colour: log loss)",
                    r.row.id, r.row.name
                ),
                render(
                    &heat,
                    dir,
                    &format!("loss_heat_run-{}", r.row.id),
                    (1000, 420),
                )?,
            ));
        }
    }
    Ok(())
}

/// The NLL against the training step per group, for runs that evaluated it during training;
/// values computed another way than the run's own final one are left out (and said so).
fn nll_over_training(data: &SweepData, dir: &Path, charts: &mut Charts) -> Result<()> {
    let curve = |r: &RunData| -> Vec<(f64, f64)> {
        let method = r.eval_methods.get("nll_bpd");
        r.eval_rows
            .iter()
            .filter(|e| e.name == "nll_bpd" && Some(&e.method) == method)
            .filter_map(|e| e.value.map(|v| (e.step as f64, v)))
            .collect()
    };
    if !data.runs.iter().any(|r| curve(r).len() > 1) {
        return Ok(());
    }
    let lines = data
        .groups(&["seed"])
        .into_iter()
        .map(|(label, runs)| {
            let mut steps: Vec<f64> = runs.iter().flat_map(|r| curve(r)).map(|p| p.0).collect();
            steps.sort_by(f64::total_cmp);
            steps.dedup();
            let points = steps
                .into_iter()
                .filter_map(|x| {
                    let vals: Vec<f64> = runs
                        .iter()
                        .filter_map(|r| curve(r).into_iter().find(|p| p.0 == x).map(|p| p.1))
                        .collect();
                    let mean = vals.iter().sum::<f64>() / vals.len().max(1) as f64;
                    let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (!vals.is_empty()).then_some((x, mean, lo, hi))
                })
                .collect();
            MetricLine { label, points }
        })
        .filter(|l: &MetricLine| !l.points.is_empty())
        .collect();
    let chart = MetricChart {
        title: format!("NLL over training — {}", data.sweep.name),
        x_desc: "training step (EMA weights)".into(),
        y_desc: "NLL (bits/dim, held-out)".into(),
        log_x: false,
        lines,
    };
    let mut caption = "NLL against the training step (eval_every), mean over seeds, \
                       bars: min–max"
        .to_string();
    caption.push_str(&method_note(data, "nll_bpd"));
    charts.push((caption, render(&chart, dir, "nll_vs_step", CHART_SIZE)?));
    Ok(())
}

/// A caption's warning when runs computed the evaluation `name` differently (other images,
/// timesteps, seed…): empty when every run's own value was computed the same way.
fn method_note(data: &SweepData, name: &str) -> String {
    let mut methods: Vec<&str> = data
        .runs
        .iter()
        .filter_map(|r| r.eval_methods.get(name).map(String::as_str))
        .collect();
    methods.sort_unstable();
    methods.dedup();
    if methods.len() <= 1 {
        return String::new();
    }
    let shown: Vec<&str> = methods
        .iter()
        .map(|m| if m.is_empty() { "(not recorded)" } else { m })
        .collect();
    format!(
        ". Note: these values were computed in {} different ways: {}",
        methods.len(),
        shown.join("; ")
    )
}

fn log_axis(xs: impl Iterator<Item = f64>) -> bool {
    let (mut lo, mut hi) = (f64::INFINITY, 0f64);
    for x in xs {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    lo > 0.0 && hi / lo >= 10.0
}

/// Linear interpolation of a curve at `x`.
fn interp(curve: &[(i64, f64)], x: f64) -> Option<f64> {
    let first = curve.first()?;
    if x <= first.0 as f64 {
        return Some(first.1);
    }
    for w in curve.windows(2) {
        let (a, b) = (w[0], w[1]);
        if x <= b.0 as f64 {
            let f = (x - a.0 as f64) / ((b.0 - a.0) as f64).max(1e-9);
            return Some(a.1 + f * (b.1 - a.1));
        }
    }
    curve.last().map(|p| p.1)
}

/// Exponential smoothing that keeps the first value (α = weight of the new point).
fn smooth(values: &mut [f64], alpha: f64) {
    for i in 1..values.len() {
        values[i] = alpha * values[i] + (1.0 - alpha) * values[i - 1];
    }
}

fn loss_series(data: &SweepData) -> Vec<LossSeries> {
    data.groups(&["seed"])
        .into_iter()
        .filter_map(|(label, runs)| {
            let longest = runs.iter().max_by_key(|r| r.loss.len())?;
            let xs: Vec<f64> = longest.loss.iter().map(|p| p.0 as f64).collect();
            if xs.is_empty() {
                return None;
            }
            let per_seed: Vec<Vec<f64>> = runs
                .iter()
                .filter(|r| !r.loss.is_empty())
                .map(|r| {
                    let mut v: Vec<f64> = xs
                        .iter()
                        .map(|&x| interp(&r.loss, x).unwrap_or(f64::NAN))
                        .collect();
                    smooth(&mut v, 0.2);
                    v
                })
                .collect();
            let points = xs
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let vals: Vec<f64> = per_seed
                        .iter()
                        .map(|v| v[i])
                        .filter(|v| v.is_finite())
                        .collect();
                    let mean = vals.iter().sum::<f64>() / vals.len().max(1) as f64;
                    let lo = vals.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    (x, mean, lo, hi)
                })
                .collect();
            Some(LossSeries { label, points })
        })
        .collect()
}

/// Mean and error of a metric over a group's runs: ±1 standard deviation across seeds, or the
/// estimate's own standard error when there is one seed.
fn summarise(
    runs: &[&RunData],
    value: &dyn Fn(&RunData) -> Option<f64>,
    metric: &str,
) -> Option<(f64, f64, f64)> {
    let vals: Vec<f64> = runs.iter().filter_map(|r| value(r)).collect();
    if vals.is_empty() {
        return None;
    }
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let err = if vals.len() > 1 {
        (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else if metric == "nll_bpd" {
        runs[0].eval("nll_bpd_stderr").unwrap_or(0.0)
    } else {
        0.0
    };
    Some((mean, mean - err, mean + err))
}

fn metric_lines(
    data: &SweepData,
    x_key: &str,
    value: &dyn Fn(&RunData) -> Option<f64>,
    metric: &str,
) -> Vec<MetricLine> {
    data.groups(&[x_key, "seed"])
        .into_iter()
        .map(|(label, runs)| {
            let mut xs: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.key(x_key).parse::<f64>().ok())
                .collect();
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            let points = xs
                .into_iter()
                .filter_map(|x| {
                    let at: Vec<&RunData> = runs
                        .iter()
                        .copied()
                        .filter(|r| r.key(x_key).parse::<f64>().ok() == Some(x))
                        .collect();
                    summarise(&at, value, metric).map(|(m, lo, hi)| (x, m, lo, hi))
                })
                .collect();
            MetricLine { label, points }
        })
        .filter(|l| !l.points.is_empty())
        .collect()
}

fn group_points(
    data: &SweepData,
    value: &dyn Fn(&RunData) -> Option<f64>,
    metric: &str,
) -> Vec<(String, f64, f64, f64)> {
    data.groups(&["seed"])
        .into_iter()
        .filter_map(|(label, runs)| {
            summarise(&runs, value, metric).map(|(m, lo, hi)| (label, m, lo, hi))
        })
        .collect()
}

/// ᾱ and log SNR of every distinct schedule in the sweep, on at most 500 points each.
fn schedule_curves(data: &SweepData) -> Result<Vec<ScheduleCurve>> {
    let mut out: Vec<ScheduleCurve> = vec![];
    for r in &data.runs {
        let Ok(plan) = r.config.resolve() else {
            continue;
        };
        let mut label = format!("{} T={}", plan.schedule.kind, plan.schedule.steps);
        if plan.schedule.zero_terminal_snr {
            label.push_str(" zero-SNR");
        }
        if out.iter().any(|(l, _)| *l == label) {
            continue;
        }
        let s = plan.schedule.build()?;
        let t_steps = s.len();
        let stride = t_steps.div_ceil(500).max(1);
        let pts = (0..t_steps)
            .step_by(stride)
            .chain(std::iter::once(t_steps - 1))
            .map(|i| {
                (
                    (i + 1) as f64 / t_steps as f64,
                    s.alpha_bars[i],
                    s.snr(i).ln(),
                )
            })
            .collect();
        out.push((label, pts));
    }
    Ok(out)
}

/// Each run's latest sample grid as `samples/run-<id>.png`; returns (run id, relative path).
fn write_samples(data: &SweepData, dir: &Path) -> Result<Vec<(i64, String)>> {
    let mut out = vec![];
    for r in &data.runs {
        if let Some(png) = &r.sample_png {
            let rel = format!("samples/run-{}.png", r.row.id);
            std::fs::write(dir.join(&rel), png)?;
            out.push((r.row.id, rel));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_and_smoothing() {
        let c = [(0, 0.0), (10, 10.0)];
        assert_eq!(interp(&c, 5.0), Some(5.0));
        assert_eq!(interp(&c, -1.0), Some(0.0));
        assert_eq!(interp(&c, 20.0), Some(10.0));
        let mut v = vec![1.0, 0.0, 0.0];
        smooth(&mut v, 0.5);
        assert_eq!(v, vec![1.0, 0.5, 0.25]);
        assert!(log_axis([100.0, 1000.0].into_iter()));
        assert!(!log_axis([100.0, 250.0].into_iter()));
    }
}
