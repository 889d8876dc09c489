//! Reading the store: one [`Loader::load`] turns the current [`Request`] into a [`Snapshot`];
//! [`spawn`] runs it on its own thread with its own runtime, on a timer and on demand, so the
//! UI thread never waits for a query (a sweep may hold SQLite's write lock for a moment).

use crate::snapshot::{Detail, NllCurve, RunInfo, SampleImage, Snapshot, SweepInfo};
use ddlab_store::{FileState, RunStatus, SampleInfo, Store, StoreError, SweepRow};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the UI currently needs beyond the runs table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Runs whose loss curve the chart shows.
    pub series_runs: Vec<i64>,
    /// The run whose evals and sample grid are shown.
    pub detail_run: Option<i64>,
    /// Points per curve: about what the chart can resolve, so the database does the averaging.
    pub max_points: usize,
    /// What the chart shows, and so what else the series runs need.
    pub chart: ChartKind,
    /// Runs whose newest sample grid the grid view shows.
    pub grid_runs: Vec<i64>,
}

/// What the chart plots for the series runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChartKind {
    /// The training loss by step.
    #[default]
    Loss,
    /// The latest loss-by-t window against t/T.
    LossByT,
    /// The NLL bound against the training step (`eval_every`).
    Nll,
}

/// Loads snapshots, remembering what does not change between loads: curves of runs that made
/// no progress and decoded sample grids.
#[derive(Default)]
pub struct Loader {
    series: HashMap<i64, CachedSeries>,
    sample: Option<Arc<SampleImage>>,
    /// The grid view's decoded grids, by run.
    grids: HashMap<i64, Arc<SampleImage>>,
}

struct CachedSeries {
    /// Max points, steps done, status and last loss at fetch time: a change in any means the
    /// curve may have changed.
    key: (usize, i64, RunStatus, Option<u64>),
    points: Arc<Vec<(f64, f64)>>,
}

impl Loader {
    pub async fn load(&mut self, store: &Store, req: &Request) -> Result<Snapshot, StoreError> {
        let sweep_rows = store.sweeps().await?;
        let runs = load_runs(store).await?;
        let sweeps = sweep_rows
            .into_iter()
            .map(|s| sweep_info(s, &runs))
            .collect();
        let series = self.load_series(store, req, &runs).await?;
        let (mut profiles, mut nll) = (BTreeMap::new(), BTreeMap::new());
        for &id in &req.series_runs {
            match req.chart {
                ChartKind::Loss => {}
                ChartKind::LossByT => {
                    profiles.insert(id, Arc::new(loss_profile(store, id).await?));
                }
                ChartKind::Nll => {
                    nll.insert(id, Arc::new(nll_curve(store, id).await?));
                }
            }
        }
        let detail = match req.detail_run.filter(|id| runs.iter().any(|r| r.id == *id)) {
            Some(id) => Some(self.detail(store, id).await?),
            None => None,
        };
        let grids = self.load_grids(store, &req.grid_runs).await?;
        Ok(Snapshot {
            runs,
            sweeps,
            series,
            profiles,
            nll,
            detail,
            grids,
        })
    }

    /// The newest grid of each run the grid view shows: its metadata every load, its PNG
    /// fetched and decoded only when a newer grid exists.
    async fn load_grids(
        &mut self,
        store: &Store,
        run_ids: &[i64],
    ) -> Result<BTreeMap<i64, Arc<SampleImage>>, StoreError> {
        let mut grids = BTreeMap::new();
        for &id in run_ids {
            let Some(info) = store.latest_sample_info(id).await? else {
                continue;
            };
            let image = match self.grids.get(&id) {
                Some(cached) if cached.id == info.id => cached.clone(),
                _ => Arc::new(decoded(store, info).await?),
            };
            self.grids.insert(id, image.clone());
            grids.insert(id, image);
        }
        self.grids.retain(|id, _| run_ids.contains(id));
        Ok(grids)
    }

    /// The loss curves the chart shows: cached while a run makes no progress.
    async fn load_series(
        &mut self,
        store: &Store,
        req: &Request,
        runs: &[RunInfo],
    ) -> Result<BTreeMap<i64, Arc<Vec<(f64, f64)>>>, StoreError> {
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
                    let cached = CachedSeries {
                        key,
                        points: points.clone(),
                    };
                    self.series.insert(id, cached);
                    points
                }
            };
            series.insert(id, points);
        }
        self.series.retain(|id, _| req.series_runs.contains(id));
        Ok(series)
    }

    /// Like [`Loader::load`], after checking that the store's file is still the one opened:
    /// a deleted file is reported instead of loaded (its open connections would go on
    /// reading the unlinked file), and a replaced one, e.g. recreated by a new sweep, is
    /// opened afresh and loaded from scratch.
    pub async fn load_following_file(
        &mut self,
        store: &mut Store,
        req: &Request,
    ) -> Result<Snapshot, String> {
        match store.file_state() {
            FileState::Unchanged => {}
            FileState::Deleted => {
                return Err(format!(
                    "the database {} was deleted; the runs shown are its last state",
                    store.display_url()
                ));
            }
            FileState::Replaced => {
                let fresh = store.reopen().await.map_err(|e| {
                    format!("the database file was replaced and cannot be read: {e}")
                })?;
                store.close().await;
                *store = fresh;
                *self = Loader::default();
            }
        }
        self.load(store, req).await.map_err(|e| e.to_string())
    }

    async fn detail(&mut self, store: &Store, run_id: i64) -> Result<Detail, StoreError> {
        // The run's own final evaluations (not every step of `eval_every`).
        let evals: Vec<_> = ddlab_store::own_evals(&store.evals(run_id).await?)
            .into_iter()
            .cloned()
            .collect();
        // Metadata first: the PNG is fetched and decoded only when a newer grid exists.
        let sample = match store.latest_sample_info(run_id).await? {
            None => None,
            Some(info) => match &self.sample {
                Some(cached) if cached.id == info.id => Some(cached.clone()),
                _ => {
                    let s = Arc::new(decoded(store, info).await?);
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

/// A sample grid's PNG from the store, decoded (or why it could not be).
async fn decoded(store: &Store, info: SampleInfo) -> Result<SampleImage, StoreError> {
    let png = store.sample_png(info.id).await?;
    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .map(|i| i.to_rgb8())
        .map_err(|e| format!("cannot decode the sample grid: {e}"));
    Ok(SampleImage {
        id: info.id,
        step: info.step,
        sampler: info.sampler,
        sample_steps: info.sample_steps,
        count: info.count,
        prompt: info.prompt,
        guidance: info.guidance,
        guidance_scale: info.guidance_scale,
        image,
    })
}

/// A run's NLL over training in the way its own final evaluation was computed.
async fn nll_curve(store: &Store, run_id: i64) -> Result<NllCurve, StoreError> {
    let evals = store.evals(run_id).await?;
    let Some(own) = ddlab_store::own_evals(&evals)
        .into_iter()
        .find(|e| e.name == "nll_bpd")
    else {
        return Ok(NllCurve::default());
    };
    let points = evals
        .iter()
        .filter(|e| e.name == "nll_bpd" && e.method == own.method)
        .filter_map(|e| e.value.map(|v| (e.step as f64, v)))
        .collect();
    Ok(NllCurve {
        method: own.method.clone(),
        points,
    })
}

/// A run's latest loss-by-t window as (bucket centre as a fraction of T, mean loss).
async fn loss_profile(store: &Store, run_id: i64) -> Result<Vec<(f64, f64)>, StoreError> {
    let rows = store.latest_loss_profile(run_id).await?;
    let t = rows.iter().map(|r| r.t_hi).max().unwrap_or(1).max(1) as f64;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let centre = (r.t_lo + r.t_hi) as f64 / 2.0 / t;
            r.loss.map(|l| (centre, l))
        })
        .collect())
}

/// Every run with its summary, speed and whether it has stalled.
async fn load_runs(store: &Store) -> Result<Vec<RunInfo>, StoreError> {
    let rows = store.runs(None).await?;
    let summaries: HashMap<i64, _> = store
        .summaries(None)
        .await?
        .into_iter()
        .map(|s| (s.run_id, s))
        .collect();
    let speeds = store.latest_metric_values("steps_per_s").await?;
    // The store decides what "stalled" means, as it does for the runner's requeueing.
    let stalled: HashSet<i64> = store
        .stalled_runs(None)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let pruned: HashMap<i64, (i64, String)> = store
        .pruned_rungs()
        .await?
        .into_iter()
        .map(|g| (g.run_id, (g.rung, g.reason)))
        .collect();
    let mut runs = Vec::with_capacity(rows.len());
    for r in rows {
        // A run registered between the two queries shows up on the next load.
        let Some(s) = summaries.get(&r.id) else {
            continue;
        };
        let config = match serde_json::from_str::<serde_json::Value>(&r.config_json) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        runs.push(RunInfo {
            id: r.id,
            sweep_id: r.sweep_id,
            sweep: s.sweep.clone(),
            status: r.status(),
            name: r.name,
            stalled: stalled.contains(&r.id),
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
            pruned: pruned.get(&r.id).cloned(),
            config,
        });
    }
    Ok(runs)
}

/// A sweep as the dashboard shows it. Its axes come from the store; a sweep registered by a
/// ddlab that did not record them gets, as grid keys, the config keys its runs differ in (and
/// no base keys: those cannot be told from defaults).
fn sweep_info(s: SweepRow, runs: &[RunInfo]) -> SweepInfo {
    let (grid_keys, base_keys) = match s.axes {
        Some(axes) => (axes.grid_keys, axes.base_keys),
        None => (varying_keys(s.id, runs), Vec::new()),
    };
    SweepInfo {
        id: s.id,
        grid_keys,
        base_keys,
        name: s.name,
        description: s.description,
    }
}

/// The config keys whose values differ between runs of sweep `sweep_id`.
fn varying_keys(sweep_id: i64, runs: &[RunInfo]) -> Vec<String> {
    let mine: Vec<&RunInfo> = runs
        .iter()
        .filter(|r| r.sweep_id == Some(sweep_id))
        .collect();
    crate::matrix::varying_keys(&mine)
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
    mut store: Store,
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
                let result = rt.block_on(loader.load_following_file(&mut store, &req));
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
