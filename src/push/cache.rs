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
//! renamed into place, so a reader never sees half an entry, and two
//! pushes writing the same entry leave one of them whole. An entry that
//! cannot be read or parsed counts as missing: the layer is compressed
//! and uploaded again, and the entry rewritten.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

use crate::compress::Compression;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::oci::BlobRef;

/// Repositories remembered per blob (the most recent first).
const MAX_REPOSITORIES: usize = 16;

/// A cache directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
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

    /// The entry for a layer, if there is a readable one.
    pub fn get(&self, diff_id: &Sha256Digest, compression: Compression) -> Option<Entry> {
        let text = std::fs::read_to_string(self.path(diff_id, compression)).ok()?;
        let json: Value = serde_json::from_str(&text).ok()?;
        let digest = json["digest"]
            .as_str()?
            .strip_prefix("sha256:")
            .and_then(Sha256Digest::from_hex)?;
        let size = json["size"].as_u64()?;
        let repositories = json["repositories"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Some(Entry {
            blob: BlobRef { digest, size },
            repositories,
        })
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
            Some(old) if old.blob.digest == blob.digest && old.blob.size == blob.size => {
                if old.repositories.first().map(String::as_str) == Some(repository) {
                    return Ok(());
                }
                repositories.extend(old.repositories.into_iter().filter(|r| r != repository));
                repositories.truncate(MAX_REPOSITORIES);
            }
            _ => {}
        }
        let doc = json!({
            "digest": format!("sha256:{}", blob.digest),
            "size": blob.size,
            "repositories": repositories,
        });
        let path = self.path(diff_id, compression);
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let temp = self.dir.join(format!(
            ".{}.{}-{}.tmp",
            path.file_name().expect("a file name").to_string_lossy(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::write(&temp, serde_json::to_vec(&doc).expect("plain JSON"))
            .and_then(|()| std::fs::rename(&temp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::io(&path, "writing a cache entry", e));
        }
        Ok(())
    }
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
        assert!(cache.get(&diff_id, gzip).is_none());
        cache.put(&diff_id, gzip, blob, "h:1/a").unwrap();
        cache.put(&diff_id, gzip, blob, "h:1/b").unwrap();
        cache.put(&diff_id, gzip, blob, "h:1/a").unwrap();
        let entry = cache.get(&diff_id, gzip).unwrap();
        assert_eq!(
            (entry.blob.digest, entry.blob.size),
            (blob.digest, blob.size)
        );
        assert_eq!(entry.repositories, ["h:1/a", "h:1/b"]);
        // Another level is another entry.
        assert!(cache.get(&diff_id, Compression::Gzip(9)).is_none());
        // Only entries are left behind, no temporary files.
        let names: Vec<String> = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [format!("{diff_id}.gzip-6")]);
        // A damaged entry is a miss, and is replaced.
        std::fs::write(dir.path().join("c").join(&names[0]), "{").unwrap();
        assert!(cache.get(&diff_id, gzip).is_none());
        cache.put(&diff_id, gzip, blob, "h:1/c").unwrap();
        assert_eq!(cache.get(&diff_id, gzip).unwrap().repositories, ["h:1/c"]);
    }
}
