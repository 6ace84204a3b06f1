//! The customisation layer of a spec, written from a directory tree.
//!
//! A spec's `customisation_layer` is a directory holding `layer.tar` and
//! `checksum` (its sha256 in hex). Nix builds one with GNU tar and
//! sha256sum; builders that have neither at hand (Guix's build side, where
//! every tool would be one more package to build) ask this tool instead.
//!
//! The archive depends on the tree's names, modes, symlink targets and file
//! contents only, never on when or by whom it was made: members in the
//! order of the store layers (depth first, siblings sorted by name), every
//! owner root (0:0), every mtime the one given, hard links archived as
//! whole files (as `tar --hard-dereference`), the tree's own root left out,
//! headers from [`crate::tar::header`] as for the store layers.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use crate::digest::{HashingWriter, Sha256Digest};
use crate::error::{Error, Result};
use crate::tar::header::{self as tarheader, EntryType, Header};
use crate::tar::walk::{self, EntryKind};

/// The layer's file name inside the output directory.
pub const LAYER_TAR: &str = "layer.tar";
/// The checksum's file name inside the output directory.
pub const CHECKSUM: &str = "checksum";

/// Writes `out_dir/layer.tar` of the tree under `root` (which is not itself
/// a member) and `out_dir/checksum`; every member gets modification time
/// `mtime`. Creates `out_dir` if needed. Returns the layer's sha256.
pub fn write(root: &Path, out_dir: &Path, mtime: i64) -> Result<Sha256Digest> {
    let root_text = root.to_str().ok_or_else(|| {
        Error::io(
            root,
            "customisation layer root",
            io::Error::other("the name is not valid UTF-8"),
        )
    })?;
    let meta =
        fs::symlink_metadata(root).map_err(|e| Error::io(root, "customisation layer root", e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            root,
            "customisation layer root",
            io::Error::other("not a directory"),
        ));
    }
    let root_norm = walk::normalise(root_text);
    let entries = walk::walk_paths(std::slice::from_ref(&root_norm))?;

    fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, "creating", e))?;
    let tar_path = out_dir.join(LAYER_TAR);
    let file = File::create(&tar_path).map_err(|e| Error::io(&tar_path, "creating", e))?;
    let mut out = HashingWriter::new(BufWriter::new(file));
    let write_err = |e: io::Error| Error::io(&tar_path, "writing", e);

    let prefix_len = root_norm.len() + usize::from(!root_norm.ends_with('/'));
    let mut offset: u64 = 0;
    let mut header = Vec::with_capacity(3 * tarheader::BLOCK);
    // The first entry is the root itself.
    for entry in entries.iter().skip(1) {
        let name = &entry.path[prefix_len..];
        let (entry_type, size, linkname): (_, u64, &[u8]) = match &entry.kind {
            EntryKind::Directory => (EntryType::Directory, 0, b""),
            EntryKind::Symlink(target) => (EntryType::Symlink, 0, target),
            EntryKind::File(id) => (EntryType::Regular, id.size, b""),
        };
        header.clear();
        tarheader::encode(
            &Header {
                name,
                mode: entry.mode,
                uid: 0,
                gid: 0,
                size,
                mtime,
                entry_type,
                linkname,
                uname: b"root",
                gname: b"root",
                pax: &[],
            },
            &mut header,
        );
        out.write_all(&header).map_err(write_err)?;
        offset += header.len() as u64;
        if entry_type == EntryType::Regular {
            copy_file(entry.fs_path(), size, &mut out, &tar_path)?;
            let pad = tarheader::data_padding(size);
            out.write_all(&vec![0; pad]).map_err(write_err)?;
            offset += size + pad as u64;
        }
    }
    out.write_all(&tarheader::end_of_archive(offset))
        .map_err(write_err)?;
    let (digest, _, buffered) = out.finish();
    buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?
        .sync_all()
        .map_err(write_err)?;

    let sum_path = out_dir.join(CHECKSUM);
    fs::write(&sum_path, format!("{}\n", digest.hex()))
        .map_err(|e| Error::io(&sum_path, "writing", e))?;
    Ok(digest)
}

/// Copies exactly `size` bytes of the file at `path`: a file that grew or
/// shrank since the walk would make a corrupt archive, so that is an error.
fn copy_file(path: &Path, size: u64, out: &mut impl Write, tar_path: &Path) -> Result<()> {
    let file = File::open(path).map_err(|e| Error::io(path, "opening", e))?;
    let mut limited = file.take(size + 1);
    let copied = io::copy(&mut limited, out).map_err(|e| {
        if e.kind() == io::ErrorKind::WriteZero || e.kind() == io::ErrorKind::BrokenPipe {
            Error::io(tar_path, "writing", e)
        } else {
            Error::io(path, "reading", e)
        }
    })?;
    if copied != size {
        return Err(Error::FileChanged {
            path: path.to_owned(),
            what: if copied > size {
                "it grew".into()
            } else {
                "it became shorter".into()
            },
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("tmp")).unwrap();
        fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(dir.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
        fs::hard_link(dir.join("etc/hosts"), dir.join("etc/hosts2")).unwrap();
        symlink("/gnu/store/abc-profile/bin", dir.join("bin")).unwrap();
    }

    /// name, type flag, mode, uid, mtime, link target, contents
    type Member = (String, u8, u32, u64, u64, String, Vec<u8>);

    fn members(tar: &[u8]) -> Vec<Member> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.entry_type().as_byte(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.mtime().unwrap(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    data,
                )
            })
            .collect()
    }

    #[test]
    fn members_sorted_root_owned_one_mtime_hard_links_whole() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        tree(&root);
        let out = dir.path().join("out");
        let digest = write(&root, &out, 1).unwrap();
        let tar = fs::read(out.join(LAYER_TAR)).unwrap();
        assert_eq!(digest, Sha256Digest::of(&tar));
        assert_eq!(
            fs::read_to_string(out.join(CHECKSUM)).unwrap(),
            format!("{}\n", digest.hex())
        );
        let m = members(&tar);
        let names: Vec<&str> = m.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["bin", "etc/", "etc/hosts", "etc/hosts2", "tmp/"]);
        assert_eq!(m[0].1, b'2');
        assert_eq!(m[0].5, "/gnu/store/abc-profile/bin");
        assert_eq!(m[3].1, b'0', "a hard link is archived as a whole file");
        assert_eq!(m[3].6, b"127.0.0.1 localhost\n");
        assert_eq!(m[4].2 & 0o7777, 0o1777);
        assert!(m.iter().all(|x| x.3 == 0 && x.4 == 1));
        assert_eq!(tar.len() % tarheader::RECORD, 0);
    }

    #[test]
    fn same_tree_same_bytes_whatever_the_times_and_location() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("elsewhere/b");
        tree(&a);
        tree(&b);
        // Different times on disk must not show.
        let old = File::options()
            .write(true)
            .open(a.join("etc/hosts"))
            .unwrap();
        old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(5))
            .unwrap();
        let da = write(&a, &dir.path().join("oa"), 1).unwrap();
        let db = write(&b, &dir.path().join("ob"), 1).unwrap();
        assert_eq!(da, db);
        let dc = write(&b, &dir.path().join("oc"), 2).unwrap();
        assert_ne!(da, dc, "the mtime is in the headers");
    }

    #[test]
    fn bad_roots_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let e = write(&missing, &dir.path().join("o"), 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing") && e.contains("customisation layer root"),
            "{e}"
        );
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let e = write(&file, &dir.path().join("o"), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn an_empty_root_is_an_empty_archive() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        write(&root, &dir.path().join("o"), 1).unwrap();
        let tar = fs::read(dir.path().join("o").join(LAYER_TAR)).unwrap();
        assert!(members(&tar).is_empty());
    }
}
