//! Every key a run understands, with its default and its role, declared in one place.
//!
//! A key's role says what it decides: the trained weights ([`Role::Training`]), how samples are
//! drawn from them ([`Role::Sampling`]), what is measured afterwards ([`Role::Evaluation`]), or
//! only how the run is kept ([`Role::Bookkeeping`]). Run identity and the sharing of one
//! training between runs are derived from the roles, so a new key cannot silently join the
//! training identity: it has to be declared with one.

use ddlab_core::data::DatasetKind;
use ddlab_core::diffusion::Objective;
use ddlab_core::sampler::{DdpmVariance, SamplerKind, TimestepSpacing};
use ddlab_core::schedule::ScheduleKind;
use ddlab_core::train::LrSchedule;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::guidance::Guidance;

/// What a key decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The trained weights: data, model, diffusion, optimisation.
    Training,
    /// How samples are drawn from the weights: sampler, steps, guidance.
    Sampling,
    /// What is measured: NLL, judge metrics.
    Evaluation,
    /// How the run is kept: checkpoint and logging cadence.
    Bookkeeping,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Training => "training",
            Role::Sampling => "sampling",
            Role::Evaluation => "evaluation",
            Role::Bookkeeping => "bookkeeping",
        }
    }
}

/// The serialised name of a key: its field name unless renamed.
macro_rules! key_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $name:literal) => {
        $name
    };
}

/// Declares [`RunConfig`]: each key with its role, an optional serialised name, its type and
/// its default. Generates the struct, `Default`, the role table and [`RunConfig::keeping`].
macro_rules! run_keys {
    ($(
        $(#[$meta:meta])*
        [$role:ident] $field:ident $(as $name:literal)? : $ty:ty = $default:expr
    ),* $(,)?) => {
        /// Every key a run understands. `Default` gives a small, fast run on the built-in shapes.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct RunConfig {
            $(
                $(#[$meta])*
                $(#[serde(rename = $name)])?
                pub $field: $ty,
            )*
        }

        impl Default for RunConfig {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl RunConfig {
            /// Each key's serialised name and role, in declaration order.
            pub const ROLES: &'static [(&'static str, Role)] =
                &[$((key_name!($field $(, $name)?), Role::$role),)*];

            /// This config with every key whose role `keep` rejects put back to its default.
            pub fn keeping(&self, keep: impl Fn(Role) -> bool) -> Self {
                let defaults = Self::default();
                Self {
                    $($field: if keep(Role::$role) {
                        self.$field.clone()
                    } else {
                        defaults.$field
                    },)*
                }
            }
        }
    };
}

run_keys! {
    // --- data
    /// shapes | mnist | fashion-mnist | cifar10 | folder
    [Training] dataset: DatasetKind = DatasetKind::Shapes,
    /// Where the dataset's files are (not used by `shapes`).
    [Training] data_dir: Option<PathBuf> = None,
    /// Side length: 16 or 32 for shapes; the resize target for folders.
    [Training] image_size: Option<usize> = None,
    /// Generated training images for `shapes`.
    [Training] shapes_count: usize = 20_000,

    // --- model
    /// U-Net preset: tiny | small | mnist | cifar.
    [Training] model: String = "small".into(),
    [Training] base_channels: Option<usize> = None,
    [Training] channel_mult: Option<Vec<usize>> = None,
    [Training] num_res_blocks: Option<usize> = None,
    [Training] attention_at: Option<Vec<usize>> = None,
    [Training] dropout: Option<f64> = None,
    [Training] norm_groups: Option<usize> = None,

    // --- diffusion
    /// linear | cosine | sigmoid | geodiff-sigmoid | quadratic | scaled-linear
    [Training] schedule: ScheduleKind = ScheduleKind::Linear,
    /// Diffusion steps T.
    #[serde(alias = "timesteps")]
    [Training] t as "T": usize = 1000,
    [Training] beta_start: Option<f64> = None,
    [Training] beta_end: Option<f64> = None,
    [Training] zero_terminal_snr: bool = false,
    /// eps | x0 | v
    [Training] objective: Objective = Objective::Eps,
    [Training] min_snr_gamma: Option<f64> = None,
    /// λ of L_hybrid = L_simple + λ·L_vlb when variance = "learned" (Nichol & Dhariwal 2021).
    [Training] hybrid_lambda: f64 = 0.001,

    // --- optimisation
    [Training] steps: usize = 2000,
    [Training] batch_size: usize = 64,
    [Training] lr: f64 = 2e-4,
    [Training] lr_schedule: LrSchedule = LrSchedule::Constant,
    [Training] warmup_steps: usize = 100,
    [Training] weight_decay: f64 = 0.0,
    [Training] grad_clip: f64 = 1.0,
    [Training] ema_decay: f64 = 0.999,
    [Training] seed: u64 = 0,

    // --- sampling
    /// ddpm | ddim | dpmpp2m
    [Sampling] sampler: SamplerKind = SamplerKind::Ddim,
    /// Sampling steps S ≤ T (default: T for DDPM, min(T, 50) for DDIM, min(T, 20) for
    /// DPM-Solver++).
    [Sampling] sample_steps: Option<usize> = None,
    /// linspace | leading | trailing
    [Sampling] spacing: TimestepSpacing = TimestepSpacing::Trailing,
    /// DDIM η.
    [Sampling] eta: f64 = 0.0,
    /// DDPM σ²: beta-tilde | beta | learned. `learned` also decides the training: the U-Net
    /// outputs Σ_θ too and trains on L_hybrid (see `RunConfig::learns_variance`).
    [Sampling] variance: DdpmVariance = DdpmVariance::BetaTilde,
    [Sampling] clip_x0: bool = true,
    /// Images per sample grid.
    [Sampling] sample_count: usize = 36,

    // --- text conditioning and guidance
    /// Train the U-Net on captions (with its own caption encoder) for classifier-free
    /// guidance; mnist and shapes only.
    [Training] captions: bool = false,
    /// Probability that a training caption is replaced by ∅.
    [Training] caption_dropout: f64 = 0.1,
    /// Guided evaluation at the end of the run: none | clip | cfg.
    [Sampling] guidance: Guidance = Guidance::None,
    /// CLIP scale s or classifier-free weight w (0: unguided; cfg 1: the conditional model).
    [Sampling] guidance_scale: f64 = 0.0,
    /// The prompt of every guided sample; `*` asks for every class in turn.
    [Sampling] prompt: String = "*".into(),
    /// A noised CLIP from `ddlab train-clip` (for guidance = "clip").
    [Sampling] clip_checkpoint: Option<PathBuf> = None,
    /// A judge from `ddlab train-judge`: records prompt accuracy and the Fréchet distance of
    /// its features (held-out data against samples).
    [Evaluation] judge_checkpoint: Option<PathBuf> = None,
    /// Samples drawn for the guided evaluation.
    [Evaluation] guided_count: usize = 100,
    /// Draw a grid every N steps (0: only at the end).
    [Sampling] sample_every: usize = 0,

    // --- bookkeeping
    /// Write a checkpoint every N steps (and always at the end and on interruption).
    [Bookkeeping] checkpoint_every: usize = 250,
    /// Record training metrics every N steps.
    [Bookkeeping] log_every: usize = 1,
    /// Equal buckets of t ∈ [0, T) the training loss (per flush window) and the NLL bound's
    /// terms are recorded in. Bookkeeping: the per-example losses are computed anyway, so the
    /// weights do not depend on it.
    [Bookkeeping] loss_buckets: usize = 10,

    // --- evaluation
    /// Compute the NLL bound (bits/dim) on held-out images at the end.
    [Evaluation] eval_nll: bool = true,
    [Evaluation] nll_images: usize = 256,
    /// Timesteps per image for the Monte-Carlo bound (≥ T−1: exact sum).
    [Evaluation] nll_timesteps: usize = 50,
    /// Evaluate the NLL (and the judge's metrics) on the EMA weights every N training steps,
    /// recorded with the step (0: only at the end). Evaluation: it reads the EMA weights and
    /// draws from its own random streams, so the trained weights do not depend on it.
    [Evaluation] eval_every: usize = 0,
}

impl RunConfig {
    /// Every key's name, sorted (for error messages, suggestions and `ddlab keys`).
    pub fn keys() -> Vec<String> {
        let mut keys: Vec<String> = Self::ROLES.iter().map(|(k, _)| k.to_string()).collect();
        keys.sort();
        keys
    }

    /// The role of a key by its serialised name (`T`, not `t`).
    pub fn role_of(key: &str) -> Option<Role> {
        Self::ROLES.iter().find(|(k, _)| *k == key).map(|(_, r)| *r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_serialised_key_has_a_role() {
        let value = serde_json::to_value(RunConfig::default()).unwrap();
        let mut serialised: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        serialised.sort();
        assert_eq!(serialised, RunConfig::keys());
        assert_eq!(RunConfig::role_of("T"), Some(Role::Training));
        assert_eq!(RunConfig::role_of("eta"), Some(Role::Sampling));
        assert_eq!(RunConfig::role_of("t"), None);
    }

    #[test]
    fn keeping_resets_only_the_rejected_roles() {
        let c = RunConfig {
            t: 100,
            eta: 1.0,
            nll_images: 8,
            log_every: 5,
            ..RunConfig::default()
        };
        let trained = c.keeping(|r| r == Role::Training);
        assert_eq!(trained.t, 100);
        assert_eq!(trained.eta, 0.0);
        assert_eq!(trained.nll_images, 256);
        assert_eq!(trained.log_every, 1);
    }
}
