//! The geometry of one convolution: shapes in and out, the column matrix's dimensions, and
//! the dual convolution whose output is the input gradient.

use candle_core::{Shape, bail};

/// Geometry of one convolution. `h × w` is the stored input; with `up = 2` the kernel sees it
/// nearest-upsampled to `2h × 2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub up: usize,
}

impl ConvGeom {
    /// Input height as the kernel sees it (after upsampling).
    pub(super) fn hl(&self) -> usize {
        self.h * self.up
    }
    pub(super) fn wl(&self) -> usize {
        self.w * self.up
    }
    pub fn h_out(&self) -> usize {
        (self.hl() + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn w_out(&self) -> usize {
        (self.wl() + 2 * self.pad - self.k) / self.stride + 1
    }
    /// Rows of the column matrix: C_in·k·k.
    pub(super) fn kdim(&self) -> usize {
        self.c_in * self.k * self.k
    }
    /// Columns of the column matrix: H_out·W_out.
    pub(super) fn ndim(&self) -> usize {
        self.h_out() * self.w_out()
    }
    pub(super) fn img_in(&self) -> usize {
        self.c_in * self.h * self.w
    }
    pub(super) fn img_out(&self) -> usize {
        self.c_out * self.ndim()
    }
    /// A 1×1, stride-1, unpadded conv needs no unfolding: the image is its own column matrix.
    pub(super) fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0 && self.up == 1
    }
    /// Whether the input gradient can be computed as a convolution of dy with the flipped
    /// kernel (stride 1 and a padding the dual convolution can express).
    pub(super) fn dual_input_grad(&self) -> bool {
        self.stride == 1 && self.pad < self.k
    }
    /// The convolution of dy (C_out channels, H_out × W_out) whose output is the input gradient
    /// at the upsampled resolution.
    pub(super) fn dual(&self) -> ConvGeom {
        ConvGeom {
            batch: self.batch,
            c_in: self.c_out,
            h: self.h_out(),
            w: self.w_out(),
            c_out: self.c_in,
            k: self.k,
            stride: 1,
            pad: self.k - 1 - self.pad,
            up: 1,
        }
    }
    /// FLOPs of the forward pass (one multiply-add = 2).
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.c_out * self.kdim() * self.ndim()) as f64
    }
    /// The same convolution on an input already upsampled.
    pub(super) fn materialised(&self) -> ConvGeom {
        ConvGeom {
            h: self.hl(),
            w: self.wl(),
            up: 1,
            ..*self
        }
    }
}

/// The geometry of a convolution of `x` by kernel `w`, checked.
pub(super) fn geom(
    x: &Shape,
    w: &Shape,
    stride: usize,
    pad: usize,
    up: usize,
) -> candle_core::Result<ConvGeom> {
    let (b, c_in, h, wd) = x.dims4()?;
    let (c_out, c_in2, k, k2) = w.dims4()?;
    if c_in != c_in2 || k != k2 {
        bail!("conv2d: input has {c_in} channels, kernel expects {c_in2} (k {k}×{k2})");
    }
    if up == 0 || stride == 0 {
        bail!("conv2d: stride and upsampling factor must be positive");
    }
    if h * up + 2 * pad < k || wd * up + 2 * pad < k {
        bail!("conv2d: kernel {k} larger than padded input {h}×{wd}");
    }
    Ok(ConvGeom {
        batch: b,
        c_in,
        h,
        w: wd,
        c_out,
        k,
        stride,
        pad,
        up,
    })
}
