//! Writing members: the outer tar stream, or the files of a directory.
//!
//! A docker-archive and an OCI archive are tar streams of members; an OCI
//! directory is the same members written as files. Sinks write through
//! [`Members`], so the layout code is the same for both.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tar::header::{self, EntryType, Header};

/// Where the members of an archive go.
pub trait Members: Write {
    /// Starts a member.
    fn header(&mut self, h: &Header<'_>) -> Result<()>;
    /// Ends the member whose data was `size` bytes.
    fn pad(&mut self, size: u64) -> Result<()>;
    /// Ends the archive.
    fn finish(&mut self) -> Result<()>;
    /// Bytes written so far.
    fn offset(&self) -> u64;

    /// A regular member holding `data`.
    fn small_file(&mut self, name: &str, data: &[u8], mtime: i64) -> Result<()> {
        self.header(&Header {
            size: data.len() as u64,
            ..plain_member(name.as_bytes(), mtime)
        })?;
        self.write_all(data).map_err(Error::Output)?;
        self.pad(data.len() as u64)
    }
}

/// A member header with the reference's defaults: mode 0644, owner 0:0,
/// no names.
pub fn plain_member(name: &[u8], mtime: i64) -> Header<'_> {
    Header {
        name,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: 0,
        mtime,
        entry_type: EntryType::Regular,
        linkname: b"",
        uname: b"",
        gname: b"",
        pax: &[],
    }
}

/// The outer archive as a tar stream through `out`.
pub struct TarStream<W> {
    out: W,
    offset: u64,
    buf: Vec<u8>,
}

impl<W: Write> TarStream<W> {
    /// A stream writing to `out`.
    pub fn new(out: W) -> Self {
        TarStream {
            out,
            offset: 0,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// Counts `n` bytes that went to the output's descriptor directly
    /// (spliced), around this writer.
    pub fn wrote_around(&mut self, n: u64) {
        self.offset += n;
    }

    /// The writer, once the archive is finished.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Members for TarStream<W> {
    fn header(&mut self, h: &Header<'_>) -> Result<()> {
        self.buf.clear();
        header::encode(h, &mut self.buf);
        self.offset += self.buf.len() as u64;
        self.out.write_all(&self.buf).map_err(Error::Output)
    }

    fn pad(&mut self, size: u64) -> Result<()> {
        let pad = header::data_padding(size);
        self.offset += pad as u64;
        self.out
            .write_all(&[0; header::BLOCK][..pad])
            .map_err(Error::Output)
    }

    fn finish(&mut self) -> Result<()> {
        let tail = header::end_of_archive(self.offset);
        self.offset += tail.len() as u64;
        self.out.write_all(&tail).map_err(Error::Output)?;
        self.out.flush().map_err(Error::Output)
    }

    fn offset(&self) -> u64 {
        self.offset
    }
}

impl<W: Write> Write for TarStream<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.offset += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The members written as files (and directories) under a root.
pub struct DirMembers {
    root: PathBuf,
    file: Option<(PathBuf, io::BufWriter<File>)>,
    offset: u64,
}

impl DirMembers {
    /// Creates `root` (and `root/blobs/sha256`).
    pub fn create(root: &Path) -> Result<DirMembers> {
        std::fs::create_dir_all(root.join("blobs/sha256"))
            .map_err(|e| Error::io(root, "creating the OCI directory", e))?;
        Ok(DirMembers {
            root: root.to_owned(),
            file: None,
            offset: 0,
        })
    }

    fn close(&mut self) -> Result<()> {
        if let Some((path, mut file)) = self.file.take() {
            file.flush().map_err(|e| Error::io(&path, "writing", e))?;
        }
        Ok(())
    }

    fn file(&mut self) -> io::Result<&mut io::BufWriter<File>> {
        self.file
            .as_mut()
            .map(|(_, f)| f)
            .ok_or_else(|| io::Error::other("no member is open"))
    }
}

impl Members for DirMembers {
    fn header(&mut self, h: &Header<'_>) -> Result<()> {
        self.close()?;
        let path = self.root.join(OsStr::from_bytes(
            h.name.strip_suffix(b"/").unwrap_or(h.name),
        ));
        if h.entry_type == EntryType::Directory {
            return std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, "creating", e));
        }
        let file = File::create(&path).map_err(|e| Error::io(&path, "creating", e))?;
        self.file = Some((path, io::BufWriter::with_capacity(128 << 10, file)));
        Ok(())
    }

    fn pad(&mut self, _size: u64) -> Result<()> {
        self.close()
    }

    fn finish(&mut self) -> Result<()> {
        self.close()
    }

    fn offset(&self) -> u64 {
        self.offset
    }
}

impl Write for DirMembers {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file()?.write(buf)?;
        self.offset += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file()?.write_all(buf)?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some((_, f)) => f.flush(),
            None => Ok(()),
        }
    }
}
