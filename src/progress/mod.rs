//! Progress on stderr: plain lines, live bars, or nothing.
//!
//! Builders show stderr in their logs, so in plain mode each layer gets a
//! line when it is hashed and when it is streamed, with sizes, and the run
//! ends with one summary line; those lines stay the same from one release
//! to the next, so logs can be grepped and compared. On a terminal, live
//! bars ([`bars`]) show instead what each active layer is doing, and a
//! total with the time left. `--quiet` turns all of it off.
//!
//! The workers never draw: they add to the atomic counters of a
//! [`LayerProgress`], a chunk at a time (through a [`Meter`]), and a
//! ticker thread reads the counters and draws, a few times a second.

mod bars;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Bars when stderr is a terminal (and `TERM` is not `dumb`), plain
    /// lines otherwise.
    #[default]
    Auto,
    /// Live bars, even when stderr is not a terminal; plain lines on a
    /// `TERM=dumb` terminal, which cannot move its cursor.
    Bar,
    /// One line per event, as in logs.
    Plain,
    /// Nothing (`--quiet`).
    None,
}

impl Mode {
    /// What `self` comes to for this process's stderr and environment:
    /// never [`Mode::Auto`].
    pub fn resolve(self) -> Mode {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        match self {
            Mode::Auto if !dumb && std::io::stderr().is_terminal() => Mode::Bar,
            Mode::Auto => Mode::Plain,
            Mode::Bar if dumb => Mode::Plain,
            other => other,
        }
    }
}

/// What a layer is doing, as its bar shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Nothing at the moment (waiting for a worker, or for its turn in the
    /// stream): no bar.
    Idle = 0,
    /// Its store paths are being walked.
    Walking,
    /// Its tar is being produced into a hasher.
    Hashing,
    /// Hashed and compressed at once, to learn its blob.
    Compressing,
    /// A registry is being asked whether it has the blob.
    Checking,
    /// Compressed and sent to a registry.
    Uploading,
    /// The registry had the blob: nothing sent (the bar says so).
    Skipped,
    /// Mounted from another repository of the registry.
    Mounted,
    /// The upload finished.
    Uploaded,
    /// Written into the output stream.
    Streaming,
    /// All done: no bar.
    Done,
}

impl Phase {
    const ALL: [Phase; 11] = [
        Phase::Idle,
        Phase::Walking,
        Phase::Hashing,
        Phase::Compressing,
        Phase::Checking,
        Phase::Uploading,
        Phase::Skipped,
        Phase::Mounted,
        Phase::Uploaded,
        Phase::Streaming,
        Phase::Done,
    ];

    fn from_u8(n: u8) -> Phase {
        Phase::ALL.get(n as usize).copied().unwrap_or(Phase::Idle)
    }

    /// The word a bar shows.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Idle => "waiting",
            Phase::Walking => "walking",
            Phase::Hashing => "hashing",
            Phase::Compressing => "compressing",
            Phase::Checking => "checking",
            Phase::Uploading => "uploading",
            Phase::Skipped => "skipped",
            Phase::Mounted => "mounted",
            Phase::Uploaded => "uploaded",
            Phase::Streaming => "streaming",
            Phase::Done => "done",
        }
    }

    /// A phase that ends a pass without bytes to count: shown for a moment,
    /// then the bar goes.
    fn is_outcome(self) -> bool {
        matches!(self, Phase::Skipped | Phase::Mounted | Phase::Uploaded)
    }
}

/// One layer's counters: written by whoever works on the layer (one thread
/// at a time), read by the ticker that draws. Every field is an atomic, so
/// that counting costs the hot path an add, never a lock.
#[derive(Debug, Default)]
pub struct LayerProgress {
    phase: AtomicU8,
    /// Bumped at each phase start, so that the ticker sees a phase begin
    /// again (a retried upload) even when it did not see it end.
    serial: AtomicU32,
    /// Bytes of this phase so far.
    done: AtomicU64,
    /// Bytes this phase expects; 0 when not known.
    total: AtomicU64,
    /// Bytes of every pass so far, for the total line.
    work: AtomicU64,
    /// The layer's size (estimated, then known), for the passes to come.
    size: AtomicU64,
    /// Passes over the layer's bytes still to come (hashing, one per
    /// destination).
    passes_left: AtomicU32,
    /// What the layer holds (read by the ticker only when a bar appears).
    label: Mutex<String>,
}

impl LayerProgress {
    /// Starts `phase`, expecting `total` bytes (0: not known), which is
    /// `passes` of the passes planned over the layer (0 for a phase that
    /// reads no bytes).
    pub fn begin(&self, phase: Phase, total: u64, passes: u32) {
        self.done.store(0, Relaxed);
        self.total.store(total, Relaxed);
        if passes > 0 {
            let _ = self
                .passes_left
                .fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_sub(passes)));
        }
        self.phase.store(phase as u8, Relaxed);
        self.serial.fetch_add(1, Relaxed);
    }

    /// Ends the current phase with `outcome` ([`Phase::Idle`], an outcome
    /// such as [`Phase::Skipped`], or [`Phase::Done`]).
    pub fn end(&self, outcome: Phase) {
        self.phase.store(outcome as u8, Relaxed);
    }

    /// Drops one planned pass that will not read the layer (a blob the
    /// registry has), showing `outcome`.
    pub fn skip(&self, outcome: Phase) {
        self.begin(outcome, 0, 1);
    }

    /// Counts `bytes` done in this phase.
    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Relaxed);
        self.work.fetch_add(bytes, Relaxed);
    }

    /// Sets the layer's size, for the passes to come.
    pub fn set_size(&self, bytes: u64) {
        self.size.store(bytes, Relaxed);
    }

    /// Names what the layer holds.
    pub fn set_label(&self, label: String) {
        *self.label.lock().unwrap_or_else(|p| p.into_inner()) = crate::escape::controls(&label);
    }

    fn label(&self) -> String {
        self.label.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bytes counted in this phase so far.
    pub fn done(&self) -> u64 {
        self.done.load(Relaxed)
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Relaxed))
    }

    /// Bytes of every pass, done and to come, as far as known now.
    fn planned(&self) -> u64 {
        let (done, total) = (self.done.load(Relaxed), self.total.load(Relaxed));
        self.work.load(Relaxed)
            + total.saturating_sub(done)
            + self.size.load(Relaxed) * u64::from(self.passes_left.load(Relaxed))
    }
}

/// Bytes counted locally before they are added to the shared counter.
const METER_CHUNK: u64 = 256 << 10;

/// A writer that counts what passes through it into a layer's counters,
/// in chunks of [`METER_CHUNK`], so that the shared atomic is touched once
/// per chunk, not once per write.
pub struct Meter<'a, W> {
    inner: W,
    layer: &'a LayerProgress,
    pending: u64,
}

impl<'a, W: Write> Meter<'a, W> {
    /// Counts into `layer` what is written to `inner`.
    pub fn new(inner: W, layer: &'a LayerProgress) -> Self {
        Meter {
            inner,
            layer,
            pending: 0,
        }
    }

    /// Counts what is still pending and gives `inner` back.
    pub fn finish(self) -> W {
        self.layer.add(self.pending);
        self.inner
    }

    fn count(&mut self, n: usize) {
        self.pending += n as u64;
        if self.pending >= METER_CHUNK {
            self.layer.add(self.pending);
            self.pending = 0;
        }
    }
}

impl<W: Write> Write for Meter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count(n);
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.write_all(buf)?;
        self.count(buf.len());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// How a reporter shows progress, once resolved.
#[derive(Debug)]
enum Show {
    Nothing,
    Lines,
    Bars(bars::Bars),
}

/// Reports progress: plain lines, live bars, or nothing.
#[derive(Debug)]
pub struct Progress {
    show: Show,
    start: Instant,
    /// The layers of the run, once it has started.
    layers: Arc<Mutex<Arc<[LayerProgress]>>>,
}

impl Progress {
    /// A reporter of plain lines, or a silent one when `quiet`.
    pub fn new(quiet: bool) -> Self {
        Progress::with_mode(if quiet { Mode::None } else { Mode::Plain })
    }

    /// A reporter in `mode` ([`Mode::Auto`] is resolved here, against this
    /// process's stderr). Bars start drawing at once, from a thread of
    /// their own, until [`Progress::finish`] or the reporter is dropped.
    pub fn with_mode(mode: Mode) -> Self {
        let start = Instant::now();
        let layers: Arc<Mutex<Arc<[LayerProgress]>>> = Arc::new(Mutex::new(Arc::from([])));
        let show = match mode.resolve() {
            Mode::None => Show::Nothing,
            Mode::Bar => Show::Bars(bars::Bars::start(layers.clone())),
            _ => Show::Lines,
        };
        Progress {
            show,
            start,
            layers,
        }
    }

    /// Whether live bars are showing (event lines are then left out).
    pub fn bars(&self) -> bool {
        matches!(self.show, Show::Bars(_))
    }

    /// Sets up the counters of a run of `count` layers, each read `passes`
    /// times (the hashing pass and one per destination), and returns them.
    pub fn start_layers(&self, count: usize, passes: u32) -> Arc<[LayerProgress]> {
        let layers: Arc<[LayerProgress]> = (0..count)
            .map(|_| LayerProgress {
                passes_left: AtomicU32::new(passes),
                ..LayerProgress::default()
            })
            .collect();
        *self.layers.lock().unwrap_or_else(|p| p.into_inner()) = layers.clone();
        layers
    }

    /// Prints one event line in plain mode; bars show the same through
    /// the counters, so there it is left out. A failing stderr is ignored:
    /// progress must never be the reason an image is not written.
    pub fn line(&self, text: std::fmt::Arguments<'_>) {
        if let Show::Lines = self.show {
            self.print(text);
        }
    }

    /// Prints a warning (`warning: ` and `text`) in plain mode and above
    /// the bars.
    pub fn warning(&self, text: std::fmt::Arguments<'_>) {
        match &self.show {
            Show::Nothing => {}
            Show::Lines => self.print(format_args!("warning: {text}")),
            Show::Bars(bars) => bars.suspend(|| self.print(format_args!("warning: {text}"))),
        }
    }

    /// Prints a line of the run's outcome (what was pushed, the final
    /// summary), in plain mode and, once the bars are cleared for good,
    /// in bar mode.
    pub fn summary(&self, text: std::fmt::Arguments<'_>) {
        match &self.show {
            Show::Nothing => {}
            Show::Lines => self.print(text),
            Show::Bars(bars) => {
                bars.stop();
                self.print(text);
            }
        }
    }

    /// Stops and clears the bars, if any (before an error message is
    /// printed, say). Dropping the reporter does the same.
    pub fn finish(&self) {
        if let Show::Bars(bars) = &self.show {
            bars.stop();
        }
    }

    fn print(&self, text: std::fmt::Arguments<'_>) {
        // Lines quote store paths and member names: escape what could
        // drive the terminal.
        let text = crate::escape::controls(&text.to_string());
        let _ = writeln!(std::io::stderr().lock(), "[{:6.2}s] {text}", self.elapsed());
    }

    /// Seconds since the reporter was made.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Formats a byte count for people, in binary units: `512 B`, `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn a_meter_counts_in_chunks_and_at_the_end() {
        let layer = LayerProgress::default();
        let mut meter = Meter::new(Vec::new(), &layer);
        meter.write_all(&[0; 1000]).unwrap();
        assert_eq!(layer.done.load(Relaxed), 0, "below a chunk: not yet shared");
        meter.write_all(&vec![0; METER_CHUNK as usize]).unwrap();
        assert_eq!(layer.done.load(Relaxed), METER_CHUNK + 1000);
        meter.write_all(&[0; 10]).unwrap();
        let out = meter.finish();
        assert_eq!(out.len() as u64, METER_CHUNK + 1010);
        assert_eq!(layer.done.load(Relaxed), METER_CHUNK + 1010);
    }

    #[test]
    fn the_plan_shrinks_when_a_pass_is_skipped() {
        let layer = LayerProgress {
            passes_left: AtomicU32::new(3),
            ..LayerProgress::default()
        };
        layer.set_size(100);
        assert_eq!(layer.planned(), 300);
        layer.begin(Phase::Hashing, 100, 1);
        layer.add(40);
        assert_eq!(layer.planned(), 40 + 60 + 200);
        layer.add(60);
        layer.end(Phase::Idle);
        layer.skip(Phase::Skipped);
        assert_eq!(layer.planned(), 100 + 100);
        assert_eq!(layer.phase(), Phase::Skipped);
    }

    #[test]
    fn modes_resolve_to_something_concrete() {
        // The test's stderr is not a terminal.
        if !std::io::stderr().is_terminal() {
            assert_eq!(Mode::Auto.resolve(), Mode::Plain);
        }
        assert_eq!(Mode::Plain.resolve(), Mode::Plain);
        assert_eq!(Mode::None.resolve(), Mode::None);
    }
}
