//! Progress lines on stderr.
//!
//! Builders show stderr in their logs, so each layer gets a line when it is
//! hashed and when it is streamed, with sizes, and the run ends with one
//! summary line. `--quiet` turns all of it off.

use std::io::Write;
use std::time::Instant;

/// Reports progress, or stays silent.
#[derive(Debug)]
pub struct Progress {
    quiet: bool,
    start: Instant,
}

impl Progress {
    /// A reporter that prints unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Progress {
            quiet,
            start: Instant::now(),
        }
    }

    /// Prints one line (unless quiet). A failing stderr is ignored: progress
    /// must never be the reason an image is not written.
    pub fn line(&self, text: std::fmt::Arguments<'_>) {
        if !self.quiet {
            // Lines quote store paths and member names: escape what could
            // drive the terminal.
            let text = crate::escape::controls(&text.to_string());
            let _ = writeln!(std::io::stderr().lock(), "[{:6.2}s] {text}", self.elapsed());
        }
    }

    /// Seconds since the reporter was made.
    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
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
    use super::human_bytes;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
