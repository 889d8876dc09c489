//! `ddlab schedule`: a noise schedule as numbers.

use anyhow::Result;
use clap::Parser;
use ddlab_core::schedule::{ScheduleConfig, ScheduleKind};
use std::io::Write;
use std::process::ExitCode;

/// Print a noise schedule, one row per t = 1..T: t, beta, alpha_bar, snr, posterior_variance
/// (full f64 precision).
#[derive(Parser, Debug)]
pub struct Args {
    /// linear | cosine | sigmoid | geodiff-sigmoid | quadratic | scaled-linear
    #[arg(long)]
    kind: ScheduleKind,
    /// Number of diffusion steps T (at most 100,000).
    #[arg(long, short = 'T', alias = "T")]
    steps: usize,
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Rescale to zero terminal SNR (Lin et al. 2023).
    #[arg(long)]
    zero_terminal_snr: bool,
    /// Override the schedule's β range (linear, quadratic, scaled-linear, geodiff-sigmoid).
    #[arg(long)]
    beta_start: Option<f64>,
    #[arg(long)]
    beta_end: Option<f64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Format {
    Csv,
    Json,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let cfg = ScheduleConfig {
        kind: a.kind,
        steps: a.steps,
        beta_start: a.beta_start,
        beta_end: a.beta_end,
        zero_terminal_snr: a.zero_terminal_snr,
        ..ScheduleConfig::default()
    };
    let s = cfg.build()?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match a.format {
        Format::Csv => {
            writeln!(out, "t,beta,alpha_bar,snr,posterior_variance")?;
            for r in s.rows() {
                // `{:?}` prints the shortest string that reads back to the same f64.
                writeln!(
                    out,
                    "{},{:?},{:?},{:?},{:?}",
                    r.t, r.beta, r.alpha_bar, r.snr, r.posterior_variance
                )?;
            }
        }
        Format::Json => writeln!(out, "{}", serde_json::to_string(&s.rows())?)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
