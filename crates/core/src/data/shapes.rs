//! The built-in procedural dataset: one coloured circle, square or triangle per image on a
//! black background, at one of nine positions and two sizes, anti-aliased by 4×4 supersampling,
//! each with a caption such as "a red circle in the top left". Fully determined by its seed.

use super::ImageDataset;
use crate::rng::Rng;

pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
pub const COLOURS: [(&str, [u8; 3]); 6] = [
    ("red", [220, 40, 40]),
    ("green", [40, 190, 60]),
    ("blue", [60, 100, 240]),
    ("yellow", [235, 215, 40]),
    ("magenta", [215, 50, 205]),
    ("cyan", [40, 205, 215]),
];
/// Row-major 3×3 grid of positions.
pub const POSITIONS: [&str; 9] = [
    "top left",
    "top middle",
    "top right",
    "middle left",
    "center",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
];

/// The attributes of one generated image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeSpec {
    pub shape: usize,
    pub colour: usize,
    pub position: usize,
    pub large: bool,
}

impl ShapeSpec {
    pub fn caption(&self) -> String {
        format!(
            "a {} {} in the {}",
            COLOURS[self.colour].0, SHAPES[self.shape], POSITIONS[self.position]
        )
    }

    /// Class label: shape and colour (18 classes); position is in the caption only.
    pub fn label(&self) -> u32 {
        (self.colour * SHAPES.len() + self.shape) as u32
    }
}

pub fn class_names() -> Vec<String> {
    COLOURS
        .iter()
        .flat_map(|(c, _)| SHAPES.iter().map(move |s| format!("{c} {s}")))
        .collect()
}

/// Renders one image as CHW bytes.
pub fn render(spec: &ShapeSpec, size: usize, jitter: (f64, f64)) -> Vec<u8> {
    let cell = size as f64 / 3.0;
    let (row, col) = (spec.position / 3, spec.position % 3);
    let cx = (col as f64 + 0.5) * cell + jitter.0 * cell * 0.12;
    let cy = (row as f64 + 0.5) * cell + jitter.1 * cell * 0.12;
    let r = cell * if spec.large { 0.46 } else { 0.32 };
    let inside = |x: f64, y: f64| -> bool {
        let (dx, dy) = (x - cx, y - cy);
        match spec.shape {
            0 => dx * dx + dy * dy <= r * r,
            1 => dx.abs() <= r * 0.86 && dy.abs() <= r * 0.86,
            _ => {
                // Upward equilateral triangle inscribed in the circle of radius r.
                let top = (cx, cy - r);
                let left = (cx - r * 0.866, cy + r * 0.5);
                let right = (cx + r * 0.866, cy + r * 0.5);
                let edge = |a: (f64, f64), b: (f64, f64)| {
                    (b.0 - a.0) * (y - a.1) - (b.1 - a.1) * (x - a.0)
                };
                let (e1, e2, e3) = (edge(top, right), edge(right, left), edge(left, top));
                (e1 >= 0.0 && e2 >= 0.0 && e3 >= 0.0) || (e1 <= 0.0 && e2 <= 0.0 && e3 <= 0.0)
            }
        }
    };
    let colour = COLOURS[spec.colour].1;
    let mut out = vec![0u8; 3 * size * size];
    const SS: usize = 4;
    for py in 0..size {
        for px in 0..size {
            let mut hits = 0;
            for sy in 0..SS {
                for sx in 0..SS {
                    let x = px as f64 + (sx as f64 + 0.5) / SS as f64;
                    let y = py as f64 + (sy as f64 + 0.5) / SS as f64;
                    hits += inside(x, y) as usize;
                }
            }
            let cover = hits as f64 / (SS * SS) as f64;
            for c in 0..3 {
                out[c * size * size + py * size + px] = (colour[c] as f64 * cover).round() as u8;
            }
        }
    }
    out
}

/// `count` images of side `size` from `(seed, stream)`; different streams are independent sets.
pub fn generate(count: usize, size: usize, seed: u64, stream: u64) -> ImageDataset {
    let mut rng = Rng::new(seed, crate::rng::streams::DATA_ORDER / 2 + stream);
    let mut pixels = Vec::with_capacity(count * 3 * size * size);
    let mut labels = Vec::with_capacity(count);
    let mut captions = Vec::with_capacity(count);
    let mut attributes = Vec::with_capacity(count);
    for _ in 0..count {
        let spec = ShapeSpec {
            shape: rng.below(SHAPES.len()),
            colour: rng.below(COLOURS.len()),
            position: rng.below(POSITIONS.len()),
            large: rng.below(2) == 1,
        };
        let jitter = (rng.uniform() * 2.0 - 1.0, rng.uniform() * 2.0 - 1.0);
        pixels.extend(render(&spec, size, jitter));
        labels.push(spec.label());
        captions.push(spec.caption());
        attributes.push([spec.shape as u8, spec.colour as u8, spec.position as u8]);
    }
    ImageDataset {
        name: "shapes".into(),
        pixels,
        len: count,
        channels: 3,
        height: size,
        width: size,
        labels: Some(labels),
        class_names: class_names(),
        captions,
        attributes,
    }
}
