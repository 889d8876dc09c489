//! One module per subcommand.

pub mod eval;
pub mod helpers;
pub mod keys;
pub mod report;
pub mod runs;
pub mod sample;
pub mod schedule;
pub mod sweep;
pub mod train;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag raised by the first Ctrl-C / SIGTERM (runs checkpoint and stop); a second one exits.
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("\nstopping now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: checkpointing and stopping (press Ctrl-C again to exit at once)");
    })?;
    Ok(flag)
}

/// The `--db` flag shared by every command that touches the store.
#[derive(clap::Args, Debug, Clone)]
pub struct DbArg {
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, env = "DDLAB_DB", default_value = ddlab_store::DEFAULT_URL)]
    pub db: String,
}
