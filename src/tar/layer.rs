//! The layer tar encoder.
//!
//! One function, [`encode`], turns a walked layer into the exact bytes of its
//! `layer.tar`. The image writer calls it twice per layer, once into a hasher
//! to learn the digest and size the outer archive's header needs, and once
//! into the output. Headers come from the walk, so the two passes cannot
//! disagree on them; only file contents are read twice. So every file is
//! checked against the identity (device, inode, size, mtime, ctime) the walk
//! recorded, before and after it is read, and its contents get a fast
//! checksum (XXH3) in the hashing pass that the streaming pass must match:
//! a file that changed in between is named in the error, and the streamed
//! layer can never differ from its digest.
//!
//! A sink that can copy files itself ([`LayerSink::takes_files`], the
//! relay into a pipe) gets a large file's handle instead of its bytes,
//! once the streaming pass has checked and checksummed it.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use crate::digest::{CountingWriter, HashingWriter};
use crate::error::{Error, Result};
use crate::tar::filedata;
use crate::tar::header::{self as tarheader, EntryType, Header};
use crate::tar::relay::{CheckedFile, RelayWriter};
use crate::tar::walk::{Entry, EntryKind, FileIdentity};

/// Ownership and time applied to every member of a store layer.
#[derive(Debug, Clone)]
pub struct Stamp {
    /// Modification time of every member.
    pub mtime: i64,
    /// Owner id.
    pub uid: i64,
    /// Group id.
    pub gid: i64,
    /// Owner name.
    pub uname: String,
    /// Group name.
    pub gname: String,
}

#[cfg(test)]
impl Stamp {
    /// The spec's defaults: every member root's, with mtime 1.
    pub(crate) fn for_tests() -> Stamp {
        Stamp {
            mtime: 1,
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
        }
    }
}

/// What to do with the per-file content checksums.
#[derive(Debug)]
pub enum Contents<'a> {
    /// First pass: record one checksum per regular file, in order.
    Record(&'a mut Vec<u64>),
    /// Second pass: each file must match the recorded checksum.
    Verify(&'a [u64]),
    /// The only pass, for a layer whose digest is known beforehand
    /// (`store_layer_digests`): no per-file checksums; every byte of the
    /// layer goes into this hasher in stream order, those of files handed
    /// to the sink included, so that the caller can compare the layer's
    /// digest with the known one at its end.
    Hash(&'a mut crate::digest::LayerHasher),
}

/// Where [`encode`] writes a layer.
pub trait LayerSink: Write {
    /// Whether the sink takes whole files ([`LayerSink::take_file`]) in
    /// the streaming pass.
    fn takes_files(&self) -> bool {
        false
    }

    /// Takes over a checked file: its bytes follow what was written so far.
    fn take_file(&mut self, file: CheckedFile) -> io::Result<()> {
        drop(file);
        Err(io::Error::other("this sink takes no files"))
    }

    /// Writes all of `buf` and leaves it empty, possibly swapping it for
    /// another buffer rather than copying it.
    fn write_owned(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.write_all(buf)?;
        buf.clear();
        Ok(())
    }
}

impl LayerSink for RelayWriter {
    fn takes_files(&self) -> bool {
        RelayWriter::takes_files(self)
    }

    fn take_file(&mut self, file: CheckedFile) -> io::Result<()> {
        self.send_file(file)
    }

    fn write_owned(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.send_buffer(buf)
    }
}

impl<W: Write> LayerSink for HashingWriter<W> {}
impl<W: Write> LayerSink for CountingWriter<W> {}
impl LayerSink for Vec<u8> {}
// No blanket impl for `&mut W`: through one, a call on the encoder's
// `&mut dyn LayerSink` would resolve to the reference's default methods
// instead of the sink's own.

/// Writes the tar archive of a layer: the store's parent directories (mode
/// 0755), then `entries`, then the end-of-archive padding. Returns the
/// number of bytes written, including those of files handed to the sink.
pub fn encode(
    parents: &[String],
    entries: &[Entry],
    stamp: &Stamp,
    contents: Contents<'_>,
    out: &mut dyn LayerSink,
) -> Result<u64> {
    let mut enc = Encoder {
        out,
        offset: 0,
        headers: Vec::with_capacity(64 * 1024),
        one_header: Vec::with_capacity(3 * tarheader::BLOCK),
        scratch: Vec::new(),
        contents,
        files: 0,
        hashed_upto: 0,
    };
    for dir in parents {
        enc.header(&Header {
            mode: 0o755,
            ..member(dir.as_bytes(), EntryType::Directory, 0, b"", stamp)
        });
    }
    for entry in entries {
        match &entry.kind {
            EntryKind::Directory => enc.header(&Header {
                mode: entry.mode,
                ..member(&entry.path, EntryType::Directory, 0, b"", stamp)
            }),
            EntryKind::Symlink(target) => enc.header(&Header {
                mode: entry.mode,
                ..member(&entry.path, EntryType::Symlink, 0, target, stamp)
            }),
            EntryKind::File(id) => {
                enc.header(&Header {
                    mode: entry.mode,
                    ..member(&entry.path, EntryType::Regular, id.size, b"", stamp)
                });
                enc.file(entry, id)?;
            }
        }
    }
    let tail = tarheader::end_of_archive(enc.offset);
    enc.headers.extend_from_slice(&tail);
    enc.offset += tail.len() as u64;
    enc.flush_headers()?;
    Ok(enc.offset)
}

fn member<'a>(
    name: &'a [u8],
    entry_type: EntryType,
    size: u64,
    linkname: &'a [u8],
    stamp: &'a Stamp,
) -> Header<'a> {
    Header {
        name,
        mode: 0o644,
        uid: stamp.uid,
        gid: stamp.gid,
        size,
        mtime: stamp.mtime,
        entry_type,
        linkname,
        uname: stamp.uname.as_bytes(),
        gname: stamp.gname.as_bytes(),
        pax: &[],
    }
}

struct Encoder<'w> {
    out: &'w mut dyn LayerSink,
    offset: u64,
    /// Headers and small contents are gathered here so that the sink sees
    /// few large writes.
    headers: Vec<u8>,
    one_header: Vec<u8>,
    scratch: Vec<u8>,
    contents: Contents<'w>,
    files: usize,
    /// With [`Contents::Hash`]: how much of `headers` is hashed already.
    /// The gather buffer is hashed just before it leaves and just before a
    /// large file's bytes are, so the hasher sees the stream's order.
    hashed_upto: usize,
}

const GATHER: usize = 256 * 1024;

impl Encoder<'_> {
    fn header(&mut self, h: &Header<'_>) {
        // Encoded on its own: `encode` pads PAX records to a block boundary
        // of the buffer it is given, and the gather buffer need not start on
        // one (after a large file, it starts with that file's padding).
        self.one_header.clear();
        tarheader::encode(h, &mut self.one_header);
        self.headers.extend_from_slice(&self.one_header);
        self.offset += self.one_header.len() as u64;
    }

    fn flush_headers(&mut self) -> Result<()> {
        if !self.headers.is_empty() {
            self.hash_pending();
            self.out
                .write_owned(&mut self.headers)
                .map_err(Error::Output)?;
            self.hashed_upto = 0;
        }
        Ok(())
    }

    /// With [`Contents::Hash`], hashes what the gather buffer holds and
    /// the hasher has not seen.
    fn hash_pending(&mut self) {
        if let Contents::Hash(hasher) = &mut self.contents {
            hasher.update(&self.headers[self.hashed_upto..]);
            self.hashed_upto = self.headers.len();
        }
    }

    fn file(&mut self, entry: &Entry, expected: &FileIdentity) -> Result<()> {
        let path = entry.fs_path();
        let changed = |what: String| Error::FileChanged {
            path: path.to_owned(),
            what,
        };
        let file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => changed("it was deleted".into()),
            _ => Error::io(path, "opening", e),
        })?;
        let check = |file: &File| -> Result<()> {
            let meta = file
                .metadata()
                .map_err(|e| Error::io(path, "inspecting", e))?;
            match expected.difference(&FileIdentity::of(&meta)) {
                Some(what) => Err(changed(what)),
                None => Ok(()),
            }
        };
        let size = expected.size;
        // The streaming pass must see the file exactly as the walk did. The
        // hashing pass can skip this look for small files: any change since
        // the walk moves the ctime, which the streaming pass then reports.
        // Large files are checked before every window in both passes (in
        // `large_file`), since mapping past a shrunken end would fault.
        if matches!(self.contents, Contents::Verify(_)) && size <= filedata::READ_LIMIT {
            check(&file)?;
        }
        // Handing the file over saves copying it; worth it only for files
        // large enough to be mapped.
        let hand_over = matches!(self.contents, Contents::Verify(_) | Contents::Hash(_))
            && size > filedata::READ_LIMIT
            && self.out.takes_files();
        let sum = if size <= filedata::READ_LIMIT {
            self.small_file(&file, size)
        } else {
            self.large_file(&file, size, &check, !hand_over)
        }
        .map_err(|e| match e {
            ContentError::Changed(e) => e,
            ContentError::Sink(e) => Error::Output(e),
            ContentError::Read(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                changed("it became shorter".into())
            }
            ContentError::Read(e) => Error::io(path, "reading", e),
        })?;
        // No second identity check after reading: if the file changes
        // during either pass, the next look at it (the streaming pass's
        // identity check, or the checksum comparison below) fails.
        match &mut self.contents {
            Contents::Record(sums) => sums.push(sum),
            Contents::Verify(sums) => {
                if sums.get(self.files) != Some(&sum) {
                    return Err(changed("its contents changed".into()));
                }
            }
            // The layer's digest, compared at its end, covers the file.
            Contents::Hash(_) => {}
        }
        if hand_over {
            self.flush_headers()?;
            self.out
                .take_file(CheckedFile {
                    file,
                    len: size,
                    path: path.to_owned(),
                    identity: *expected,
                })
                .map_err(Error::Output)?;
        }
        self.files += 1;
        let pad = tarheader::data_padding(size);
        self.headers.resize(self.headers.len() + pad, 0);
        self.offset += size + pad as u64;
        if self.headers.len() >= GATHER {
            self.flush_headers()?;
        }
        Ok(())
    }
}

/// How copying a file's contents failed.
enum ContentError {
    /// The file no longer matches its walk-time identity.
    Changed(Error),
    /// The output failed.
    Sink(io::Error),
    /// Reading the file failed.
    Read(io::Error),
}

impl Encoder<'_> {
    /// Reads a small file straight into the gather buffer; returns its
    /// checksum.
    fn small_file(&mut self, file: &File, size: u64) -> std::result::Result<u64, ContentError> {
        let size = size as usize;
        if self.headers.len() + size > GATHER {
            self.hash_pending();
            self.out
                .write_owned(&mut self.headers)
                .map_err(ContentError::Sink)?;
            self.hashed_upto = 0;
        }
        let start = self.headers.len();
        self.headers.resize(start + size, 0);
        if let Err(e) = file.read_exact_at(&mut self.headers[start..], 0) {
            self.headers.truncate(start);
            return Err(ContentError::Read(e));
        }
        if matches!(self.contents, Contents::Hash(_)) {
            // Hashed with the gather buffer; no checksum to keep.
            return Ok(0);
        }
        Ok(xxhash_rust::xxh3::xxh3_64(&self.headers[start..]))
    }

    /// Streams a large file window by window (or, unless `write`, only
    /// reads it); returns its checksum.
    fn large_file(
        &mut self,
        file: &File,
        size: u64,
        check: &dyn Fn(&File) -> Result<()>,
        write: bool,
    ) -> std::result::Result<u64, ContentError> {
        // The chunk reader speaks io::Error; these keep our own errors, so
        // that a changed file and a failing sink are reported as such.
        let mut changed_file: Option<Error> = None;
        let mut sink_error: Option<io::Error> = None;
        let mut checksum = xxhash_rust::xxh3::Xxh3::new();
        // What precedes the file's bytes in the stream is hashed first.
        self.hash_pending();
        let Encoder {
            out,
            headers,
            scratch,
            contents,
            hashed_upto,
            ..
        } = self;
        let result = filedata::for_each_chunk(
            file,
            size,
            scratch,
            &mut || {
                check(file).map_err(|e| {
                    changed_file = Some(e);
                    io::Error::other("file changed")
                })
            },
            &mut |chunk| {
                match contents {
                    Contents::Hash(hasher) => hasher.update(chunk),
                    _ => checksum.update(chunk),
                }
                if !write {
                    return Ok(());
                }
                let mut write = || -> io::Result<()> {
                    if !headers.is_empty() {
                        // Hashed before the loop.
                        out.write_owned(headers)?;
                        *hashed_upto = 0;
                    }
                    out.write_all(chunk)
                };
                write().map_err(|e| {
                    sink_error = Some(e);
                    io::Error::other("output failed")
                })
            },
        );
        if let Some(e) = changed_file {
            return Err(ContentError::Changed(e));
        }
        if let Some(e) = sink_error {
            return Err(ContentError::Sink(e));
        }
        result.map_err(ContentError::Read)?;
        Ok(checksum.digest())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tar::walk;

    /// Regression: a long name (PAX header) right after a file read through
    /// the mapped path was padded relative to the gather buffer, not the
    /// stream, giving a tar whose next header had a bad checksum.
    #[test]
    fn pax_header_after_a_large_file_stays_block_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let p = store.join("abc-big");
        std::fs::create_dir_all(&p).unwrap();
        let big = vec![7u8; filedata::READ_LIMIT as usize + 123];
        std::fs::write(p.join("a-big"), &big).unwrap();
        let long = "b".repeat(120);
        std::fs::write(p.join(&long), b"after").unwrap();
        let paths = vec![p.to_str().unwrap().to_owned()];
        let entries = walk::walk_paths(&paths).unwrap();
        let parents = walk::store_parents(store.to_str().unwrap());
        let mut out = Vec::new();
        encode(
            &parents,
            &entries,
            &Stamp::for_tests(),
            Contents::Record(&mut Vec::new()),
            &mut out,
        )
        .unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.expect("every header reads back");
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            seen.push((entry.path_bytes().into_owned(), data));
        }
        let (name, data) = seen.last().unwrap();
        assert!(
            name.ends_with(long.as_bytes()),
            "{:?}",
            String::from_utf8_lossy(name)
        );
        assert_eq!(data, b"after");
        assert_eq!(seen[seen.len() - 2].1, big);
    }

    /// Encodes the layer of `entries` through a relay into a pipe, as a
    /// stream into a pipe does: what `encode` counted, the bytes handed
    /// over to the pipe rather than copied, and what the pipe got.
    fn relay_into_pipe(
        parents: &[String],
        entries: &[Entry],
        contents: Contents<'_>,
    ) -> (u64, u64, Vec<u8>) {
        use std::io::Read;
        let (mut reader, writer) = os_pipe::pipe().unwrap();
        let direct = crate::tar::relay::DirectOutput::new(writer.try_clone().unwrap().into())
            .unwrap()
            .unwrap();
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        let mut out = std::io::BufWriter::new(writer);
        let (n, spliced) = crate::tar::relay::relay_direct(&mut out, Some(&direct), |w| {
            encode(parents, entries, &Stamp::for_tests(), contents, w)
        })
        .unwrap();
        out.flush().unwrap();
        drop((out, direct));
        (n, spliced, drain.join().unwrap())
    }

    /// Regression: with a blanket `LayerSink` impl for `&mut W`, the
    /// encoder's calls resolved to the reference's defaults, so a relay into
    /// a pipe never got a file handed over and every byte was copied.
    #[test]
    fn large_files_are_handed_to_a_relay_into_a_pipe() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let p = store.join("abc-big");
        std::fs::create_dir_all(&p).unwrap();
        let big: Vec<u8> = (0..3 * filedata::READ_LIMIT as usize + 5)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(p.join("big"), &big).unwrap();
        std::fs::write(p.join("small"), b"small").unwrap();
        let paths = vec![p.to_str().unwrap().to_owned()];
        let entries = walk::walk_paths(&paths).unwrap();
        let parents = walk::store_parents(store.to_str().unwrap());
        let mut expected = Vec::new();
        let mut sums = Vec::new();
        encode(
            &parents,
            &entries,
            &Stamp::for_tests(),
            Contents::Record(&mut sums),
            &mut expected,
        )
        .unwrap();

        let (n, spliced, piped) = relay_into_pipe(&parents, &entries, Contents::Verify(&sums));
        assert_eq!(
            spliced,
            big.len() as u64,
            "the large file was not handed over"
        );
        assert_eq!(n as usize, expected.len());
        assert!(piped == expected, "the pipe got other bytes");
    }

    /// With `Contents::Hash`, the hasher sees the layer's bytes in order,
    /// those of large files handed to a relay into a pipe included.
    #[test]
    fn hash_mode_hashes_the_layer_including_handed_over_files() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let p = store.join("abc-mixed");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("a-small"), b"before").unwrap();
        let big: Vec<u8> = (0..2 * filedata::READ_LIMIT as usize + 9)
            .map(|i| (i % 241) as u8)
            .collect();
        std::fs::write(p.join("b-big"), &big).unwrap();
        std::fs::write(p.join("c-small"), b"after").unwrap();
        let paths = vec![p.to_str().unwrap().to_owned()];
        let entries = walk::walk_paths(&paths).unwrap();
        let parents = walk::store_parents(store.to_str().unwrap());
        let mut expected = Vec::new();
        encode(
            &parents,
            &entries,
            &Stamp::for_tests(),
            Contents::Record(&mut Vec::new()),
            &mut expected,
        )
        .unwrap();

        let mut hasher = crate::digest::LayerHasher::new(true, true);
        let (_, spliced, piped) = relay_into_pipe(&parents, &entries, Contents::Hash(&mut hasher));
        assert_eq!(
            spliced,
            big.len() as u64,
            "the large file was not handed over"
        );
        assert!(piped == expected, "the pipe got other bytes");
        let sums = hasher.finish();
        assert_eq!(
            sums.sha256.unwrap().0.as_slice(),
            sha2::Sha256::digest(&expected).as_slice()
        );
        assert_eq!(sums.xxh3, Some(xxhash_rust::xxh3::xxh3_128(&expected)));
    }

    #[test]
    fn encodes_a_readable_tar() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let p = store.join("abc-hello");
        std::fs::create_dir_all(p.join("bin")).unwrap();
        std::fs::write(p.join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("hello", p.join("bin/hi")).unwrap();
        let paths = vec![p.to_str().unwrap().to_owned()];
        let entries = walk::walk_paths(&paths).unwrap();
        let parents = walk::store_parents(store.to_str().unwrap());
        let mut out = Vec::new();
        let mut sums = Vec::new();
        let n = encode(
            &parents,
            &entries,
            &Stamp::for_tests(),
            Contents::Record(&mut sums),
            &mut out,
        )
        .unwrap();
        assert_eq!(sums.len(), 1);
        let mut again = Vec::new();
        encode(
            &parents,
            &entries,
            &Stamp::for_tests(),
            Contents::Verify(&sums),
            &mut again,
        )
        .unwrap();
        assert_eq!(again, out);
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % tarheader::RECORD, 0);

        let mut archive = tar::Archive::new(&out[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
            .collect();
        let base = p.to_str().unwrap();
        assert_eq!(names.last().unwrap(), &format!("{base}/bin/hi"));
        assert!(names.contains(&format!("{base}/bin/hello")));
        assert!(names.contains(&format!("{base}/")));
    }
}
