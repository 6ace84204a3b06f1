//! Hands bytes from a producer thread to the thread that writes the output.
//!
//! Streaming a layer means opening, checking, reading and checksumming every
//! file, then writing the bytes to a pipe. Done on one thread, the reader of
//! the pipe waits while files are read, and the files wait while the pipe
//! drains. Here the producer (the layer encoder) fills fixed-size chunks and
//! sends them over a bounded channel; the output thread only writes. Chunks
//! come back through a second channel to be reused, so memory stays at a few
//! chunks whatever the layer's size, and no allocation happens per chunk.
//!
//! When the output is a pipe or a regular file ([`DirectOutput`],
//! [`relay_direct`]), a large file does not pass through a chunk at all:
//! the producer checks and checksums it, then sends its handle, and the
//! output thread `splice`s it from the page cache into the pipe (or, for a
//! file such as the image `buildLayeredImage` writes into the store,
//! through a pipe of our own into the file). That saves two copies of every
//! byte (file to chunk, chunk to output), which on a two-core builder is
//! most of what streaming costs besides the reader's own copy. The output
//! thread looks at the file again after the splice, so a file written to
//! while it was spliced is reported, as it is on the copying path.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use crossbeam_channel::{bounded, Receiver, Sender};
use rustix::io::Errno;
use rustix::pipe::SpliceFlags;

use crate::error::{Error, Result};
use crate::tar::walk::FileIdentity;

/// Size of one chunk.
pub const CHUNK: usize = 1 << 20;
/// Chunks in flight at most (memory bound: `CHUNK * DEPTH`).
pub const DEPTH: usize = 4;

/// A whole file, already checked against its walk-time identity and
/// checksummed by the producer, for the output thread to copy itself.
#[derive(Debug)]
pub struct CheckedFile {
    /// The open file.
    pub file: File,
    /// Bytes to copy, from offset 0.
    pub len: u64,
    /// The file's path, for errors.
    pub path: PathBuf,
    /// What the file must still look like once copied.
    pub identity: FileIdentity,
}

/// Where [`relay_direct`] may splice files: the descriptor that the
/// relay's buffered output finally writes to.
#[derive(Debug)]
pub struct DirectOutput {
    out: OwnedFd,
    /// For an output that is not a pipe, the pipe that spliced pages pass
    /// through on their way (splice needs a pipe at one end).
    via: Option<(os_pipe::PipeReader, os_pipe::PipeWriter)>,
}

impl DirectOutput {
    /// A direct path to `out`, if it can take spliced pages: a pipe that
    /// blocks (a non-blocking one would need polling), or a regular file
    /// not opened for appending. `None` for anything else (a terminal, a
    /// socket, a device), which then gets copies.
    pub fn new(out: OwnedFd) -> io::Result<Option<DirectOutput>> {
        use rustix::fs::{FileType, OFlags};
        let kind = FileType::from_raw_mode(rustix::fs::fstat(&out)?.st_mode);
        let flags = rustix::fs::fcntl_getfl(&out)?;
        let via = match kind {
            FileType::Fifo if !flags.contains(OFlags::NONBLOCK) => None,
            FileType::RegularFile if !flags.contains(OFlags::APPEND) => {
                let (reader, writer) = os_pipe::pipe()?;
                // Fewer, larger splices; the default size works too.
                let _ = rustix::pipe::fcntl_setpipe_size(&writer, CHUNK);
                Some((reader, writer))
            }
            _ => return Ok(None),
        };
        Ok(Some(DirectOutput { out, via }))
    }
}

enum Piece {
    Bytes(Vec<u8>),
    File(CheckedFile),
}

/// Runs `produce` on its own thread, writing everything it writes to `out`
/// in order, and returns its result.
///
/// If writing to `out` fails, the producer's next write fails too and the
/// output's error is returned; otherwise the producer's own error is.
pub fn relay<T: Send>(
    out: &mut dyn Write,
    produce: impl FnOnce(&mut RelayWriter) -> Result<T> + Send,
) -> Result<T> {
    relay_direct(out, None, produce).map(|(value, _)| value)
}

/// Like [`relay`], where `direct` is the descriptor that `out` finally
/// writes to: the producer may then hand over whole files
/// ([`RelayWriter::send_file`]), which are spliced into `direct` after
/// `out` is flushed. Returns the producer's result and the number of bytes
/// that went to `direct` without passing through `out`.
pub fn relay_direct<T: Send>(
    out: &mut dyn Write,
    direct: Option<&DirectOutput>,
    produce: impl FnOnce(&mut RelayWriter) -> Result<T> + Send,
) -> Result<(T, u64)> {
    let (full_tx, full_rx) = bounded::<Piece>(DEPTH);
    let (empty_tx, empty_rx) = bounded::<Vec<u8>>(DEPTH);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut writer = RelayWriter {
                full: full_tx,
                empty: empty_rx,
                buf: Vec::with_capacity(CHUNK),
                allocated: 1,
                takes_files: direct.is_some(),
            };
            let result = produce(&mut writer);
            match result {
                Ok(value) => writer.finish().map(|()| value).map_err(Error::Output),
                Err(e) => Err(e),
            }
        });
        let mut output_error = None;
        let mut direct_bytes = 0;
        for piece in &full_rx {
            let written = match piece {
                Piece::Bytes(chunk) => {
                    let written = out.write_all(&chunk).map_err(Error::Output);
                    // The producer may have finished; a full or closed pool
                    // is fine.
                    let _ = empty_tx.try_send(chunk);
                    written
                }
                Piece::File(file) => match direct {
                    Some(direct) => out
                        .flush()
                        .map_err(Error::Output)
                        .and_then(|()| splice_file(&file, direct))
                        .map(|()| direct_bytes += file.len),
                    None => Err(Error::Output(io::Error::other(
                        "a file was handed over to an output that takes none",
                    ))),
                },
            };
            if let Err(e) = written {
                output_error = Some(e);
                break;
            }
        }
        // Unblocks a producer waiting to send, after a write error.
        drop(full_rx);
        // ...and one waiting for an empty chunk.
        drop(empty_tx);
        let produced = producer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match output_error {
            Some(e) => Err(e),
            None => produced.map(|value| (value, direct_bytes)),
        }
    })
}

/// Copies all of `checked` to `direct`, then confirms the file is
/// unchanged.
fn splice_file(checked: &CheckedFile, direct: &DirectOutput) -> Result<()> {
    let changed = |what: &str| Error::FileChanged {
        path: checked.path.clone(),
        what: what.into(),
    };
    let out = direct.out.as_fd();
    let pipe = match &direct.via {
        Some((_, writer)) => writer.as_fd(),
        None => out,
    };
    let mut offset = 0u64;
    while offset < checked.len {
        // Through our own pipe, no more than it holds: it is drained
        // before the next splice into it.
        let limit = if direct.via.is_some() { CHUNK } else { 1 << 30 };
        let want = (checked.len - offset).min(limit as u64) as usize;
        let moved = match rustix::pipe::splice(
            &checked.file,
            Some(&mut offset),
            pipe,
            None,
            want,
            SpliceFlags::MORE,
        ) {
            Ok(0) => return Err(changed("it became shorter")),
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            // A file system that cannot splice: copy the rest instead.
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return copy_rest(checked, offset, out).and_then(|()| recheck(checked))
            }
            Err(Errno::PIPE) => return Err(Error::Output(Errno::PIPE.into())),
            Err(e) => return Err(Error::io(&checked.path, "splicing to the output", e.into())),
        };
        if let Some((reader, _)) = &direct.via {
            drain(reader.as_fd(), moved, out)?;
        }
    }
    recheck(checked)
}

/// Moves `len` bytes from our own pipe into `out`, by splice where `out`
/// takes it, else by copying.
fn drain(pipe: BorrowedFd<'_>, mut len: usize, out: BorrowedFd<'_>) -> Result<()> {
    while len > 0 {
        match rustix::pipe::splice(pipe, None, out, None, len, SpliceFlags::MORE) {
            Ok(0) => return Err(Error::Output(io::ErrorKind::WriteZero.into())),
            Ok(n) => len -= n,
            Err(Errno::INTR) => {}
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                let mut buf = vec![0; len.min(CHUNK)];
                let n = rustix::io::read(pipe, &mut buf).map_err(|e| Error::Output(e.into()))?;
                write_fd(out, &buf[..n])?;
                len -= n;
            }
            Err(e) => return Err(Error::Output(e.into())),
        }
    }
    Ok(())
}

fn write_fd(out: BorrowedFd<'_>, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        match rustix::io::write(out, data) {
            Ok(0) => return Err(Error::Output(io::ErrorKind::WriteZero.into())),
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(Error::Output(e.into())),
        }
    }
    Ok(())
}

/// The copying fallback of [`splice_file`], from `offset` on.
fn copy_rest(checked: &CheckedFile, mut offset: u64, out: BorrowedFd<'_>) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0; CHUNK];
    while offset < checked.len {
        let want = (checked.len - offset).min(CHUNK as u64) as usize;
        let n = match checked.file.read_at(&mut buf[..want], offset) {
            Ok(0) => {
                return Err(Error::FileChanged {
                    path: checked.path.clone(),
                    what: "it became shorter".into(),
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(&checked.path, "reading", e)),
        };
        write_fd(out, &buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}

/// A file rewritten while it was copied keeps its size but not its ctime.
fn recheck(checked: &CheckedFile) -> Result<()> {
    let meta = checked
        .file
        .metadata()
        .map_err(|e| Error::io(&checked.path, "inspecting", e))?;
    match checked.identity.difference(&FileIdentity::of(&meta)) {
        Some(what) => Err(Error::FileChanged {
            path: checked.path.clone(),
            what,
        }),
        None => Ok(()),
    }
}

/// The producer's end of a [`relay`]: a `Write` that fills chunks.
pub struct RelayWriter {
    full: Sender<Piece>,
    empty: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    allocated: usize,
    takes_files: bool,
}

impl RelayWriter {
    /// Whether [`RelayWriter::send_file`] is available (the output is a
    /// pipe that files can be spliced into).
    pub fn takes_files(&self) -> bool {
        self.takes_files
    }

    /// Hands over a whole file, to follow the bytes written so far.
    pub fn send_file(&mut self, file: CheckedFile) -> io::Result<()> {
        if !self.takes_files {
            return Err(io::Error::other("this relay takes no files"));
        }
        if !self.buf.is_empty() {
            self.send()?;
        }
        self.full.send(Piece::File(file)).map_err(|_| closed())
    }

    /// Sends all of `buf` as it is, leaving an empty buffer in its place:
    /// a producer that gathers its own output saves a copy.
    pub fn send_buffer(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        if !self.buf.is_empty() {
            self.send()?;
        }
        let next = self.empty_buffer()?;
        let full = std::mem::replace(buf, next);
        self.full.send(Piece::Bytes(full)).map_err(|_| closed())
    }

    fn send(&mut self) -> io::Result<()> {
        let next = self.empty_buffer()?;
        let full = std::mem::replace(&mut self.buf, next);
        self.full.send(Piece::Bytes(full)).map_err(|_| closed())
    }

    /// A cleared buffer from the pool, or a new one while fewer than
    /// `DEPTH + 2` exist (the chunks in flight, the one being filled and
    /// the producer's own).
    fn empty_buffer(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = match self.empty.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.allocated < DEPTH + 2 => {
                self.allocated += 1;
                Vec::with_capacity(CHUNK)
            }
            Err(_) => self.empty.recv().map_err(|_| closed())?,
        };
        buf.clear();
        Ok(buf)
    }

    fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.full.send(Piece::Bytes(last)).map_err(|_| closed())?;
        }
        Ok(())
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the output was closed")
}

impl Write for RelayWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    fn temp_file(content: &[u8]) -> (tempfile::TempDir, PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let file = File::open(&path).unwrap();
        (dir, path, file)
    }

    fn checked(path: &std::path::Path, file: File, len: u64) -> CheckedFile {
        let identity = FileIdentity::of(&file.metadata().unwrap());
        CheckedFile {
            file,
            len,
            path: path.to_owned(),
            identity,
        }
    }

    /// Runs `relay_direct` into a real pipe (buffered bytes go through a
    /// `BufWriter` on the same pipe, as the command line does), reading the
    /// pipe on another thread; returns the result and everything read.
    fn through_pipe<T: Send>(
        produce: impl FnOnce(&mut RelayWriter) -> Result<T> + Send,
    ) -> (Result<(T, u64)>, Vec<u8>) {
        let (mut reader, writer) = os_pipe::pipe().unwrap();
        let direct = DirectOutput::new(writer.try_clone().unwrap().into())
            .unwrap()
            .expect("a pipe takes spliced pages");
        assert!(direct.via.is_none());
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        let result = {
            let mut out = io::BufWriter::with_capacity(4096, writer);
            let result = relay_direct(&mut out, Some(&direct), produce);
            out.flush().unwrap();
            drop(out);
            drop(direct);
            result
        };
        (result, drain.join().unwrap())
    }

    #[test]
    fn into_a_regular_file_files_pass_through_a_pipe_of_our_own() {
        let content: Vec<u8> = (0..2 * CHUNK + 999).map(|i| (i % 239) as u8).collect();
        let (_dir, path, file) = temp_file(&content);
        let out_dir = tempfile::tempdir().unwrap();
        let out_path = out_dir.path().join("out");
        let out_file = File::create(&out_path).unwrap();
        let direct = DirectOutput::new(out_file.try_clone().unwrap().into())
            .unwrap()
            .expect("a regular file takes spliced pages");
        assert!(direct.via.is_some());
        let mut out = io::BufWriter::with_capacity(4096, out_file);
        let (_, spliced) = relay_direct(&mut out, Some(&direct), |w| {
            w.write_all(b"head").map_err(Error::Output)?;
            w.send_file(checked(&path, file, content.len() as u64))
                .map_err(Error::Output)?;
            w.write_all(b"tail").map_err(Error::Output)
        })
        .unwrap();
        out.flush().unwrap();
        assert_eq!(spliced, content.len() as u64);
        let mut expected = b"head".to_vec();
        expected.extend_from_slice(&content);
        expected.extend_from_slice(b"tail");
        assert!(
            std::fs::read(&out_path).unwrap() == expected,
            "the file got other bytes"
        );
    }

    #[test]
    fn terminals_sockets_and_appending_files_get_copies() {
        let dir = tempfile::tempdir().unwrap();
        let appending = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.path().join("log"))
            .unwrap();
        assert!(DirectOutput::new(appending.into()).unwrap().is_none());
        let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(DirectOutput::new(socket.into()).unwrap().is_none());
    }

    #[test]
    fn spliced_files_keep_their_place_between_bytes() {
        let content: Vec<u8> = (0..3 * CHUNK + 5).map(|i| (i % 253) as u8).collect();
        let (_dir, path, file) = temp_file(&content);
        let (result, read) = through_pipe(|w| {
            assert!(w.takes_files());
            w.write_all(b"before").map_err(Error::Output)?;
            w.send_file(checked(&path, file, content.len() as u64))
                .map_err(Error::Output)?;
            let mut gathered = b"after".to_vec();
            w.send_buffer(&mut gathered).map_err(Error::Output)?;
            assert!(gathered.is_empty());
            Ok(7)
        });
        let (value, direct) = result.unwrap();
        assert_eq!((value, direct), (7, content.len() as u64));
        let mut expected = b"before".to_vec();
        expected.extend_from_slice(&content);
        expected.extend_from_slice(b"after");
        assert!(read == expected, "the pipe got other bytes");
    }

    #[test]
    fn a_file_changed_before_its_splice_is_named() {
        let (_dir, path, file) = temp_file(&[1; 4096]);
        let handed = checked(&path, file, 4096);
        // Same size, new contents: only the ctime tells.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(&[2; 4096])
            .unwrap();
        let (result, _) = through_pipe(|w| w.send_file(handed).map_err(Error::Output));
        match result.unwrap_err() {
            Error::FileChanged { path: named, .. } => assert_eq!(named, path),
            other => panic!("expected FileChanged, got {other}"),
        }
    }

    #[test]
    fn a_file_shorter_than_handed_over_is_named() {
        let (_dir, path, file) = temp_file(&[1; 100]);
        let handed = checked(&path, file, 200);
        let (result, _) = through_pipe(|w| w.send_file(handed).map_err(Error::Output));
        match result.unwrap_err() {
            Error::FileChanged { path: named, what } => {
                assert_eq!(named, path);
                assert!(what.contains("shorter"), "{what}");
            }
            other => panic!("expected FileChanged, got {other}"),
        }
    }

    #[test]
    fn the_copying_fallback_writes_the_same_bytes() {
        let content: Vec<u8> = (0..CHUNK + 17).map(|i| (i % 241) as u8).collect();
        let (_dir, path, file) = temp_file(&content);
        let handed = checked(&path, file, content.len() as u64);
        let (mut reader, writer) = os_pipe::pipe().unwrap();
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        copy_rest(&handed, 10, writer.as_fd()).unwrap();
        drop(writer);
        assert!(
            drain.join().unwrap() == content[10..],
            "the pipe got other bytes"
        );
    }

    #[test]
    fn without_a_pipe_files_are_refused() {
        let (_dir, path, file) = temp_file(b"x");
        let err = relay(&mut Vec::new(), |w| {
            assert!(!w.takes_files());
            w.send_file(checked(&path, file, 1)).map_err(Error::Output)
        })
        .unwrap_err();
        assert!(err.to_string().contains("takes no files"), "{err}");
    }

    #[test]
    fn relays_everything_in_order() {
        let data: Vec<u8> = (0..5 * CHUNK + 123).map(|i| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        let n = relay(&mut out, |w| {
            for piece in data.chunks(777_777) {
                w.write_all(piece).map_err(Error::Output)?;
            }
            Ok(data.len())
        })
        .unwrap();
        assert_eq!(n, data.len());
        assert_eq!(out, data);
    }

    struct Failing;

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_stops_the_producer() {
        let err = relay(&mut Failing, |w| {
            // Far more than the channel holds: must not block forever.
            for _ in 0..100 {
                w.write_all(&[0; CHUNK]).map_err(Error::Output)?;
            }
            Ok(())
        })
        .unwrap_err();
        assert!(err.is_broken_pipe(), "{err}");
    }

    #[test]
    fn the_producers_error_is_returned() {
        let err = relay(&mut Vec::new(), |w| -> Result<()> {
            w.write_all(b"partial").map_err(Error::Output)?;
            Err(Error::SizeMismatch {
                layer: 1,
                expected: 1,
                actual: 2,
            })
        })
        .unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }));
    }
}
