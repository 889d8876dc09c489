//! Shared by the report's tests and examples: the store record of a run, as the runner makes it
//! (the report reads stores and does not depend on the runner).

use ddlab_config::{ResolvedRun, RunConfig};
use ddlab_store::NewRun;

/// A run of `cfg` (which must resolve) in sweep `sweep_id`, named `name`.
pub fn new_run(sweep_id: i64, name: &str, cfg: &RunConfig) -> NewRun {
    let plan: ResolvedRun = cfg.resolve().expect("a valid test config");
    NewRun {
        sweep_id: Some(sweep_id),
        name: name.to_string(),
        config_hash: cfg.config_hash(),
        config_json: serde_json::to_string(&plan.config).expect("config serialises"),
        dataset: cfg.dataset.to_string(),
        model: cfg.model.clone(),
        schedule: cfg.schedule.to_string(),
        timesteps: cfg.t as i64,
        seed: cfg.seed as i64,
        steps_total: cfg.steps as i64,
    }
}
