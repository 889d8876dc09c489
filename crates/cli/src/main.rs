//! `ddlab`: the command line. Thin glue: every command parses its flags, calls the runner, the
//! store, the dashboard or the reports, and prints a short result. A failure is one sentence on
//! stderr and a non-zero exit.

mod cmd;
mod progress;

use clap::{Parser, Subcommand};
use ddlab_config::names::terminal_safe;
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
    /// Worker threads for the CPU kernels, 1 to 1024 (default: all cores).
    #[arg(long, global = true, env = "DDLAB_THREADS", value_parser = thread_count)]
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
    Diff(cmd::diff::Args),
    Export(cmd::export::Args),
    Train(cmd::train::Args),
    TrainClip(cmd::helper_models::ClipArgs),
    TrainJudge(cmd::helper_models::JudgeArgs),
    Sample(cmd::sample::Args),
    Eval(cmd::eval::Args),
    Schedule(cmd::schedule::Args),
    Keys(cmd::keys::Args),
    Bench(cmd::bench::Args),
}

/// `--threads`: a count the thread pools can start.
fn thread_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n @ 1..=1024) => Ok(n),
        _ => Err("expected a whole number of threads from 1 to 1024".into()),
    }
}

/// The command line, or its usage error as one line (help and version print as usual).
fn parse_command_line() -> Result<Cli, ExitCode> {
    Cli::try_parse().map_err(|e| {
        if !e.use_stderr() {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("error: bad arguments").trim();
        eprintln!("{} (see --help)", terminal_safe(first));
        ExitCode::from(2)
    })
}

/// `ddlab sweep --dry-run | head` ends quietly when `head` closes the pipe, as Unix tools do,
/// instead of panicking on the failed write (Rust ignores SIGPIPE by default).
fn die_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    die_quietly_on_closed_pipe();
    retain_freed_memory();
    let cli = match parse_command_line() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    configure_threads(cli.threads);
    let result = match cli.command {
        Command::Sweep(a) => cmd::sweep::run(a),
        Command::Work(a) => cmd::sweep::work_cmd(a),
        Command::Cancel(a) => cmd::sweep::cancel_cmd(a),
        Command::Runs(a) => cmd::runs::run(a),
        Command::Tui(a) => cmd::tui::run(a),
        Command::Report(a) => cmd::report::run(a),
        Command::Diff(a) => cmd::diff::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::TrainClip(a) => cmd::helper_models::clip(a),
        Command::TrainJudge(a) => cmd::helper_models::judge(a),
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

/// An error as one line for the terminal.
fn one_sentence(e: &anyhow::Error) -> String {
    // Errors quote user text (names, paths, values): never raw to the terminal.
    terminal_safe(&ddlab_runner::error::one_line(e))
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
    let n = threads.unwrap_or_else(ddlab_runner::device::cpu_threads);
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        if threads.is_some() || std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
    }
}
