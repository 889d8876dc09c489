//! The core's typed error. Each variant's message is one sentence a user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid noise schedule: {0}")]
    InvalidSchedule(String),

    #[error("invalid model configuration: {0}")]
    InvalidModel(String),

    #[error("invalid training configuration: {0}")]
    InvalidTraining(String),

    #[error("invalid sampler configuration: {0}")]
    InvalidSampler(String),

    /// A bad NLL configuration, or a bound that came out non-finite.
    #[error("NLL evaluation: {0}")]
    InvalidNll(String),

    /// A benchmark that cannot run as configured.
    #[error("benchmark: {0}")]
    InvalidBench(String),

    #[error("{}: {reason}", path.display())]
    Data { path: PathBuf, reason: String },

    #[error("invalid dataset configuration: {0}")]
    InvalidDataset(String),

    #[error("checkpoint: {0}")]
    Checkpoint(String),

    #[error("training diverged at step {step}: the loss (or gradient norm) is {loss}")]
    Diverged { step: usize, loss: f64 },

    #[error("guidance: {0}")]
    Guidance(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub fn data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
