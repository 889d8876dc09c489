//! What the user asked for, independent of which key said it: terminal events become
//! [`Action`]s here, and only actions reach the state.

use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// One thing the dashboard can be told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    /// Adds the selected run to the runs overlaid in the chart, or removes it.
    ToggleCompare,
    /// Clears the compared set.
    ClearCompare,
    /// Shows the compared runs' differences instead of the selected run's details, or back.
    ToggleDiff,
    OpenFilter,
    FilterChar(char),
    FilterBackspace,
    /// Empties the filter (the line being edited, or the one in force).
    FilterClear,
    /// Keeps the edited filter and leaves the filter line.
    FilterApply,
    /// Restores the filter from before editing and leaves the filter line.
    FilterCancel,
    CycleSort,
    /// Reloads from the store now instead of at the next tick.
    Refresh,
    ToggleLog,
    ToggleSmooth,
    /// The chart by noise level (t/T) or by training step.
    ToggleByT,
    /// The chart of the NLL over training, or back to the loss.
    ToggleNll,
    /// Opens the grid view (every run's newest sample grid as a matrix), or closes it.
    ToggleGrid,
    /// In the grid view: to the next run down (`rows`) and right (`cols`) in the matrix.
    GridMove {
        rows: i8,
        cols: i8,
    },
    /// In the grid view: the next key down the rows / across the columns.
    CycleGridRows,
    CycleGridCols,
    /// In the grid view: more / fewer tiles of each grid (the first k × k).
    MoreTiles,
    FewerTiles,
    ToggleHelp,
    /// Next panel in the compact (tabbed) layout.
    NextTab,
    PrevTab,
    Resize(u16, u16),
}

/// Which keys mean what depends on what has the focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Normal,
    /// Typing into the filter line.
    Filter,
    /// The help overlay is open.
    Help,
    /// The grid view fills the screen.
    Grid,
}

/// The action for a terminal event, if any.
pub fn from_event(event: &Event, mode: Mode) -> Option<Action> {
    match event {
        Event::Key(key) => from_key(*key, mode),
        Event::Resize(w, h) => Some(Action::Resize(*w, *h)),
        _ => None,
    }
}

/// The action for a key. Only presses count: terminals that report releases and repeats
/// (kitty protocol, Windows) would otherwise act twice per keystroke.
pub fn from_key(key: KeyEvent, mode: Mode) -> Option<Action> {
    if key.kind != KeyEventKind::Press {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(Action::Quit);
    }
    match mode {
        Mode::Filter => filter_key(key, ctrl),
        Mode::Help => match key.code {
            KeyCode::Char('?') | KeyCode::Esc | KeyCode::Char('q') | KeyCode::Enter => {
                Some(Action::ToggleHelp)
            }
            _ => None,
        },
        Mode::Normal => normal_key(key, ctrl),
        Mode::Grid => grid_key(key, ctrl),
    }
}

/// The grid view: arrows and h/j/k/l move in the matrix; the keys that choose what it shows;
/// the rest as in the dashboard.
fn grid_key(key: KeyEvent, ctrl: bool) -> Option<Action> {
    let go = |rows, cols| Some(Action::GridMove { rows, cols });
    match key.code {
        KeyCode::Char('h') | KeyCode::Left => go(0, -1),
        KeyCode::Char('l') | KeyCode::Right => go(0, 1),
        KeyCode::Char('k') | KeyCode::Up => go(-1, 0),
        KeyCode::Char('j') | KeyCode::Down => go(1, 0),
        KeyCode::Char('y') => Some(Action::CycleGridRows),
        KeyCode::Char('x') => Some(Action::CycleGridCols),
        KeyCode::Char('+') | KeyCode::Char('=') => Some(Action::MoreTiles),
        KeyCode::Char('-') => Some(Action::FewerTiles),
        KeyCode::Char('i') | KeyCode::Esc => Some(Action::ToggleGrid),
        KeyCode::Char('q') => Some(Action::Quit),
        KeyCode::Enter | KeyCode::Char(' ') => Some(Action::ToggleCompare),
        KeyCode::Char('/') => Some(Action::OpenFilter),
        KeyCode::Char('r') => Some(Action::Refresh),
        KeyCode::Char('?') => Some(Action::ToggleHelp),
        KeyCode::Char('c') if !ctrl => Some(Action::ClearCompare),
        _ => None,
    }
}

fn normal_key(key: KeyEvent, ctrl: bool) -> Option<Action> {
    Some(match key.code {
        KeyCode::Char('q') => Action::Quit,
        // Not quit: Esc is what people press to back out of something.
        KeyCode::Esc => Action::FilterClear,
        KeyCode::Char('j') | KeyCode::Down => Action::Down,
        KeyCode::Char('k') | KeyCode::Up => Action::Up,
        KeyCode::Char('d') if ctrl => Action::PageDown,
        KeyCode::Char('u') if ctrl => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::Char('g') | KeyCode::Home => Action::Top,
        KeyCode::Char('G') | KeyCode::End => Action::Bottom,
        KeyCode::Enter | KeyCode::Char(' ') => Action::ToggleCompare,
        KeyCode::Char('c') => Action::ClearCompare,
        KeyCode::Char('d') => Action::ToggleDiff,
        KeyCode::Char('/') => Action::OpenFilter,
        KeyCode::Char('s') => Action::CycleSort,
        KeyCode::Char('r') => Action::Refresh,
        KeyCode::Char('l') => Action::ToggleLog,
        KeyCode::Char('m') => Action::ToggleSmooth,
        KeyCode::Char('t') => Action::ToggleByT,
        KeyCode::Char('n') => Action::ToggleNll,
        KeyCode::Char('i') => Action::ToggleGrid,
        KeyCode::Char('?') => Action::ToggleHelp,
        KeyCode::Tab => Action::NextTab,
        KeyCode::BackTab => Action::PrevTab,
        _ => return None,
    })
}

fn filter_key(key: KeyEvent, ctrl: bool) -> Option<Action> {
    Some(match key.code {
        KeyCode::Enter => Action::FilterApply,
        KeyCode::Esc => Action::FilterCancel,
        KeyCode::Backspace => Action::FilterBackspace,
        KeyCode::Char('u') if ctrl => Action::FilterClear,
        KeyCode::Char(c) if !ctrl => Action::FilterChar(c),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventState;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    #[test]
    fn normal_keys() {
        let n = Mode::Normal;
        let cases = [
            (KeyCode::Char('j'), Action::Down),
            (KeyCode::Down, Action::Down),
            (KeyCode::Char('k'), Action::Up),
            (KeyCode::Up, Action::Up),
            (KeyCode::Enter, Action::ToggleCompare),
            (KeyCode::Char('/'), Action::OpenFilter),
            (KeyCode::Char('d'), Action::ToggleDiff),
            (KeyCode::Char('s'), Action::CycleSort),
            (KeyCode::Char('r'), Action::Refresh),
            (KeyCode::Char('l'), Action::ToggleLog),
            (KeyCode::Char('m'), Action::ToggleSmooth),
            (KeyCode::Char('t'), Action::ToggleByT),
            (KeyCode::Char('n'), Action::ToggleNll),
            (KeyCode::Char('i'), Action::ToggleGrid),
            (KeyCode::Char('?'), Action::ToggleHelp),
            (KeyCode::Char('q'), Action::Quit),
            (KeyCode::Esc, Action::FilterClear),
            (KeyCode::Tab, Action::NextTab),
            (KeyCode::Char('G'), Action::Bottom),
        ];
        for (code, action) in cases {
            assert_eq!(from_key(press(code), n), Some(action), "{code:?}");
        }
        assert_eq!(from_key(press(KeyCode::Char('x')), n), None);
        assert_eq!(from_key(ctrl('c'), n), Some(Action::Quit));
        assert_eq!(from_key(ctrl('d'), n), Some(Action::PageDown));
    }

    #[test]
    fn only_presses_count() {
        for kind in [KeyEventKind::Release, KeyEventKind::Repeat] {
            let key = KeyEvent {
                code: KeyCode::Char('j'),
                modifiers: KeyModifiers::NONE,
                kind,
                state: KeyEventState::NONE,
            };
            assert_eq!(from_key(key, Mode::Normal), None);
        }
    }

    #[test]
    fn filter_mode_types_text() {
        let f = Mode::Filter;
        // Letters that are commands elsewhere are text while the filter line is open.
        assert_eq!(
            from_key(press(KeyCode::Char('q')), f),
            Some(Action::FilterChar('q'))
        );
        assert_eq!(
            from_key(press(KeyCode::Char('=')), f),
            Some(Action::FilterChar('='))
        );
        assert_eq!(
            from_key(press(KeyCode::Enter), f),
            Some(Action::FilterApply)
        );
        assert_eq!(from_key(press(KeyCode::Esc), f), Some(Action::FilterCancel));
        assert_eq!(
            from_key(press(KeyCode::Backspace), f),
            Some(Action::FilterBackspace)
        );
        assert_eq!(from_key(ctrl('u'), f), Some(Action::FilterClear));
        assert_eq!(from_key(ctrl('c'), f), Some(Action::Quit));
    }

    #[test]
    fn help_mode_closes_on_escape_instead_of_quitting() {
        let h = Mode::Help;
        assert_eq!(from_key(press(KeyCode::Esc), h), Some(Action::ToggleHelp));
        assert_eq!(
            from_key(press(KeyCode::Char('q')), h),
            Some(Action::ToggleHelp)
        );
        assert_eq!(from_key(press(KeyCode::Char('j')), h), None);
    }

    #[test]
    fn grid_view_keys() {
        let g = Mode::Grid;
        let cases = [
            (KeyCode::Char('l'), Action::GridMove { rows: 0, cols: 1 }),
            (KeyCode::Left, Action::GridMove { rows: 0, cols: -1 }),
            (KeyCode::Char('j'), Action::GridMove { rows: 1, cols: 0 }),
            (KeyCode::Up, Action::GridMove { rows: -1, cols: 0 }),
            (KeyCode::Char('x'), Action::CycleGridCols),
            (KeyCode::Char('y'), Action::CycleGridRows),
            (KeyCode::Char('+'), Action::MoreTiles),
            (KeyCode::Char('-'), Action::FewerTiles),
            (KeyCode::Esc, Action::ToggleGrid),
            (KeyCode::Char('i'), Action::ToggleGrid),
            (KeyCode::Enter, Action::ToggleCompare),
            (KeyCode::Char('q'), Action::Quit),
        ];
        for (code, action) in cases {
            assert_eq!(from_key(press(code), g), Some(action), "{code:?}");
        }
        // Keys of the dashboard's chart do nothing here.
        assert_eq!(from_key(press(KeyCode::Char('t')), g), None);
    }

    #[test]
    fn resize_events() {
        assert_eq!(
            from_event(&Event::Resize(80, 24), Mode::Normal),
            Some(Action::Resize(80, 24))
        );
        assert_eq!(from_event(&Event::FocusGained, Mode::Normal), None);
    }
}
