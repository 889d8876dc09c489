//! `ddlab`: the command line. Thin glue: every command parses its flags, calls the runner, the
//! store, the dashboard or the reports, and prints a short result. A failure is one sentence on
//! stderr and a non-zero exit.

mod cmd;
mod progress;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ddlab",
    version,
    about = "Run, track and compare denoising-diffusion (DDPM) experiments",
    long_about = "Run, track and compare denoising-diffusion (DDPM) experiments.\n\n\
        Train U-Nets under different noise schedules, numbers of steps T, samplers and guidance; \
        every loss, sample grid and metric lands in a SQL database (SQLite by default, \
        PostgreSQL for many machines) that the dashboard and the reports read.",
    after_help = "Start with `ddlab sweep` (the quickstart sweep on the built-in shapes data), then \
        `ddlab runs`, `ddlab tui` and `ddlab report --sweep quickstart`."
)]
struct Cli {
    /// Worker threads for the CPU kernels (default: all cores).
    #[arg(long, global = true, env = "DDLAB_THREADS")]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Sweep(cmd::sweep::Args),
    Work(cmd::sweep::WorkArgs),
    Cancel(cmd::sweep::CancelArgs),
    Runs(cmd::runs::Args),
    Tui(cmd::tui::Args),
    Report(cmd::report::Args),
    Train(cmd::train::Args),
    TrainClip(cmd::helpers::ClipArgs),
    TrainJudge(cmd::helpers::JudgeArgs),
    Sample(cmd::sample::Args),
    Eval(cmd::eval::Args),
    Schedule(cmd::schedule::Args),
    Keys(cmd::keys::Args),
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    retain_freed_memory();
    let cli = Cli::parse();
    configure_threads(cli.threads);
    let result = match cli.command {
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Work(a) => cmd::sweep::work_cmd(a),
        Command::Cancel(a) => cmd::sweep::cancel_cmd(a),
        Command::Runs(a) => cmd::runs::run(a),
        Command::Tui(a) => cmd::tui::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::TrainClip(a) => cmd::helpers::clip(a),
        Command::TrainJudge(a) => cmd::helpers::judge(a),
        Command::Sample(a) => cmd::sample::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Schedule(a) => cmd::schedule::run(a),
        Command::Keys(a) => cmd::keys::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_sentence(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error chain as one line: "context: cause: cause". Only the first line of each message
/// is kept (candle appends a backtrace on the following lines when RUST_BACKTRACE is set).
fn one_sentence(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = vec![];
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or("").trim().to_string();
        // A context that only repeats its cause adds nothing.
        if !first.is_empty() && !parts.last().is_some_and(|p| p.contains(&first)) {
            parts.push(first);
        }
    }
    parts.join(": ")
}

/// Keeps freed memory in glibc's heap rather than handing it back to the kernel. A training
/// step allocates and frees the same activation-sized buffers (up to ~20 MB) every time;
/// served by fresh mmaps, each costs page faults and the kernel's zeroing of every page,
/// which measured 5-10% of an mnist training step.
fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: plain calls into glibc's allocator settings, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

/// Fixes the CPU thread count once, before any pool starts. The kernels run on candle's barrier
/// pool (`CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`) and the matrix products inside candle
/// on rayon's (`RAYON_NUM_THREADS`, which candle reads on every product and otherwise re-reads
/// /proc/cpuinfo each time), so both are set to the same count (`--threads` overrides a
/// `CANDLE_NUM_THREADS` already set, nothing else does).
fn configure_threads(threads: Option<usize>) {
    let n = threads
        .or_else(|| {
            std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        if threads.is_some() || std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
    }
}
