//! The deterministic walk of a layer's store paths.
//!
//! The reference lists each store path with `Path.rglob("*")` and sorts the
//! result, so a layer holds its store paths in spec order and, inside each,
//! the entries in the order of `sorted()` on `pathlib` paths: component by
//! component, each compared as a decoded Python `str`. That order is exactly
//! a pre-order depth-first walk that visits siblings sorted by
//! [`pystr::cmp_names`], which is what this module does; it never follows
//! symlinks, like `rglob`.
//!
//! The walk records each file's identity (device, inode, size, mtime,
//! ctime). Both passes over a layer check every file against it, so a file
//! that changes between them is reported by name instead of producing an
//! image whose bytes do not match its manifest.

use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::pycompat::str as pystr;

/// A file's identity as seen by `lstat`/`fstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Status change time (seconds, nanoseconds): changes on every write,
    /// even one that restores the mtime afterwards.
    pub ctime: (i64, i64),
}

impl FileIdentity {
    /// The identity in `meta`.
    pub fn of(meta: &Metadata) -> Self {
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Describes how `now` differs from `self`, or `None` if it does not.
    pub fn difference(&self, now: &FileIdentity) -> Option<String> {
        if (self.dev, self.ino) != (now.dev, now.ino) {
            Some("it was replaced by another file".into())
        } else if self.size != now.size {
            Some(format!("size {} became {}", self.size, now.size))
        } else if self.mtime != now.mtime {
            Some("its modification time changed".into())
        } else if self.ctime != now.ctime {
            Some("it was modified (its status change time moved)".into())
        } else {
            None
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone)]
pub enum EntryKind {
    /// A directory.
    Directory,
    /// A symbolic link and its target.
    Symlink(Box<[u8]>),
    /// A regular file (hard links included: each is archived in full).
    File(FileIdentity),
}

/// One member of a layer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Absolute path, normalised like `pathlib` does.
    pub path: Box<[u8]>,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Type and type-specific data.
    pub kind: EntryKind,
}

impl Entry {
    /// The entry's path as a `Path`.
    pub fn fs_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.path))
    }
}

/// Normalises a store path the way `pathlib.PurePosixPath` does: repeated
/// slashes and `.` components vanish, as does a trailing slash.
pub fn normalise(path: &str) -> String {
    let absolute = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// Checks that `path` is a store path under `store_dir` and returns its
/// normalised form.
pub fn check_store_path(path: &str, store_dir: &str) -> Result<String> {
    let norm = normalise(path);
    let dir = normalise(store_dir);
    let inside = norm
        .strip_prefix(&dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty() && !rest.split('/').any(|c| c == ".."));
    if !inside || !dir.starts_with('/') {
        return Err(Error::OutsideStore {
            path: path.to_owned(),
            store_dir: store_dir.to_owned(),
        });
    }
    Ok(norm)
}

/// Walks the given (normalised) store paths in archive order.
pub fn walk_paths(paths: &[String]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for p in paths {
        let path = PathBuf::from(p);
        let meta = fs::symlink_metadata(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::io(&path, "store path does not exist", e)
            } else {
                Error::io(&path, "inspecting store path", e)
            }
        })?;
        visit(&path, meta, &mut out)?;
    }
    Ok(out)
}

/// Appends `root` and everything below it in archive order: pre-order, depth
/// first, siblings sorted. The open directories are kept on a heap-allocated
/// stack rather than the thread's: a tree may be as deep as `PATH_MAX`
/// allows (over 2000 levels), and the walk runs on worker threads with small
/// stacks.
fn visit(root: &Path, meta: Metadata, out: &mut Vec<Entry>) -> Result<()> {
    let mut open: Vec<(PathBuf, std::vec::IntoIter<OsString>)> = Vec::new();
    open.extend(enter(root.to_path_buf(), meta, out)?);
    while let Some((dir, children)) = open.last_mut() {
        let Some(name) = children.next() else {
            open.pop();
            continue;
        };
        let child = dir.join(&name);
        let meta = fs::symlink_metadata(&child).map_err(|e| Error::io(&child, "inspecting", e))?;
        open.extend(enter(child, meta, out)?);
    }
    Ok(())
}

/// Records `path`; for a directory, also returns it with its children's
/// names in archive order.
fn enter(
    path: PathBuf,
    meta: Metadata,
    out: &mut Vec<Entry>,
) -> Result<Option<(PathBuf, std::vec::IntoIter<OsString>)>> {
    let kind = entry_kind(&path, &meta)?;
    let is_dir = matches!(kind, EntryKind::Directory);
    out.push(Entry {
        path: path.as_os_str().as_bytes().into(),
        mode: meta.mode() & 0o7777,
        kind,
    });
    if !is_dir {
        return Ok(None);
    }
    let mut children = Vec::new();
    let listing = fs::read_dir(&path).map_err(|e| Error::io(&path, "listing directory", e))?;
    for child in listing {
        let child = child.map_err(|e| Error::io(&path, "listing directory", e))?;
        children.push(child.file_name());
    }
    children.sort_by(|a, b| pystr::cmp_names(a.as_bytes(), b.as_bytes()));
    Ok(Some((path, children.into_iter())))
}

fn entry_kind(path: &Path, meta: &Metadata) -> Result<EntryKind> {
    let ft = meta.file_type();
    if ft.is_dir() {
        Ok(EntryKind::Directory)
    } else if ft.is_file() {
        Ok(EntryKind::File(FileIdentity::of(meta)))
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|e| Error::io(path, "reading symlink", e))?;
        Ok(EntryKind::Symlink(target.as_os_str().as_bytes().into()))
    } else {
        let kind = if ft.is_fifo() {
            "fifo"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "character device"
        } else {
            "block device"
        };
        Err(Error::UnsupportedFileType {
            path: path.to_owned(),
            kind,
        })
    }
}

/// The directories above the store that every layer starts with, e.g.
/// `/nix` and `/nix/store` for `/nix/store`.
pub fn store_parents(store_dir: &str) -> Vec<String> {
    let norm = normalise(store_dir);
    let mut out = Vec::new();
    let mut acc = String::new();
    for part in norm.split('/').filter(|p| !p.is_empty()) {
        acc.push('/');
        acc.push_str(part);
        out.push(acc.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_matches_pathlib() {
        assert_eq!(normalise("/nix//store/./x/"), "/nix/store/x");
        assert_eq!(normalise("/a/../b"), "/a/../b");
    }

    #[test]
    fn store_path_checks() {
        assert!(check_store_path("/nix/store/abc-x", "/nix/store").is_ok());
        assert!(check_store_path("/nix/store/abc-x/", "/nix/store/").is_ok());
        for bad in [
            "/nix/storeabc",
            "/nix/store",
            "/nix/store/",
            "/etc/passwd",
            "/nix/store/../x",
        ] {
            assert!(check_store_path(bad, "/nix/store").is_err(), "{bad}");
        }
    }

    #[test]
    fn parents_of_store_dirs() {
        assert_eq!(store_parents("/nix/store"), vec!["/nix", "/nix/store"]);
        assert_eq!(store_parents("/gnu/store/"), vec!["/gnu", "/gnu/store"]);
        assert_eq!(
            store_parents("/var/lib/store"),
            vec!["/var", "/var/lib", "/var/lib/store"]
        );
    }
}
