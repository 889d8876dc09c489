//! Everything a report shows, read from the store once: the sweep's runs, their configs, loss
//! curves (downsampled in SQL), evals and latest sample grids.

use anyhow::{Context, Result};
use ddlab_config::RunConfig;
use ddlab_store::{EvalRow, LossBucketRow, RunRow, RungRow, Store, SweepRow};
use serde_json::Value;
use std::collections::BTreeMap;

/// Points per loss curve: enough for a 1000-pixel chart.
pub const CURVE_POINTS: usize = 400;

#[derive(Debug, Clone)]
pub struct RunData {
    pub row: RunRow,
    pub config: RunConfig,
    /// The run's config as key → value (for grouping and the table).
    pub keys: BTreeMap<String, Value>,
    /// (step, mean loss of the bucket).
    pub loss: Vec<(i64, f64)>,
    /// Mean loss over the last ~2% of steps, steadier than the last batch's.
    pub final_loss: Option<f64>,
    /// The run's own evaluation of its final weights, by name: the value and its details.
    pub evals: BTreeMap<String, (Option<f64>, Value)>,
    /// The method (provenance text) of each of those.
    pub eval_methods: BTreeMap<String, String>,
    /// Every evaluation recorded: over training, and re-evaluations with other settings.
    pub eval_rows: Vec<EvalRow>,
    /// The training loss by t, every window (step, then bucket).
    pub loss_buckets: Vec<LossBucketRow>,
    /// The newest sample grid (PNG bytes).
    pub sample_png: Option<Vec<u8>>,
    /// Its unguided grids over training for the film strip (at most
    /// [`crate::grids::STRIP_FRAMES`], evenly spaced, newest last), with their PNG bytes.
    pub strip: Vec<(ddlab_store::SampleInfo, Vec<u8>)>,
    /// Every sample of the run: (step, prompt, guidance, scale, sample id).
    pub samples: Vec<ddlab_store::SampleInfo>,
    /// Seconds from start to finish.
    pub duration_s: Option<f64>,
}

impl RunData {
    pub fn eval(&self, name: &str) -> Option<f64> {
        self.evals.get(name).and_then(|(v, _)| *v)
    }

    pub fn key(&self, k: &str) -> String {
        self.keys.get(k).map(show_value).unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct SweepData {
    pub sweep: SweepRow,
    pub runs: Vec<RunData>,
    /// Config keys whose values differ between runs, in a stable order (T and schedule first).
    pub varying: Vec<String>,
    /// Every rung reached under the sweep's `[prune]` rules, in the order reached.
    pub rungs: Vec<RungRow>,
}

/// A JSON value as a user would write it.
pub fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn seconds_between(a: &str, b: &str) -> Option<f64> {
    let a = chrono::DateTime::parse_from_rfc3339(a).ok()?;
    let b = chrono::DateTime::parse_from_rfc3339(b).ok()?;
    Some((b - a).num_milliseconds() as f64 / 1000.0)
}

/// How many runs load at once: SQLite gives each connection its own thread, so two readers
/// use both cores of a small machine (the report reads every loss row of the sweep).
const LOADING_AT_ONCE: usize = 2;

pub async fn load(store: &Store, sweep_name: &str) -> Result<SweepData> {
    use futures_util::{StreamExt, TryStreamExt};
    let sweep = store.sweep(sweep_name).await?;
    let rows = store.runs(Some(sweep.id)).await?;
    let runs: Vec<RunData> = futures_util::stream::iter(rows)
        .map(|row| load_run(store, row))
        .buffered(LOADING_AT_ONCE)
        .try_collect()
        .await?;
    let varying = varying_keys(&runs);
    let rungs = store.rungs(sweep.id).await?;
    Ok(SweepData {
        sweep,
        runs,
        varying,
        rungs,
    })
}

/// One run's config, curves, evaluations and grids.
async fn load_run(store: &Store, row: RunRow) -> Result<RunData> {
    let config: RunConfig = serde_json::from_str(&row.config_json)
        .with_context(|| format!("run {} has an unreadable config", row.id))?;
    let keys = match serde_json::to_value(&config)? {
        Value::Object(m) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    let loss = store.metric_series(row.id, "loss", CURVE_POINTS).await?;
    let final_loss = store.metric_tail_mean(row.id, "loss", 50).await?;
    let eval_rows = store.evals(row.id).await?;
    let own = ddlab_store::own_evals(&eval_rows);
    let evals = own
        .iter()
        .map(|e| {
            let details = serde_json::from_str(&e.details_json).unwrap_or(Value::Null);
            (e.name.clone(), (e.value, details))
        })
        .collect();
    let eval_methods = own
        .iter()
        .map(|e| (e.name.clone(), e.method.clone()))
        .collect();
    let loss_buckets = store.loss_buckets(row.id).await?;
    let samples = store.samples(row.id).await?;
    let sample_png = store.latest_sample(row.id).await?.map(|(_, png)| png);
    let mut strip = vec![];
    for info in crate::grids::strip_frames(&samples, crate::grids::STRIP_FRAMES) {
        strip.push((info.clone(), store.sample_png(info.id).await?));
    }
    let duration_s = match (&row.started_at, &row.finished_at) {
        (Some(a), Some(b)) => seconds_between(a, b),
        _ => None,
    };
    Ok(RunData {
        row,
        config,
        keys,
        loss,
        final_loss,
        evals,
        eval_methods,
        eval_rows,
        loss_buckets,
        sample_png,
        strip,
        samples,
        duration_s,
    })
}

/// Keys whose values are not all equal, schedule and T first.
fn varying_keys(runs: &[RunData]) -> Vec<String> {
    let Some(first) = runs.first() else {
        return vec![];
    };
    let mut keys: Vec<String> = first
        .keys
        .keys()
        .filter(|k| runs.iter().any(|r| r.keys.get(*k) != first.keys.get(*k)))
        .cloned()
        .collect();
    let rank = |k: &str| match k {
        "schedule" => 0,
        "T" => 1,
        "seed" => 3,
        _ => 2,
    };
    keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    keys
}

impl SweepData {
    /// Label of a run's group: the varying keys except those in `without` (e.g. seed).
    pub fn group_label(&self, run: &RunData, without: &[&str]) -> String {
        let parts: Vec<String> = self
            .varying
            .iter()
            .filter(|k| !without.contains(&k.as_str()))
            .map(|k| format!("{k}={}", run.key(k)))
            .collect();
        if parts.is_empty() {
            "all runs".into()
        } else {
            parts.join(", ")
        }
    }

    /// Runs grouped by label, groups in first-appearance order.
    pub fn groups(&self, without: &[&str]) -> Vec<(String, Vec<&RunData>)> {
        let mut out: Vec<(String, Vec<&RunData>)> = vec![];
        for r in &self.runs {
            let label = self.group_label(r, without);
            match out.iter_mut().find(|(l, _)| *l == label) {
                Some((_, v)) => v.push(r),
                None => out.push((label, vec![r])),
            }
        }
        out
    }

    pub fn varies(&self, key: &str) -> bool {
        self.varying.iter().any(|k| k == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_difference() {
        let a = "2026-11-25T23:59:58.500Z";
        let b = "2026-11-26T00:00:01.000Z";
        assert!((seconds_between(a, b).unwrap() - 2.5).abs() < 1e-9);
        assert_eq!(seconds_between(a, "garbage"), None);
    }
}
