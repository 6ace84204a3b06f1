//! Reading a base image (`from_image`): a docker-archive, possibly gzipped.
//!
//! The reference copies each base layer into the output with the member's
//! own tar header (name, mode, owner, mtime and any PAX records), and takes
//! its digest from the base image's `rootfs.diff_ids` without looking. We
//! copy the same header fields, and check everything it trusts: the
//! manifest, the config, that each layer is a regular member inside the
//! archive, that there are as many diff_ids as layers, and (while hashing
//! in parallel with the store layers) that each layer's bytes match its
//! diff_id. Nothing is buffered but the two JSON documents, whose size is
//! capped, so a hostile archive cannot make memory grow with what its
//! headers claim.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use crate::digest::Sha256Digest;
use crate::error::{Error, Result};
use crate::pycompat::json::{self as pyjson, PyValue};
use crate::tar::header::EntryType;

/// Largest `manifest.json` or config we read into memory.
const MAX_JSON: u64 = 64 * 1024 * 1024;

/// A member's header fields, as `tarfile` would re-encode them.
#[derive(Debug, Clone)]
pub struct MemberHeader {
    /// Member name.
    pub name: Vec<u8>,
    /// Mode bits.
    pub mode: u32,
    /// Owner id (from PAX if present).
    pub uid: i64,
    /// Group id (from PAX if present).
    pub gid: i64,
    /// Modification time, rounded like `tarfile` rounds a PAX float.
    pub mtime: i64,
    /// Type flag.
    pub type_flag: u8,
    /// Link target.
    pub linkname: Vec<u8>,
    /// Owner name.
    pub uname: Vec<u8>,
    /// Group name.
    pub gname: Vec<u8>,
    /// The member's PAX records, in order.
    pub pax: Vec<(String, Vec<u8>)>,
}

impl MemberHeader {
    /// The header's entry type.
    pub fn entry_type(&self) -> EntryType {
        EntryType::Other(self.type_flag)
    }
}

/// Where a member's data lives in the (decompressed) archive.
#[derive(Debug, Clone)]
struct Member {
    header: MemberHeader,
    offset: u64,
    size: u64,
}

/// One layer of the base image.
#[derive(Debug, Clone)]
pub struct BaseLayer {
    /// The member's header, copied into the output.
    pub header: MemberHeader,
    /// Size of the layer tar.
    pub size: u64,
    /// The digest the base image's config claims for it.
    pub diff_id: Sha256Digest,
    offset: u64,
}

/// An opened base image.
#[derive(Debug)]
pub struct BaseImage {
    path: PathBuf,
    gzip: bool,
    /// The base image's configuration (`<id>.json`).
    pub config: PyValue,
    /// Its layers, in manifest order.
    pub layers: Vec<BaseLayer>,
}

impl BaseImage {
    /// Opens and checks the archive at `path`.
    pub fn open(path: &Path) -> Result<BaseImage> {
        let bad = |problem: String| Error::BaseImage {
            path: path.to_owned(),
            problem,
        };
        let mut file = File::open(path).map_err(|e| Error::io(path, "opening base image", e))?;
        let mut magic = [0u8; 2];
        let gzip = matches!(file.read(&mut magic), Ok(2) if magic == [0x1f, 0x8b]);
        file.rewind()
            .map_err(|e| Error::io(path, "reading base image", e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(path, "inspecting base image", e))?
            .len();

        let members = if gzip {
            let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
            index(archive.entries()).and_then(|members| {
                // The tar reader stops at the end-of-archive blocks; read on
                // to the gzip trailer, so that a cut or corrupt trailer
                // (length and CRC) is an error too.
                io::copy(&mut archive.into_inner(), &mut io::sink())?;
                Ok(members)
            })
        } else {
            index(tar::Archive::new(BufReader::new(file)).entries_with_seek())
        }
        .map_err(|e| {
            bad(format!(
                "not a readable tar archive: {}",
                crate::escape::text(&e.to_string())
            ))
        })?;

        let mut image = BaseImage {
            path: path.to_owned(),
            gzip,
            config: PyValue::Null,
            layers: Vec::new(),
        };
        let lookup = |name: &str| -> Result<&Member> {
            let member = members
                .get(name.as_bytes())
                .ok_or_else(|| bad(format!("it has no member {name:?}")))?;
            let regular = matches!(member.header.type_flag, b'0' | 0);
            if !regular {
                return Err(bad(format!(
                    "member {name:?} is not a regular file (type {:?})",
                    char::from(member.header.type_flag)
                )));
            }
            if !gzip && member.offset + member.size > file_len {
                return Err(bad(format!(
                    "member {name:?} claims {} bytes, past the end of the archive",
                    member.size
                )));
            }
            Ok(member)
        };
        let json = |image: &BaseImage, name: &str| -> Result<PyValue> {
            let member = lookup(name)?;
            if member.size > MAX_JSON {
                return Err(bad(format!(
                    "member {name:?} is implausibly large ({} bytes)",
                    member.size
                )));
            }
            let mut text = Vec::new();
            image
                .open_member(member.offset, member.size)?
                .read_to_end(&mut text)
                .map_err(|e| {
                    bad(format!(
                        "reading {name:?}: {}",
                        crate::escape::text(&e.to_string())
                    ))
                })?;
            // Python reads these members as bytes: json.loads(bytes).
            pyjson::loads_binary(&text).map_err(|e| {
                bad(format!(
                    "{name:?} is not valid JSON: {}",
                    crate::escape::text(&e.to_string())
                ))
            })
        };

        let manifest = json(&image, "manifest.json")?;
        let first = manifest
            .as_list()
            .and_then(|a| a.first())
            .ok_or_else(|| bad("manifest.json is not a non-empty list".into()))?;
        let config_name = first
            .get("Config")
            .and_then(PyValue::as_str)
            .ok_or_else(|| bad("manifest.json has no \"Config\"".into()))?;
        let layer_names: Vec<&str> = first
            .get("Layers")
            .and_then(PyValue::as_list)
            .ok_or_else(|| bad("manifest.json has no \"Layers\" list".into()))?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| bad("a \"Layers\" entry is not a string".into()))
            })
            .collect::<Result<_>>()?;
        image.config = json(&image, config_name)?;
        let diff_ids: Vec<&str> = image
            .config
            .get("rootfs")
            .and_then(|r| r.get("diff_ids"))
            .and_then(PyValue::as_list)
            .ok_or_else(|| bad(format!("{config_name:?} has no rootfs.diff_ids list")))?
            .iter()
            .map(|v| v.as_str().unwrap_or_default())
            .collect();
        if diff_ids.len() != layer_names.len() {
            return Err(bad(format!(
                "manifest.json lists {} layers but the config has {} diff_ids",
                layer_names.len(),
                diff_ids.len()
            )));
        }
        if !image.config.get("config").is_some_and(PyValue::is_dict) {
            return Err(bad(format!("{config_name:?} has no \"config\" object")));
        }
        let mut layers = Vec::with_capacity(layer_names.len());
        for (name, diff_id) in layer_names.iter().zip(&diff_ids) {
            if name.starts_with('/') || name.split('/').any(|c| c == "..") {
                return Err(bad(format!("layer name {name:?} escapes the archive")));
            }
            let member = lookup(name)?;
            let digest = diff_id
                .strip_prefix("sha256:")
                .and_then(Sha256Digest::from_hex)
                .ok_or_else(|| bad(format!("diff_id {diff_id:?} is not a sha256 digest")))?;
            layers.push(BaseLayer {
                header: member.header.clone(),
                size: member.size,
                diff_id: digest,
                offset: member.offset,
            });
        }
        image.layers = layers;
        Ok(image)
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A reader over the bytes of `layer`.
    pub fn layer_reader(&self, layer: &BaseLayer) -> Result<Box<dyn Read + Send>> {
        self.open_member(layer.offset, layer.size)
    }

    fn open_member(&self, offset: u64, size: u64) -> Result<Box<dyn Read + Send>> {
        let path = &self.path;
        let mut file = File::open(path).map_err(|e| Error::io(path, "opening base image", e))?;
        if self.gzip {
            let mut reader = GzDecoder::new(BufReader::new(file));
            let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())
                .map_err(|e| Error::io(path, "reading base image", e))?;
            if skipped < offset {
                return Err(Error::BaseImage {
                    path: path.clone(),
                    problem: "archive is truncated".into(),
                });
            }
            Ok(Box::new(ExactReader::new(reader.take(size), size)))
        } else {
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| Error::io(path, "reading base image", e))?;
            Ok(Box::new(ExactReader::new(
                BufReader::with_capacity(1 << 20, file).take(size),
                size,
            )))
        }
    }
}

/// Turns an early end of data into an `UnexpectedEof` error, so that a
/// truncated base image can never yield a short layer.
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, len: u64) -> Self {
        ExactReader { inner, left: len }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive is truncated",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn index<R: Read>(
    entries: io::Result<tar::Entries<'_, R>>,
) -> io::Result<HashMap<Vec<u8>, Member>> {
    let mut members: HashMap<Vec<u8>, Member> = HashMap::new();
    // Like tarfile, a global header's records apply to every later member,
    // ahead of the member's own.
    let mut global: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in entries? {
        let mut entry = entry?;
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            if entry.size() > MAX_JSON {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "implausibly large global header",
                ));
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            for (key, value) in parse_pax_records(&data)? {
                upsert(&mut global, key, value);
            }
            continue;
        }
        let mut pax = global.clone();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                let key = String::from_utf8_lossy(ext.key_bytes()).into_owned();
                upsert(&mut pax, key, ext.value_bytes().to_vec());
            }
        }
        let h = entry.header();
        let pax_get = |k: &str| pax.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let pax_int = |k: &str| {
            pax_get(k)
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let header = MemberHeader {
            name: entry.path_bytes().into_owned(),
            mode: h.mode().unwrap_or(0o644),
            uid: pax_int("uid").map_or_else(|| h.uid().unwrap_or(0) as i64, |v| v as i64),
            gid: pax_int("gid").map_or_else(|| h.gid().unwrap_or(0) as i64, |v| v as i64),
            mtime: pax_int("mtime").map_or_else(
                || h.mtime().unwrap_or(0) as i64,
                |v| v.round_ties_even() as i64,
            ),
            type_flag: h.as_bytes()[156],
            linkname: entry
                .link_name_bytes()
                .map(|c| c.into_owned())
                .unwrap_or_default(),
            uname: pax_get("uname")
                .unwrap_or_else(|| h.username_bytes().unwrap_or_default().to_vec()),
            gname: pax_get("gname")
                .unwrap_or_else(|| h.groupname_bytes().unwrap_or_default().to_vec()),
            pax,
        };
        let member = Member {
            offset: entry.raw_file_position(),
            size: entry.size(),
            header,
        };
        if members.contains_key(&member.header.name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "member {:?} appears twice",
                    String::from_utf8_lossy(&member.header.name)
                ),
            ));
        }
        members.insert(member.header.name.clone(), member);
    }
    Ok(members)
}

/// Sets `key` like a Python dict would: in place if present, else at the end.
fn upsert(records: &mut Vec<(String, Vec<u8>)>, key: String, value: Vec<u8>) {
    match records.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => records.push((key, value)),
    }
}

/// Parses `"<len> <key>=<value>\n"` records.
fn parse_pax_records(mut data: &[u8]) -> io::Result<Vec<(String, Vec<u8>)>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed pax header");
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let space = data.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        out.push((
            String::from_utf8_lossy(&record[..eq]).into_owned(),
            record[eq + 1..].to_vec(),
        ));
        data = &data[len..];
    }
    Ok(out)
}
