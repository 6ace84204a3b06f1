//! Live bars, drawn by a ticker thread with indicatif.
//!
//! One line per active layer (what it holds, the phase, bytes done of the
//! phase's total, throughput) above a total line (layers done, bytes of
//! every pass, throughput, time left). The ticker reads the layers'
//! atomic counters every [`TICK`]; nothing on the workers waits for it.
//!
//! indicatif draws through [`Stderr`], our own terminal: the width is asked
//! of the terminal at every draw (so a resize takes effect at the next
//! tick), a stderr that is not a terminal still gets bars when they were
//! asked for, and each frame goes out in one write.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

use super::{LayerProgress, Phase};

/// How often the ticker reads the counters and draws.
const TICK: Duration = Duration::from_millis(100);
/// How long an outcome (skipped, mounted, uploaded) stays on screen.
const LINGER: Duration = Duration::from_millis(1500);

/// The bars and the thread that draws them.
#[derive(Debug)]
pub(super) struct Bars {
    multi: MultiProgress,
    stop: Arc<(Mutex<bool>, Condvar)>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl Bars {
    /// Starts the ticker over `layers` (replaced when a run sets up its
    /// own).
    pub(super) fn start(layers: Arc<Mutex<Arc<[LayerProgress]>>>) -> Bars {
        let color = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::term_like_with_hz(
            Box::new(Stderr::default()),
            10,
        ));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let ticker = {
            let (multi, stop) = (multi.clone(), stop.clone());
            std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || tick(&multi, &layers, &stop, color))
                .ok()
        };
        Bars {
            multi,
            stop,
            ticker: Mutex::new(ticker),
        }
    }

    /// Runs `f` (which prints) with the bars cleared, and draws them again
    /// after.
    pub(super) fn suspend(&self, f: impl FnOnce()) {
        self.multi.suspend(f);
    }

    /// Stops the ticker and clears the bars for good.
    pub(super) fn stop(&self) {
        let Some(ticker) = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        let _ = ticker.join();
    }
}

/// A layer's bar on screen.
struct Shown {
    /// None once an outcome's moment is over.
    bar: Option<ProgressBar>,
    serial: u32,
    phase: Phase,
    /// Whether the phase's bytes have a known total (a bar, or a spinner).
    known_total: bool,
    /// For an outcome: when it goes.
    until: Option<Instant>,
}

impl Shown {
    fn clear(self, multi: &MultiProgress) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
            multi.remove(&bar);
        }
    }
}

/// The ticker: draws until told to stop, then clears everything it drew.
fn tick(
    multi: &MultiProgress,
    layers: &Mutex<Arc<[LayerProgress]>>,
    stop: &(Mutex<bool>, Condvar),
    color: bool,
) {
    let mut width = Stderr::size().1;
    let total = multi.add(ProgressBar::new(0).with_style(plain_style("{prefix} {spinner}")));
    total.set_prefix("starting");
    let mut shown: HashMap<usize, Shown> = HashMap::new();
    let mut seen: Option<Arc<[LayerProgress]>> = None;
    let (stopped, wake) = stop;
    loop {
        let current = layers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if !seen.as_ref().is_some_and(|s| Arc::ptr_eq(s, &current)) {
            // A new run: forget the old one's bars.
            for (_, s) in shown.drain() {
                s.clear(multi);
            }
            seen = Some(current.clone());
        }
        let now_width = Stderr::size().1;
        if now_width != width {
            // Narrower or wider: every line takes the layout that fits.
            width = now_width;
            for s in shown.values() {
                if let Some(bar) = &s.bar {
                    bar.set_style(layer_style(s.phase, s.known_total, width));
                }
            }
            if !current.is_empty() {
                total.set_style(total_style(width));
            }
        }
        draw(multi, &total, &current, &mut shown, color, width);
        let guard = stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = wake
            .wait_timeout_while(guard, TICK, |s| !*s)
            .unwrap_or_else(|p| p.into_inner());
        if *guard {
            break;
        }
    }
    for (_, s) in shown.drain() {
        s.clear(multi);
    }
    total.finish_and_clear();
    let _ = multi.clear();
}

/// One frame: each active layer's bar brought up to date, the finished
/// ones removed, the total line.
fn draw(
    multi: &MultiProgress,
    total: &ProgressBar,
    layers: &[LayerProgress],
    shown: &mut HashMap<usize, Shown>,
    color: bool,
    width: u16,
) {
    let now = Instant::now();
    let (mut work, mut planned, mut finished) = (0u64, 0u64, 0usize);
    for (index, layer) in layers.iter().enumerate() {
        work += layer.work.load(Relaxed);
        planned += layer.planned();
        let phase = layer.phase();
        if phase == Phase::Done {
            finished += 1;
        }
        let serial = layer.serial.load(Relaxed);
        let active = !matches!(phase, Phase::Idle | Phase::Done);
        let lingers = |s: &Shown| s.until.is_some_and(|until| now < until);
        let replaced = shown.get(&index).is_some_and(|s| {
            // An outcome stays its moment, even once the layer is done.
            (s.serial != serial || s.phase != phase) && !(phase == Phase::Done && lingers(s))
                || (!active && !lingers(s))
        });
        if replaced {
            if let Some(s) = shown.remove(&index) {
                s.clear(multi);
            }
        }
        if active && !shown.contains_key(&index) {
            let known_total = layer.total.load(Relaxed) > 0;
            let mut label = layer.label();
            if phase == Phase::Skipped {
                label.push_str(" (the registry has it)");
            }
            // Made whole before it is added: every change to a bar on
            // screen may draw a frame.
            let bar = ProgressBar::hidden()
                .with_style(layer_style(phase, known_total, width))
                .with_prefix(format!(
                    "layer {}/{} {}",
                    index + 1,
                    layers.len(),
                    paint(phase, color)
                ))
                .with_message(label);
            let (done, of) = counts(layer, phase);
            bar.set_length(of.max(done));
            bar.set_position(done);
            let bar = multi.insert_before(total, bar);
            shown.insert(
                index,
                Shown {
                    bar: Some(bar),
                    serial,
                    phase,
                    known_total,
                    until: phase.is_outcome().then(|| now + LINGER),
                },
            );
        }
        if let Some(s) = shown.get_mut(&index) {
            if s.until.is_some_and(|until| now >= until) {
                if let Some(bar) = s.bar.take() {
                    bar.finish_and_clear();
                    multi.remove(&bar);
                }
            }
            if let Some(bar) = &s.bar {
                let (done, of) = counts(layer, s.phase);
                bar.set_length(of.max(done));
                bar.set_position(done);
            }
        }
    }
    if layers.is_empty() {
        total.tick();
        return;
    }
    if total.prefix() == "starting" {
        total.set_style(total_style(width));
    }
    total.set_prefix(format!("total: {finished}/{} layers done", layers.len()));
    total.set_length(planned.max(work));
    total.set_position(work);
}

/// A layer's bytes done and its bar's length in `phase` (an outcome shows
/// the layer's size).
fn counts(layer: &LayerProgress, phase: Phase) -> (u64, u64) {
    let done = layer.done.load(Relaxed);
    if phase.is_outcome() {
        (done, layer.size.load(Relaxed))
    } else {
        (done, layer.total.load(Relaxed))
    }
}

/// The phase word, in colour unless colour is off (`NO_COLOR`, or not a
/// terminal).
fn paint(phase: Phase, color: bool) -> String {
    // Padded before it is painted: the escapes have no width.
    let label = format!("{:<11}", phase.label());
    if !color {
        return label;
    }
    let code = match phase {
        Phase::Skipped | Phase::Mounted | Phase::Uploaded => "32",
        Phase::Uploading | Phase::Streaming => "36",
        _ => "33",
    };
    format!("\x1b[{code}m{label}\x1b[0m")
}

/// A layer's line, in the layout that fits `width` columns: no line may
/// be wider than the terminal, or the terminal wraps it and the next frame
/// is drawn over the wrong rows.
fn layer_style(phase: Phase, known_total: bool, width: u16) -> ProgressStyle {
    let template = if phase.is_outcome() {
        "{prefix} {wide_msg} {total_bytes:>10}"
    } else if !known_total {
        "{prefix} {wide_msg} {spinner} {bytes}"
    } else if width >= 100 {
        "{prefix} {wide_msg} [{bar:20}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}"
    } else if width >= 70 {
        "{prefix} {wide_msg} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}"
    } else {
        "{prefix} {wide_msg} {percent:>3}%"
    };
    plain_style(template)
}

/// The total line, in the layout that fits `width` columns.
fn total_style(width: u16) -> ProgressStyle {
    plain_style(if width >= 100 {
        "{prefix} [{bar:20}] {bytes}/{total_bytes} {bytes_per_sec}, {eta} left"
    } else if width >= 76 {
        "{prefix} {bytes}/{total_bytes} {bytes_per_sec}, {eta} left"
    } else {
        "{prefix}, {eta} left"
    })
}

fn plain_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// stderr as indicatif's terminal: escape sequences into a frame buffer,
/// written out whole at each flush.
#[derive(Debug, Default)]
struct Stderr {
    frame: Mutex<Vec<u8>>,
}

impl Stderr {
    fn push(&self, text: &str) -> std::io::Result<()> {
        self.frame
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// The terminal's size (rows, columns): asked of the terminal, else
    /// from `LINES` and `COLUMNS`, else 24 by 80.
    fn size() -> (u16, u16) {
        if let Ok(ws) = rustix::termios::tcgetwinsize(std::io::stderr()) {
            if ws.ws_col > 0 {
                return (ws.ws_row.max(1), ws.ws_col);
            }
        }
        let env = |name: &str, default: u16| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&v: &u16| v > 0)
                .unwrap_or(default)
        };
        (env("LINES", 24), env("COLUMNS", 80))
    }
}

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        Stderr::size().1
    }

    fn height(&self) -> u16 {
        Stderr::size().0
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.push(&format!("\x1b[{n}A"))
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.push(&format!("\x1b[{n}B"))
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.push(&format!("\x1b[{n}C"))
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.push(&format!("\x1b[{n}D"))
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.push(s)?;
        self.push("\n")
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.push(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.push("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        let frame = std::mem::take(&mut *self.frame.lock().unwrap_or_else(|p| p.into_inner()));
        // A failing stderr only loses a frame.
        let _ = std::io::stderr().lock().write_all(&frame);
        Ok(())
    }
}
