//! A run's files: its directory, checkpoint and sample PNGs, written atomically, and the one
//! way checkpoints are read back.

use ddlab_config::names::{MAX_SWEEP_NAME, path_component};
use ddlab_core::Device;
use ddlab_core::checkpoint::Checkpoint;
use ddlab_store::RunRow;
use std::path::{Path, PathBuf};

use crate::error::RunnerError;

/// Files of one run under its directory.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }
    pub fn sample_png(&self, step: usize) -> PathBuf {
        self.dir.join("samples").join(format!("step-{step:07}.png"))
    }
    pub fn final_png(&self) -> PathBuf {
        self.dir.join("samples.png")
    }
    pub fn guided_png(&self) -> PathBuf {
        self.dir.join("guided.png")
    }
}

/// Directory of a run: `<root>/<store id>/<sweep or "train">/<run id>-<name>`, each part a
/// sanitised folder name that cannot leave `root`. The store id keeps two databases' runs of
/// the same ids and names apart.
pub fn run_dir(root: &Path, store_id: &str, sweep: Option<&str>, run: &RunRow) -> PathBuf {
    let sweep = path_component(sweep.unwrap_or("train"), MAX_SWEEP_NAME);
    let name = path_component(&run.name, 80);
    root.join(path_component(store_id, 32))
        .join(sweep)
        .join(format!("{:05}-{name}", run.id))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename), so a kill at any
/// moment leaves either the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunnerError> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| RunnerError::io("cannot create", dir, e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    written.map_err(|e| RunnerError::io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RunnerError::io("cannot move into place", path, e))
}

/// Reads a checkpoint file; the error names it.
pub fn read_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint, RunnerError> {
    let bytes = std::fs::read(path).map_err(|e| RunnerError::io("cannot read", path, e))?;
    Checkpoint::from_bytes(&bytes, device).map_err(|source| RunnerError::File {
        path: path.to_path_buf(),
        source,
    })
}
