//! `ddlab train-clip` and `ddlab train-judge`: the models guided sampling and its metrics need.

use anyhow::Result;
use clap::Parser;
use ddlab_core::data::{DatasetConfig, DatasetKind};
use ddlab_runner::device::one_device;
use ddlab_runner::helper_models::{HelperKind, HelperRun, check_text_dataset, train_helper};
use ddlab_runner::recorder::SyncStore;
use std::path::PathBuf;
use std::process::ExitCode;

use super::{DbArg, stop_flag};
use crate::progress::RunProgress;

#[derive(Parser, Debug)]
pub struct Args {
    /// mnist or shapes.
    #[arg(long)]
    dataset: DatasetKind,
    /// Where the dataset's files are (mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Image side for shapes (16 or 32).
    #[arg(long)]
    image_size: Option<usize>,
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The checkpoint to write (default: runs/<clip|judge>-<dataset>.safetensors).
    #[arg(long, short)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "auto")]
    device: String,
    #[command(flatten)]
    db: DbArg,
}

fn run(kind: HelperKind, a: Args, default_steps: usize) -> Result<ExitCode> {
    check_text_dataset(a.dataset)?;
    let device = one_device(&a.device)?;
    let dataset = DatasetConfig {
        kind: a.dataset,
        dir: a.data_dir.clone(),
        image_size: a.image_size,
        ..Default::default()
    };
    let data = dataset.load()?;
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("runs/{}-{}.safetensors", kind.name(), a.dataset))
    });
    let store = SyncStore::connect(&a.db.db, true)?;
    let spec = HelperRun {
        kind,
        dataset,
        steps: a.steps.unwrap_or(default_steps),
        batch_size: a.batch_size,
        lr: a.lr,
        seed: a.seed,
    };
    if spec.steps == 0 {
        anyhow::bail!("--steps must be at least 1");
    }
    let stop = stop_flag()?;
    let progress = RunProgress::new(&format!("{}-{}", kind.name(), a.dataset));
    let o = train_helper(&store, &spec, &data, &out, &device, &stop, &progress)?;
    progress.finish();
    println!("{} run {}: {}", kind.name(), o.run_id, out.display());
    for (name, v) in &o.evals {
        println!("  {name:<22} {v:.4}");
    }
    Ok(if o.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Train a CLIP on noised images (GLIDE), for CLIP-guided sampling.
///
/// The image encoder sees x_t with its noise level; the text encoder reads the dataset's
/// captions in several phrasings ("a handwritten seven", "the digit 7", "7"). Records its run,
/// losses and zero-shot accuracy at four noise levels into the store.
#[derive(Parser, Debug)]
pub struct ClipArgs {
    #[command(flatten)]
    args: Args,
}

pub fn clip(a: ClipArgs) -> Result<ExitCode> {
    run(HelperKind::Clip, a.args, 2000)
}

/// Train the judge: an independent classifier whose readings of samples give prompt accuracy
/// and whose features give a Fréchet distance. Records its held-out accuracy.
#[derive(Parser, Debug)]
pub struct JudgeArgs {
    #[command(flatten)]
    args: Args,
}

pub fn judge(a: JudgeArgs) -> Result<ExitCode> {
    run(HelperKind::Judge, a.args, 1500)
}
