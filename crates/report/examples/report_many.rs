//! How long a report of a large sweep takes: 100 runs (3 schedules × 5 values of T × 7
//! seeds, less 5), each with 3,000 loss points, an NLL and a 6×6 sample grid of 16×16 images,
//! in a fresh SQLite store; then `ddlab_report::build` is timed (loading and writing).
//!
//! `cargo run --release -p ddlab-report --example report_many`

use ddlab_config::RunConfig;

#[path = "../tests/support/mod.rs"]
mod support;
use ddlab_store::{MetricRow, NewSample, RunStatus, Store, sqlite_url};
use std::time::Instant;

fn grid_png(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(6 * 18, 6 * 18, |x, y| {
        let v = (x.wrapping_mul(31) ^ y.wrapping_mul(17) ^ seed) as u8;
        image::Rgb([v, v.wrapping_mul(3), 255 - v])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&sqlite_url(&dir.path().join("many.sqlite")), true)
        .await
        .unwrap();
    let sweep = store
        .upsert_sweep("many", "100 runs", "[sweep]\nname = \"many\"")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut n = 0;
    'outer: for schedule in ["linear", "cosine", "sigmoid"] {
        for t in [50usize, 100, 250, 500, 1000] {
            for seed in 0..7u64 {
                if n == 100 {
                    break 'outer;
                }
                n += 1;
                let cfg = RunConfig {
                    schedule: schedule.parse().unwrap(),
                    t,
                    seed,
                    steps: 3000,
                    ..RunConfig::default()
                };
                let name = format!("schedule={schedule},T={t},seed={seed}");
                let run = store
                    .ensure_run(&support::new_run(sweep.id, &name, &cfg))
                    .await
                    .unwrap();
                store
                    .start_run(run.id, "cpu", &Default::default())
                    .await
                    .unwrap();
                let rows: Vec<MetricRow> = (1..=3000)
                    .map(|s| MetricRow {
                        run_id: run.id,
                        step: s,
                        name: "loss".into(),
                        value: Some(0.03 + 1.0 / s as f64 + (s % 7) as f64 * 1e-3),
                        wall_time: s as f64,
                    })
                    .collect();
                store.insert_metrics(&rows).await.unwrap();
                store
                    .upsert_eval(run.id, "nll_bpd", Some(3.0 + 100.0 / t as f64), "{}")
                    .await
                    .unwrap();
                store
                    .insert_sample(&NewSample {
                        run_id: run.id,
                        step: 3000,
                        sampler: "ddim".into(),
                        sample_steps: 50,
                        prompt: None,
                        guidance: None,
                        guidance_scale: None,
                        count: 36,
                        width: 16,
                        height: 16,
                        png: grid_png(n as u32),
                    })
                    .await
                    .unwrap();
                store
                    .finish_run(run.id, RunStatus::Completed, None)
                    .await
                    .unwrap();
            }
        }
    }
    println!(
        "store: {n} runs, {} loss points, in {:.1} s",
        n * 3000,
        t0.elapsed().as_secs_f64()
    );
    let out = dir.path().join("report");
    let t0 = Instant::now();
    let report = ddlab_report::build(&store, "many", &out).await.unwrap();
    println!(
        "report of {} runs ({} charts) in {:.2} s",
        report.runs,
        report.charts.len(),
        t0.elapsed().as_secs_f64()
    );
}
