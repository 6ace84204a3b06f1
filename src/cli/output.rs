//! `-o FILE`: the file appears only once the image is complete.
//!
//! The image is written under a temporary name in FILE's directory
//! (`.FILE.partial-PID`) and renamed over FILE when the last byte is
//! written and flushed. A rename within a directory is atomic, so FILE is
//! at every moment either absent, an earlier whole file, or the whole new
//! image, whatever ends the run: an error, SIGINT, SIGTERM, SIGHUP, or a
//! SIGKILL or power loss that no handler could catch. That is why this
//! way was chosen over removing a half-written FILE from a signal handler:
//! a handler cannot run on SIGKILL.
//!
//! A run that fails, or is stopped by SIGINT, SIGTERM or SIGHUP, also
//! removes an older FILE, as it always has, so that `build -o img.tar;
//! docker load -i img.tar` never loads a stale image as if it were new;
//! and it removes its temporary file (a thread waits for those signals,
//! cleans up, then lets the signal end the process as it would have).
//! Only a SIGKILL leaves the temporary file, under its hidden name, and
//! the older FILE whole.
//!
//! A FILE that exists and is not a regular file (a device such as
//! `/dev/null`, a FIFO, a symlink) is written in place, as before, and
//! never removed: it is not ours to replace.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use stream_layered_image::Error;

/// An output file being written.
pub struct OutputFile {
    file: File,
    path: PathBuf,
    /// The temporary name, until the file is renamed into place.
    temp: Option<PathBuf>,
}

impl OutputFile {
    /// Starts writing `path`.
    pub fn create(path: &Path) -> Result<OutputFile, Error> {
        let in_place = std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file());
        if in_place {
            let file = File::create(path).map_err(|e| Error::io(path, "creating output", e))?;
            return Ok(OutputFile {
                file,
                path: path.to_owned(),
                temp: None,
            });
        }
        let name = path.file_name().ok_or_else(|| {
            Error::io(path, "creating output", io::Error::other("not a file name"))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".partial-{}", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|e| Error::io(path, "creating output", e))?;
        remove_on_signal(&temp, path);
        Ok(OutputFile {
            file,
            path: path.to_owned(),
            temp: Some(temp),
        })
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Puts the finished file in place.
    pub fn commit(mut self) -> Result<(), Error> {
        if let Some(temp) = self.temp.take() {
            if let Err(e) = std::fs::rename(&temp, &self.path) {
                let _ = std::fs::remove_file(&temp);
                return Err(Error::io(
                    &self.path,
                    "moving the finished output into place",
                    e,
                ));
            }
        }
        Ok(())
    }
}

impl Drop for OutputFile {
    /// Not committed: the run failed, so neither its temporary file nor an
    /// older image may stay.
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            let _ = std::fs::remove_file(temp);
            remove_regular(&self.path);
        }
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Removes `path` if it is a regular file (never a device or a FIFO, which
/// are not ours).
fn remove_regular(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Removes `temp` and an older `path` if SIGINT, SIGTERM or SIGHUP
/// arrives, then ends the process the way the signal would have.
fn remove_on_signal(temp: &Path, path: &Path) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return;
    };
    let (temp, path) = (temp.to_owned(), path.to_owned());
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            // Gone already if the image was committed: then it stays.
            if std::fs::remove_file(&temp).is_ok() {
                remove_regular(&path);
            }
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    });
}
