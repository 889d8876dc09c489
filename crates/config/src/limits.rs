//! Upper bounds on every size a run key sets, checked before anything is allocated: a typo
//! such as `T = 1000000000` is one sentence, not an out-of-memory kill. The README lists them.

use crate::error::ConfigError;
use crate::keys::RunConfig;

/// Diffusion steps T (the schedule holds a few f64 arrays of this length).
pub const MAX_T: usize = ddlab_core::schedule::MAX_STEPS;
/// Training steps.
pub const MAX_STEPS: usize = 100_000_000;
/// Images per training batch.
pub const MAX_BATCH: usize = 4096;
/// Generated `shapes` images (held in memory: 12 KB each at 32×32).
pub const MAX_SHAPES: usize = 200_000;
/// Image side in pixels.
pub const MAX_IMAGE_SIZE: usize = 256;
/// U-Net width: base channels, and the largest channel multiplier.
pub const MAX_CHANNELS: usize = 1024;
pub const MAX_CHANNEL_MULT: usize = 16;
/// U-Net depth: levels and residual blocks per level.
pub const MAX_LEVELS: usize = 8;
pub const MAX_RES_BLOCKS: usize = 16;
/// Held-out images and timesteps per image of the NLL evaluation.
pub const MAX_NLL_IMAGES: usize = 100_000;
/// Buckets of t the loss and the bound's terms are recorded in (rows per flush window).
pub const MAX_LOSS_BUCKETS: usize = 1000;
/// Runs one spec may make without `--yes` (or a larger `--max-runs`).
pub const DEFAULT_MAX_RUNS: usize = 10_000;
/// Runs one spec may make at all.
pub const HARD_MAX_RUNS: usize = 1_000_000;

fn at_most(key: &str, value: usize, max: usize) -> Result<(), ConfigError> {
    if value > max {
        return Err(ConfigError::Invalid(format!(
            "{key} = {value} is too large (at most {max})"
        )));
    }
    Ok(())
}

impl RunConfig {
    /// Every size key within its bound.
    pub(crate) fn check_sizes(&self) -> Result<(), ConfigError> {
        at_most("T", self.t, MAX_T)?;
        at_most("steps", self.steps, MAX_STEPS)?;
        at_most("batch_size", self.batch_size, MAX_BATCH)?;
        at_most("shapes_count", self.shapes_count, MAX_SHAPES)?;
        at_most("image_size", self.image_size.unwrap_or(0), MAX_IMAGE_SIZE)?;
        at_most(
            "base_channels",
            self.base_channels.unwrap_or(0),
            MAX_CHANNELS,
        )?;
        at_most(
            "num_res_blocks",
            self.num_res_blocks.unwrap_or(0),
            MAX_RES_BLOCKS,
        )?;
        if let Some(mult) = &self.channel_mult {
            at_most("the number of channel_mult levels", mult.len(), MAX_LEVELS)?;
            let widest = mult.iter().copied().max().unwrap_or(0);
            at_most("channel_mult's largest entry", widest, MAX_CHANNEL_MULT)?;
        }
        at_most("nll_images", self.nll_images, MAX_NLL_IMAGES)?;
        at_most("nll_timesteps", self.nll_timesteps, MAX_T)?;
        at_most("eval_every", self.eval_every, MAX_STEPS)?;
        // More buckets than timesteps is not an error: they are used as min(loss_buckets, T).
        if self.loss_buckets == 0 || self.loss_buckets > MAX_LOSS_BUCKETS {
            return Err(ConfigError::Invalid(format!(
                "loss_buckets = {} must be between 1 and {MAX_LOSS_BUCKETS}",
                self.loss_buckets
            )));
        }
        Ok(())
    }
}
