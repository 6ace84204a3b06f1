//! Layer records kept across runs, found again by the identities of the
//! layer's files: what `store_layer_digests` gives a build, without a
//! `digest` step before it.
//!
//! Input: the `--cache DIR` of a run whose spec has no records. For each
//! store layer, the run walks the layer's paths (metadata only, no file is
//! read) and takes a fingerprint: the hash of the tool's version, the
//! layer's [`layer_key`] and, for every member in archive order, its path,
//! mode and type, a symlink's target, and a regular file's device, inode,
//! size, mtime and ctime. `DIR/records/<fingerprint>` holds the layer's
//! record ([`LayerRecord`]) from an earlier run. A layer with no entry is
//! hashed now, in parallel (its diff_id, size and XXH3-128, not
//! compressed), and its entry written (temporary file, then rename, so a
//! reader never sees half of one). A record's blob, for a push, is the one
//! the push cache in the same directory ([`crate::registry::cache`]) knows
//! for its diff_id: a layer pushed before is not compressed again, and a
//! new one is compressed once, as it is uploaded. The spec then carries a
//! record for every layer, and the run goes as with `store_layer_digests`:
//! a push asks the registry for each known blob and reads no layer it has,
//! a `--load` reads no layer the engine has, and the layers that are
//! written stream in one pass, checked against their records.
//!
//! Why the identities are enough: no write to a file leaves its ctime as
//! it was (the kernel sets it; no system call sets it back), and a file
//! replaced by another gets another inode. A layer that streams is still
//! checked against its record, byte for byte (its XXH3-128). What the
//! fingerprint decides alone is the diff_id of a layer that is not read
//! (the registry or the engine has it): a changed file that kept its
//! identity would leave that layer as it was, a whole, consistent image of
//! the files as they were. In a Nix or Guix store, where nothing is
//! written after a path is registered, that needs someone who changes the
//! clock and the disk beneath the store.
//!
//! An entry that cannot be read, is not a record, or names another layer
//! is not trusted: it counts as missing, with a warning, and is written
//! again.

use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::Digest as _;

use crate::compress::Compression;
use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::record::{self, layer_key, LayerRecord};
use crate::spec::Spec;
use crate::tar::walk::{self, Entry, EntryKind};

/// What [`fill`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filled {
    /// Layers whose record came from the cache.
    pub found: usize,
    /// Layers hashed now (and their records written).
    pub hashed: usize,
    /// Entries that were not trusted, and why (one line each).
    pub warnings: Vec<String>,
}

/// The directory of the records under a cache directory.
fn records_dir(cache: &Path) -> PathBuf {
    cache.join("records")
}

/// The fingerprint of a store layer whose [`layer_key`] is `key`, walked
/// as `entries`.
pub fn fingerprint(key: &str, entries: &[Entry]) -> String {
    let mut hasher = sha2::Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    field(b"stream-layered-image layer fingerprint 1");
    field(env!("CARGO_PKG_VERSION").as_bytes());
    field(key.as_bytes());
    for entry in entries {
        field(&entry.path);
        field(&entry.mode.to_le_bytes());
        match &entry.kind {
            EntryKind::Directory => field(b"d"),
            EntryKind::Symlink(target) => {
                field(b"l");
                field(target);
            }
            EntryKind::File(id) => {
                field(b"f");
                for n in [id.dev, id.ino, id.size] {
                    field(&n.to_le_bytes());
                }
                for (s, ns) in [id.mtime, id.ctime] {
                    field(&s.to_le_bytes());
                    field(&ns.to_le_bytes());
                }
            }
        }
    }
    Sha256Digest(hasher.finalize().into()).hex()
}

/// Gives `spec` a record for every store layer from the cache at `cache`,
/// hashing (and remembering) the layers it has none for. A record gets the
/// blob of `compression` that the push cache in the same directory
/// ([`crate::registry::cache`]) knows for its diff_id; a layer whose blob
/// is not known is compressed by the run, once, as usual. A spec with
/// records of its own is left as it is.
pub fn fill(spec: &mut Spec, cache: &Path, compression: Compression) -> Result<Filled> {
    if spec.store_layer_digests.is_some() || spec.store_layers.is_empty() {
        return Ok(Filled::default());
    }
    let dir = records_dir(cache);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "creating the record cache", e))?;
    let blobs = crate::registry::cache::Cache::open(cache)?;
    let shared: &Spec = spec;
    let outcomes = (0..shared.store_layer_paths.len())
        .into_par_iter()
        .map(|index| layer_record(shared, index, &dir))
        .collect::<Result<Vec<_>>>()?;
    let mut filled = Filled::default();
    let mut records = Vec::with_capacity(outcomes.len());
    for (mut record, outcome) in outcomes {
        if record.blob(compression).is_none() {
            if let crate::registry::cache::Lookup::Hit(entry) =
                blobs.get(&record.diff_id, compression)
            {
                record.blobs.push((compression, entry.blob));
            }
        }
        match outcome {
            Outcome::Found => filled.found += 1,
            Outcome::Hashed(warning) => {
                filled.hashed += 1;
                filled.warnings.extend(warning);
            }
        }
        records.push(record);
    }
    spec.store_layer_digests = Some(records);
    Ok(filled)
}

enum Outcome {
    Found,
    /// Hashed now; with a warning when an entry was there but not trusted.
    Hashed(Option<String>),
}

fn layer_record(spec: &Spec, index: usize, dir: &Path) -> Result<(LayerRecord, Outcome)> {
    let entries = walk::walk_paths(&spec.store_layer_paths[index])?;
    let key = layer_key(&spec.store_dir, &spec.store_layer_paths[index], &spec.stamp);
    let path = dir.join(fingerprint(&key, &entries));
    let warning = match read_entry(&path, &key) {
        Ok(Some(mut record)) => {
            record.cached = Some(path);
            return Ok((record, Outcome::Found));
        }
        Ok(None) => None,
        Err(why) => Some(format!(
            "record cache: ignoring {}: {why}; the layer is hashed again",
            path.display()
        )),
    };
    // No blob: a run that needs one compresses the layer as it goes.
    let mut record = record::compute_walked(spec, index, &entries, &[])?;
    write_entry(&path, &record)?;
    record.cached = Some(path);
    Ok((record, Outcome::Hashed(warning)))
}

/// The record in the entry at `path`: `None` when there is none, an error
/// (why it is not trusted) when it is not a record of the layer `key`.
fn read_entry(path: &Path, key: &str) -> std::result::Result<Option<LayerRecord>, String> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let value =
        crate::pycompat::json::loads(&bytes).map_err(|_| "not JSON, or not whole".to_string())?;
    let list = crate::pycompat::json::PyValue::List(vec![value]);
    let mut records = record::parse(path, &list)
        .map_err(|_| "not a layer record".to_string())?
        .unwrap_or_default();
    let record = records.pop().ok_or("no record in it")?;
    if record.key != key {
        return Err(format!(
            "it is the record of another layer ({})",
            record.key
        ));
    }
    if record.xxh3.is_none() {
        return Err("it holds no xxh3_128".into());
    }
    Ok(Some(record))
}

fn write_entry(path: &Path, record: &LayerRecord) -> Result<()> {
    let text = format!("{}\n", record.to_json());
    crate::registry::cache::write_whole(path, text.as_bytes(), "writing the record cache entry")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A store of one path with a file and a symlink, and its spec.
    fn store() -> (tempfile::TempDir, Spec) {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let p = store.join("aaaa-app");
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("data"), b"one").unwrap();
        std::os::unix::fs::symlink("data", p.join("link")).unwrap();
        let spec = dir.path().join("spec.json");
        fs::write(
            &spec,
            serde_json::json!({
                "architecture": "amd64", "config": {}, "created": "1970-01-01T00:00:01Z",
                "store_dir": store, "store_layers": [[p]], "repo_tag": "x:1",
            })
            .to_string(),
        )
        .unwrap();
        let spec = Spec::load(&spec).unwrap();
        (dir, spec)
    }

    fn print(spec: &Spec) -> String {
        let paths = &spec.store_layer_paths[0];
        let key = layer_key(&spec.store_dir, paths, &spec.stamp);
        fingerprint(&key, &walk::walk_paths(paths).unwrap())
    }

    #[test]
    fn the_fingerprint_changes_with_any_file_identity() {
        let (dir, spec) = store();
        let p = dir.path().join("store/aaaa-app");
        let first = print(&spec);
        assert_eq!(print(&spec), first, "the same files, the same fingerprint");

        // The same bytes written again: another ctime.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(p.join("data"), b"one").unwrap();
        let rewritten = print(&spec);
        assert_ne!(rewritten, first);
        // A mode, a symlink's target, a new file.
        fs::set_permissions(p.join("data"), fs::Permissions::from_mode(0o600)).unwrap();
        let chmod = print(&spec);
        assert_ne!(chmod, rewritten);
        fs::remove_file(p.join("link")).unwrap();
        std::os::unix::fs::symlink("other", p.join("link")).unwrap();
        let relinked = print(&spec);
        assert_ne!(relinked, chmod);
        fs::write(p.join("new"), b"").unwrap();
        assert_ne!(print(&spec), relinked);
    }

    #[test]
    fn fill_takes_records_then_finds_them() {
        let (dir, mut spec) = store();
        let cache = dir.path().join("cache");
        let taken = fill(&mut spec, &cache, Compression::None).unwrap();
        assert_eq!((taken.found, taken.hashed), (0, 1));
        let record = spec.store_layer_digests.take().unwrap().remove(0);
        assert_eq!(
            record.to_json(),
            record::compute(&spec, 0, &[]).unwrap().to_json()
        );
        let found = fill(&mut spec, &cache, Compression::None).unwrap();
        assert_eq!((found.found, found.hashed), (1, 0));
        let again = &spec.store_layer_digests.as_ref().unwrap()[0];
        assert_eq!(again.to_json(), record.to_json());
        assert!(again.cached.is_some());
        // A spec's own records are left alone.
        assert_eq!(
            fill(&mut spec, &cache, Compression::None).unwrap(),
            Filled::default()
        );
    }
}
