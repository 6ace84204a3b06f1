//! Reading file contents in bounded memory.
//!
//! Small files are read into a reused buffer: for them a mapping costs more
//! system calls and page faults than one `read`. Larger files are mapped a
//! window at a time, so that hashing and streaming read the page cache
//! without copying it first, and peak memory does not grow with file size:
//! each window is unmapped before the next is mapped.
//!
//! A mapped file can be truncated by another process while a window of it
//! is being read. The kernel then answers a touch of a page past the new
//! end with SIGBUS, which by default kills the process: no error message,
//! and with `-o` a half-written file left behind. So every window is
//! registered, for the time it is read, in a small table that a SIGBUS
//! handler consults: a fault inside a registered window of the faulting
//! thread is answered by mapping zero pages over the rest of the window,
//! the window is marked, and the read ends with `UnexpectedEof` ("it became
//! shorter"). Any other SIGBUS goes to the handler that was there before
//! (Rust's own, which reports stack overflows), or kills the process as
//! usual. The handler is installed the first time a file is mapped; when
//! it cannot be, or the table is full, windows are read with `pread`
//! instead. The JVM answers faults in its mapped buffers the same way.
//!
//! This is the one module that uses `unsafe`: for `memmap2::Mmap::map` and
//! the signal handler.

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
        let Some(watch) = bus_guard::Watch::claim() else {
            // No handler or no free slot: a copy is slower but safe.
            scratch.resize(this as usize, 0);
            file.read_exact_at(scratch, offset)?;
            sink(scratch)?;
            offset += this;
            continue;
        };
        // SAFETY: the mapping is read-only and private to this function; it
        // is dropped before we return. Mapped memory changes if another
        // process writes the file, which at worst yields bytes that differ
        // from the hashing pass: callers detect that through the file's
        // ctime/mtime/size and, for layers, a checksum of the streamed
        // bytes. A truncation while the window is read would raise SIGBUS
        // on the pages past the new end: `watch` covers the window for as
        // long as `sink` reads it, so that fault becomes zero pages and an
        // error below instead of the death of the process.
        #[allow(unsafe_code)]
        let map = unsafe {
            MmapOptions::new()
                .offset(offset)
                .len(this as usize)
                .populate()
                .map(file)?
        };
        watch.cover(map.as_ptr() as usize, map.len());
        let result = sink(&map);
        let truncated = watch.faulted();
        drop(watch);
        drop(map);
        if truncated {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        result?;
        offset += this;
    }
    Ok(())
}

/// The SIGBUS side of mapped reads: a table of the windows being read, and
/// the handler that consults it.
mod bus_guard {
    use std::ffi::{c_int, c_void};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    use std::sync::{Once, OnceLock};

    /// Windows read at once: one per thread that reads files. A thread
    /// that finds no free slot falls back to `pread`.
    const SLOTS: usize = 256;

    /// One window being read. `owner` is the reading thread's id (0 when
    /// free): SIGBUS for a memory access is delivered to the thread that
    /// made it, so the handler only looks at that thread's slots, which
    /// cannot be half-written while that thread is in the handler.
    struct Slot {
        owner: AtomicUsize,
        start: AtomicUsize,
        end: AtomicUsize,
        faulted: AtomicBool,
    }

    #[allow(clippy::declare_interior_mutable_const)]
    const FREE: Slot = Slot {
        owner: AtomicUsize::new(0),
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        faulted: AtomicBool::new(false),
    };
    static TABLE: [Slot; SLOTS] = [FREE; SLOTS];
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    /// The action that was in place before ours, for faults not ours.
    static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
    static INSTALL: Once = Once::new();
    static INSTALLED: AtomicBool = AtomicBool::new(false);

    fn thread_id() -> usize {
        // SAFETY: gettid takes no arguments and cannot fail; a raw
        // syscall, so it is also safe inside the signal handler.
        #[allow(unsafe_code)]
        let tid = unsafe { libc::syscall(libc::SYS_gettid) };
        tid as usize
    }

    fn install() {
        INSTALL.call_once(|| {
            // SAFETY: sysconf has no preconditions.
            #[allow(unsafe_code)]
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if page <= 0 || (page as usize).count_ones() != 1 {
                return;
            }
            PAGE_SIZE.store(page as usize, Relaxed);
            // SAFETY: both sigaction structs are zero-initialised plain
            // data, filled in before use; sigaction only reads `new` and
            // writes `old`. PREVIOUS is set before our handler can run.
            #[allow(unsafe_code)]
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                    return;
                }
                let _ = PREVIOUS.set(old);
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_sigbus as *const () as usize;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut new.sa_mask);
                if libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) != 0 {
                    return;
                }
            }
            INSTALLED.store(true, Relaxed);
        });
    }

    /// A claimed slot, freed on drop.
    pub(super) struct Watch {
        slot: &'static Slot,
    }

    impl Watch {
        /// Claims a free slot for the calling thread, installing the
        /// handler first if needed; `None` if either is not possible.
        pub(super) fn claim() -> Option<Watch> {
            install();
            if !INSTALLED.load(Relaxed) {
                return None;
            }
            let me = thread_id();
            let slot = TABLE
                .iter()
                .find(|slot| slot.owner.compare_exchange(0, me, Relaxed, Relaxed).is_ok())?;
            slot.faulted.store(false, Relaxed);
            Some(Watch { slot })
        }

        /// Registers the window `[start, start + len)`.
        pub(super) fn cover(&self, start: usize, len: usize) {
            self.slot.start.store(start, Relaxed);
            self.slot.end.store(start + len, Relaxed);
        }

        /// Whether a page of the window went missing while it was read.
        pub(super) fn faulted(&self) -> bool {
            self.slot.faulted.load(Relaxed)
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            self.slot.end.store(0, Relaxed);
            self.slot.start.store(0, Relaxed);
            self.slot.owner.store(0, Relaxed);
        }
    }

    extern "C" fn on_sigbus(sig: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
        // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo_t.
        #[allow(unsafe_code)]
        let addr = unsafe { (*info).si_addr() } as usize;
        let me = thread_id();
        let page = PAGE_SIZE.load(Relaxed);
        for slot in &TABLE {
            if slot.owner.load(Relaxed) != me {
                continue;
            }
            let (start, end) = (slot.start.load(Relaxed), slot.end.load(Relaxed));
            if !(start <= addr && addr < end) {
                continue;
            }
            let from = addr & !(page - 1);
            // SAFETY: [from, end) lies inside a read-only file mapping that
            // this thread registered and still holds (it is unregistered
            // before it is unmapped), so replacing it with anonymous zero
            // pages touches no other memory; the reader only sees zeros
            // where the file no longer has bytes, and is told through
            // `faulted`. mmap is a plain system call, safe in a handler.
            #[allow(unsafe_code)]
            let mapped = unsafe {
                libc::mmap(
                    from as *mut c_void,
                    end - from,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                slot.faulted.store(true, Relaxed);
                return;
            }
            break;
        }
        forward(sig, info, context);
    }

    /// Hands a SIGBUS that is not ours to the previous handler, or restores
    /// the default action so that the faulting access, repeated on return,
    /// ends the process as it would have without us.
    fn forward(sig: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
        if let Some(previous) = PREVIOUS.get() {
            let handler = previous.sa_sigaction;
            if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
                // SAFETY: `handler` was installed by someone as a handler
                // of the kind its SA_SIGINFO flag says, and is called with
                // the arguments the kernel gave us.
                #[allow(unsafe_code)]
                unsafe {
                    if previous.sa_flags & libc::SA_SIGINFO != 0 {
                        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                            std::mem::transmute(handler);
                        f(sig, info, context);
                    } else {
                        let f: extern "C" fn(c_int) = std::mem::transmute(handler);
                        f(sig);
                    }
                }
                return;
            }
        }
        // SAFETY: a zeroed sigaction with SIG_DFL is a valid argument, and
        // sigaction is async-signal-safe.
        #[allow(unsafe_code)]
        unsafe {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &default, std::ptr::null_mut());
        }
    }
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

    /// Regression: a file truncated while a mapped window of it was being
    /// read killed the process with SIGBUS.
    #[test]
    fn file_truncated_while_a_window_is_read_is_an_error() {
        let mut f = tempfile::tempfile().unwrap();
        let len = 3 * WINDOW;
        f.write_all(&vec![1u8; len as usize]).unwrap();
        let mut windows = 0;
        let err = for_each_chunk(&f, len, &mut Vec::new(), &mut || Ok(()), &mut |chunk| {
            windows += 1;
            // The window is mapped: cut the file under it, then read it
            // all, past the new end.
            f.set_len(4096).unwrap();
            let ones = chunk.iter().filter(|&&b| b == 1).count();
            assert_eq!(ones, 4096, "bytes past the end read as zeros");
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(windows, 1);
        // The guard is released: a later read of an intact file works.
        chunks_of(&vec![2u8; WINDOW as usize + 1], WINDOW + 1).unwrap();
    }

    #[test]
    fn shorter_file_than_expected_is_an_error() {
        let err = chunks_of(b"abc", 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
