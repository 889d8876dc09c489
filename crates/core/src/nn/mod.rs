//! Neural-network building blocks and the U-Net.

pub mod layers;
pub mod params;
pub mod preset;
pub mod text_encoder;
pub mod unet;

pub use params::{Init, ParamBuilder, ParamStore};
pub use preset::{Preset, UnknownPreset};
pub use unet::{UNet, UNetConfig};
