//! `ddlab eval`: metrics of a checkpoint on held-out data.

use anyhow::{Result, bail};
use clap::Parser;
use ddlab_config::RunConfig;
use ddlab_config::limits::{MAX_NLL_IMAGES, MAX_T};
use ddlab_core::diffusion::Diffusion;
use ddlab_core::nll::{NllConfig, nll_bpd};
use ddlab_core::rng::Rng;
use ddlab_core::sampler::{DdpmVariance, UNetDenoiser};
use ddlab_core::train::LoadedModel;
use ddlab_runner::device::one_device;
use ddlab_runner::events::Observer;
use ddlab_runner::files::read_checkpoint;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::progress::RunProgress;

/// Evaluate a checkpoint: the NLL bound in bits/dim on the held-out split of its dataset.
#[derive(Parser, Debug)]
pub struct Args {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Compute the variational bound (bits/dim).
    #[arg(long)]
    nll: bool,
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
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[arg(long, default_value = "auto")]
    device: String,
}

pub fn run(a: Args) -> Result<ExitCode> {
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
    let ck = read_checkpoint(&a.checkpoint, &device)?;
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
        &mut Rng::new(a.seed, ddlab_core::rng::streams::EVAL),
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
