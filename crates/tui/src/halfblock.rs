//! Images in the terminal with half blocks: each cell shows two pixels stacked, `▀` with the
//! foreground as the upper pixel and the background as the lower one. Cells are about twice
//! as tall as wide, so the pixels come out square.

use image::RgbImage;
use image::imageops::FilterType;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::widgets::Widget;

/// How many colours the terminal can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// 24-bit RGB (`COLORTERM=truecolor` or `24bit`).
    TrueColor,
    /// The xterm 256-colour palette: 6×6×6 cube plus a grey ramp.
    Ansi256,
    /// Four greys of the basic 16 colours, for anything else.
    Grey,
}

impl ColorMode {
    /// From the environment, as terminals advertise it.
    pub fn detect() -> ColorMode {
        ColorMode::from_env(
            std::env::var("COLORTERM").ok().as_deref(),
            std::env::var("TERM").ok().as_deref(),
        )
    }

    pub fn from_env(colorterm: Option<&str>, term: Option<&str>) -> ColorMode {
        let ct = colorterm.unwrap_or("").to_ascii_lowercase();
        if ct == "truecolor" || ct == "24bit" {
            ColorMode::TrueColor
        } else if term.is_some_and(|t| t.contains("256")) {
            ColorMode::Ansi256
        } else {
            ColorMode::Grey
        }
    }

    pub fn color(self, [r, g, b]: [u8; 3]) -> Color {
        match self {
            ColorMode::TrueColor => Color::Rgb(r, g, b),
            ColorMode::Ansi256 => Color::Indexed(xterm256(r, g, b)),
            ColorMode::Grey => match luma(r, g, b) {
                0..64 => Color::Black,
                64..128 => Color::DarkGray,
                128..192 => Color::Gray,
                _ => Color::White,
            },
        }
    }
}

fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((299 * r as u32 + 587 * g as u32 + 114 * b as u32) / 1000) as u8
}

/// The nearest xterm-256 colour: the best of the 6×6×6 cube and the 24-step grey ramp.
pub fn xterm256(r: u8, g: u8, b: u8) -> u8 {
    const LEVELS: [i32; 6] = [0, 95, 135, 175, 215, 255];
    let nearest_level = |v: u8| -> usize {
        (0..6)
            .min_by_key(|&i| (LEVELS[i] - v as i32).abs())
            .unwrap_or(0)
    };
    let (ri, gi, bi) = (nearest_level(r), nearest_level(g), nearest_level(b));
    let dist = |c: [i32; 3]| -> i32 {
        let d = [c[0] - r as i32, c[1] - g as i32, c[2] - b as i32];
        d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    };
    let cube = [LEVELS[ri], LEVELS[gi], LEVELS[bi]];
    let mean = (r as i32 + g as i32 + b as i32) / 3;
    let gi_ramp = ((mean - 8).max(0) / 10).min(23);
    let grey = 8 + 10 * gi_ramp;
    if dist([grey; 3]) < dist(cube) {
        232 + gi_ramp as u8
    } else {
        16 + 36 * ri as u8 + 6 * gi as u8 + bi as u8
    }
}

/// Scales an image to fit `cols` × `rows` cells (2 pixels per row), keeping its aspect.
pub fn fit(img: &RgbImage, cols: u16, rows: u16) -> RgbImage {
    let (w, h) = img.dimensions();
    let (max_w, max_h) = (cols as u32, rows as u32 * 2);
    if w == 0 || h == 0 || max_w == 0 || max_h == 0 {
        return RgbImage::new(0, 0);
    }
    let scale = (max_w as f64 / w as f64).min(max_h as f64 / h as f64);
    let nw = ((w as f64 * scale).floor() as u32).clamp(1, max_w);
    let nh = ((h as f64 * scale).floor() as u32).clamp(1, max_h);
    if (nw, nh) == (w, h) {
        return img.clone();
    }
    // Shrinking averages (sample grids are much larger than a panel); enlarging keeps the
    // pixels sharp.
    let filter = if scale < 1.0 {
        FilterType::Triangle
    } else {
        FilterType::Nearest
    };
    image::imageops::resize(img, nw, nh, filter)
}

/// An image as terminal cells, ready to draw.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HalfBlocks {
    pub width: u16,
    pub height: u16,
    /// Row-major (upper, lower) colours; the lower one is `Reset` under an odd last row.
    pub cells: Vec<(Color, Color)>,
}

impl HalfBlocks {
    /// One cell per column and per two pixel rows; no scaling.
    pub fn encode(img: &RgbImage, mode: ColorMode) -> HalfBlocks {
        let (w, h) = img.dimensions();
        let rows = h.div_ceil(2);
        let mut cells = Vec::with_capacity((w * rows) as usize);
        for y in 0..rows {
            for x in 0..w {
                let upper = mode.color(img.get_pixel(x, 2 * y).0);
                let lower = if 2 * y + 1 < h {
                    mode.color(img.get_pixel(x, 2 * y + 1).0)
                } else {
                    Color::Reset
                };
                cells.push((upper, lower));
            }
        }
        HalfBlocks {
            width: w.min(u16::MAX as u32) as u16,
            height: rows.min(u16::MAX as u32) as u16,
            cells,
        }
    }
}

impl Widget for &HalfBlocks {
    /// Draws at the top-left of `area`, clipped to it.
    fn render(self, area: Rect, buf: &mut Buffer) {
        for y in 0..self.height.min(area.height) {
            for x in 0..self.width.min(area.width) {
                let (fg, bg) = self.cells[y as usize * self.width as usize + x as usize];
                buf[(area.x + x, area.y + y)]
                    .set_symbol("▀")
                    .set_fg(fg)
                    .set_bg(bg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// red green
    /// blue white
    fn two_by_two() -> RgbImage {
        let mut img = RgbImage::new(2, 2);
        img.put_pixel(0, 0, Rgb([255, 0, 0]));
        img.put_pixel(1, 0, Rgb([0, 255, 0]));
        img.put_pixel(0, 1, Rgb([0, 0, 255]));
        img.put_pixel(1, 1, Rgb([255, 255, 255]));
        img
    }

    #[test]
    fn two_by_two_true_colour() {
        let hb = HalfBlocks::encode(&two_by_two(), ColorMode::TrueColor);
        assert_eq!((hb.width, hb.height), (2, 1));
        let mut buf = Buffer::empty(Rect::new(0, 0, 3, 2));
        hb.render(Rect::new(1, 1, 2, 1), &mut buf);
        let c = &buf[(1, 1)];
        assert_eq!(
            (c.symbol(), c.fg, c.bg),
            ("▀", Color::Rgb(255, 0, 0), Color::Rgb(0, 0, 255))
        );
        let c = &buf[(2, 1)];
        assert_eq!(
            (c.symbol(), c.fg, c.bg),
            ("▀", Color::Rgb(0, 255, 0), Color::Rgb(255, 255, 255))
        );
        // Nothing outside the area.
        assert_eq!(buf[(0, 1)].symbol(), " ");
        assert_eq!(buf[(1, 0)].symbol(), " ");
    }

    #[test]
    fn two_by_two_fallbacks() {
        let hb = HalfBlocks::encode(&two_by_two(), ColorMode::Ansi256);
        assert_eq!(
            hb.cells,
            vec![
                (Color::Indexed(196), Color::Indexed(21)),
                (Color::Indexed(46), Color::Indexed(231)),
            ]
        );
        let hb = HalfBlocks::encode(&two_by_two(), ColorMode::Grey);
        assert_eq!(
            hb.cells,
            vec![(Color::DarkGray, Color::Black), (Color::Gray, Color::White),]
        );
    }

    #[test]
    fn odd_height_leaves_the_last_lower_half_blank() {
        let mut img = RgbImage::new(1, 3);
        img.put_pixel(0, 2, Rgb([10, 20, 30]));
        let hb = HalfBlocks::encode(&img, ColorMode::TrueColor);
        assert_eq!(hb.height, 2);
        assert_eq!(hb.cells[1], (Color::Rgb(10, 20, 30), Color::Reset));
    }

    #[test]
    fn xterm_palette() {
        assert_eq!(xterm256(0, 0, 0), 16);
        assert_eq!(xterm256(255, 255, 255), 231);
        assert_eq!(xterm256(255, 0, 0), 196);
        assert_eq!(xterm256(128, 128, 128), 244);
        assert_eq!(xterm256(95, 135, 175), 16 + 36 + 12 + 3);
    }

    #[test]
    fn fit_keeps_aspect_in_square_pixels() {
        let img = RgbImage::new(400, 200);
        // 40 columns × 10 rows = 40 × 20 pixels: width-bound.
        assert_eq!(fit(&img, 40, 10).dimensions(), (40, 20));
        // 100 columns × 10 rows: height-bound.
        assert_eq!(fit(&img, 100, 10).dimensions(), (40, 20));
        assert_eq!(fit(&RgbImage::new(2, 2), 8, 2).dimensions(), (4, 4));
        assert_eq!(fit(&img, 0, 10).dimensions(), (0, 0));
    }

    #[test]
    fn colour_mode_from_environment() {
        use ColorMode::*;
        assert_eq!(
            ColorMode::from_env(Some("truecolor"), Some("xterm")),
            TrueColor
        );
        assert_eq!(ColorMode::from_env(Some("24bit"), None), TrueColor);
        assert_eq!(ColorMode::from_env(None, Some("tmux-256color")), Ansi256);
        assert_eq!(
            ColorMode::from_env(Some(""), Some("xterm-256color")),
            Ansi256
        );
        assert_eq!(ColorMode::from_env(None, Some("linux")), Grey);
    }
}
