//! Layer digests taken ahead of the build: the records of the
//! `store_layer_digests` spec key, and the `digest` subcommand that makes
//! them.
//!
//! A record holds what the hashing pass would find for a store layer: its
//! diff_id and size, and for each compression asked for, its blob's digest
//! and size (compressed bytes depend only on the layer, see
//! [`crate::compress`]). With records, the pipeline skips the hashing pass
//! for those layers: streams are hashed as they are written and compared
//! with the record at the layer's end, and a push asks the registry for the
//! recorded blob before it reads anything.
//!
//! The streams compare the layer's XXH3-128, which the record holds beside
//! the diff_id, both taken of the same bytes in one pass: it catches any
//! accidental change as surely as a SHA-256 would, at a tenth of the cost,
//! which is what lets a one-pass stream keep up with `tar | cat`. Against
//! a crafted collision it is no defence, and needs none: whoever can write
//! the store can change it before `digest` runs, and every consumer checks
//! the SHA-256 digests of what it receives.
//!
//! A record also names the layer it was taken of, by its [`layer_key`]: the
//! hash of everything besides the files' contents that decides the layer's
//! bytes (the store, the paths in their order, the owner and time stamped
//! on every member). A record for another layer is refused, not trusted.
//! What the key cannot cover, the contents, is what the streaming check
//! catches.

use std::io::{self, Write};
use std::path::Path;

use rayon::prelude::*;
use sha2::Digest as _;

use crate::compress::{Compression, Encoder};
use crate::digest::{HashingWriter, LayerHasher, Sha256Digest};
use crate::error::{Error, Result};
use crate::image::oci::BlobRef;
use crate::pycompat::json::PyValue;
use crate::spec::Spec;
use crate::tar::layer::{self, Contents, Stamp};
use crate::tar::walk;

/// The spec key that holds the records.
pub const SPEC_KEY: &str = "store_layer_digests";

/// A record's key for the layer's XXH3-128, 32 lowercase hex digits.
pub const XXH3_KEY: &str = "xxh3_128";

/// What is known of one store layer before the build.
#[derive(Debug, Clone)]
pub struct LayerRecord {
    /// The layer's identity ([`layer_key`]), `sha256:` and 64 hex digits.
    pub key: String,
    /// The digest of the uncompressed layer tar.
    pub diff_id: Sha256Digest,
    /// The size of the uncompressed layer tar.
    pub size: u64,
    /// The XXH3-128 of the uncompressed layer tar: what a one-pass stream
    /// checks the layer against (records written before it existed lack
    /// it, and such a layer's SHA-256 is checked instead).
    pub xxh3: Option<u128>,
    /// The blob of each compression recorded, in the record's order.
    pub blobs: Vec<(Compression, BlobRef)>,
    /// Where the record came from when not from the spec: its entry in
    /// the record cache ([`crate::record_cache`]).
    pub cached: Option<std::path::PathBuf>,
}

impl LayerRecord {
    /// The blob of `compression`, if recorded; the layer tar itself for
    /// [`Compression::None`].
    pub fn blob(&self, compression: Compression) -> Option<BlobRef> {
        if compression == Compression::None {
            return Some(BlobRef {
                digest: self.diff_id,
                size: self.size,
            });
        }
        self.blobs
            .iter()
            .find(|(c, _)| *c == compression)
            .map(|(_, b)| *b)
    }

    /// The record as JSON, on one line, keys in a fixed order.
    pub fn to_json(&self) -> serde_json::Value {
        let mut blobs = serde_json::Map::new();
        for (compression, blob) in &self.blobs {
            blobs.insert(
                compression_name(*compression),
                serde_json::json!({
                    "digest": format!("sha256:{}", blob.digest),
                    "size": blob.size,
                }),
            );
        }
        let mut record = serde_json::Map::new();
        record.insert("key".into(), self.key.clone().into());
        record.insert("diff_id".into(), format!("sha256:{}", self.diff_id).into());
        record.insert("size".into(), self.size.into());
        if let Some(xxh3) = self.xxh3 {
            record.insert(XXH3_KEY.into(), format!("{xxh3:032x}").into());
        }
        record.insert("blobs".into(), blobs.into());
        record.into()
    }
}

/// A compression as records name it: `gzip:5`, `zstd:3`, `none`, the
/// spelling `--compress` takes with the level always written.
pub fn compression_name(compression: Compression) -> String {
    match compression {
        Compression::None => "none".into(),
        Compression::Gzip(level) => format!("gzip:{level}"),
        Compression::Zstd(level) => format!("zstd:{level}"),
    }
}

/// The identity of a store layer: the sha256 of its store directory, the
/// owner and time stamped on every member, and its (normalised) store
/// paths in the spec's order, which is the order they are archived in.
pub fn layer_key(store_dir: &str, paths: &[String], stamp: &Stamp) -> String {
    let mut hasher = sha2::Sha256::new();
    // Every field ends with a NUL, which no path or name holds.
    let mut field = |text: &str| {
        hasher.update(text.as_bytes());
        hasher.update([0]);
    };
    field("stream-layered-image layer key 1");
    field(store_dir);
    field(&stamp.mtime.to_string());
    field(&stamp.uid.to_string());
    field(&stamp.gid.to_string());
    field(&stamp.uname);
    field(&stamp.gname);
    field(&paths.len().to_string());
    for path in paths {
        field(path);
    }
    format!("sha256:{}", Sha256Digest(hasher.finalize().into()))
}

/// Reads the `store_layer_digests` value of the spec at `path`: a list of
/// records, or null (none). Whether they fit the spec's layers is
/// [`check`]'s business.
pub fn parse(path: &Path, value: &PyValue) -> Result<Option<Vec<LayerRecord>>> {
    let err = |key: String, problem: String| Error::SpecKey {
        path: path.to_owned(),
        key,
        problem,
    };
    if value.is_null() {
        return Ok(None);
    }
    let Some(list) = value.as_list() else {
        return Err(err(
            SPEC_KEY.into(),
            format!(
                "expected a list of layer digests (stream-layered-image digest), found {}",
                value.type_name()
            ),
        ));
    };
    let mut records = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let at = |field: &str| format!("{SPEC_KEY}[{i}]{field}");
        if !item.is_dict() {
            return Err(err(
                at(""),
                format!("expected an object, found {}", item.type_name()),
            ));
        }
        let field = |name: &str| {
            item.get(name)
                .ok_or_else(|| err(at(&format!(".{name}")), "missing".into()))
        };
        let key_value = field("key")?;
        let key = key_value
            .as_str()
            .filter(|k| parse_digest(k).is_some())
            .ok_or_else(|| err(at(".key"), "expected \"sha256:\" and 64 hex digits".into()))?
            .to_owned();
        let diff_id = digest_of(field("diff_id")?, &at(".diff_id"), path)?;
        let size = size_of(field("size")?, &at(".size"), path)?;
        let xxh3 = match item.get(XXH3_KEY) {
            None => None,
            Some(value) => Some(
                value
                    .as_str()
                    .filter(|t| {
                        t.len() == 32 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                    })
                    .and_then(|t| u128::from_str_radix(t, 16).ok())
                    .ok_or_else(|| {
                        err(
                            at(&format!(".{XXH3_KEY}")),
                            "expected 32 lowercase hex digits (an XXH3-128)".into(),
                        )
                    })?,
            ),
        };
        let mut blobs = Vec::new();
        let blobs_value = field("blobs")?;
        let Some(entries) = blobs_value.as_dict() else {
            return Err(err(
                at(".blobs"),
                format!("expected an object, found {}", blobs_value.type_name()),
            ));
        };
        for (name, blob) in entries {
            let name = name.to_string_lossy();
            let here = at(&format!(".blobs[{name:?}]"));
            let compression = Compression::parse(&name)
                .ok()
                .filter(|c| *c != Compression::None && compression_name(*c) == name)
                .ok_or_else(|| {
                    err(
                        here.clone(),
                        "expected a compression with its level, such as \"gzip:5\" or \"zstd:3\""
                            .into(),
                    )
                })?;
            if !blob.is_dict() {
                return Err(err(
                    here,
                    format!("expected an object, found {}", blob.type_name()),
                ));
            }
            let digest = digest_of(
                blob.get("digest")
                    .ok_or_else(|| err(format!("{here}.digest"), "missing".into()))?,
                &format!("{here}.digest"),
                path,
            )?;
            let size = size_of(
                blob.get("size")
                    .ok_or_else(|| err(format!("{here}.size"), "missing".into()))?,
                &format!("{here}.size"),
                path,
            )?;
            blobs.push((compression, BlobRef { digest, size }));
        }
        records.push(LayerRecord {
            key,
            diff_id,
            size,
            xxh3,
            blobs,
            cached: None,
        });
    }
    Ok(Some(records))
}

fn parse_digest(text: &str) -> Option<Sha256Digest> {
    text.strip_prefix("sha256:")
        .and_then(Sha256Digest::from_hex)
        .filter(|_| !text.bytes().any(|b| b.is_ascii_uppercase()))
}

fn digest_of(value: &PyValue, key: &str, path: &Path) -> Result<Sha256Digest> {
    value
        .as_str()
        .and_then(parse_digest)
        .ok_or_else(|| Error::SpecKey {
            path: path.to_owned(),
            key: key.to_owned(),
            problem: "expected \"sha256:\" and 64 lowercase hex digits".into(),
        })
}

fn size_of(value: &PyValue, key: &str, path: &Path) -> Result<u64> {
    match value {
        PyValue::Int(n) => n.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| Error::SpecKey {
        path: path.to_owned(),
        key: key.to_owned(),
        problem: "expected a size in bytes (a non-negative integer)".into(),
    })
}

/// Checks that the spec's records are one for each of its store layers,
/// each taken of that layer.
pub fn check(spec: &Spec) -> Result<()> {
    let Some(records) = &spec.store_layer_digests else {
        return Ok(());
    };
    let err = |key: String, problem: String| Error::SpecKey {
        path: spec.path.clone(),
        key,
        problem,
    };
    if records.len() != spec.store_layers.len() {
        return Err(err(
            SPEC_KEY.into(),
            format!(
                "has {} records, but store_layers has {} layers; run stream-layered-image digest on this spec again",
                records.len(),
                spec.store_layers.len()
            ),
        ));
    }
    for (i, (record, paths)) in records.iter().zip(&spec.store_layer_paths).enumerate() {
        let key = layer_key(&spec.store_dir, paths, &spec.stamp);
        if record.key != key {
            return Err(err(
                format!("{SPEC_KEY}[{i}].key"),
                format!(
                    "the record was taken of another layer ({}) than store_layers[{i}] ({key}): other store paths, order, store_dir, mtime or owner; run stream-layered-image digest on this spec again",
                    record.key
                ),
            ));
        }
    }
    Ok(())
}

/// Hashes `spec`'s store layer `index` (0-based, into `store_layers`), and
/// compresses it with each of `compressions`, all in one read of its files.
pub fn compute(spec: &Spec, index: usize, compressions: &[Compression]) -> Result<LayerRecord> {
    let paths = spec.store_layer_paths.get(index).ok_or_else(|| {
        let n = spec.store_layers.len();
        Error::Usage(match n {
            0 => format!("--layer {index}: {:?} has no store layers", spec.path),
            _ => format!(
                "--layer {index}: {:?} has {n} store layers (0 to {})",
                spec.path,
                n - 1
            ),
        })
    })?;
    let entries = walk::walk_paths(paths)?;
    compute_walked(spec, index, &entries, compressions)
}

/// [`compute`] of store layer `index`, already walked as `entries`.
pub fn compute_walked(
    spec: &Spec,
    index: usize,
    entries: &[walk::Entry],
    compressions: &[Compression],
) -> Result<LayerRecord> {
    let paths = &spec.store_layer_paths[index];
    let parents = walk::store_parents(&spec.store_dir);
    let mut unique: Vec<Compression> = Vec::new();
    for c in compressions {
        if *c != Compression::None && !unique.contains(c) {
            unique.push(*c);
        }
    }
    let compressions = unique;
    let mut fanout = Fanout {
        count: 0,
        encoders: compressions
            .iter()
            .map(|c| c.encoder(HashingWriter::new(io::sink())))
            .collect::<io::Result<_>>()
            .map_err(Error::Output)?,
    };
    let mut hasher = LayerHasher::new(true, true);
    layer::encode(
        &parents,
        entries,
        &spec.stamp,
        Contents::Hash(&mut hasher),
        &mut fanout,
    )?;
    let sums = hasher.finish();
    let mut blobs = Vec::new();
    for (compression, encoder) in compressions.iter().zip(fanout.encoders) {
        let (digest, size, _) = encoder.finish().map_err(Error::Output)?.finish();
        blobs.push((*compression, BlobRef { digest, size }));
    }
    Ok(LayerRecord {
        key: layer_key(&spec.store_dir, paths, &spec.stamp),
        diff_id: sums.sha256.expect("asked for"),
        size: fanout.count,
        xxh3: sums.xxh3,
        blobs,
        cached: None,
    })
}

/// [`compute`] for every store layer, several at once.
pub fn compute_all(spec: &Spec, compressions: &[Compression]) -> Result<Vec<LayerRecord>> {
    (0..spec.store_layers.len())
        .into_par_iter()
        .map(|i| compute(spec, i, compressions))
        .collect()
}

/// Where [`compute`] encodes a layer: a count of its bytes, and one
/// compressor per compression asked for.
struct Fanout {
    count: u64,
    encoders: Vec<Encoder<HashingWriter<io::Sink>>>,
}

impl Write for Fanout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        for encoder in &mut self.encoders {
            encoder.write_all(buf)?;
        }
        self.count += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl layer::LayerSink for Fanout {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_layers_apart() {
        let a = vec!["/nix/store/a-x".to_owned(), "/nix/store/b-y".to_owned()];
        let b = vec!["/nix/store/b-y".to_owned(), "/nix/store/a-x".to_owned()];
        let key = layer_key("/nix/store", &a, &Stamp::for_tests());
        assert_eq!(key, layer_key("/nix/store", &a, &Stamp::for_tests()));
        assert_ne!(
            key,
            layer_key("/nix/store", &b, &Stamp::for_tests()),
            "order counts"
        );
        assert_ne!(key, layer_key("/gnu/store", &a, &Stamp::for_tests()));
        let later = Stamp {
            mtime: 2,
            ..Stamp::for_tests()
        };
        assert_ne!(key, layer_key("/nix/store", &a, &later));
        // A path cannot pass for two.
        let joined = vec!["/nix/store/a-x\0/nix/store/b-y".to_owned()];
        assert_ne!(key, layer_key("/nix/store", &joined, &Stamp::for_tests()));
    }

    #[test]
    fn records_read_back_what_they_write() {
        let record = LayerRecord {
            key: format!("sha256:{}", "a".repeat(64)),
            diff_id: Sha256Digest([1; 32]),
            size: 10240,
            xxh3: Some(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            blobs: vec![(
                Compression::Gzip(5),
                BlobRef {
                    digest: Sha256Digest([2; 32]),
                    size: 99,
                },
            )],
            cached: None,
        };
        let text = format!("[{}]", record.to_json());
        let value = crate::pycompat::json::loads(text.as_bytes()).unwrap();
        let back = parse(Path::new("s.json"), &value).unwrap().unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].to_json(), record.to_json());
        assert_eq!(
            (&back[0].key, back[0].diff_id, back[0].size, back[0].xxh3),
            (&record.key, record.diff_id, record.size, record.xxh3)
        );
        // Written before the XXH3-128 was: read without it.
        let mut old = record.to_json();
        old.as_object_mut().unwrap().remove(XXH3_KEY);
        let value = crate::pycompat::json::loads(format!("[{old}]").as_bytes()).unwrap();
        let back = parse(Path::new("s.json"), &value).unwrap().unwrap();
        assert_eq!(back[0].xxh3, None);
        assert_eq!(back[0].diff_id, record.diff_id);
        assert_eq!(back[0].blob(Compression::Gzip(5)).unwrap().size, 99);
        assert!(back[0].blob(Compression::Gzip(6)).is_none());
        assert_eq!(
            back[0].blob(Compression::None).unwrap().digest,
            record.diff_id
        );
    }

    #[test]
    fn bad_records_name_the_field() {
        let good = format!(
            r#"{{"key": "sha256:{a}", "diff_id": "sha256:{a}", "size": 1, "blobs": {{}}}}"#,
            a = "a".repeat(64)
        );
        let cases = [
            ("{}".to_owned(), "store_layer_digests"),
            ("[1]".to_owned(), "store_layer_digests[0]"),
            (
                format!("[{}]", good.replace("\"size\": 1", "\"size\": -1")),
                "store_layer_digests[0].size",
            ),
            (
                format!(
                    "[{}]",
                    good.replace("\"diff_id\": \"sha256:", "\"diff_id\": \"md5:")
                ),
                "store_layer_digests[0].diff_id",
            ),
            (
                format!("[{good}, {}]", good.replace("\"key\"", "\"kee\"")),
                "store_layer_digests[1].key",
            ),
            (
                format!(
                    "[{}]",
                    good.replace("{}", r#"{"gzip": {"digest": "x", "size": 1}}"#)
                ),
                "store_layer_digests[0].blobs[\"gzip\"]",
            ),
            (
                format!("[{}]", good.replace("{}", r#"{"gzip:5": [1]}"#)),
                "store_layer_digests[0].blobs[\"gzip:5\"]",
            ),
            (
                format!("[{}]", good.replace("{}", r#"{"zstd:3": {"size": 1}}"#)),
                "store_layer_digests[0].blobs[\"zstd:3\"].digest",
            ),
            (
                format!(
                    "[{}]",
                    good.replace("\"key\": \"sha256:", "\"key\": \"sha256:0")
                ),
                "store_layer_digests[0].key",
            ),
            (
                format!("[{}]", good.replace("\"blobs\": {}", "\"blobs\": []")),
                "store_layer_digests[0].blobs",
            ),
            (
                format!(
                    "[{}]",
                    good.replace("\"size\": 1", "\"size\": 1, \"xxh3_128\": 12")
                ),
                "store_layer_digests[0].xxh3_128",
            ),
            (
                format!(
                    "[{}]",
                    good.replace(
                        "\"size\": 1",
                        &format!("\"size\": 1, \"xxh3_128\": \"{}\"", "A".repeat(32))
                    )
                ),
                "store_layer_digests[0].xxh3_128",
            ),
            (
                format!(
                    "[{}]",
                    good.replace(
                        "\"size\": 1",
                        &format!("\"size\": 1, \"xxh3_128\": \"{}\"", "a".repeat(31))
                    )
                ),
                "store_layer_digests[0].xxh3_128",
            ),
        ];
        for (text, key) in cases {
            let value = crate::pycompat::json::loads(text.as_bytes()).unwrap();
            let e = parse(Path::new("s.json"), &value).unwrap_err();
            assert!(
                e.to_string().contains(&format!("key {key:?}")),
                "{text}: {e}"
            );
        }
    }
}
