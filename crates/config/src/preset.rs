//! The U-Net presets a run's `model` key names.

use ddlab_core::nn::UNetConfig;

/// The U-Net presets by name. `small` is the quick shapes model.
pub fn model_preset(name: &str) -> Option<UNetConfig> {
    match name {
        "small" => Some(UNetConfig {
            in_channels: 3,
            base_channels: 32,
            channel_mult: vec![1, 2],
            num_res_blocks: 1,
            attention_at: vec![2],
            attention_heads: 1,
            dropout: 0.0,
            norm_groups: 8,
            cond_dim: None,
            text: None,
        }),
        other => UNetConfig::preset(other).ok(),
    }
}

pub const MODEL_PRESETS: [&str; 4] = ["tiny", "small", "mnist", "cifar"];
