//! ddlab's run schema, in one home shared by the runner, the report, the dashboard and the CLI:
//! every run key with its default and role ([`keys`]), their validation into the core's configs
//! ([`resolve`]), sweep specs and `--set`/`--grid` overrides
//! ([`spec`], [`overrides`]), and a run's identity ([`identity`]).
//!
//! Invariants: depends on the core only; no SQL, no terminal, no file writes (it reads spec and
//! config files). A [`ResolvedRun`] holds only values that passed validation.

pub mod error;
mod grid;
pub mod guidance;
pub mod identity;
pub mod keys;
pub mod limits;
pub mod names;
pub mod overrides;
pub mod prune;
pub mod resolve;
mod source;
pub mod spec;

pub use error::ConfigError;
pub use guidance::Guidance;
pub use keys::{Role, RunConfig};
pub use prune::{PruneMetric, PruneRules};
pub use resolve::ResolvedRun;
pub use spec::{
    MergedRun, PlannedRun, SweepSpec, load_run_config, load_sweep, load_sweep_bounded,
    load_sweep_with,
};
