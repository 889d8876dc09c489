//! One module per subcommand.

pub mod bench;
pub mod bench_store;
pub mod diff;
pub mod eval;
pub mod export;
pub mod helper_models;
pub mod keys;
pub mod report;
pub mod runs;
pub mod sample;
pub mod schedule;
pub mod sweep;
pub mod train;
pub mod tui;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

static TIME_LIMIT: std::sync::LazyLock<Arc<AtomicBool>> =
    std::sync::LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Whether the stop came from SIGUSR1, Slurm's warning before the time limit: a worker that
/// handed its runs back then exits 0, since it did what it was asked.
pub fn stopped_for_time_limit() -> bool {
    TIME_LIMIT.load(Ordering::SeqCst)
}

/// A flag raised by the first Ctrl-C, SIGTERM (e.g. `scancel`) or SIGUSR1 (Slurm's warning
/// before a time limit): active runs checkpoint, hand their run back and stop. A second Ctrl-C
/// exits at once.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let flag = Arc::new(AtomicBool::new(false));
    // Registered first, so it sees the flag as it was before this signal set it.
    signal_hook::flag::register_conditional_shutdown(SIGINT, 130, flag.clone())?;
    for sig in [SIGINT, SIGTERM, SIGUSR1] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    signal_hook::flag::register(SIGUSR1, TIME_LIMIT.clone())?;
    // Signal handlers may not print; a watcher thread says what is happening.
    let f = flag.clone();
    std::thread::spawn(move || {
        while !f.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        eprintln!("\nstopping: checkpointing the active runs (Ctrl-C again exits at once)");
    });
    Ok(flag)
}

/// The `--runs-dir` flag of the commands that run things.
#[derive(clap::Args, Debug, Clone)]
pub struct RunsDirArg {
    /// Where run folders (checkpoints, sample PNGs) go, one folder per database inside.
    #[arg(
        long = "runs-dir",
        alias = "out",
        default_value = "runs",
        value_name = "DIR"
    )]
    pub runs_dir: std::path::PathBuf,
}

/// The `--db` flag shared by every command that touches the store.
#[derive(clap::Args, Debug, Clone)]
pub struct DbArg {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, env = "DDLAB_DB", default_value = ddlab_store::DEFAULT_URL)]
    pub db: String,
}
