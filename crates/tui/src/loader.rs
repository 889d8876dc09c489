//! Reading the store: one [`Loader::load`] turns the current [`Request`] into a [`Snapshot`];
//! [`spawn`] runs it on its own thread with its own runtime, on a timer and on demand, so the
//! UI thread never waits for a query (a sweep may hold SQLite's write lock for a moment).

use crate::snapshot::{Detail, RunInfo, SampleImage, Snapshot, SweepInfo};
use ddlab_store::{RunStatus, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running run whose heartbeat is older than this has probably lost its worker. The runner
/// requeues such runs after 90 s (`ddlab_runner::sweep::STALE_AFTER`); the dashboard says so
/// as soon as the runner would.
pub const STALLED_AFTER: Duration = Duration::from_secs(90);

/// What the UI currently needs beyond the runs table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Runs whose loss curve the chart shows.
    pub series_runs: Vec<i64>,
    /// The run whose evals and sample grid are shown.
    pub detail_run: Option<i64>,
    /// Points per curve: about what the chart can resolve, so the database does the averaging.
    pub max_points: usize,
}

/// Loads snapshots, remembering what does not change between loads: curves of runs that made
/// no progress and the decoded sample grid.
#[derive(Default)]
pub struct Loader {
    series: HashMap<i64, CachedSeries>,
    sample: Option<Arc<SampleImage>>,
}

struct CachedSeries {
    /// Max points, steps done, status and last loss at fetch time: a change in any means the
    /// curve may have changed.
    key: (usize, i64, RunStatus, Option<u64>),
    points: Arc<Vec<(f64, f64)>>,
}

impl Loader {
    pub async fn load(&mut self, store: &Store, req: &Request) -> Result<Snapshot, StoreError> {
        let sweeps: Vec<SweepInfo> = store.sweeps().await?.into_iter().map(sweep_info).collect();
        let rows = store.runs(None).await?;
        let summaries: HashMap<i64, _> = store
            .summaries(None)
            .await?
            .into_iter()
            .map(|s| (s.run_id, s))
            .collect();
        let speeds = store.latest_metric_values("steps_per_s").await?;
        let cutoff = stalled_cutoff();

        let mut runs = Vec::with_capacity(rows.len());
        for r in rows {
            // A run registered between the two queries shows up on the next load.
            let Some(s) = summaries.get(&r.id) else {
                continue;
            };
            let status = r.status();
            let stalled = status == RunStatus::Running
                && r.heartbeat_at.as_deref().is_some_and(|h| *h < *cutoff);
            let config = match serde_json::from_str::<serde_json::Value>(&r.config_json) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            runs.push(RunInfo {
                id: r.id,
                sweep_id: r.sweep_id,
                sweep: s.sweep.clone(),
                name: r.name,
                status,
                stalled,
                steps_done: r.steps_done,
                steps_total: r.steps_total,
                steps_per_s: speeds.get(&r.id).copied(),
                last_loss: s.last_loss,
                best_loss: s.best_loss,
                nll_bpd: s.nll_bpd,
                nll_bpd_stderr: s.nll_bpd_stderr,
                dataset: r.dataset,
                model: r.model,
                schedule: r.schedule,
                t: r.timesteps,
                seed: r.seed,
                device: r.device,
                host: r.host,
                worker: r.worker,
                slurm_job: r.slurm_job,
                slurm_task: r.slurm_task,
                attempts: r.attempts,
                started_at: r.started_at,
                finished_at: r.finished_at,
                error: r.error,
                config,
            });
        }

        let mut series = BTreeMap::new();
        for &id in &req.series_runs {
            let Some(run) = runs.iter().find(|r| r.id == id) else {
                continue;
            };
            let key = (
                req.max_points,
                run.steps_done,
                run.status,
                run.last_loss.map(f64::to_bits),
            );
            let points = match self.series.get(&id) {
                Some(c) if c.key == key => c.points.clone(),
                _ => {
                    let points: Arc<Vec<(f64, f64)>> = Arc::new(
                        store
                            .metric_series(id, "loss", req.max_points)
                            .await?
                            .into_iter()
                            .map(|(s, v)| (s as f64, v))
                            .collect(),
                    );
                    self.series.insert(
                        id,
                        CachedSeries {
                            key,
                            points: points.clone(),
                        },
                    );
                    points
                }
            };
            series.insert(id, points);
        }
        self.series.retain(|id, _| req.series_runs.contains(id));

        let detail = match req.detail_run.filter(|id| runs.iter().any(|r| r.id == *id)) {
            Some(id) => Some(self.detail(store, id).await?),
            None => None,
        };
        Ok(Snapshot {
            runs,
            sweeps,
            series,
            detail,
        })
    }

    async fn detail(&mut self, store: &Store, run_id: i64) -> Result<Detail, StoreError> {
        let evals = store.evals(run_id).await?;
        // Metadata first: the PNG is fetched and decoded only when a newer grid exists.
        let sample = match store.samples(run_id).await?.pop() {
            None => None,
            Some(info) => match &self.sample {
                Some(cached) if cached.id == info.id => Some(cached.clone()),
                _ => {
                    let png = store.sample_png(info.id).await?;
                    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
                        .map(|i| i.to_rgb8())
                        .map_err(|e| format!("cannot decode the sample grid: {e}"));
                    let s = Arc::new(SampleImage {
                        id: info.id,
                        step: info.step,
                        sampler: info.sampler,
                        sample_steps: info.sample_steps,
                        count: info.count,
                        image,
                    });
                    self.sample = Some(s.clone());
                    Some(s)
                }
            },
        };
        Ok(Detail {
            run_id,
            evals,
            sample,
        })
    }
}

/// Timestamps in the store are fixed-width RFC 3339 UTC text, so text order is time order.
fn stalled_cutoff() -> String {
    let t = chrono::Utc::now()
        - chrono::Duration::from_std(STALLED_AFTER).unwrap_or(chrono::Duration::zero());
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn sweep_info(s: ddlab_store::SweepRow) -> SweepInfo {
    let spec = s.spec_toml.parse::<toml::Table>().unwrap_or_default();
    let keys = |section: &str| -> Vec<String> {
        spec.get(section)
            .and_then(|v| v.as_table())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    };
    SweepInfo {
        id: s.id,
        grid_keys: keys("grid"),
        base_keys: keys("base"),
        name: s.name,
        description: s.description,
    }
}

/// Tells the loader thread what to do.
enum Command {
    Request(Request),
    RefreshNow,
    Stop,
}

/// The loader thread. Dropping it stops the thread.
pub struct LoaderHandle {
    tx: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl LoaderHandle {
    /// Changes what is loaded; loads at once when it differs from the last request.
    pub fn request(&self, req: Request) {
        let _ = self.tx.send(Command::Request(req));
    }

    pub fn refresh_now(&self) {
        let _ = self.tx.send(Command::RefreshNow);
    }
}

impl Drop for LoaderHandle {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        // A query stuck behind a writer's lock must not hold up quitting: wait briefly, then
        // leave the thread to finish on its own.
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_millis(500);
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Starts the loader thread: it loads at once, then every `refresh` after the previous load
/// ended (so a slow database is never queried back to back), and at once on a new request or
/// [`LoaderHandle::refresh_now`]. Each result goes to `deliver`; it returns false to stop.
pub fn spawn<F>(
    rt: tokio::runtime::Runtime,
    store: Store,
    refresh: Duration,
    initial: Request,
    mut deliver: F,
) -> std::io::Result<LoaderHandle>
where
    F: FnMut(Result<Snapshot, String>) -> bool + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("ddlab-tui-loader".into())
        .spawn(move || {
            let mut loader = Loader::default();
            let mut req = initial;
            let mut next = Instant::now();
            'run: loop {
                match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Ok(Command::Request(r)) if r == req => continue,
                    Ok(Command::Request(r)) => req = r,
                    Ok(Command::RefreshNow) | Err(RecvTimeoutError::Timeout) => {}
                    Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                }
                // Keys held down queue many requests: only the newest matters.
                loop {
                    match rx.try_recv() {
                        Ok(Command::Request(r)) => req = r,
                        Ok(Command::RefreshNow) => {}
                        Ok(Command::Stop) | Err(TryRecvError::Disconnected) => break 'run,
                        Err(TryRecvError::Empty) => break,
                    }
                }
                let result = rt
                    .block_on(loader.load(&store, &req))
                    .map_err(|e| e.to_string());
                if !deliver(result) {
                    break;
                }
                next = Instant::now() + refresh;
            }
            rt.block_on(store.close());
        })?;
    Ok(LoaderHandle {
        tx,
        thread: Some(thread),
    })
}
