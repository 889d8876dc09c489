//! The store seen from synchronous training code: a blocking facade over the async [`Store`],
//! and a per-run [`Recorder`] that the executor reports to.

use anyhow::Result;
use ddlab_store::{MetricRow, NewSample, Store};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// A [`Store`] with its own runtime, callable from any thread.
#[derive(Clone)]
pub struct SyncStore {
    store: Store,
    rt: Arc<tokio::runtime::Runtime>,
}

impl SyncStore {
    /// Opens the store at `url` (creating a SQLite file when `create`).
    pub fn connect(url: &str, create: bool) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let store = rt.block_on(Store::connect(url, create))?;
        Ok(Self {
            store,
            rt: Arc::new(rt),
        })
    }

    /// Runs one store call to completion.
    pub fn block<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.rt
    }
}

/// Where one run's results go.
pub struct Recorder {
    store: SyncStore,
    run_id: i64,
}

impl Recorder {
    pub fn new(store: SyncStore, run_id: i64) -> Self {
        Self { store, run_id }
    }

    pub fn run_id(&self) -> i64 {
        self.run_id
    }

    pub fn metric(&self, step: usize, name: &str, value: f64, wall_time: f64) -> MetricRow {
        MetricRow {
            run_id: self.run_id,
            step: step as i64,
            name: name.to_string(),
            value: Some(value),
            wall_time,
        }
    }

    /// Writes a batch of metric rows in one transaction.
    pub fn metrics(&self, rows: Vec<MetricRow>) -> Result<()> {
        Ok(self.store.block(self.store.store().insert_metrics(&rows))?)
    }

    pub fn truncate_metrics_after(&self, step: usize) -> Result<()> {
        self.store.block(
            self.store
                .store()
                .delete_metrics_after(self.run_id, step as i64),
        )?;
        Ok(())
    }

    pub fn checkpointed(&self, step: usize, path: &Path) -> Result<()> {
        let p = path.display().to_string();
        Ok(self.store.block(
            self.store
                .store()
                .progress(self.run_id, step as i64, Some(&p)),
        )?)
    }

    pub fn heartbeat(&self, step: usize) -> Result<()> {
        Ok(self
            .store
            .block(self.store.store().progress(self.run_id, step as i64, None))?)
    }

    pub fn sample(&self, s: NewSample) -> Result<()> {
        self.store.block(self.store.store().insert_sample(&s))?;
        Ok(())
    }

    pub fn eval(&self, name: &str, value: Option<f64>, details_json: &str) -> Result<()> {
        Ok(self.store.block(self.store.store().upsert_eval(
            self.run_id,
            name,
            value,
            details_json,
        ))?)
    }
}
