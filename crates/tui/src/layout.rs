//! Where the panels go for a terminal size. Shared by the state (which sizes the chart query,
//! the sample image and the table scroll from it) and by `draw`, so both agree.

use ratatui::layout::{Constraint, Layout, Rect};

/// Below this size the bottom panels become tabs.
pub const WIDE_MIN: (u16, u16) = (120, 32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    pub header: Rect,
    /// Everything between the header and the footer: the grid view's.
    pub body: Rect,
    pub table: Rect,
    /// The tab bar of the compact layout.
    pub tabs: Option<Rect>,
    pub chart: Rect,
    pub sample: Rect,
    pub details: Rect,
    pub footer: Rect,
}

impl Areas {
    pub fn compact(&self) -> bool {
        self.tabs.is_some()
    }
}

/// Bottom panels of the compact layout, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tab {
    #[default]
    Chart,
    Sample,
    Details,
}

impl Tab {
    pub const ALL: [Tab; 3] = [Tab::Chart, Tab::Sample, Tab::Details];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Chart => "Loss",
            Tab::Sample => "Samples",
            Tab::Details => "Run",
        }
    }

    pub fn next(self) -> Tab {
        match self {
            Tab::Chart => Tab::Sample,
            Tab::Sample => Tab::Details,
            Tab::Details => Tab::Chart,
        }
    }

    pub fn prev(self) -> Tab {
        self.next().next()
    }
}

/// The runs table takes what its `table_lines` need (plus border and column titles), between
/// five rows and 40% of the screen; the panels below get the rest.
pub fn areas(area: Rect, table_lines: usize) -> Areas {
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let table_max = (body.height as usize * 2 / 5).max(5);
    let table_h = (table_lines + 3).clamp(5, table_max) as u16;
    if area.width >= WIDE_MIN.0 && area.height >= WIDE_MIN.1 {
        let [table, bottom] =
            Layout::vertical([Constraint::Length(table_h), Constraint::Fill(1)]).areas(body);
        let [chart, sample, details] = Layout::horizontal([
            Constraint::Percentage(50),
            Constraint::Percentage(22),
            Constraint::Fill(1),
        ])
        .areas(bottom);
        Areas {
            header,
            body,
            table,
            tabs: None,
            chart,
            sample,
            details,
            footer,
        }
    } else {
        let [table, tabs, panel] = Layout::vertical([
            Constraint::Length(table_h),
            Constraint::Length(1),
            Constraint::Fill(1),
        ])
        .areas(body);
        Areas {
            header,
            body,
            table,
            tabs: Some(tabs),
            chart: panel,
            sample: panel,
            details: panel,
            footer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_below_the_threshold() {
        let a = areas(Rect::new(0, 0, 80, 24), 100);
        assert!(a.compact());
        assert_eq!(a.chart, a.sample);
        assert_eq!(
            a.header.height + a.table.height + 1 + a.chart.height + 1,
            24
        );
        assert_eq!(a.table.height, 8);
        let b = areas(Rect::new(0, 0, 160, 48), 100);
        assert!(!b.compact());
        assert!(b.chart.width > b.sample.width);
        assert_eq!(b.table.height, 18);
    }

    #[test]
    fn table_shrinks_to_its_lines() {
        let few = areas(Rect::new(0, 0, 160, 48), 6);
        assert_eq!(few.table.height, 9);
        assert_eq!(few.chart.height, 48 - 2 - 9);
        assert_eq!(areas(Rect::new(0, 0, 160, 48), 0).table.height, 5);
    }
}
