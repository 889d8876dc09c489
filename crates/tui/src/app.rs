//! The dashboard's state and how actions and loaded snapshots change it. Everything `draw`
//! needs is prepared here (visible rows, chart curves, the resampled sample image), so drawing
//! is a pure, cheap function of this state.

use crate::action::{Action, Mode};
use crate::filter::{self, Filter};
use crate::images::{ImageBackend, Picture};
use crate::layout::{self, Areas, Tab};
use crate::loader::{ChartKind, Request};
use crate::matrix::{self, Axes, Matrix};
use crate::snapshot::{RunInfo, SampleImage, Snapshot};
use crate::sort::SortKey;
use crate::tiles::{self, GridLayout};
use crate::ui::chart::ChartModel;
use ddlab_store::RunStatus;
use ratatui::layout::Rect;
use ratatui::style::Color;
use std::collections::BTreeMap;
use std::time::Duration;

/// Colours of the compared runs, in the order they were added.
pub const PALETTE: [Color; 6] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::LightGreen,
    Color::LightBlue,
    Color::LightRed,
];

/// The selected run's curve when it is not in the compared set: the terminal's own foreground,
/// so it shows on light themes as on dark ones (white vanished on xterm's default white).
pub const SELECTED_COLOR: Color = Color::Reset;

/// One line of the runs table.
#[derive(Debug, Clone, PartialEq)]
pub enum TableLine {
    /// A sweep's heading with counts of its visible runs.
    Group(GroupHeading),
    /// Index into `snapshot.runs`.
    Run(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupHeading {
    pub name: String,
    pub description: String,
    pub counts: Vec<(RunStatus, usize)>,
    pub stalled: usize,
}

/// Settings the app starts with.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where the data comes from, for the header (password hidden).
    pub source: String,
    pub refresh: Duration,
    pub filter: String,
    /// How images are drawn, and why (for the help screen).
    pub images: ImageBackend,
    pub images_note: String,
}

/// Grid tiles per side never go beyond this (`+`).
pub const MAX_TILES_SIDE: u32 = 8;

pub struct App {
    pub source: String,
    pub refresh: Duration,
    pub images: ImageBackend,
    pub images_note: String,
    /// None until the first load arrives.
    pub snapshot: Option<Snapshot>,
    /// Why the latest load failed; the previous snapshot stays on screen.
    pub load_error: Option<String>,

    pub mode: Mode,
    /// Where the filter line or the help returns to.
    mode_before: Mode,
    pub selected: Option<i64>,
    /// Runs overlaid in the chart, in the order they were added.
    pub compared: Vec<i64>,
    /// The details panel shows the compared runs' differences (`d`).
    pub show_diff: bool,
    pub filter_text: String,
    pub filter: Filter,
    pub filter_error: Option<String>,
    filter_before_edit: String,
    pub sort: SortKey,
    pub log_scale: bool,
    pub smoothing: bool,
    pub chart_kind: ChartKind,
    /// The grid view's axes, as chosen.
    pub axes: Axes,
    /// Tiles per side of each grid in the grid view, as chosen; `None`: as many as stay
    /// readable in the cells.
    pub grid_side: Option<u32>,
    pub tab: Tab,
    pub size: Rect,
    pub areas: Areas,
    /// First table line shown.
    pub table_offset: usize,
    pub quit: bool,
    refresh_requested: bool,

    // Derived from the above by `derive`.
    pub lines: Vec<TableLine>,
    /// Runs that pass the filter.
    pub visible_runs: usize,
    pub chart: ChartModel,
    pub sample: Option<Picture>,
    sample_key: Option<(i64, u16, u16)>,
    /// The grid view's matrix, while it is open.
    pub matrix: Option<Matrix>,
    /// The tiles per side the grid view shows now.
    pub grid_side_shown: u32,
    /// Each shown cell's picture, by run, and what it was encoded from.
    pub grid_pictures: BTreeMap<i64, Result<Picture, String>>,
    grid_picture_keys: BTreeMap<i64, (i64, Rect, u32)>,
}

impl App {
    pub fn new(config: AppConfig, size: Rect) -> App {
        let mut app = App {
            source: config.source,
            refresh: config.refresh,
            images: config.images,
            images_note: config.images_note,
            snapshot: None,
            load_error: None,
            mode: Mode::Normal,
            mode_before: Mode::Normal,
            selected: None,
            compared: Vec::new(),
            show_diff: false,
            filter_text: String::new(),
            filter: Filter::default(),
            filter_error: None,
            filter_before_edit: String::new(),
            sort: SortKey::default(),
            log_scale: false,
            smoothing: false,
            chart_kind: ChartKind::default(),
            axes: Axes::default(),
            grid_side: None,
            tab: Tab::default(),
            size,
            areas: layout::areas(size, 0),
            table_offset: 0,
            quit: false,
            refresh_requested: false,
            lines: Vec::new(),
            visible_runs: 0,
            chart: ChartModel::default(),
            sample: None,
            sample_key: None,
            matrix: None,
            grid_side_shown: 1,
            grid_pictures: BTreeMap::new(),
            grid_picture_keys: BTreeMap::new(),
        };
        app.set_filter_text(config.filter);
        app.derive();
        app
    }

    /// What the loader should fetch for the current view.
    pub fn request(&self) -> Request {
        let mut series_runs = self.compared.clone();
        if let Some(id) = self.selected.filter(|id| !series_runs.contains(id)) {
            series_runs.push(id);
        }
        // Braille draws two points per column; the axis labels take about ten columns.
        let columns = self.areas.chart.width.saturating_sub(12).max(8) as usize;
        let grid_runs = match (&self.matrix, self.grid_open()) {
            (Some(m), true) => m.shown_runs(),
            _ => Vec::new(),
        };
        Request {
            series_runs,
            detail_run: self.selected,
            max_points: columns * 2,
            chart: self.chart_kind,
            grid_runs,
        }
    }

    /// The grid view is open (perhaps under the filter line or the help).
    pub fn grid_open(&self) -> bool {
        self.mode == Mode::Grid
            || (matches!(self.mode, Mode::Filter | Mode::Help) && self.mode_before == Mode::Grid)
    }

    /// Whether `r` was pressed since the last call.
    pub fn take_refresh_request(&mut self) -> bool {
        std::mem::take(&mut self.refresh_requested)
    }

    /// Takes a load result. Returns whether anything on screen changed.
    pub fn apply(&mut self, result: Result<Snapshot, String>) -> bool {
        match result {
            Ok(snap) => {
                if self.snapshot.as_ref() == Some(&snap) && self.load_error.is_none() {
                    return false;
                }
                self.snapshot = Some(snap);
                self.load_error = None;
            }
            Err(e) => {
                if self.load_error.as_deref() == Some(e.as_str()) {
                    return false;
                }
                self.load_error = Some(e);
            }
        }
        self.derive();
        true
    }

    /// Applies an action. Returns whether the screen needs redrawing.
    pub fn update(&mut self, action: Action) -> bool {
        match action {
            Action::Quit => self.quit = true,
            Action::Refresh => {
                self.refresh_requested = true;
                return false;
            }
            Action::Up => self.move_by(-1),
            Action::Down => self.move_by(1),
            Action::PageUp => self.move_by(-(self.table_rows().max(1) as isize)),
            Action::PageDown => self.move_by(self.table_rows().max(1) as isize),
            Action::Top => self.move_by(isize::MIN / 2),
            Action::Bottom => self.move_by(isize::MAX / 2),
            Action::ToggleCompare => {
                let Some(id) = self.selected else {
                    return false;
                };
                if let Some(i) = self.compared.iter().position(|c| *c == id) {
                    self.compared.remove(i);
                } else {
                    self.compared.push(id);
                }
            }
            Action::ClearCompare => self.compared.clear(),
            Action::ToggleDiff => self.show_diff = !self.show_diff,
            Action::ToggleByT => self.chart_kind = toggled(self.chart_kind, ChartKind::LossByT),
            Action::ToggleNll => self.chart_kind = toggled(self.chart_kind, ChartKind::Nll),
            Action::ToggleGrid => {
                self.mode = if self.mode == Mode::Grid {
                    Mode::Normal
                } else {
                    Mode::Grid
                }
            }
            Action::GridMove { rows, cols } => {
                let to = self
                    .matrix
                    .as_ref()
                    .and_then(|m| m.step(rows as isize, cols as isize));
                match to {
                    Some(id) => self.selected = Some(id),
                    None => return false,
                }
            }
            Action::CycleGridRows | Action::CycleGridCols => self.cycle_axis(action),
            Action::MoreTiles | Action::FewerTiles => {
                let by = if action == Action::MoreTiles { 1 } else { -1 };
                let side = self.grid_side_shown.saturating_add_signed(by);
                self.grid_side = Some(side.clamp(1, MAX_TILES_SIDE));
            }
            Action::OpenFilter => {
                self.filter_before_edit = self.filter_text.clone();
                self.mode_before = self.mode;
                self.mode = Mode::Filter;
            }
            Action::FilterChar(c) => {
                let mut t = std::mem::take(&mut self.filter_text);
                t.push(c);
                self.set_filter_text(t);
            }
            Action::FilterBackspace => {
                let mut t = std::mem::take(&mut self.filter_text);
                t.pop();
                self.set_filter_text(t);
            }
            Action::FilterClear => self.set_filter_text(String::new()),
            Action::FilterApply => {
                // A filter that does not parse stays open, with its error shown.
                if self.filter_error.is_none() {
                    self.mode = self.mode_before;
                }
            }
            Action::FilterCancel => {
                let before = std::mem::take(&mut self.filter_before_edit);
                self.set_filter_text(before);
                self.mode = self.mode_before;
            }
            Action::CycleSort => self.sort = self.sort.next(),
            Action::ToggleLog => self.log_scale = !self.log_scale,
            Action::ToggleSmooth => self.smoothing = !self.smoothing,
            Action::ToggleHelp => {
                if self.mode == Mode::Help {
                    self.mode = self.mode_before;
                } else {
                    self.mode_before = self.mode;
                    self.mode = Mode::Help;
                }
            }
            Action::NextTab => self.tab = self.tab.next(),
            Action::PrevTab => self.tab = self.tab.prev(),
            Action::Resize(w, h) => {
                self.size = Rect::new(0, 0, w, h);
            }
        }
        self.derive();
        true
    }

    /// The next key down the rows or across the columns of the grid view.
    fn cycle_axis(&mut self, action: Action) {
        let Some(m) = &self.matrix else {
            return;
        };
        let (row, col) = (m.row_key.as_deref(), m.col_key.as_deref());
        if action == Action::CycleGridRows {
            // The rows take the key the columns had when they would collide.
            let next = matrix::next_key(&m.keys, row, None, false);
            if next.as_deref() == col {
                self.axes.cols = Some(row.map(str::to_string));
            }
            self.axes.rows = next;
        } else {
            self.axes.cols = Some(matrix::next_key(&m.keys, col, row, true));
        }
    }

    fn set_filter_text(&mut self, text: String) {
        match filter::parse(&text) {
            Ok(f) => {
                self.filter = f;
                self.filter_error = None;
            }
            // The last filter that parsed stays in force while the line is being typed.
            Err(e) => self.filter_error = Some(e),
        }
        self.filter_text = text;
    }

    pub fn runs(&self) -> &[RunInfo] {
        self.snapshot.as_ref().map_or(&[], |s| &s.runs)
    }

    pub fn selected_run(&self) -> Option<&RunInfo> {
        let id = self.selected?;
        self.runs().iter().find(|r| r.id == id)
    }

    /// Visible table rows below the table's border and column titles.
    pub fn table_rows(&self) -> usize {
        self.areas.table.height.saturating_sub(3) as usize
    }

    fn visible_ids(&self) -> Vec<i64> {
        let runs = self.runs();
        self.lines
            .iter()
            .filter_map(|l| match l {
                TableLine::Run(i) => Some(runs[*i].id),
                TableLine::Group(_) => None,
            })
            .collect()
    }

    fn move_by(&mut self, delta: isize) {
        let ids = self.visible_ids();
        if ids.is_empty() {
            return;
        }
        let at = self
            .selected
            .and_then(|s| ids.iter().position(|i| *i == s))
            .unwrap_or(0) as isize;
        let to = at.saturating_add(delta).clamp(0, ids.len() as isize - 1);
        self.selected = Some(ids[to as usize]);
    }

    /// Recomputes everything drawn from the state: table lines, selection, scroll, chart,
    /// sample image.
    fn derive(&mut self) {
        let previous_ids = self.visible_ids();
        self.lines = self.table_lines();
        self.areas = layout::areas(self.size, self.lines.len());
        let ids = self.visible_ids();
        self.visible_runs = ids.len();

        // Keep the selection; if its run is gone or filtered out, take its neighbour.
        if self.selected.is_none_or(|s| !ids.contains(&s)) {
            let old_pos = self
                .selected
                .and_then(|s| previous_ids.iter().position(|i| *i == s))
                .unwrap_or(0);
            self.selected = ids.get(old_pos.min(ids.len().saturating_sub(1))).copied();
        }
        let existing: Vec<i64> = self.runs().iter().map(|r| r.id).collect();
        if self.snapshot.is_some() {
            self.compared.retain(|id| existing.contains(id));
        }
        self.scroll_to_selection();

        let shown = self.chart_runs();
        self.chart = ChartModel::build(
            self.snapshot.as_ref(),
            &shown,
            self.log_scale,
            self.smoothing,
            self.chart_kind,
        );
        self.derive_sample();
        self.derive_matrix();
        self.derive_grid_pictures();
    }

    /// The grid view's matrix: the visible runs of the selected run's sweep, sliced at it.
    fn derive_matrix(&mut self) {
        let selected = self.selected_run().filter(|_| self.grid_open());
        let Some((selected, snap)) = selected.zip(self.snapshot.as_ref()) else {
            self.matrix = None;
            return;
        };
        let runs: Vec<&RunInfo> = self
            .lines
            .iter()
            .filter_map(|l| match l {
                TableLine::Run(i) => Some(&snap.runs[*i]),
                TableLine::Group(_) => None,
            })
            .filter(|r| r.sweep_id == selected.sweep_id)
            .collect();
        let sweep_keys = snap
            .sweeps
            .iter()
            .find(|s| Some(s.id) == selected.sweep_id)
            .map(|s| s.grid_keys.clone())
            .filter(|k| !k.is_empty());
        let keys = sweep_keys.unwrap_or_else(|| matrix::varying_keys(&runs));
        self.matrix = Some(Matrix::build(&runs, &keys, selected, &self.axes));
    }

    /// Each shown cell's picture: its grid's first k × k tiles fitted to the cell, encoded
    /// again only when the grid, the cell or k changed.
    fn derive_grid_pictures(&mut self) {
        let (Some(m), Some(snap)) = (&self.matrix, &self.snapshot) else {
            self.grid_pictures.clear();
            self.grid_picture_keys.clear();
            return;
        };
        let cells = crate::ui::grid_view::cells(self.areas.body, m);
        let shown: Vec<(i64, Rect, &SampleImage)> = cells
            .iter()
            .filter_map(|c| {
                let id = m.cell(c.at.0, c.at.1)?;
                Some((id, c.picture, snap.grids.get(&id)?.as_ref()))
            })
            .collect();
        let side = self
            .grid_side
            .unwrap_or_else(|| auto_side(&self.images, &shown))
            .clamp(1, MAX_TILES_SIDE);
        self.grid_side_shown = side;
        for &(id, area, grid) in &shown {
            let key = (grid.id, area, side);
            if self.grid_picture_keys.get(&id) == Some(&key) {
                continue;
            }
            let picture = match &grid.image {
                Ok(img) => {
                    let tiles = tiles::first_tiles(img, grid.count, side);
                    Picture::encode(&self.images, &tiles, area.width, area.height)
                }
                Err(e) => Err(e.clone()),
            };
            self.grid_pictures.insert(id, picture);
            self.grid_picture_keys.insert(id, key);
        }
        let kept = |id: &i64| shown.iter().any(|s| s.0 == *id);
        self.grid_pictures.retain(|id, _| kept(id));
        self.grid_picture_keys.retain(|id, _| kept(id));
    }

    /// Curves in the chart with their colours: the compared runs, then the selected one.
    pub fn chart_runs(&self) -> Vec<(i64, Color)> {
        let mut v: Vec<(i64, Color)> = self
            .compared
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, PALETTE[i % PALETTE.len()]))
            .collect();
        if let Some(id) = self.selected.filter(|id| !self.compared.contains(id)) {
            v.push((id, SELECTED_COLOR));
        }
        v
    }

    pub fn compare_color(&self, id: i64) -> Option<Color> {
        self.compared
            .iter()
            .position(|c| *c == id)
            .map(|i| PALETTE[i % PALETTE.len()])
    }

    fn table_lines(&self) -> Vec<TableLine> {
        let Some(snap) = &self.snapshot else {
            return Vec::new();
        };
        let mut idx: Vec<usize> = (0..snap.runs.len())
            .filter(|&i| self.filter.matches(&snap.runs[i]))
            .collect();
        // Sweeps in creation order, runs outside any sweep last; the sort key within each.
        let group_key = |r: &RunInfo| r.sweep_id.unwrap_or(i64::MAX);
        idx.sort_by(|&a, &b| {
            let (ra, rb) = (&snap.runs[a], &snap.runs[b]);
            group_key(ra)
                .cmp(&group_key(rb))
                .then_with(|| self.sort.compare(ra, rb))
        });
        let mut lines = Vec::with_capacity(idx.len() + snap.sweeps.len());
        let mut start = 0;
        while start < idx.len() {
            let key = group_key(&snap.runs[idx[start]]);
            let end = idx[start..]
                .iter()
                .position(|&i| group_key(&snap.runs[i]) != key)
                .map_or(idx.len(), |p| start + p);
            let members = &idx[start..end];
            let first = &snap.runs[members[0]];
            let sweep = snap.sweeps.iter().find(|s| Some(s.id) == first.sweep_id);
            let name = match (&first.sweep, first.sweep_id) {
                (Some(n), _) => n.clone(),
                (None, Some(id)) => format!("sweep {id}"),
                (None, None) => "runs outside sweeps".to_string(),
            };
            let mut counts = Vec::new();
            for status in [
                RunStatus::Running,
                RunStatus::Pending,
                RunStatus::Interrupted,
                RunStatus::Failed,
                RunStatus::Completed,
                RunStatus::Pruned,
            ] {
                let n = members
                    .iter()
                    .filter(|&&i| snap.runs[i].status == status)
                    .count();
                if n > 0 {
                    counts.push((status, n));
                }
            }
            lines.push(TableLine::Group(GroupHeading {
                name,
                description: sweep.map(|s| s.description.clone()).unwrap_or_default(),
                counts,
                stalled: members.iter().filter(|&&i| snap.runs[i].stalled).count(),
            }));
            lines.extend(members.iter().map(|&i| TableLine::Run(i)));
            start = end;
        }
        lines
    }

    fn scroll_to_selection(&mut self) {
        let rows = self.table_rows().max(1);
        let runs = self.runs();
        let Some(line) = self.selected.and_then(|s| {
            self.lines
                .iter()
                .position(|l| matches!(l, TableLine::Run(i) if runs[*i].id == s))
        }) else {
            self.table_offset = 0;
            return;
        };
        // Show the sweep's heading above its first run when scrolling up to it.
        let top = if line > 0 && matches!(self.lines[line - 1], TableLine::Group(_)) {
            line - 1
        } else {
            line
        };
        if top < self.table_offset {
            self.table_offset = top;
        }
        if line >= self.table_offset + rows {
            self.table_offset = line + 1 - rows;
        }
        self.table_offset = self.table_offset.min(self.lines.len().saturating_sub(rows));
    }

    fn derive_sample(&mut self) {
        let inner = crate::ui::sample::image_area(self.areas.sample);
        let sample = self
            .snapshot
            .as_ref()
            .and_then(|s| s.detail.as_ref())
            .filter(|d| Some(d.run_id) == self.selected)
            .and_then(|d| d.sample.clone());
        let Some(sample) = sample else {
            self.sample = None;
            self.sample_key = None;
            return;
        };
        let key = (sample.id, inner.width, inner.height);
        if self.sample_key == Some(key) {
            return;
        }
        self.sample = sample
            .image
            .as_ref()
            .ok()
            .and_then(|img| Picture::encode(&self.images, img, inner.width, inner.height).ok());
        self.sample_key = Some(key);
    }
}

/// As many tiles per side as keep each tile readable in the cells (judged on the first grid
/// whose layout is known).
fn auto_side(images: &ImageBackend, grids: &[(i64, Rect, &SampleImage)]) -> u32 {
    let (px_w, px_h, min_px) = match images {
        ImageBackend::HalfBlock(_) => (1, 2, 14),
        ImageBackend::Graphics(_, picker) => {
            let f = picker.font_size();
            (f.width as u32, f.height as u32, 40)
        }
    };
    grids
        .iter()
        .find_map(|(_, area, g)| {
            let layout = GridLayout::of(g.image.as_ref().ok()?, g.count)?;
            let (w, h) = (area.width as u32 * px_w, area.height as u32 * px_h);
            Some(tiles::auto_side(w, h, min_px, layout.max_side()))
        })
        .unwrap_or(1)
}

/// `kind`, or back to the loss by step when it is already shown.
fn toggled(current: ChartKind, kind: ChartKind) -> ChartKind {
    if current == kind {
        ChartKind::Loss
    } else {
        kind
    }
}
