//! Taking the terminal over (raw mode, alternate screen, hidden cursor) and always giving it
//! back: when the guard drops, on error returns, from the panic hook, and after SIGTERM, SIGHUP
//! or SIGINT (which [`Termination`] turns into an orderly quit).

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::{cursor, execute, terminal};
use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

/// Whether the terminal is currently taken; the panic hook restores it only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

pub struct TerminalGuard {
    /// Never dropped: ratatui's own drop shows the cursor once more and `eprintln!`s when that
    /// fails, which panics when the terminal is gone (a closed window, a dropped SSH session).
    /// [`restore`] has already given the terminal back by then, so the few bytes of the
    /// terminal's buffers are simply left to the process's exit.
    pub terminal: std::mem::ManuallyDrop<Terminal<CrosstermBackend<Stdout>>>,
}

impl TerminalGuard {
    pub fn enter() -> io::Result<TerminalGuard> {
        // Installed once per process, before the previous hook, which then prints the panic
        // message on a restored screen.
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on, an error still restores: the guard exists only after success, so undo
        // by hand until then.
        let setup = (|| {
            execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
            let mut t = Terminal::new(CrosstermBackend::new(io::stdout()))?;
            t.clear()?;
            Ok(t)
        })();
        match setup {
            Ok(terminal) => Ok(TerminalGuard {
                terminal: std::mem::ManuallyDrop::new(terminal),
            }),
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen, shows the cursor. Safe to call more than once.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
    }
}

/// Raised by SIGTERM (`kill`), SIGHUP (the SSH session ended) or SIGINT (`kill -INT`; Ctrl-C in
/// the raw-mode terminal is a key instead): the dashboard then quits the normal way, giving the
/// terminal back, instead of dying with it in raw mode. The handlers go away on drop.
pub struct Termination {
    pub flag: Arc<AtomicBool>,
    ids: Vec<signal_hook::SigId>,
}

impl Termination {
    pub fn register() -> io::Result<Termination> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [SIGTERM, SIGHUP, SIGINT] {
            ids.push(signal_hook::flag::register(sig, flag.clone())?);
        }
        Ok(Termination { flag, ids })
    }
}

impl Drop for Termination {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}
