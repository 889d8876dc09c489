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
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(RunnerError::io("cannot write", path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| RunnerError::io("cannot move into place", path, e))
}

/// Checks, before any work, that files can be written at `path` (a folder when `folder`, else
/// a file's path): a read-only or full disk is one sentence naming `path`, not an error after
/// minutes of training or sampling. Creates nothing: the probe goes into the nearest folder
/// that exists and is removed.
pub fn check_writable(path: &Path, folder: bool) -> Result<(), RunnerError> {
    use std::io::Write;
    let mut dir = if folder {
        path
    } else {
        path.parent().unwrap_or(Path::new(""))
    };
    while !dir.as_os_str().is_empty() && !dir.is_dir() {
        dir = dir.parent().unwrap_or(Path::new(""));
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let probe = dir.join(format!(".ddlab-probe-{}", std::process::id()));
    let written = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&[0u8; 4096])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| RunnerError::io("cannot write", path, e))
}

/// Reads a checkpoint file; the error names it.
pub fn read_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint, RunnerError> {
    let bytes = std::fs::read(path).map_err(|e| RunnerError::io("cannot read", path, e))?;
    Checkpoint::from_bytes(&bytes, device).map_err(|source| RunnerError::File {
        path: path.to_path_buf(),
        source,
    })
}
