//! The first tiles of a sample grid. Every grid in the store is laid out the same way
//! (`ddlab_core::grid::make_grid` with `default_columns(count)`): ⌈√count⌉ columns of equal
//! tiles with a one-pixel grey gutter around each. All runs draw their grids from the same
//! noise, so tile i of one run is comparable with tile i of another; showing only the first
//! k × k tiles keeps them large enough to read when many grids share a screen.

use image::{Rgb, RgbImage};

/// The gutter's colour (core's `make_grid`).
const GUTTER: Rgb<u8> = Rgb([48, 48, 48]);

/// Where a grid's tiles are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridLayout {
    pub columns: u32,
    pub rows: u32,
    /// Tile plus one gutter, in pixels.
    pub pitch_x: u32,
    pub pitch_y: u32,
}

impl GridLayout {
    /// The layout of a grid of `count` images, when `img` has it (its size and gutter agree);
    /// `None` for anything else, which is then shown whole.
    pub fn of(img: &RgbImage, count: i64) -> Option<GridLayout> {
        if count < 1 {
            return None;
        }
        let n = count as u32;
        let columns = (n as f64).sqrt().ceil() as u32;
        let rows = n.div_ceil(columns);
        let (w, h) = img.dimensions();
        if w < 3 || h < 3 || !(w - 1).is_multiple_of(columns) || !(h - 1).is_multiple_of(rows) {
            return None;
        }
        let (pitch_x, pitch_y) = ((w - 1) / columns, (h - 1) / rows);
        let gutter_ok = (0..h)
            .step_by(pitch_y as usize)
            .all(|y| *img.get_pixel(pitch_x / 2, y) == GUTTER && *img.get_pixel(0, y) == GUTTER)
            && (0..w)
                .step_by(pitch_x as usize)
                .all(|x| *img.get_pixel(x, pitch_y / 2) == GUTTER);
        (pitch_x >= 2 && pitch_y >= 2 && gutter_ok).then_some(GridLayout {
            columns,
            rows,
            pitch_x,
            pitch_y,
        })
    }

    /// Tiles per side that fit: at most the grid's own columns and rows.
    pub fn max_side(&self) -> u32 {
        self.columns.min(self.rows).max(1)
    }
}

/// The top-left `side` × `side` tiles of a grid with their gutters (the whole grid when its
/// layout is not recognised or `side` covers it).
pub fn first_tiles(img: &RgbImage, count: i64, side: u32) -> RgbImage {
    let Some(layout) = GridLayout::of(img, count) else {
        return img.clone();
    };
    let side = side.clamp(1, layout.max_side());
    if side >= layout.columns && side >= layout.rows {
        return img.clone();
    }
    let w = side * layout.pitch_x + 1;
    let h = side * layout.pitch_y + 1;
    image::imageops::crop_imm(img, 0, 0, w, h).to_image()
}

/// The most tiles per side whose tiles still get `min_px` pixels each in an area of
/// `width_px` × `height_px`, for a grid with `max_side` tiles per side.
pub fn auto_side(width_px: u32, height_px: u32, min_px: u32, max_side: u32) -> u32 {
    (width_px.min(height_px) / min_px.max(1)).clamp(1, max_side.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid as core's `make_grid` lays one out: `count` tiles of `tile` pixels, tile k
    /// filled with grey level 100 + k.
    fn grid(count: u32, tile: u32) -> RgbImage {
        let cols = (count as f64).sqrt().ceil() as u32;
        let rows = count.div_ceil(cols);
        let pitch = tile + 1;
        let mut img = RgbImage::from_pixel(cols * pitch + 1, rows * pitch + 1, GUTTER);
        for k in 0..count {
            let (x0, y0) = ((k % cols) * pitch + 1, (k / cols) * pitch + 1);
            for y in 0..tile {
                for x in 0..tile {
                    img.put_pixel(x0 + x, y0 + y, Rgb([100 + k as u8; 3]));
                }
            }
        }
        img
    }

    #[test]
    fn layout_of_core_grids() {
        let l = GridLayout::of(&grid(16, 8), 16).unwrap();
        assert_eq!((l.columns, l.rows, l.pitch_x, l.pitch_y), (4, 4, 9, 9));
        // 10 images: 4 columns, 3 rows, the last row short.
        let l = GridLayout::of(&grid(10, 5), 10).unwrap();
        assert_eq!((l.columns, l.rows), (4, 3));
        assert_eq!(l.max_side(), 3);
        // Another count than the grid's, or no gutter: not recognised.
        assert_eq!(GridLayout::of(&grid(16, 8), 9), None);
        assert_eq!(
            GridLayout::of(&RgbImage::from_pixel(37, 37, Rgb([0; 3])), 16),
            None
        );
        assert_eq!(GridLayout::of(&grid(16, 8), 0), None);
    }

    #[test]
    fn first_tiles_crops_with_gutters() {
        let g = grid(16, 8);
        let two = first_tiles(&g, 16, 2);
        assert_eq!(two.dimensions(), (19, 19));
        // Tiles 0, 1 on the first row, 4, 5 on the second.
        assert_eq!(two.get_pixel(1, 1).0, [100; 3]);
        assert_eq!(two.get_pixel(10, 1).0, [101; 3]);
        assert_eq!(two.get_pixel(10, 10).0, [105; 3]);
        assert_eq!(two.get_pixel(18, 18).0, GUTTER.0);
        assert_eq!(first_tiles(&g, 16, 4), g);
        assert_eq!(first_tiles(&g, 16, 9), g);
        assert_eq!(first_tiles(&g, 16, 0).dimensions(), (10, 10));
        // Unrecognised: whole.
        assert_eq!(first_tiles(&g, 7, 1), g);
    }

    #[test]
    fn auto_side_keeps_tiles_readable() {
        assert_eq!(auto_side(50, 34, 16, 4), 2);
        assert_eq!(auto_side(200, 200, 16, 4), 4);
        assert_eq!(auto_side(10, 10, 16, 4), 1);
    }
}
