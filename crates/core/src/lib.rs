//! ddlab's diffusion core: noise schedules, the forward process, the U-Net, training, samplers,
//! the NLL bound, datasets and image grids.
//!
//! Invariants: no SQL, no terminal, no file writes (it reads data and checkpoint bytes only).
//! Every random draw comes from [`rng::Rng`] streams derived from a seed.

pub mod bench;
pub mod checkpoint;
pub mod clip;
pub mod data;
pub mod diffusion;
pub mod error;
pub mod frechet;
pub mod grid;
pub mod judge;
pub mod nll;
pub mod nn;
pub mod ops;
pub mod rng;
pub mod sampler;
pub mod schedule;
pub mod text;
pub mod train;

pub use candle_core;
pub use candle_core::{DType, Device, Tensor};
pub use error::{Error, Result};
