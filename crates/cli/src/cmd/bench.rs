//! `ddlab bench`: how fast the U-Net presets train and sample on this machine.

use anyhow::{Result, bail};
use clap::Parser;
use ddlab_core::bench::{BenchConfig, BenchGuidance, BenchReport, run as run_bench};
use ddlab_core::nn::Preset;
use ddlab_runner::device::{DeviceRequest, device_label};
use std::process::ExitCode;

/// Time the U-Net on random data: the median training step (forward, backward and optimiser),
/// one sampling step, images per second, the achieved GFLOP/s (FLOPs counted from the layer
/// shapes) and the peak memory of the process.
#[derive(Parser, Debug)]
#[command(after_help = "Examples:\n  \
    ddlab bench                                  # the mnist preset, batch 64\n  \
    ddlab bench --preset cifar --batch 32 --json\n  \
    ddlab bench --guidance cfg                   # also a classifier-free-guided sampling step\n  \
    ddlab --threads 1 bench --preset tiny\n  \
    ddlab bench --store 100000000 --runs 1000 --keep   # a 10^8-row store: runs, dashboard, report\n\n\
    Record results, with the machine, in docs/BENCHMARKS.md.")]
pub struct Args {
    /// U-Net preset: tiny | small | mnist | cifar (small is the quickstart's shapes model).
    #[arg(long, default_value = "mnist")]
    preset: String,
    /// Images per training and sampling step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Side of the square images (default: the preset's own: tiny and small 16, mnist 28,
    /// cifar 32).
    #[arg(long)]
    image_size: Option<usize>,
    /// Image channels (default: the preset's own: 1 for mnist, else 3).
    #[arg(long)]
    channels: Option<usize>,
    /// Untimed steps first (allocator and cache warm-up).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps; every time reported is their median.
    #[arg(long, default_value_t = 5)]
    iters: usize,
    /// cpu | cuda | cuda:N | auto.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also time a guided sampling step: clip (GLIDE's CLIP guidance, a CLIP forward and
    /// backward per step) or cfg (classifier-free guidance: the caption-conditioned U-Net on a
    /// doubled batch).
    #[arg(long, default_value = "none")]
    guidance: BenchGuidance,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Instead of the U-Net: build a store of ROWS synthetic loss rows (at most 10^9) and time
    /// `ddlab runs`, the dashboard's first paint and refresh, `ddlab report` and recording.
    #[arg(long, value_name = "ROWS")]
    store: Option<u64>,
    /// With --store: runs the rows are spread over.
    #[arg(long, default_value_t = 1000, requires = "store")]
    runs: usize,
    /// With --store: the database (default: a SQLite file under runs/, removed afterwards
    /// unless --keep).
    #[arg(long, requires = "store")]
    db: Option<String>,
    /// With --store: keep the database, and reuse it when the sizes match.
    #[arg(long, requires = "store")]
    keep: bool,
    /// With --store: alternating rounds of the measurements.
    #[arg(long, default_value_t = 3, requires = "store")]
    rounds: usize,
    /// With --store: the training step (ms) whose recording cost is reported (the `tiny`
    /// preset's on two cores: the most rows per second).
    #[arg(long, default_value_t = 42.0, requires = "store")]
    step_ms: f64,
}

/// Peak resident set size of this process in MB (Linux's VmHWM), if known.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0 / 1e6)
}

/// The CPU model, for the record that goes beside the numbers.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

pub fn run(a: Args) -> Result<ExitCode> {
    if let Some(rows) = a.store {
        super::bench_store::run(super::bench_store::StoreBench {
            rows,
            runs: a.runs,
            db: a.db,
            keep: a.keep,
            rounds: a.rounds,
            step_ms: a.step_ms,
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if a.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let preset: Preset = a.preset.parse()?;
    let request: DeviceRequest = a.device.parse().map_err(anyhow::Error::msg)?;
    let devices = request.resolve()?;
    if let Some(note) = &devices.note {
        eprintln!("{note}");
    }
    let device = devices.devices[0].clone();
    let mut cfg = BenchConfig::new(preset.name(), a.batch, device.clone());
    cfg.model = Some(preset.config());
    cfg.image_size = a.image_size;
    cfg.channels = a.channels;
    cfg.warmup = a.warmup;
    cfg.iters = a.iters;
    cfg.guidance = a.guidance;
    if !a.json {
        eprintln!(
            "benchmarking the {} preset, batch {}, on {} ({} warm-up + {} timed steps each)…",
            a.preset,
            a.batch,
            device_label(&device),
            a.warmup,
            a.iters
        );
    }
    let report = run_bench(&cfg)?;
    let rss = peak_rss_mb();
    let cpu = cpu_model();
    if a.json {
        let mut json = serde_json::to_value(&report)?;
        json["device"] = device_label(&device).into();
        json["peak_rss_mb"] = rss.into();
        json["cpu"] = cpu.into();
        println!("{json}");
    } else {
        print_table(&report, &device_label(&device), rss, cpu.as_deref());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &BenchReport, device: &str, rss: Option<f64>, cpu: Option<&str>) {
    let ms = |s: f64| format!("{:.1} ms", s * 1e3);
    println!(
        "{} preset: {} parameters, batch {} of {}×{}×{}, {} on {} thread(s){}",
        r.preset,
        r.params,
        r.batch,
        r.channels,
        r.image_size,
        r.image_size,
        device,
        r.threads,
        cpu.map(|c| format!(" ({c})")).unwrap_or_default()
    );
    println!("  training step     {:>10}", ms(r.train_step_s));
    println!("    forward         {:>10}", ms(r.forward_s));
    println!("    backward        {:>10}", ms(r.backward_s));
    println!("    optimiser       {:>10}", ms(r.optimizer_s));
    println!("  images/s          {:>10.1}", r.images_per_s);
    println!(
        "  GFLOP/s           {:>10.1}   ({:.1} GFLOP per step)",
        r.gflops_per_s,
        r.flops_per_step / 1e9
    );
    println!("  sampling step     {:>10}", ms(r.sample_step_s));
    if let Some(g) = r.guided_sample_step_s {
        let name = match r.guidance {
            BenchGuidance::Clip => "clip",
            BenchGuidance::Cfg => "cfg",
            BenchGuidance::None => "none",
        };
        println!(
            "  guided ({name:<4})     {:>10}   ({:.2}× the unguided step)",
            ms(g),
            g / r.sample_step_s
        );
    }
    if let Some(mb) = rss {
        println!("  peak memory       {mb:>7.0} MB");
    }
}
