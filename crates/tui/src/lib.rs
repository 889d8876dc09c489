//! `ddlab tui`: a live terminal dashboard over the experiment store.
//!
//! Three threads: the loader queries the store on its own runtime and sends [`Snapshot`]s, the
//! input thread forwards terminal events, and the UI thread turns both into state changes
//! ([`App::update`], [`App::apply`]) and redraws at most 10 times a second, only when something
//! changed. The UI thread never waits for the database.
//!
//! Module map: [`action`] (keys → actions), [`app`] (state), [`filter`], [`sort`], [`loader`]
//! and [`snapshot`] (reading the store), [`layout`], [`matrix`] (the grid view's rows and
//! columns), [`ui`] (drawing), [`images`] (which protocol draws images, and pictures encoded
//! for it), [`halfblock`] (the fallback), [`tiles`] (the first tiles of a sample grid),
//! `terminal` (taking the terminal and giving it back).

pub mod action;
pub mod app;
pub mod filter;
pub mod halfblock;
pub mod images;
pub mod layout;
pub mod loader;
pub mod matrix;
pub mod snapshot;
pub mod sort;
mod terminal;
pub mod tiles;
pub mod ui;

pub use app::{App, AppConfig};
pub use snapshot::Snapshot;

use anyhow::{Context, bail};
use ddlab_store::Store;
use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::{self, Event};
use ratatui::layout::Rect;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Redraws are at least this far apart (at most 10 frames a second).
pub const MIN_FRAME: Duration = Duration::from_millis(100);

/// How the dashboard starts.
#[derive(Debug, Clone)]
pub struct TuiOptions {
    /// Time between reloads from the store (measured from the end of the previous load).
    pub refresh: Duration,
    /// Show only this sweep at first (the filter `sweep=NAME`, editable with `/`).
    pub sweep: Option<String>,
    /// Which protocol draws images (`--images`).
    pub images: images::ImagesFlag,
}

impl Default for TuiOptions {
    fn default() -> Self {
        TuiOptions {
            refresh: Duration::from_secs(1),
            sweep: None,
            images: images::ImagesFlag::Auto,
        }
    }
}

/// Runs the dashboard on the store at `db_url` until the user quits. A missing database, an
/// unknown sweep or a non-interactive terminal is an error before the screen is touched; the
/// terminal is restored on every way out, panics included.
pub fn run(db_url: &str, options: TuiOptions) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ddlab-tui-db")
        .enable_all()
        .build()
        .context("cannot start the dashboard's runtime")?;
    // A reader: never creates, migrates or writes the database.
    let store = rt.block_on(Store::open_read_only(db_url))?;
    if let Some(sweep) = &options.sweep {
        rt.block_on(store.sweep(sweep))?;
    }
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        bail!("the dashboard needs an interactive terminal (stdin and stdout must be a tty)");
    }

    let mut guard = terminal::TerminalGuard::enter().context("cannot set up the terminal")?;
    // The terminal is asked about graphics before the input thread starts reading it.
    let (images, images_note) =
        images::ImageBackend::detect(options.images, halfblock::ColorMode::detect());
    let config = AppConfig {
        source: store.display_url(),
        refresh: options.refresh,
        filter: options
            .sweep
            .map(|s| format!("sweep={s}"))
            .unwrap_or_default(),
        images,
        images_note,
    };
    let size = guard.terminal.size()?;
    let mut app = App::new(config, Rect::new(0, 0, size.width, size.height));

    let (tx, rx) = mpsc::channel();
    let loader_tx = LoaderSender(tx.clone());
    let loader = loader::spawn(rt, store, options.refresh, app.request(), move |r| {
        loader_tx.0.send(Msg::Loaded(r)).is_ok()
    })?;
    let termination = terminal::Termination::register()?;
    let input = InputThread::spawn(tx, termination.flag.clone())?;
    let result = event_loop(&mut guard.terminal, &mut app, &rx, &loader);
    drop(input);
    drop(termination);
    drop(loader);
    drop(guard);
    result
}

/// What wakes the UI thread.
enum Msg {
    Input(Event),
    InputFailed(std::io::Error),
    Loaded(Result<Snapshot, String>),
    /// The loader thread ended (it only does so on its own by panicking).
    LoaderGone,
    /// A termination signal arrived.
    Terminated,
}

/// The loader's way to the UI thread. It is dropped with the loader's closure, also when the
/// loader panics, and then says so: the dashboard must not sit on stale data with a terminal
/// the panic hook already gave back.
struct LoaderSender(mpsc::Sender<Msg>);

impl Drop for LoaderSender {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::LoaderGone);
    }
}

fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    rx: &Receiver<Msg>,
    loader: &loader::LoaderHandle,
) -> anyhow::Result<()> {
    let mut last_request = app.request();
    let mut dirty = true;
    let mut last_draw = Instant::now()
        .checked_sub(MIN_FRAME)
        .unwrap_or_else(Instant::now);
    loop {
        if dirty && last_draw.elapsed() >= MIN_FRAME {
            ui::render(terminal, app).map_err(|e| anyhow::anyhow!("cannot draw: {e}"))?;
            last_draw = Instant::now();
            dirty = false;
        }
        // With a frame pending, wake when it is due; otherwise sleep until something happens.
        let msg = if dirty {
            match rx.recv_timeout(MIN_FRAME.saturating_sub(last_draw.elapsed())) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => bail!("the dashboard's threads stopped"),
            }
        } else {
            rx.recv()
                .map_err(|_| anyhow::anyhow!("the dashboard's threads stopped"))?
        };
        match msg {
            Msg::Input(ev) => {
                if let Some(a) = action::from_event(&ev, app.mode) {
                    dirty |= app.update(a);
                }
            }
            Msg::InputFailed(e) => bail!("cannot read the terminal: {e}"),
            Msg::Loaded(r) => dirty |= app.apply(r),
            Msg::LoaderGone => bail!("the dashboard's loader stopped unexpectedly"),
            Msg::Terminated => return Ok(()),
        }
        if app.quit {
            return Ok(());
        }
        if app.take_refresh_request() {
            loader.refresh_now();
        }
        let req = app.request();
        if req != last_request {
            loader.request(req.clone());
            last_request = req;
        }
    }
}

/// Forwards terminal events, and termination signals (`terminated`). Polls with a timeout so
/// that it notices both flags and never keeps reading stdin after the dashboard has returned.
///
/// A second thread watches for the terminal hanging up (its window closed, the SSH session
/// dropped without a SIGHUP reaching us): crossterm 0.29 then spins forever inside `poll`,
/// retrying a tty that only returns end-of-file, so the input thread cannot be relied on to
/// notice, and is not waited for on the way out if it does not stop by itself.
struct InputThread {
    stop: Arc<AtomicBool>,
    input: Option<(std::thread::JoinHandle<()>, Receiver<()>)>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl InputThread {
    fn spawn(tx: mpsc::Sender<Msg>, terminated: Arc<AtomicBool>) -> std::io::Result<InputThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, input_tx) = (stop.clone(), tx.clone());
        let (done_tx, done_rx) = mpsc::channel();
        let input = std::thread::Builder::new()
            .name("ddlab-tui-input".into())
            .spawn(move || {
                forward_input(&input_tx, &flag, &terminated);
                let _ = done_tx.send(());
            })?;
        let flag = stop.clone();
        let watcher = std::thread::Builder::new()
            .name("ddlab-tui-hangup".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if terminal_hung_up(Duration::from_millis(200)) {
                        let _ = tx.send(Msg::Terminated);
                        break;
                    }
                }
            })?;
        Ok(InputThread {
            stop,
            input: Some((input, done_rx)),
            watcher: Some(watcher),
        })
    }
}

fn forward_input(tx: &mpsc::Sender<Msg>, stop: &AtomicBool, terminated: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if terminated.load(Ordering::Relaxed) {
            let _ = tx.send(Msg::Terminated);
            break;
        }
        let msg = match event::poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            // A signal arrived during the wait: the flag above says which.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(true) => match event::read() {
                Ok(ev) => Msg::Input(ev),
                Err(e) => Msg::InputFailed(e),
            },
            Err(e) => Msg::InputFailed(e),
        };
        let failed = matches!(msg, Msg::InputFailed(_));
        if tx.send(msg).is_err() || failed {
            break;
        }
    }
}

/// Whether standard input, when it is a terminal, hung up within `timeout`. Asks only for
/// the error conditions (no input events), so it never competes with crossterm for input.
fn terminal_hung_up(timeout: Duration) -> bool {
    #[cfg(unix)]
    {
        // SAFETY: isatty and poll on fd 0 with a valid pollfd; no memory is shared.
        unsafe {
            if libc::isatty(0) == 1 {
                let mut fd = libc::pollfd {
                    fd: 0,
                    events: 0,
                    revents: 0,
                };
                let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
                return libc::poll(&mut fd, 1, ms) > 0
                    && fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
            }
        }
    }
    std::thread::sleep(timeout);
    false
}

impl Drop for InputThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
        // The input thread stops within its 100 ms poll, unless crossterm is spinning on a
        // dead terminal: then it is left behind, and ends with the process.
        if let Some((t, done)) = self.input.take()
            && done.recv_timeout(Duration::from_millis(500)).is_ok()
        {
            let _ = t.join();
        }
    }
}
