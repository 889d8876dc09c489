//! What recording costs a training run: the runner buffers each step's metric rows and
//! flushes them every 5 s (one transaction) with a heartbeat. This times such flushes into a
//! fresh SQLite store (WAL, on this disk), with the window's loss-by-t buckets, and reports the
//! cost per training step.
//!
//! `cargo run --release -p ddlab-store --example record_cost [STEP_MS]` (default 42 ms, the
//! `tiny` preset's step on a 2-core machine: the worst case, since faster steps mean more
//! rows per flush).

use std::time::Instant;

use ddlab_store::{LossBucketRow, MetricRow, NewRun, Store};

#[tokio::main]
async fn main() {
    let step_ms: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(42.0);
    let dir = tempfile::tempdir().unwrap();
    let url = ddlab_store::sqlite_url(&dir.path().join("cost.sqlite"));
    let store = Store::connect(&url, true).await.unwrap();
    let sweep = store.upsert_sweep("cost", "", "").await.unwrap();
    let run = store
        .ensure_run(&NewRun {
            sweep_id: Some(sweep.id),
            name: "run".into(),
            config_hash: "h".into(),
            config_json: "{}".into(),
            dataset: "shapes".into(),
            model: "tiny".into(),
            schedule: "linear".into(),
            timesteps: 1000,
            seed: 0,
            steps_total: 1_000_000,
        })
        .await
        .unwrap();
    // Per step: loss, lr and grad norm (steps/s, every 20 steps, is left out).
    let steps_per_flush = (5000.0 / step_ms).ceil() as i64;
    let flushes = 40;
    let mut spent = Vec::new();
    for f in 0..flushes {
        let rows: Vec<MetricRow> = (0..steps_per_flush)
            .flat_map(|s| {
                let step = f * steps_per_flush + s + 1;
                ["loss", "lr", "grad_norm"].map(|name| MetricRow {
                    run_id: run.id,
                    step,
                    name: name.into(),
                    value: Some(1.0 / step as f64),
                    wall_time: step as f64,
                })
            })
            .collect();
        // The loss by t of the window: 10 buckets (the default `loss_buckets`).
        let step = (f + 1) * steps_per_flush;
        let buckets: Vec<LossBucketRow> = (0..10)
            .map(|b| LossBucketRow {
                run_id: run.id,
                step,
                bucket: b,
                buckets: 10,
                t_lo: b * 100,
                t_hi: (b + 1) * 100,
                count: 6 * steps_per_flush,
                loss: Some(0.1),
                weighted_loss: None,
                wall_time: step as f64,
            })
            .collect();
        let t = Instant::now();
        store.insert_metrics(&rows).await.unwrap();
        store.insert_loss_buckets(&buckets).await.unwrap();
        store
            .progress(run.id, (f + 1) * steps_per_flush, None)
            .await
            .unwrap();
        spent.push(t.elapsed().as_secs_f64() * 1e3);
    }
    spent.sort_by(f64::total_cmp);
    let median = spent[spent.len() / 2];
    let per_step = median / steps_per_flush as f64;
    println!(
        "{flushes} flushes of {steps_per_flush} steps × 3 metrics + 10 loss-by-t buckets: median {median:.2} ms per flush \
         (max {:.2}), {per_step:.4} ms per step = {:.3}% of a {step_ms} ms step",
        spent[spent.len() - 1],
        100.0 * per_step / step_ms
    );
}
