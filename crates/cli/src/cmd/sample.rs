//! `ddlab sample`: a grid of samples from a checkpoint.

use anyhow::{Context, Result};
use clap::Parser;
use ddlab_core::checkpoint::Checkpoint;
use ddlab_core::diffusion::Diffusion;
use ddlab_core::grid::{default_columns, encode_png, make_grid};
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{
    CfgDenoiser, DdpmVariance, Denoiser, SamplerConfig, TimestepSpacing, UNetDenoiser, sample,
};
use ddlab_core::train::LoadedModel;
use ddlab_runner::config::SamplerKind;
use ddlab_runner::device::DeviceRequest;
use ddlab_runner::execute::{Observer, write_atomic};
use ddlab_runner::guidance;
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
    zoom: Option<usize>,
    /// Text prompt for guided sampling ("a handwritten three").
    #[arg(long)]
    prompt: Option<String>,
    /// none, clip (a noised CLIP's gradient, GLIDE) or cfg (classifier-free).
    #[arg(long, value_enum, default_value = "none")]
    guidance: GuidanceArg,
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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum GuidanceArg {
    None,
    Clip,
    Cfg,
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
    let run_cfg = run_config(&ck)?;
    let size = run_cfg.resolve().map_err(anyhow::Error::msg)?.image_size;
    let channels = m.model.config.in_channels;
    let guided = guidance::prepare(
        &guidance::Request {
            prompt: a.prompt.as_deref(),
            kind: match a.guidance {
                GuidanceArg::None => None,
                GuidanceArg::Clip => Some(guidance::Kind::Clip),
                GuidanceArg::Cfg => Some(guidance::Kind::Cfg),
            },
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
        eprintln!("warning: {w}");
    }
    // Inference only: a copy whose weights record no autograd graph.
    let model = m.model.detached();
    let prompts: Vec<&str> = guided.prompts.iter().map(String::as_str).collect();
    let cfg_denoiser;
    let plain;
    let denoiser: &dyn Denoiser = if guided.kind == Some(guidance::Kind::Cfg) {
        cfg_denoiser = CfgDenoiser::new(&model, &diffusion, m.train.objective, &prompts, a.scale)
            .context("--guidance cfg")?;
        &cfg_denoiser
    } else {
        plain = UNetDenoiser {
            model: &model,
            diffusion: &diffusion,
            objective: m.train.objective,
            // A caption-conditioned network reads ∅ (unguided, or CLIP-guided) without one.
            cond: None,
        };
        &plain
    };
    let guide = guided.clip_guide(&diffusion.schedule)?;
    let progress = RunProgress::new("sample");
    let mut rng = Rng::new(a.seed, ddlab_core::rng::streams::SAMPLING);
    let images = sample(
        sampler.as_ref(),
        denoiser,
        guide.as_ref().map(|g| g as &dyn ddlab_core::sampler::Guide),
        &diffusion,
        (a.n, channels, size, size),
        &mut rng,
        &mut |k, total| progress.phase(cfg.name(), k, total),
    )?;
    progress.finish();
    if let Some(jpath) = &a.judge {
        let (acc, judge_acc) = guidance::judge_prompt_accuracy(
            jpath,
            &images,
            &guided,
            run_cfg.dataset,
            channels,
            size,
            &device,
        )?;
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
        cfg.name(),
        steps,
        m.step
    );
    Ok(ExitCode::SUCCESS)
}

/// The run config a checkpoint was trained with.
pub fn run_config(ck: &Checkpoint) -> Result<ddlab_runner::config::RunConfig> {
    ck.get_json("ddlab.run_config").context(
        "the checkpoint carries no run config (was it written by `ddlab train` or a sweep?)",
    )
}
