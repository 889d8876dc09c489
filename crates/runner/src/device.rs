//! Which devices runs execute on: `auto`, `cpu`, `cuda` or `cuda:0,1,…`, resolved once at the
//! edge and passed down.

use anyhow::{Result, bail};
use ddlab_core::Device;
use std::fmt;
use std::str::FromStr;

use crate::error::RunnerError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRequest {
    /// Every CUDA GPU when there is one, else the CPU (saying so).
    Auto,
    Cpu,
    /// All GPUs (None) or the listed ordinals.
    Cuda(Option<Vec<usize>>),
}

impl FromStr for DeviceRequest {
    type Err = RunnerError;
    fn from_str(s: &str) -> Result<Self, RunnerError> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(None)),
            other => {
                let list = other.strip_prefix("cuda:").ok_or_else(|| {
                    RunnerError::Device(format!(
                        "unknown device `{other}` (expected auto, cpu, cuda or cuda:0,1,…)"
                    ))
                })?;
                let ids = list
                    .split(',')
                    .map(|p| p.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| {
                        RunnerError::Device(format!(
                            "bad GPU list `{list}` in `{other}` (expected e.g. cuda:0,1)"
                        ))
                    })?;
                if ids.is_empty() {
                    return Err(RunnerError::Device(format!("no GPU listed in `{other}`")));
                }
                Ok(Self::Cuda(Some(ids)))
            }
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(None) => f.write_str("cuda"),
            Self::Cuda(Some(ids)) => {
                let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
                write!(f, "cuda:{}", s.join(","))
            }
        }
    }
}

/// The devices to run on, and a note when `auto` fell back to the CPU.
#[derive(Debug, Clone)]
pub struct DeviceSet {
    pub devices: Vec<Device>,
    pub note: Option<String>,
}

/// Why CUDA cannot be used here, if it cannot.
fn cuda_unavailable() -> Option<String> {
    if !cfg!(feature = "cuda") {
        return Some(
            "this ddlab was built without CUDA support (build it with `just build-cuda`)".into(),
        );
    }
    if !ddlab_core::candle_core::utils::cuda_is_available() {
        return Some("candle reports CUDA as unavailable in this build".into());
    }
    None
}

/// Opens GPU `i`, or says in one sentence why it cannot.
fn open_cuda(i: usize) -> Result<Device> {
    match Device::new_cuda(i) {
        Ok(d) => Ok(d),
        Err(e) => bail!("CUDA device {i} cannot be opened (no NVIDIA driver or no such GPU): {e}"),
    }
}

/// Number of visible GPUs (0 without CUDA).
pub fn cuda_device_count() -> usize {
    if cuda_unavailable().is_some() {
        return 0;
    }
    (0..64).take_while(|&i| Device::new_cuda(i).is_ok()).count()
}

impl DeviceRequest {
    pub fn resolve(&self) -> Result<DeviceSet> {
        match self {
            Self::Cpu => Ok(DeviceSet {
                devices: vec![Device::Cpu],
                note: None,
            }),
            Self::Auto => {
                let n = cuda_device_count();
                if n == 0 {
                    // A CPU build on the CPU is the expected case: say nothing. A CUDA build
                    // that finds no GPU is worth a note.
                    let note = cfg!(feature = "cuda").then(|| {
                        "running on the CPU: no CUDA GPU could be opened (is the NVIDIA driver loaded?)"
                            .to_string()
                    });
                    Ok(DeviceSet {
                        devices: vec![Device::Cpu],
                        note,
                    })
                } else {
                    Ok(DeviceSet {
                        devices: (0..n).map(open_cuda).collect::<Result<_>>()?,
                        note: None,
                    })
                }
            }
            Self::Cuda(ids) => {
                if let Some(why) = cuda_unavailable() {
                    bail!("--device {self} was asked for, but {why}");
                }
                let ids = match ids {
                    Some(v) => v.clone(),
                    None => {
                        let n = cuda_device_count();
                        if n == 0 {
                            bail!(
                                "--device cuda was asked for, but no CUDA GPU can be opened (is the NVIDIA driver loaded?)"
                            );
                        }
                        (0..n).collect()
                    }
                };
                Ok(DeviceSet {
                    devices: ids.into_iter().map(open_cuda).collect::<Result<_>>()?,
                    note: None,
                })
            }
        }
    }
}

/// A short name for the store's `device` column.
pub fn device_label(d: &Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => match d.location() {
            ddlab_core::candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".into(),
        },
        _ => format!("{:?}", d.location()),
    }
}

/// The CPU threads runs may use: `RAYON_NUM_THREADS` when set (the CLI sets it from
/// `--threads`), else every core.
pub fn cpu_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1)
}

/// The first device of a `--device` flag (commands that run one thing at a time).
pub fn one_device(flag: &str) -> Result<Device> {
    let set = flag.parse::<DeviceRequest>()?.resolve()?;
    Ok(set.devices[0].clone())
}
