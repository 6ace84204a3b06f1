//! The push cache: which compressed blob a layer became.
//!
//! Input: a directory the user names with `--cache`. Each entry is one
//! small JSON file named `<diff_id>.<compression>` (e.g.
//! `3f...9a.gzip-5`) holding the compressed blob's digest and size and the
//! repositories (`HOST[:PORT]/REPO`) it was pushed to. With it, a layer
//! whose tar has not changed needs neither compression nor upload once the
//! registry confirms (`HEAD`) that it holds the blob, and a blob pushed to
//! another repository of the same registry can be mounted from there.
//!
//! Entries are written to a temporary file in the same directory and
//! renamed into place, so a reader never sees half an entry (even when a
//! push is killed while writing one), and two pushes writing the same
//! entry leave one of them whole. An entry also states the layer and the
//! compression it is for, and a checksum over what it claims: an entry
//! that cannot be read or parsed, names another layer, or fails its
//! checksum (a damaged disk, an edit by hand) is not trusted, since a
//! wrong blob digest would make a manifest name a blob that is not this
//! layer. It counts as missing, with a warning: the layer is compressed
//! and uploaded again, and the entry rewritten.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::compress::Compression;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::image::oci::BlobRef;

/// Repositories remembered per blob (the most recent first).
const MAX_REPOSITORIES: usize = 16;

/// A cache directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
}

/// The answer of [`Cache::get`].
#[derive(Debug, Clone)]
pub enum Lookup {
    /// A sound entry.
    Hit(Entry),
    /// No entry.
    Miss,
    /// An entry that is not trusted, and why.
    Corrupt(String),
}

/// What the cache knows about a layer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The compressed blob.
    pub blob: BlobRef,
    /// Where it was pushed, most recent first.
    pub repositories: Vec<String>,
}

/// The name of a compression in entry names: `none`, `gzip-5`, `zstd-3`.
fn compression_name(compression: Compression) -> String {
    match compression {
        Compression::None => "none".into(),
        Compression::Gzip(level) => format!("gzip-{level}"),
        Compression::Zstd(level) => format!("zstd-{level}"),
    }
}

impl Cache {
    /// Opens (creating it if need be) the cache directory.
    pub fn open(dir: &Path) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "creating the cache", e))?;
        Ok(Cache {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, diff_id: &Sha256Digest, compression: Compression) -> PathBuf {
        self.dir
            .join(format!("{diff_id}.{}", compression_name(compression)))
    }

    /// The entry for a layer.
    pub fn get(&self, diff_id: &Sha256Digest, compression: Compression) -> Lookup {
        let path = self.path(diff_id, compression);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => return Lookup::Corrupt(format!("{path:?}: {e}")),
        };
        match parse_entry(&bytes, diff_id, compression) {
            Ok(entry) => Lookup::Hit(entry),
            Err(problem) => Lookup::Corrupt(format!("{path:?}: {problem}")),
        }
    }

    /// Records that the layer `diff_id`, compressed this way, is `blob`,
    /// now also in `repository`. Nothing is written when the entry says
    /// so already.
    pub fn put(
        &self,
        diff_id: &Sha256Digest,
        compression: Compression,
        blob: BlobRef,
        repository: &str,
    ) -> Result<()> {
        let mut repositories = vec![repository.to_owned()];
        match self.get(diff_id, compression) {
            Lookup::Hit(old) if old.blob.digest == blob.digest && old.blob.size == blob.size => {
                if old.repositories.first().map(String::as_str) == Some(repository) {
                    return Ok(());
                }
                repositories.extend(old.repositories.into_iter().filter(|r| r != repository));
                repositories.truncate(MAX_REPOSITORIES);
            }
            _ => {}
        }
        let doc = json!({
            "diff_id": format!("sha256:{diff_id}"),
            "compression": compression_name(compression),
            "digest": format!("sha256:{}", blob.digest),
            "size": blob.size,
            "check": checksum(diff_id, compression, &blob),
            "repositories": repositories,
        });
        let path = self.path(diff_id, compression);
        write_whole(
            &path,
            &serde_json::to_vec(&doc).expect("plain JSON"),
            "writing a cache entry",
        )
    }
}

/// Writes `bytes` to `path` through a hidden temporary file beside it,
/// renamed into place: a reader sees the old file, the new one or none,
/// never part of one, even when the writer is killed. The temporary name
/// is unique per process and per write, so concurrent writers of the same
/// entry (processes, or threads of one) leave one of theirs whole.
pub(crate) fn write_whole(path: &Path, bytes: &[u8], what: &'static str) -> Result<()> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let temp = path.with_file_name(format!(
        ".{}.{}-{}.tmp",
        path.file_name().expect("a file name").to_string_lossy(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(Error::io(path, what, e));
    }
    Ok(())
}

/// A checksum over what an entry claims.
fn checksum(diff_id: &Sha256Digest, compression: Compression, blob: &BlobRef) -> String {
    let text = format!(
        "{diff_id} {} {} {}",
        compression_name(compression),
        blob.digest,
        blob.size
    );
    Sha256Digest::of(text.as_bytes()).hex()
}

/// Reads an entry's bytes as the entry of the layer `diff_id` compressed
/// this way; why not, when it is not one to trust.
pub fn parse_entry(
    bytes: &[u8],
    diff_id: &Sha256Digest,
    compression: Compression,
) -> std::result::Result<Entry, String> {
    let json: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let field = |name: &str| {
        json[name]
            .as_str()
            .ok_or_else(|| format!("no string {name:?}"))
    };
    let digest_of = |name: &str| {
        field(name)?
            .strip_prefix("sha256:")
            .and_then(Sha256Digest::from_hex)
            .ok_or_else(|| format!("{name:?} is not a sha256 digest"))
    };
    if digest_of("diff_id")? != *diff_id || field("compression")? != compression_name(compression) {
        return Err("it is the entry of another layer or compression".into());
    }
    let blob = BlobRef {
        digest: digest_of("digest")?,
        size: json["size"].as_u64().ok_or("no \"size\" number")?,
    };
    if field("check")? != checksum(diff_id, compression, &blob) {
        return Err("its checksum does not match what it says".into());
    }
    let repositories = json["repositories"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Entry { blob, repositories })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_blobs_and_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("c")).unwrap();
        let diff_id = Sha256Digest::of(b"layer");
        let blob = BlobRef {
            digest: Sha256Digest::of(b"compressed"),
            size: 10,
        };
        let gzip = Compression::Gzip(6);
        assert!(matches!(cache.get(&diff_id, gzip), Lookup::Miss));
        cache.put(&diff_id, gzip, blob, "h:1/a").unwrap();
        cache.put(&diff_id, gzip, blob, "h:1/b").unwrap();
        cache.put(&diff_id, gzip, blob, "h:1/a").unwrap();
        let Lookup::Hit(entry) = cache.get(&diff_id, gzip) else {
            panic!("no entry")
        };
        assert_eq!(
            (entry.blob.digest, entry.blob.size),
            (blob.digest, blob.size)
        );
        assert_eq!(entry.repositories, ["h:1/a", "h:1/b"]);
        // Another level is another entry.
        assert!(matches!(
            cache.get(&diff_id, Compression::Gzip(9)),
            Lookup::Miss
        ));
        // Only entries are left behind, no temporary files.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("{diff_id}.gzip-6")]);
        // A damaged entry is not trusted, and is replaced.
        let entry_path = dir.path().join("c").join(&names[0]);
        std::fs::write(&entry_path, "{").unwrap();
        assert!(matches!(cache.get(&diff_id, gzip), Lookup::Corrupt(p) if p.contains("not JSON")));
        cache.put(&diff_id, gzip, blob, "h:1/c").unwrap();
        let Lookup::Hit(entry) = cache.get(&diff_id, gzip) else {
            panic!("not rewritten")
        };
        assert_eq!(entry.repositories, ["h:1/c"]);
    }

    #[test]
    fn entries_that_claim_what_they_do_not_check_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path()).unwrap();
        let diff_id = Sha256Digest::of(b"layer");
        let blob = BlobRef {
            digest: Sha256Digest::of(b"compressed"),
            size: 10,
        };
        let gzip = Compression::Gzip(5);
        cache.put(&diff_id, gzip, blob, "h:1/a").unwrap();
        let path = cache.path(&diff_id, gzip);
        let good = std::fs::read_to_string(&path).unwrap();
        // One digit of the blob digest flipped, as a damaged disk might.
        let hex = blob.digest.hex();
        let flipped = format!(
            "{}{}",
            if hex.starts_with('0') { '1' } else { '0' },
            &hex[1..]
        );
        std::fs::write(&path, good.replace(&hex, &flipped)).unwrap();
        assert!(matches!(cache.get(&diff_id, gzip), Lookup::Corrupt(p) if p.contains("checksum")),);
        // Another layer's entry copied over this one.
        let other = Sha256Digest::of(b"other layer");
        cache.put(&other, gzip, blob, "h:1/a").unwrap();
        std::fs::copy(cache.path(&other, gzip), &path).unwrap();
        assert!(
            matches!(cache.get(&diff_id, gzip), Lookup::Corrupt(p) if p.contains("another layer")),
        );
        // An entry of the format before checksums.
        std::fs::write(
            &path,
            format!(r#"{{"digest":"sha256:{hex}","size":10,"repositories":[]}}"#),
        )
        .unwrap();
        assert!(matches!(cache.get(&diff_id, gzip), Lookup::Corrupt(_)));
    }
}
