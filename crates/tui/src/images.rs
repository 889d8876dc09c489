//! Images in the terminal: which protocol draws them, chosen once at start ([`choose`]), and
//! [`Picture`], an image encoded for the chosen one, ready to draw.
//!
//! Terminals that speak a graphics protocol (kitty, sixel, iTerm2) get real pixels through
//! `ratatui-image`; everything else — tmux, which passes graphics through only when told to
//! and then misplaces them on scroll, a terminal that answered no query, the tests — gets half
//! blocks ([`crate::halfblock`]), which also degrade to 256 colours or greys where needed.

use crate::halfblock::{self, ColorMode, HalfBlocks};
use image::RgbImage;
use image::imageops::FilterType;
use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::widgets::Widget;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::Protocol;
use ratatui_image::{Image, Resize};
use std::fmt;
use std::str::FromStr;

/// What `--images` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImagesFlag {
    /// A graphics protocol the terminal says it speaks; half blocks in tmux or when it says none.
    #[default]
    Auto,
    Kitty,
    Sixel,
    Iterm2,
    Halfblock,
}

impl FromStr for ImagesFlag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => ImagesFlag::Auto,
            "kitty" => ImagesFlag::Kitty,
            "sixel" => ImagesFlag::Sixel,
            "iterm2" => ImagesFlag::Iterm2,
            "halfblock" | "halfblocks" => ImagesFlag::Halfblock,
            _ => {
                return Err(format!(
                    "`{s}` is not an image protocol (auto, kitty, sixel, iterm2 or halfblock)"
                ));
            }
        })
    }
}

/// A graphics protocol that draws pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Graphics {
    Kitty,
    Sixel,
    Iterm2,
}

impl Graphics {
    fn protocol_type(self) -> ProtocolType {
        match self {
            Graphics::Kitty => ProtocolType::Kitty,
            Graphics::Sixel => ProtocolType::Sixel,
            Graphics::Iterm2 => ProtocolType::Iterm2,
        }
    }

    fn of(p: ProtocolType) -> Option<Graphics> {
        match p {
            ProtocolType::Kitty => Some(Graphics::Kitty),
            ProtocolType::Sixel => Some(Graphics::Sixel),
            ProtocolType::Iterm2 => Some(Graphics::Iterm2),
            ProtocolType::Halfblocks => None,
        }
    }
}

impl fmt::Display for Graphics {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Graphics::Kitty => "kitty",
            Graphics::Sixel => "sixel",
            Graphics::Iterm2 => "iTerm2",
        })
    }
}

/// What the environment says before any query is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TermHints {
    /// Inside tmux or GNU screen.
    pub multiplexer: bool,
}

impl TermHints {
    pub fn from_env() -> TermHints {
        let term = std::env::var("TERM").unwrap_or_default();
        let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        TermHints {
            multiplexer: set("TMUX")
                || set("STY")
                || term.starts_with("tmux")
                || term.starts_with("screen"),
        }
    }
}

/// What querying the terminal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detected {
    pub graphics: Option<Graphics>,
}

/// The protocol chosen, and why, for the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// `None`: half blocks.
    pub graphics: Option<Graphics>,
    pub why: String,
}

/// The choice for `flag`. `query` asks the terminal (it writes escape sequences and waits for
/// the answers), so it runs only when the choice depends on it: under `auto` outside a
/// multiplexer. An explicit protocol is honoured whatever the terminal would say.
pub fn choose(flag: ImagesFlag, hints: TermHints, query: impl FnOnce() -> Detected) -> Choice {
    let chosen = |g: Graphics, why: &str| Choice {
        graphics: Some(g),
        why: format!("{g} ({why})"),
    };
    let half = |why: &str| Choice {
        graphics: None,
        why: format!("half blocks ({why})"),
    };
    match flag {
        ImagesFlag::Halfblock => half("--images halfblock"),
        ImagesFlag::Kitty => chosen(Graphics::Kitty, "--images kitty"),
        ImagesFlag::Sixel => chosen(Graphics::Sixel, "--images sixel"),
        ImagesFlag::Iterm2 => chosen(Graphics::Iterm2, "--images iterm2"),
        ImagesFlag::Auto if hints.multiplexer => half("in tmux/screen; --images overrides"),
        ImagesFlag::Auto => match query().graphics {
            Some(g) => chosen(g, "the terminal answered"),
            None => half("no graphics protocol detected"),
        },
    }
}

/// How images are drawn for the whole session.
#[derive(Debug, Clone)]
pub enum ImageBackend {
    HalfBlock(ColorMode),
    /// The picker knows the protocol and the terminal's cell size in pixels.
    Graphics(Graphics, Picker),
}

impl ImageBackend {
    /// Asks the terminal, as [`choose`] needs, and builds the backend. Call it after entering
    /// the alternate screen and before anything reads terminal input.
    pub fn detect(flag: ImagesFlag, color_mode: ColorMode) -> (ImageBackend, String) {
        let mut picker: Option<Picker> = None;
        let choice = choose(flag, TermHints::from_env(), || {
            let p = Picker::from_query_stdio().ok();
            let graphics = p.as_ref().and_then(|p| Graphics::of(p.protocol_type()));
            picker = p;
            Detected { graphics }
        });
        match choice.graphics {
            Some(g) => {
                // An explicit protocol still needs the cell size in pixels; a terminal that
                // does not tell gets cells of 10×20 pixels.
                let mut p = picker
                    .or_else(|| Picker::from_query_stdio().ok())
                    .unwrap_or_else(Picker::halfblocks);
                p.set_protocol_type(g.protocol_type());
                (ImageBackend::Graphics(g, p), choice.why)
            }
            None => (ImageBackend::HalfBlock(color_mode), choice.why),
        }
    }

    /// A short name for captions; empty for the plain 24-bit half blocks.
    pub fn label(&self) -> String {
        match self {
            ImageBackend::HalfBlock(ColorMode::TrueColor) => String::new(),
            ImageBackend::HalfBlock(ColorMode::Ansi256) => "256 colours".into(),
            ImageBackend::HalfBlock(ColorMode::Grey) => "grey".into(),
            ImageBackend::Graphics(g, _) => g.to_string(),
        }
    }

    /// Two backends draw alike (a cached picture of one serves the other).
    fn key(&self) -> (u8, ColorMode) {
        match self {
            ImageBackend::HalfBlock(m) => (0, *m),
            ImageBackend::Graphics(g, _) => (1 + *g as u8, ColorMode::TrueColor),
        }
    }
}

impl PartialEq for ImageBackend {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

/// An image encoded for one area of `cols` × `rows` cells (it may use fewer).
#[derive(Clone)]
pub enum Picture {
    Cells(HalfBlocks),
    Graphic(Protocol),
}

impl fmt::Debug for Picture {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (w, h) = self.size();
        write!(f, "Picture({w}×{h} cells)")
    }
}

impl Picture {
    /// `img` scaled to fit `cols` × `rows` cells with its aspect kept, encoded for `backend`.
    pub fn encode(
        backend: &ImageBackend,
        img: &RgbImage,
        cols: u16,
        rows: u16,
    ) -> Result<Picture, String> {
        match backend {
            ImageBackend::HalfBlock(mode) => Ok(Picture::Cells(HalfBlocks::encode(
                &halfblock::fit(img, cols, rows),
                *mode,
            ))),
            ImageBackend::Graphics(_, picker) => {
                let font = picker.font_size();
                let (fw, fh) = (font.width.max(1) as u32, font.height.max(1) as u32);
                let fitted = fit_pixels(img, cols as u32 * fw, rows as u32 * fh);
                let size = Size::new(
                    fitted.width().div_ceil(fw).min(cols as u32) as u16,
                    fitted.height().div_ceil(fh).min(rows as u32) as u16,
                );
                picker
                    .new_protocol(fitted.into(), size, Resize::Fit(None))
                    .map(Picture::Graphic)
                    .map_err(|e| format!("cannot encode the image: {e}"))
            }
        }
    }

    /// Cells it covers: (columns, rows).
    pub fn size(&self) -> (u16, u16) {
        match self {
            Picture::Cells(c) => (c.width, c.height),
            Picture::Graphic(p) => {
                let s = p.size();
                (s.width, s.height)
            }
        }
    }
}

impl Widget for &Picture {
    /// Draws at the top-left of `area`, clipped to it.
    fn render(self, area: Rect, buf: &mut Buffer) {
        match self {
            Picture::Cells(c) => c.render(area, buf),
            Picture::Graphic(p) => Image::new(p).render(area, buf),
        }
    }
}

/// Scales `img` to the largest size within `max_w` × `max_h` pixels that keeps its aspect:
/// averaged when shrinking, pixels kept sharp when enlarging (samples are small images).
fn fit_pixels(img: &RgbImage, max_w: u32, max_h: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 || max_w == 0 || max_h == 0 {
        return RgbImage::new(1, 1);
    }
    let scale = (max_w as f64 / w as f64).min(max_h as f64 / h as f64);
    let nw = ((w as f64 * scale).floor() as u32).clamp(1, max_w);
    let nh = ((h as f64 * scale).floor() as u32).clamp(1, max_h);
    let filter = if scale < 1.0 {
        FilterType::Triangle
    } else {
        FilterType::Nearest
    };
    image::imageops::resize(img, nw, nh, filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> Detected {
        panic!("the terminal must not be queried here")
    }

    fn answers(graphics: Option<Graphics>) -> impl FnOnce() -> Detected {
        move || Detected { graphics }
    }

    const PLAIN: TermHints = TermHints { multiplexer: false };
    const TMUX: TermHints = TermHints { multiplexer: true };

    #[test]
    fn flag_values() {
        assert_eq!("auto".parse::<ImagesFlag>(), Ok(ImagesFlag::Auto));
        assert_eq!("iterm2".parse::<ImagesFlag>(), Ok(ImagesFlag::Iterm2));
        assert_eq!("halfblock".parse::<ImagesFlag>(), Ok(ImagesFlag::Halfblock));
        let e = "png".parse::<ImagesFlag>().unwrap_err();
        assert!(e.contains("`png` is not an image protocol"), "{e}");
    }

    #[test]
    fn auto_takes_what_the_terminal_answers() {
        let c = choose(ImagesFlag::Auto, PLAIN, answers(Some(Graphics::Kitty)));
        assert_eq!(c.graphics, Some(Graphics::Kitty));
        assert_eq!(c.why, "kitty (the terminal answered)");
        let c = choose(ImagesFlag::Auto, PLAIN, answers(Some(Graphics::Sixel)));
        assert_eq!(c.graphics, Some(Graphics::Sixel));
        let c = choose(ImagesFlag::Auto, PLAIN, answers(None));
        assert_eq!(c.graphics, None);
        assert_eq!(c.why, "half blocks (no graphics protocol detected)");
    }

    #[test]
    fn auto_in_a_multiplexer_is_half_blocks_without_asking() {
        let c = choose(ImagesFlag::Auto, TMUX, never);
        assert_eq!(c.graphics, None);
        assert!(c.why.contains("tmux"), "{}", c.why);
    }

    #[test]
    fn an_explicit_protocol_wins_even_in_tmux() {
        for (flag, g) in [
            (ImagesFlag::Kitty, Graphics::Kitty),
            (ImagesFlag::Sixel, Graphics::Sixel),
            (ImagesFlag::Iterm2, Graphics::Iterm2),
        ] {
            for hints in [PLAIN, TMUX] {
                // The terminal's own answer does not change an explicit choice.
                let c = choose(flag, hints, answers(None));
                assert_eq!(c.graphics, Some(g), "{flag:?}");
            }
        }
        let c = choose(ImagesFlag::Halfblock, PLAIN, never);
        assert_eq!(c.graphics, None);
    }

    #[test]
    fn pictures_fit_their_cells() {
        let img = RgbImage::from_pixel(64, 32, image::Rgb([200, 10, 10]));
        let half = ImageBackend::HalfBlock(ColorMode::TrueColor);
        // 20 columns × 20 rows = 20 × 40 half-block pixels: width-bound, 20 × 10 pixels.
        let p = Picture::encode(&half, &img, 20, 20).unwrap();
        assert_eq!(p.size(), (20, 5));
        // Sixel with 10×20-pixel cells: 200 × 400 pixels, width-bound to 200 × 100: 5 rows.
        let mut picker = Picker::halfblocks();
        picker.set_protocol_type(ProtocolType::Sixel);
        let sixel = ImageBackend::Graphics(Graphics::Sixel, picker);
        let p = Picture::encode(&sixel, &img, 20, 20).unwrap();
        assert_eq!(p.size(), (20, 5));
        assert!(matches!(p, Picture::Graphic(Protocol::Sixel(_))));
        assert_eq!(sixel.label(), "sixel");
        assert_ne!(sixel, half);
    }
}
