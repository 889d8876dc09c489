//! `ddlab keys`: every run key with its default.

use anyhow::Result;
use clap::Parser;
use ddlab_config::RunConfig;
use ddlab_core::nn::Preset;
use std::process::ExitCode;

/// List every key a run config, `--set` or a sweep spec accepts, with its default.
#[derive(Parser, Debug)]
pub struct Args {}

pub fn run(_: Args) -> Result<ExitCode> {
    let defaults = serde_json::to_value(RunConfig::default())?;
    println!("{:<20} default", "key");
    if let serde_json::Value::Object(m) = defaults {
        for (k, v) in m {
            let v = if v.is_null() {
                "(unset)".to_string()
            } else {
                v.to_string()
            };
            println!("{k:<20} {v}");
        }
    }
    let presets: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
    println!("\nmodel presets: {}", presets.join(", "));
    Ok(ExitCode::SUCCESS)
}
