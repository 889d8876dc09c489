//! `ddlab sample`: a grid of samples from a checkpoint.

use anyhow::{Context, Result};
use clap::Parser;
use ddlab_config::names::terminal_safe;
use ddlab_config::{Guidance, RunConfig};
use ddlab_core::checkpoint::Checkpoint;
use ddlab_core::diffusion::Diffusion;
use ddlab_core::grid::{default_columns, encode_png, make_grid};
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{
    DdpmVariance, SamplerConfig, SamplerKind, SamplerOptions, TimestepSpacing,
};
use ddlab_core::train::LoadedModel;
use ddlab_runner::device::one_device;
use ddlab_runner::events::Observer;
use ddlab_runner::files::{check_writable, read_checkpoint, write_atomic};
use ddlab_runner::guidance;
use ddlab_runner::sampling::{Draw, Network, draw_images};
use std::path::PathBuf;
use std::process::ExitCode;

/// Most images one `ddlab sample` draws (they are held in memory at once).
const MAX_IMAGES: usize = 10_000;
/// Largest pixel repeat factor of the grid.
const MAX_ZOOM: usize = 32;

use crate::progress::RunProgress;

/// Draw a grid of samples from a trained checkpoint.
#[derive(Parser, Debug)]
pub struct Args {
    /// A checkpoint.safetensors written by a run.
    #[arg(long)]
    checkpoint: PathBuf,
    /// ddpm (ancestral), ddim or dpmpp2m (DPM-Solver++(2M), second order, good at 10-20 steps).
    #[arg(long, default_value = "ddim")]
    sampler: SamplerKind,
    /// Sampling steps S ≤ T (default: T for DDPM, min(T, 50) for DDIM, min(T, 20) for DPM-Solver++).
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM η (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// DDPM variance: beta-tilde, beta, or learned (a model trained with variance = "learned").
    #[arg(long, default_value = "beta-tilde")]
    variance: String,
    /// Timestep spacing: linspace, leading or trailing.
    #[arg(long, default_value = "trailing")]
    spacing: String,
    /// Do not clip the x_0 prediction to [-1, 1].
    #[arg(long)]
    no_clip: bool,
    /// Number of images (at most 10,000).
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
    /// Pixel repeat factor for small images, 1 to 32 (default: enough for 64-pixel cells).
    #[arg(long)]
    zoom: Option<usize>,
    /// Text prompt for guided sampling ("a handwritten three").
    #[arg(long)]
    prompt: Option<String>,
    /// none, clip (a noised CLIP's gradient, GLIDE) or cfg (classifier-free).
    #[arg(long, default_value = "none")]
    guidance: Guidance,
    /// The CLIP checkpoint for --guidance clip (from `ddlab train-clip`).
    #[arg(long)]
    clip: Option<PathBuf>,
    /// Guidance scale s (CLIP) or w (CFG).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    scale: f64,
    /// A judge checkpoint (from `ddlab train-judge`): print the share of samples it reads as
    /// the prompt.
    #[arg(long)]
    judge: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let device = one_device(&a.device)?;
    let ck = read_checkpoint(&a.checkpoint, &device)?;
    let m = LoadedModel::from_checkpoint(&ck, &device, !a.no_ema)?;
    if a.n == 0 || a.n > MAX_IMAGES {
        anyhow::bail!("--n must be between 1 and {MAX_IMAGES}, not {}", a.n);
    }
    check_writable(&a.out, false)?;
    if a.zoom.is_some_and(|z| !(1..=MAX_ZOOM).contains(&z)) {
        anyhow::bail!("--zoom must be between 1 and {MAX_ZOOM}");
    }
    let sampler = SamplerConfig::with_defaults(&sampler_options(&a)?, m.schedule.len());
    let diffusion = Diffusion::new(m.schedule.clone(), &device);
    sampler.build(&m.schedule)?;
    let run_cfg = run_config(&ck)?;
    let size = run_cfg.resolve()?.image_size;
    let channels = m.model.config.in_channels;
    let guided = guidance::prepare(
        &guidance::Request {
            prompt: a.prompt.as_deref(),
            kind: a.guidance,
            clip: a.clip.as_deref(),
            scale: a.scale,
            dataset: run_cfg.dataset,
            channels,
            image_size: size,
            n: a.n,
        },
        &device,
    )?;
    for w in &guided.warnings {
        eprintln!("warning: {}", terminal_safe(w));
    }
    let judge = match &a.judge {
        Some(path) => Some(guidance::load_checked_judge(
            path,
            run_cfg.dataset,
            channels,
            size,
            &device,
        )?),
        None => None,
    };
    if judge.is_some() && guided.constraints.iter().any(Option::is_none) {
        anyhow::bail!("--judge needs a prompt the judge can check (e.g. \"*\" with --guidance)");
    }
    // Inference only: a copy whose weights record no autograd graph.
    let model = m.model.detached();
    let net = Network {
        model: &model,
        diffusion: &diffusion,
        objective: m.train.objective,
    };
    let draw = Draw {
        sampler: &sampler,
        guidance: &guided,
        shape: (a.n, channels, size, size),
    };
    let progress = RunProgress::new("sample");
    let mut rng = Rng::new(a.seed, ddlab_core::rng::streams::SAMPLING);
    let images = draw_images(&net, &draw, &mut rng, &mut |k, total| {
        progress.phase(sampler.name(), k, total)
    })?;
    progress.finish();
    if let Some((judge, judge_acc)) = &judge {
        let acc = guidance::prompt_share(judge, &images, &guided)?;
        println!(
            "the judge reads {:.1}% of the samples as the prompt (the judge's own held-out accuracy: {:.1}%)",
            acc * 100.0,
            judge_acc * 100.0
        );
    }
    let grid = make_grid(
        &images,
        default_columns(a.n),
        a.zoom.unwrap_or((64 / size).max(1)),
    )?;
    write_atomic(&a.out, &encode_png(&grid)?)?;
    println!(
        "wrote {} ({} images, {} {} steps, checkpoint step {})",
        a.out.display(),
        a.n,
        sampler.name(),
        sampler.steps(),
        m.step
    );
    Ok(ExitCode::SUCCESS)
}

/// The sampler flags as the options a run's keys also give.
fn sampler_options(a: &Args) -> Result<SamplerOptions> {
    Ok(SamplerOptions {
        kind: a.sampler,
        steps: a.steps,
        spacing: a.spacing.parse::<TimestepSpacing>()?,
        eta: a.eta,
        variance: a.variance.parse::<DdpmVariance>()?,
        clip_x0: !a.no_clip,
    })
}

/// The run config a checkpoint was trained with.
pub fn run_config(ck: &Checkpoint) -> Result<RunConfig> {
    ck.get_json("ddlab.run_config").context(
        "the checkpoint carries no run config (was it written by `ddlab train` or a sweep?)",
    )
}
