//! `ddlab tui`: the live dashboard over the store.

use anyhow::Result;
use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

use super::DbArg;

/// Watch the runs live in the terminal: runs grouped by sweep, loss curves (by step, by noise
/// level t/T), the NLL over training, the newest sample grid, config and evals, and a grid view
/// of every run's samples as a matrix by two config keys (`i`). It only reads the database, so
/// it can watch a sweep that another process (or machine) is running. Press `?` inside for the
/// keys.
#[derive(Parser, Debug)]
pub struct Args {
    /// Show only this sweep at first (the filter `sweep=NAME`; `/` changes it).
    #[arg(long)]
    sweep: Option<String>,
    /// Seconds between reloads from the database.
    #[arg(long, default_value = "1", value_parser = parse_seconds)]
    refresh: Duration,
    /// How images are drawn: auto asks the terminal for kitty, sixel or iTerm2 graphics and
    /// falls back to half blocks (always inside tmux or screen); the others force one.
    #[arg(long, default_value = "auto", value_parser = ["auto", "kitty", "sixel", "iterm2", "halfblock"])]
    images: String,
    #[command(flatten)]
    db: DbArg,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{secs} s is out of range (0.1 to 3600)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(a: Args) -> Result<ExitCode> {
    ddlab_tui::run(
        &a.db.db,
        ddlab_tui::TuiOptions {
            refresh: a.refresh,
            sweep: a.sweep,
            images: a.images.parse().map_err(anyhow::Error::msg)?,
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
