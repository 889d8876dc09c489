//! Seeded randomness that never depends on candle's device RNG (which cannot be seeded on the
//! CPU). A stream is identified by `(seed, stream)`: the trainer opens one stream per step, so a
//! resumed run draws exactly the numbers an uninterrupted one would, with no RNG state to save.

use candle_core::{Device, Shape, Tensor};
use rand::{Rng as _, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::error::Result;

pub struct Rng {
    inner: ChaCha8Rng,
}

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut inner = ChaCha8Rng::seed_from_u64(seed);
        inner.set_stream(stream);
        Self { inner }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// Uniform integer in `0..high`.
    pub fn below(&mut self, high: usize) -> usize {
        self.inner.random_range(0..high)
    }

    /// Uniform float in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.inner.random::<f64>()
    }

    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.inner.sample(StandardNormal)).collect()
    }

    /// Standard-normal tensor. On the CPU it comes from this stream; on a GPU the device's own
    /// generator is seeded from this stream first, so it is reproducible there too without
    /// moving the noise across the bus.
    pub fn randn(&mut self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        if device.is_cpu() {
            let v = self.normal_vec(shape.elem_count());
            Ok(Tensor::from_vec(v, shape, device)?)
        } else {
            device.set_seed(self.next_u64())?;
            Ok(Tensor::randn(0f32, 1f32, shape, device)?)
        }
    }

    /// Dropout keep-mask scaled by 1/(1 − p): entries are 0 or 1/(1 − p).
    pub fn dropout_mask(
        &mut self,
        shape: impl Into<Shape>,
        p: f64,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let scale = (1.0 / (1.0 - p)) as f32;
        if device.is_cpu() {
            let v: Vec<f32> = (0..shape.elem_count())
                .map(|_| {
                    if self.inner.random::<f64>() >= p {
                        scale
                    } else {
                        0.0
                    }
                })
                .collect();
            Ok(Tensor::from_vec(v, shape, device)?)
        } else {
            device.set_seed(self.next_u64())?;
            let u = Tensor::rand(0f32, 1f32, shape, device)?;
            Ok((u.ge(p)?.to_dtype(candle_core::DType::F32)? * scale as f64)?)
        }
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.inner.random_range(0..=i);
            v.swap(i, j);
        }
        v
    }
}

/// Stream ids reserved for particular uses, so that no two uses of one seed ever share numbers.
pub mod streams {
    /// Parameter initialisation.
    pub const INIT: u64 = 1 << 62;
    /// Data order: `DATA_ORDER + epoch`.
    pub const DATA_ORDER: u64 = 1 << 61;
    /// Sampling: `SAMPLING + step` of the run at which a grid is drawn.
    pub const SAMPLING: u64 = 1 << 60;
    /// NLL evaluation.
    pub const EVAL: u64 = 1 << 59;
    /// Which phrasing of each caption a training step uses, and which captions it drops
    /// (classifier-free guidance): `CAPTIONS + step`.
    pub const CAPTIONS: u64 = 1 << 58;
    /// Which phrasing describes each training image: `PHRASINGS + step`.
    pub const PHRASINGS: u64 = 1 << 57;
    /// Guided evaluation samples.
    pub const GUIDED: u64 = 1 << 56;
    /// Training steps use the plain step number as the stream.
    pub const TRAIN: u64 = 0;
}
