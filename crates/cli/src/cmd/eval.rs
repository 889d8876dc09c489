//! `ddlab eval`: metrics of a checkpoint on held-out data, or of a sweep's finished runs again
//! with other settings (recorded beside their own evaluations).

use anyhow::{Result, bail};
use clap::Parser;
use ddlab_config::RunConfig;
use ddlab_config::limits::{MAX_NLL_IMAGES, MAX_T};
use ddlab_config::names::terminal_safe;
use ddlab_core::diffusion::Diffusion;
use ddlab_core::nll::{NllConfig, nll_bpd};
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{DdpmVariance, UNetDenoiser};
use ddlab_core::train::LoadedModel;
use ddlab_runner::device::one_device;
use ddlab_runner::events::Observer;
use ddlab_runner::files::read_checkpoint;
use ddlab_runner::recorder::SyncStore;
use ddlab_runner::reevaluate;
use std::path::PathBuf;
use std::process::ExitCode;

use super::DbArg;
use crate::progress::RunProgress;

/// Evaluate a checkpoint (printed), or every completed run of a sweep from its final checkpoint
/// (recorded in the store beside the run's own evaluations, under a method text that names
/// these settings; a second call with the same settings computes only what is missing).
///
/// Examples:
///   ddlab eval --checkpoint runs/…/quickstart/00001-…/checkpoint.safetensors --nll
///   ddlab eval --sweep mnist-schedules --nll --images 1024 --timesteps 1000
///   ddlab eval --sweep mnist-schedules --frechet --judge runs/helpers/judge-mnist.safetensors
#[derive(Parser, Debug)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// One checkpoint to evaluate (printed, not recorded).
    #[arg(long, conflicts_with = "sweep", required_unless_present = "sweep")]
    checkpoint: Option<PathBuf>,
    /// Every completed run of this sweep (recorded in --db).
    #[arg(long)]
    sweep: Option<String>,
    /// Compute the variational bound (bits/dim).
    #[arg(long)]
    nll: bool,
    /// The Fréchet distance of a judge's features, held-out against samples (with --sweep;
    /// guided runs also get prompt accuracy).
    #[arg(long)]
    frechet: bool,
    /// The judge checkpoint for --frechet (`ddlab train-judge` trains one).
    #[arg(long, requires = "frechet")]
    judge: Option<PathBuf>,
    /// Samples drawn per run for --frechet (with the run's sampler and guidance).
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Held-out images to use.
    #[arg(long, default_value_t = 256)]
    images: usize,
    /// Timesteps per image (≥ T−1 evaluates every one; fewer gives an unbiased estimate).
    #[arg(long, default_value_t = 50)]
    timesteps: usize,
    /// Decoder / reverse-step variance: beta-tilde or beta.
    #[arg(long, default_value = "beta-tilde")]
    variance: String,
    /// Read the dataset from here instead of the path recorded in the checkpoint.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seed of the evaluation stream (default: 0 for a checkpoint, each run's own for a sweep).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "auto")]
    device: String,
    #[command(flatten)]
    db: DbArg,
}

/// `--sweep`: the re-evaluation, then what it did.
fn run_sweep(a: &Args, sweep: &str) -> Result<ExitCode> {
    let variance = a.variance.parse::<DdpmVariance>()?;
    if a.frechet && a.judge.is_none() {
        bail!("--frechet needs --judge PATH, a judge checkpoint (`ddlab train-judge` trains one)");
    }
    let req = reevaluate::Request {
        sweep: sweep.to_string(),
        nll: a.nll.then_some(reevaluate::NllSettings {
            images: a.images,
            timesteps: a.timesteps,
            variance,
        }),
        judge: match (a.frechet, &a.judge) {
            (true, Some(judge)) => Some(reevaluate::JudgeSettings {
                samples: a.samples,
                judge: judge.clone(),
            }),
            _ => None,
        },
        seed: a.seed,
        data_dir: a.data_dir.clone(),
    };
    req.check()?;
    let device = one_device(&a.device)?;
    let store = SyncStore::open(&a.db.db, ddlab_store::OpenMode::Existing)?;
    let progress = RunProgress::new("eval");
    let summary = reevaluate::reevaluate(&store, &req, &device, &progress)?;
    progress.finish();
    for (name, why) in &summary.skipped {
        eprintln!("skipped {}: {why}", terminal_safe(name));
    }
    println!(
        "{} evaluation(s) computed and recorded, {} already recorded with these settings",
        summary.computed, summary.already
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run(a: Args) -> Result<ExitCode> {
    if let Some(sweep) = &a.sweep {
        return run_sweep(&a, sweep);
    }
    let Some(checkpoint) = &a.checkpoint else {
        bail!("pass --checkpoint PATH or --sweep NAME");
    };
    if a.frechet {
        bail!("--frechet evaluates a sweep's runs: pass --sweep NAME");
    }
    if !a.nll {
        bail!("nothing to evaluate: pass --nll");
    }
    if a.images == 0 || a.timesteps == 0 {
        bail!("--images and --timesteps must be at least 1");
    }
    if a.images > MAX_NLL_IMAGES || a.timesteps > MAX_T {
        bail!("--images is at most {MAX_NLL_IMAGES} and --timesteps at most {MAX_T}");
    }
    let device = one_device(&a.device)?;
    let ck = read_checkpoint(checkpoint, &device)?;
    let m = LoadedModel::from_checkpoint(&ck, &device, true)?;
    let mut cfg: RunConfig = super::sample::run_config(&ck)?;
    if a.data_dir.is_some() {
        cfg.data_dir = a.data_dir.clone();
    }
    let plan = cfg.resolve()?;
    let data = plan.dataset.load()?;
    ddlab_runner::check_images(&plan, &data)?;
    let held = data.heldout.head(a.images, &device)?;
    let diffusion = Diffusion::new(m.schedule.clone(), &device);
    let denoiser = UNetDenoiser {
        model: &m.model.detached(),
        diffusion: &diffusion,
        objective: m.train.objective,
        cond: None,
    };
    let nll_cfg = NllConfig {
        timesteps: a.timesteps,
        variance: a.variance.parse::<DdpmVariance>()?,
        clip_x0: cfg.clip_x0,
        batch_size: 128,
        term_buckets: cfg.loss_buckets,
    };
    let progress = RunProgress::new("eval");
    let r = nll_bpd(
        &denoiser,
        &diffusion,
        &held,
        &nll_cfg,
        &mut Rng::new(a.seed.unwrap_or(0), ddlab_core::rng::streams::EVAL),
        &mut |d, t| progress.phase("NLL", d, t),
    )?;
    progress.finish();
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "NLL {:.4} ± {:.4} bits/dim on {} held-out images ({}; prior {:.5}, decoder {:.4})",
            r.bpd,
            r.stderr,
            r.images,
            if r.exact {
                format!("all {} timesteps", r.timesteps + 1)
            } else {
                format!("{} sampled timesteps per image", r.timesteps)
            },
            r.prior_bpd,
            r.decoder_bpd
        );
    }
    Ok(ExitCode::SUCCESS)
}
