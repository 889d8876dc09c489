//! The newest sample grid of the selected run, in the terminal's graphics protocol or half
//! blocks (encoded beforehand by the state, see `App::derive_sample`).

use crate::app::App;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Stylize;
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Wrap};

/// The panel's border and caption line leave this much for the image.
pub fn image_area(panel: Rect) -> Rect {
    let inner = Block::bordered().inner(panel);
    Rect {
        y: inner.y + 1,
        height: inner.height.saturating_sub(1),
        ..inner
    }
}

pub fn draw(frame: &mut Frame, app: &App, area: Rect) {
    let block = Block::bordered().title(Line::from(" Samples ".bold()));
    frame.render_widget(block, area);
    let inner = Block::bordered().inner(area);
    if inner.height == 0 {
        return;
    }
    let caption_area = Rect { height: 1, ..inner };
    let image = image_area(area);

    let detail = app
        .snapshot
        .as_ref()
        .and_then(|s| s.detail.as_ref())
        .filter(|d| Some(d.run_id) == app.selected);
    let message = |text: String| Paragraph::new(text.dark_gray()).wrap(Wrap { trim: true });
    if app.selected.is_none() {
        frame.render_widget(message("no run selected".into()), inner);
        return;
    }
    let Some(detail) = detail else {
        frame.render_widget(message("loading…".into()), inner);
        return;
    };
    let Some(sample) = &detail.sample else {
        frame.render_widget(message("no sample grid yet".into()), inner);
        return;
    };
    let label = app.images.label();
    let mode = if label.is_empty() {
        label
    } else {
        format!(" · {label}")
    };
    // The long form when it fits, else the short one.
    let long = format!(
        "step {} · {} {} steps · {} images{mode}",
        sample.step, sample.sampler, sample.sample_steps, sample.count
    );
    let caption = if long.chars().count() <= caption_area.width as usize {
        long
    } else {
        format!(
            "step {} · {}×{} · {}",
            sample.step, sample.sampler, sample.sample_steps, sample.count
        )
    };
    frame.render_widget(Paragraph::new(caption.dark_gray()), caption_area);
    match (&sample.image, &app.sample) {
        (Err(e), _) => frame.render_widget(
            Paragraph::new(e.as_str().red()).wrap(Wrap { trim: true }),
            image,
        ),
        (Ok(_), Some(picture)) => {
            // Centred horizontally, at the top.
            let (width, height) = picture.size();
            let x = image.x + image.width.saturating_sub(width) / 2;
            let at = Rect {
                x,
                width: width.min(image.width),
                height: height.min(image.height),
                ..image
            };
            frame.render_widget(picture, at);
        }
        (Ok(_), None) => {}
    }
}
