//! Reading file contents in bounded memory.
//!
//! Small files are read into a reused buffer: for them a mapping costs more
//! system calls and page faults than one `read`. Larger files are mapped a
//! window at a time, so that hashing and streaming read the page cache
//! without copying it first, and peak memory does not grow with file size:
//! each window is unmapped before the next is mapped.
//!
//! This is the one module that uses `unsafe`, for `memmap2::Mmap::map`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use memmap2::MmapOptions;

/// Files up to this size are read with `read`, larger ones mapped.
pub const READ_LIMIT: u64 = 256 * 1024;
/// Size of one mapped window (a multiple of every page size in use).
pub const WINDOW: u64 = 4 * 1024 * 1024;

/// Reads exactly `len` bytes of `file` from offset 0 and hands them to
/// `sink` in order, in slices of at most [`WINDOW`] bytes.
///
/// `check` runs before every window so the caller can confirm the file
/// still has the size it expects (see the SAFETY note below). A file that
/// turns out shorter than `len` is an `UnexpectedEof` error.
pub fn for_each_chunk(
    file: &File,
    len: u64,
    scratch: &mut Vec<u8>,
    check: &mut dyn FnMut() -> io::Result<()>,
    sink: &mut dyn FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    if len <= READ_LIMIT {
        check()?;
        scratch.resize(len as usize, 0);
        // read_exact_at reads from offset 0 whatever the file position is,
        // and fails with UnexpectedEof if the file is now shorter.
        file.read_exact_at(scratch, 0)?;
        return sink(scratch);
    }
    let mut offset = 0;
    while offset < len {
        let this = (len - offset).min(WINDOW);
        check()?;
        if file.metadata()?.len() < offset + this {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // SAFETY: the mapping is read-only and private to this function; it
        // is dropped before we return. Mapped memory changes if another
        // process writes the file, which at worst yields bytes that differ
        // from the hashing pass: callers detect that through the file's
        // ctime/mtime/size and, for layers, a digest of the streamed bytes.
        // Touching a page past the end of the file raises SIGBUS, so the
        // size was confirmed just above: what remains is a truncation racing
        // with the copy of this one window, which on a read-only store takes
        // a deliberate act.
        #[allow(unsafe_code)]
        let map = unsafe {
            MmapOptions::new()
                .offset(offset)
                .len(this as usize)
                .populate()
                .map(file)?
        };
        sink(&map)?;
        offset += this;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn chunks_of(content: &[u8], len: u64) -> io::Result<Vec<usize>> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        for_each_chunk(&f, len, &mut Vec::new(), &mut || Ok(()), &mut |c| {
            seen.extend_from_slice(c);
            sizes.push(c.len());
            Ok(())
        })?;
        assert_eq!(seen, &content[..len as usize]);
        Ok(sizes)
    }

    #[test]
    fn small_file_is_one_chunk() {
        assert_eq!(chunks_of(b"hello", 5).unwrap(), vec![5]);
        assert_eq!(chunks_of(b"", 0).unwrap(), vec![0]);
    }

    #[test]
    fn large_file_is_windowed() {
        let content: Vec<u8> = (0..WINDOW + 4097).map(|i| (i % 251) as u8).collect();
        let sizes = chunks_of(&content, content.len() as u64).unwrap();
        assert_eq!(sizes, vec![WINDOW as usize, 4097]);
    }

    #[test]
    fn shorter_file_than_expected_is_an_error() {
        let err = chunks_of(b"abc", 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
