//! `stream-layered-image diff OLD.tar NEW.tar`: which layers of NEW a host
//! that has OLD already holds, and how many bytes pulling NEW transfers.
//!
//! Both arguments are docker-archive images (as `docker save`, nixpkgs'
//! `streamLayeredImage` or this tool write them; gzip-compressed archives
//! are accepted). A layer is identified by its digest: the `diff_ids` of the
//! image config, or the SHA-256 of the layer's bytes when the config has
//! none. For each layer of NEW the table shows whether it is reused or new,
//! its size with a bar proportional to the largest layer, and the largest
//! store path inside it, which is what one looks at to tune a layering.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};
use stream_layered_image::progress::human_bytes;

use super::args::DiffArgs;

/// One layer of an image archive.
#[derive(Debug, Clone)]
struct LayerInfo {
    digest: String,
    size: u64,
    /// Store paths (or top-level names) in the layer with their bytes,
    /// largest first.
    contents: Vec<(String, u64)>,
}

#[derive(Default)]
struct Entry {
    size: u64,
    sha256: String,
    contents: Vec<(String, u64)>,
}

/// Hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

fn open(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = std::io::Cursor::new(magic[..n].to_vec()).chain(file);
    if magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

/// Store path (or first path component) of a member of a layer tar.
fn top_name(path: &Path) -> String {
    let parts: Vec<String> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    match parts.as_slice() {
        [a, b, c, ..] if a == "nix" && b == "store" => format!("/nix/store/{c}"),
        [a, b, c, ..] if a == "gnu" && b == "store" => format!("/gnu/store/{c}"),
        [first, ..] => format!("/{first}"),
        [] => "/".to_string(),
    }
}

/// Reads an archive: the manifest's layers in order, with digests.
fn read_image(path: &Path) -> anyhow::Result<Vec<LayerInfo>> {
    let mut archive = tar::Archive::new(open(path)?);
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut small: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if name.ends_with(".json") && entry.size() < (64 << 20) {
            let mut data = Vec::new();
            let mut entry = entry;
            entry.read_to_end(&mut data)?;
            small.insert(name, data);
            continue;
        }
        let mut hashing = Hashing {
            inner: entry,
            hasher: Sha256::new(),
            count: 0,
        };
        let mut sizes: HashMap<String, u64> = HashMap::new();
        {
            // A layer is itself a tar; if it is not (compressed), only hash.
            let mut inner = tar::Archive::new(&mut hashing);
            if let Ok(members) = inner.entries() {
                for member in members {
                    let Ok(member) = member else { break };
                    let Ok(p) = member.path() else { continue };
                    *sizes.entry(top_name(&p)).or_default() += member.header().size().unwrap_or(0);
                }
            }
        }
        std::io::copy(&mut hashing, &mut std::io::sink())?;
        let mut contents: Vec<(String, u64)> = sizes.into_iter().collect();
        contents.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        entries.insert(
            name,
            Entry {
                size: hashing.count,
                sha256: format!("sha256:{:x}", hashing.hasher.finalize()),
                contents,
            },
        );
    }
    let manifest = small.get("manifest.json").with_context(|| {
        format!(
            "{}: no manifest.json (not a docker-archive image?)",
            path.display()
        )
    })?;
    let manifest: serde_json::Value = serde_json::from_slice(manifest)
        .with_context(|| format!("{}: manifest.json", path.display()))?;
    let image = manifest
        .get(0)
        .with_context(|| format!("{}: empty manifest.json", path.display()))?;
    let layers: Vec<String> = image
        .get("Layers")
        .and_then(|l| l.as_array())
        .with_context(|| format!("{}: manifest.json has no Layers", path.display()))?
        .iter()
        .filter_map(|l| l.as_str().map(|s| s.trim_start_matches("./").to_string()))
        .collect();
    let diff_ids: Vec<String> = image
        .get("Config")
        .and_then(|c| c.as_str())
        .and_then(|c| small.get(c.trim_start_matches("./")))
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(c).ok())
        .and_then(|c| c.pointer("/rootfs/diff_ids").cloned())
        .and_then(|d| serde_json::from_value(d).ok())
        .unwrap_or_default();
    layers
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let entry = entries.get(name).with_context(|| {
                format!(
                    "{}: layer {name} is listed but not in the archive",
                    path.display()
                )
            })?;
            let digest = if diff_ids.len() == layers.len() {
                diff_ids[i].clone()
            } else {
                entry.sha256.clone()
            };
            Ok(LayerInfo {
                digest,
                size: entry.size,
                contents: entry.contents.clone(),
            })
        })
        .collect()
}

/// A bar of `width` cells for `value / max`, in eighths of a cell.
fn bar(value: u64, max: u64, width: usize) -> String {
    const PARTS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    if max == 0 {
        return String::new();
    }
    let eighths = ((value as f64 / max as f64) * (width * 8) as f64).round() as usize;
    let eighths = if value > 0 { eighths.max(1) } else { 0 };
    format!("{}{}", "█".repeat(eighths / 8), PARTS[eighths % 8])
}

fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

fn describe(contents: &[(String, u64)]) -> String {
    match contents {
        [] => String::new(),
        [(first, _)] => first.rsplit('/').next().unwrap_or(first).to_string(),
        [(first, _), rest @ ..] => format!(
            "{} +{} more",
            first.rsplit('/').next().unwrap_or(first),
            rest.len()
        ),
    }
}

/// Runs the `diff` subcommand.
pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let (old_path, new_path, width) = (&args.old, &args.new, args.width);
    let old = read_image(old_path)?;
    let new = read_image(new_path)?;
    let out = std::io::stdout();
    let mut out = out.lock();
    write_table(
        &mut out,
        &old,
        &new,
        width,
        &old_path.display().to_string(),
        &new_path.display().to_string(),
    )?;
    Ok(())
}

fn write_table(
    out: &mut dyn Write,
    old: &[LayerInfo],
    new: &[LayerInfo],
    width: usize,
    old_name: &str,
    new_name: &str,
) -> anyhow::Result<()> {
    let have: HashSet<&str> = old.iter().map(|l| l.digest.as_str()).collect();
    let max = new.iter().map(|l| l.size).max().unwrap_or(0);
    let total: u64 = new.iter().map(|l| l.size).sum();
    let mut pulled_now: HashSet<&str> = HashSet::new();
    let mut transfer = 0u64;
    let mut new_count = 0;
    writeln!(
        out,
        "{:>3}  {:<6}  {:>10}  {:<w$}  {:<12}  contents",
        "#",
        "status",
        "size",
        "",
        "digest",
        w = width + 1
    )?;
    for (i, layer) in new.iter().enumerate() {
        let status = if have.contains(layer.digest.as_str()) {
            "reused"
        } else if pulled_now.insert(layer.digest.as_str()) {
            transfer += layer.size;
            new_count += 1;
            "NEW"
        } else {
            "dup"
        };
        writeln!(
            out,
            "{:>3}  {:<6}  {:>10}  {:<w$}  {:<12}  {}",
            i + 1,
            status,
            human_bytes(layer.size),
            bar(layer.size, max, width),
            short_digest(&layer.digest),
            describe(&layer.contents),
            w = width + 1
        )?;
    }
    let new_digests: HashSet<&str> = new.iter().map(|l| l.digest.as_str()).collect();
    let dropped: Vec<&LayerInfo> = old
        .iter()
        .filter(|l| !new_digests.contains(l.digest.as_str()))
        .collect();
    let share = if total == 0 {
        0.0
    } else {
        100.0 * transfer as f64 / total as f64
    };
    writeln!(
        out,
        "{new_name}: {} layers, {}; {} reused from {old_name}, {} new",
        new.len(),
        human_bytes(total),
        new.len() - new_count,
        new_count
    )?;
    writeln!(
        out,
        "a pull with {old_name} present transfers {} ({share:.1}% of the image) {}",
        human_bytes(transfer),
        bar(transfer, total, width)
    )?;
    if !dropped.is_empty() {
        writeln!(
            out,
            "{} layer(s) of {old_name} ({}) are not used by {new_name}",
            dropped.len(),
            human_bytes(dropped.iter().map(|l| l.size).sum())
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_proportional() {
        assert_eq!(bar(0, 100, 10), "");
        assert_eq!(bar(100, 100, 10), "██████████");
        assert_eq!(bar(50, 100, 10), "█████");
        assert_eq!(bar(1, 1000, 10), "▏");
    }

    #[test]
    fn top_names() {
        assert_eq!(
            top_name(Path::new("nix/store/abc-foo/bin/x")),
            "/nix/store/abc-foo"
        );
        assert_eq!(top_name(Path::new("./etc/passwd")), "/etc");
    }
}
