//! Sample grids: a batch of images in [-1, 1] laid out as one RGB picture, and its PNG bytes.

use candle_core::{DType, Tensor};
use image::{ImageBuffer, Rgb, RgbImage};

use crate::error::{Error, Result};

/// Lays out (N, C, H, W) images in [-1, 1] (C = 1 or 3) in rows of `ncols`, with a 1-pixel
/// grey gutter, each pixel repeated `scale`×`scale` times.
pub fn make_grid(images: &Tensor, ncols: usize, scale: usize) -> Result<RgbImage> {
    let (n, c, h, w) = images.dims4()?;
    if c != 1 && c != 3 {
        return Err(Error::InvalidModel(format!(
            "cannot draw images with {c} channels"
        )));
    }
    let ncols = ncols.clamp(1, n.max(1));
    let nrows = n.div_ceil(ncols);
    let scale = scale.max(1);
    let pad = 1;
    let (cell_w, cell_h) = (w * scale + pad, h * scale + pad);
    let (gw, gh) = (ncols * cell_w + pad, nrows * cell_h + pad);
    let data: Vec<f32> = images.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut img: RgbImage = ImageBuffer::from_pixel(gw as u32, gh as u32, Rgb([48, 48, 48]));
    let to_u8 = |v: f32| (((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round()) as u8;
    for k in 0..n {
        let (gx, gy) = ((k % ncols) * cell_w + pad, (k / ncols) * cell_h + pad);
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| to_u8(data[((k * c + ch) * h + y) * w + x]);
                let rgb = if c == 1 {
                    let g = px(0);
                    [g, g, g]
                } else {
                    [px(0), px(1), px(2)]
                };
                for sy in 0..scale {
                    for sx in 0..scale {
                        img.put_pixel(
                            (gx + x * scale + sx) as u32,
                            (gy + y * scale + sy) as u32,
                            Rgb(rgb),
                        );
                    }
                }
            }
        }
    }
    Ok(img)
}

/// PNG-encodes an image in memory.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::InvalidModel(format!("PNG encoding failed: {e}")))?;
    Ok(out.into_inner())
}

/// A near-square column count for `n` images.
pub fn default_columns(n: usize) -> usize {
    (n as f64).sqrt().ceil().max(1.0) as usize
}
