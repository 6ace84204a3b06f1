//! Hands bytes from a producer thread to the thread that writes the output.
//!
//! Streaming a layer means opening, checking, reading and checksumming every
//! file, then writing the bytes to a pipe. Done on one thread, the reader of
//! the pipe waits while files are read, and the files wait while the pipe
//! drains. Here the producer (the layer encoder) fills fixed-size chunks and
//! sends them over a bounded channel; the output thread only writes. Chunks
//! come back through a second channel to be reused, so memory stays at a few
//! chunks whatever the layer's size, and no allocation happens per chunk.

use std::io::{self, Write};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::error::{Error, Result};

/// Size of one chunk.
pub const CHUNK: usize = 1 << 20;
/// Chunks in flight at most (memory bound: `CHUNK * DEPTH`).
pub const DEPTH: usize = 4;

/// Runs `produce` on its own thread, writing everything it writes to `out`
/// in order, and returns its result.
///
/// If writing to `out` fails, the producer's next write fails too and the
/// output's error is returned; otherwise the producer's own error is.
pub fn relay<T: Send>(
    out: &mut dyn Write,
    produce: impl FnOnce(&mut dyn Write) -> Result<T> + Send,
) -> Result<T> {
    let (full_tx, full_rx) = bounded::<Vec<u8>>(DEPTH);
    let (empty_tx, empty_rx) = bounded::<Vec<u8>>(DEPTH);
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut writer = RelayWriter {
                full: full_tx,
                empty: empty_rx,
                buf: Vec::with_capacity(CHUNK),
                allocated: 1,
            };
            let result = produce(&mut writer);
            match result {
                Ok(value) => writer.finish().map(|()| value).map_err(Error::Output),
                Err(e) => Err(e),
            }
        });
        let mut write_error = None;
        for chunk in &full_rx {
            if let Err(e) = out.write_all(&chunk) {
                write_error = Some(e);
                break;
            }
            // The producer may have finished; a full or closed pool is fine.
            let _ = empty_tx.try_send(chunk);
        }
        // Unblocks a producer waiting to send, after a write error.
        drop(full_rx);
        // ...and one waiting for an empty chunk.
        drop(empty_tx);
        let produced = producer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match write_error {
            Some(e) => Err(Error::Output(e)),
            None => produced,
        }
    })
}

struct RelayWriter {
    full: Sender<Vec<u8>>,
    empty: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    allocated: usize,
}

impl RelayWriter {
    fn send(&mut self) -> io::Result<()> {
        let next = match self.empty.try_recv() {
            Ok(buf) => buf,
            Err(_) if self.allocated < DEPTH + 1 => {
                self.allocated += 1;
                Vec::with_capacity(CHUNK)
            }
            Err(_) => self.empty.recv().map_err(|_| closed())?,
        };
        let full = std::mem::replace(&mut self.buf, next);
        self.buf.clear();
        self.full.send(full).map_err(|_| closed())
    }

    fn finish(mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            self.full.send(last).map_err(|_| closed())?;
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
