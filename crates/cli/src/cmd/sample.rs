//! `ddlab sample`: a grid of samples from a checkpoint.

use anyhow::{Context, Result};
use clap::Parser;
use ddlab_core::checkpoint::Checkpoint;
use ddlab_core::diffusion::Diffusion;
use ddlab_core::grid::{default_columns, encode_png, make_grid};
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{DdpmVariance, SamplerConfig, TimestepSpacing, UNetDenoiser, sample};
use ddlab_core::train::LoadedModel;
use ddlab_runner::config::SamplerKind;
use ddlab_runner::device::DeviceRequest;
use ddlab_runner::execute::{Observer, write_atomic};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::progress::RunProgress;

/// Draw a grid of samples from a trained checkpoint.
#[derive(Parser, Debug)]
pub struct Args {
    /// A checkpoint.safetensors written by a run.
    #[arg(long)]
    checkpoint: PathBuf,
    /// ddpm (ancestral) or ddim.
    #[arg(long, value_enum, default_value = "ddim")]
    sampler: SamplerArg,
    /// Sampling steps S ≤ T (default: T for DDPM, min(T, 50) for DDIM).
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM η (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// DDPM variance: beta-tilde or beta.
    #[arg(long, default_value = "beta-tilde")]
    variance: String,
    /// Timestep spacing: linspace, leading or trailing.
    #[arg(long, default_value = "trailing")]
    spacing: String,
    /// Do not clip the x_0 prediction to [-1, 1].
    #[arg(long)]
    no_clip: bool,
    /// Number of images.
    #[arg(long, short, default_value_t = 36)]
    n: usize,
    /// Seed of the starting noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use the raw weights instead of the EMA.
    #[arg(long)]
    no_ema: bool,
    /// Output PNG.
    #[arg(long, short, default_value = "samples.png")]
    out: PathBuf,
    /// Pixel repeat factor for small images (default: enough for 64-pixel cells).
    #[arg(long)]
    scale: Option<usize>,
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SamplerArg {
    Ddpm,
    Ddim,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let request: DeviceRequest = a.device.parse().map_err(anyhow::Error::msg)?;
    let device = request.resolve()?.devices[0].clone();
    let bytes = std::fs::read(&a.checkpoint)
        .with_context(|| format!("cannot read {}", a.checkpoint.display()))?;
    let ck = Checkpoint::from_bytes(&bytes, &device)
        .with_context(|| format!("{}", a.checkpoint.display()))?;
    let m = LoadedModel::from_checkpoint(&ck, &device, !a.no_ema)?;
    if a.n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    let t = m.schedule.len();
    let kind = match a.sampler {
        SamplerArg::Ddpm => SamplerKind::Ddpm,
        SamplerArg::Ddim => SamplerKind::Ddim,
    };
    let steps = a.steps.unwrap_or(match kind {
        SamplerKind::Ddpm => t,
        SamplerKind::Ddim => t.min(50),
    });
    let spacing: TimestepSpacing = a.spacing.parse()?;
    let cfg = match kind {
        SamplerKind::Ddpm => SamplerConfig::Ddpm {
            steps,
            spacing,
            variance: a.variance.parse::<DdpmVariance>()?,
            clip_x0: !a.no_clip,
        },
        SamplerKind::Ddim => SamplerConfig::Ddim {
            steps,
            spacing,
            eta: a.eta,
            clip_x0: !a.no_clip,
        },
    };
    let diffusion = Diffusion::new(m.schedule.clone(), &device);
    let sampler = cfg.build(&m.schedule)?;
    let denoiser = UNetDenoiser {
        model: &m.model,
        diffusion: &diffusion,
        objective: m.train.objective,
        cond: None,
    };
    let size = image_size(&ck)?;
    let progress = RunProgress::new("sample");
    let mut rng = Rng::new(a.seed, ddlab_core::rng::streams::SAMPLING);
    let images = sample(
        sampler.as_ref(),
        &denoiser,
        None,
        &diffusion,
        (a.n, m.model.config.in_channels, size, size),
        &mut rng,
        &mut |k, total| progress.phase(cfg.name(), k, total),
    )?;
    progress.finish();
    let grid = make_grid(
        &images,
        default_columns(a.n),
        a.scale.unwrap_or((64 / size).max(1)),
    )?;
    write_atomic(&a.out, &encode_png(&grid)?)?;
    println!(
        "wrote {} ({} images, {} {} steps, checkpoint step {})",
        a.out.display(),
        a.n,
        cfg.name(),
        steps,
        m.step
    );
    Ok(ExitCode::SUCCESS)
}

/// The image side a checkpoint was trained on (recorded with its run config).
pub fn image_size(ck: &Checkpoint) -> Result<usize> {
    let cfg: ddlab_runner::config::RunConfig = ck.get_json("ddlab.run_config").context(
        "the checkpoint carries no run config (was it written by `ddlab train` or a sweep?)",
    )?;
    let resolved = cfg.resolve().map_err(anyhow::Error::msg)?;
    Ok(resolved.image_size)
}
