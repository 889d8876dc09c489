//! The runner's error. A run's own failure (divergence, a bad value met at run time) is not an
//! error but an [`crate::execute::Outcome::Failed`]; these are the failures of what runs it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(transparent)]
    Config(#[from] ddlab_config::ConfigError),
    #[error(transparent)]
    Core(#[from] ddlab_core::Error),
    #[error(transparent)]
    Store(#[from] ddlab_store::StoreError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file whose content the core refused (a corrupt checkpoint, a CLIP for other images).
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        source: ddlab_core::Error,
    },
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Slurm(String),
}

impl RunnerError {
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RunnerError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// An error chain as one line: "context: cause: cause". Only the first line of each message is
/// kept (candle appends a backtrace on the following lines when RUST_BACKTRACE is set), and a
/// context that only repeats its cause is dropped. What a failed run records and what the CLI
/// prints.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = vec![];
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or("").trim().to_string();
        if !first.is_empty() && !parts.last().is_some_and(|p| p.contains(&first)) {
            parts.push(first);
        }
    }
    parts.join(": ")
}
