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
    ///
    /// On the CPU, element i keeps when word i of a ChaCha8 stream (keyed by one draw from this
    /// one) is at least ⌈p·2³²⌉, so pieces of the mask are drawn in parallel, each from its own
    /// position of the same stream, and the mask does not depend on the split.
    pub fn dropout_mask(
        &mut self,
        shape: impl Into<Shape>,
        p: f64,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let scale = (1.0 / (1.0 - p)) as f32;
        if device.is_cpu() {
            let key = self.next_u64();
            let threshold = (p * 4_294_967_296.0).ceil() as u64;
            let n = shape.elem_count();
            // SAFETY: the pieces of `par_ranges_n` cover 0..n, and each fills its whole range
            // with mask values below before `v` is read.
            let mut v = unsafe { crate::ops::cpu::output_buffer(n) };
            let out = crate::ops::cpu::SendPtr::new(&mut v);
            crate::ops::cpu::par_ranges_n(n, n.div_ceil(1 << 16), |r| {
                let mut words = ChaCha8Rng::seed_from_u64(key);
                words.set_word_pos(r.start as u128);
                // SAFETY: the pieces are disjoint ranges of `v`, which outlives the region.
                let dst = unsafe { out.slice_mut(r.start, r.len()) };
                for d in dst {
                    *d = if u64::from(words.next_u32()) >= threshold {
                        scale
                    } else {
                        0.0
                    };
                }
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(seed: u64, n: usize, p: f64) -> Vec<f32> {
        Rng::new(seed, 7)
            .dropout_mask(n, p, &Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn dropout_masks_keep_about_one_minus_p_and_do_not_depend_on_threads() {
        // Several pieces of 2^16, and a ragged last one.
        let n = 300_001;
        for p in [0.1, 0.5, 0.9] {
            let scale = (1.0 / (1.0 - p)) as f32;
            let m = mask(3, n, p);
            assert!(m.iter().all(|&v| v == 0.0 || v == scale));
            let kept = m.iter().filter(|&&v| v != 0.0).count() as f64 / n as f64;
            // The standard error is at most 0.0009.
            assert!((kept - (1.0 - p)).abs() < 0.005, "p {p}: kept {kept}");
            assert_eq!(crate::ops::cpu::with_threads(1, || mask(3, n, p)), m);
            assert_eq!(crate::ops::cpu::with_threads(5, || mask(3, n, p)), m);
            assert_ne!(mask(4, n, p), m);
            // Element i is word i of the stream, whatever the piece boundaries.
            assert_eq!(mask(3, 70_000, p), m[..70_000]);
            let mut words = ChaCha8Rng::seed_from_u64(Rng::new(3, 7).next_u64());
            let threshold = (p * 4_294_967_296.0).ceil() as u64;
            for (i, &v) in m.iter().enumerate().take(140_000) {
                assert_eq!(
                    v != 0.0,
                    u64::from(words.next_u32()) >= threshold,
                    "element {i}"
                );
            }
        }
        // Successive masks of one stream differ.
        let mut rng = Rng::new(3, 7);
        let a: Vec<f32> = rng
            .dropout_mask(1000, 0.5, &Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = rng
            .dropout_mask(1000, 0.5, &Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_ne!(a, b);
    }
}
