//! A directory of PNG or JPEG images, centre-cropped to squares and resized.

use std::path::Path;

use super::{DataSplit, ImageDataset};
use crate::error::{Error, Result};

/// Every 10th image (by sorted file name) is held out.
pub fn load_split(dir: &Path, size: usize) -> Result<DataSplit> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::data(dir, format!("cannot list the folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    if files.len() < 2 {
        return Err(Error::data(
            dir,
            format!(
                "holds {} PNG/JPEG images; at least 2 are needed",
                files.len()
            ),
        ));
    }
    let mut train = Vec::new();
    let mut held = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let img =
            image::open(f).map_err(|e| Error::data(f, format!("cannot decode image: {e}")))?;
        let side = img.width().min(img.height());
        let cropped = img.crop_imm(
            (img.width() - side) / 2,
            (img.height() - side) / 2,
            side,
            side,
        );
        let rgb = cropped
            .resize_exact(
                size as u32,
                size as u32,
                image::imageops::FilterType::Lanczos3,
            )
            .to_rgb8();
        // HWC -> CHW
        let mut chw = vec![0u8; 3 * size * size];
        for (x, y, p) in rgb.enumerate_pixels() {
            for c in 0..3 {
                chw[c * size * size + y as usize * size + x as usize] = p[c];
            }
        }
        if i % 10 == 9 { &mut held } else { &mut train }.push(chw);
    }
    let make = |imgs: Vec<Vec<u8>>| ImageDataset {
        name: "folder".into(),
        len: imgs.len(),
        pixels: imgs.concat(),
        channels: 3,
        height: size,
        width: size,
        labels: None,
        class_names: vec![],
        captions: vec![],
        attributes: vec![],
    };
    Ok(DataSplit {
        train: make(train),
        heldout: make(held),
        description: format!(
            "{} images; every 10th by file name held out, resized to {size}×{size}",
            files.len()
        ),
    })
}
