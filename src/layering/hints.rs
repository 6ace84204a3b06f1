//! Layering hints: how often each package changed, learned from the
//! references graphs of earlier builds (nix2container #113).
//!
//! # Inputs
//!
//! References graphs, oldest first: several images, several versions of
//! one image over time, or both; optionally the hints learned so far, so
//! that CI can fold each new build into a file kept in source control.
//!
//! # What is learned
//!
//! A store path is known across versions by its *package name*: the store
//! path's name without the hash and without the version, the version being
//! the trailing `-`-separated parts that start with a digit, and an output
//! name after the version kept apart: `/nix/store/<hash>-openssl-3.0.13`
//! is `openssl`, `…-openssl-3.0.13-dev` is `openssl:dev` (see
//! [`package_key`]). Several paths of one name in one graph are one
//! observation. For each package name the hints record:
//!
//! * `changes`: how often the package itself changed. Input addressing
//!   renames a path whenever anything below it changes, so a new store
//!   path counts as the package's own change only when its version changed
//!   or its references did not (same dependencies, new hash: a patch or a
//!   new build recipe). A path renamed because a dependency changed is not
//!   its own change.
//! * `seen`: in how many of the graphs it was.
//! * `images`: which images it was in, as a hexadecimal bitmask over the
//!   file's sorted list of image names. An image is named by the package
//!   names of its graph's roots (the paths nothing refers to).
//! * `last`: fingerprints of the last store path, version and references
//!   seen, so the next graph (or the next `--previous` fold) can tell a
//!   change; 24 hexadecimal digits.
//!
//! # How `default` uses them
//!
//! `default` weighs a layer by how often it will be replaced: without
//! hints every path's change counts the same, so a layer costs
//! `size × |closure|`. With hints each path `p` of a closure counts its
//! package's estimated change rate instead of 1 ([`Hints::weights`]): a
//! package that changed often makes every layer whose closure holds it
//! dear to make big, so it and the paths above it are kept out of big
//! layers, and the paths that change together (those above the same
//! often-changing package) end up together.
//!
//! The rate is estimated in two steps. Packages are first put in classes
//! by what `images` says of them: the images' own root packages, and the
//! others by how many images they are in (1, 2–3, 4–7, …); a class's mean
//! rate is its changes per package, pulled towards the overall mean by
//! 3 changes (`CLASS_PRIOR`). What many images share and rarely changed is
//! so expected to keep changing rarely, even where its own count (like
//! most counts, after a few dozen builds) is 0, and stays in big stable
//! layers; an image's own top, which changed more, weighs more. Then a
//! package of class mean `m` changed `c` times has the Gamma-Poisson
//! rate `(c + k) / (k/m + 1)`, `k` the shape of a Gamma prior fitted to
//! how often packages changed more than once ([`Hints::shape`]); with
//! every class at the overall mean this is `(c + k)/k` relative to a
//! package never seen to change. When the counts look like every package
//! changes about as often (few repeats), the weights change nothing:
//! learning from noise would only make the layering worse.
//!
//! # Layers the whole fleet shares
//!
//! A host that runs several images pulls a layer once however many images
//! hold it, but only if they hold the *same* layer, the same set of store
//! paths. Laid out one by one, images that share paths group them
//! differently (each merges them with its own paths under its own budget
//! pressure), and a new version of a shared path is pulled once per
//! differing layer. So `default` with hints also starts from one layer per
//! *class of shared packages* ([`Hints::shared_classes`]): the packages in
//! at least four fifths of the file's images (and at least two), classed
//! by their exact set of images. That set is what `images` records, the
//! same in every image's layout, and every image of the set holds every
//! package of the class, so each of them finds the same paths in the class
//! and starts from the same layer; the greedy merge then goes on as
//! without classes (it may still merge that layer with others when the
//! budget is tight). Four fifths as measured (`scripts/layering-bench`):
//! what nearly every image holds is the stable base (a libc, its closest
//! libraries) that costs little as one layer, while also joining the
//! packages shared by fewer images (from half of them) leaves less of the
//! budget to the rest and moves the other merges: one fleet gained, the
//! other lost more (a big path two of its images share ended up in
//! different layers in the two). With a single image nothing is classed.
//!
//! # Format
//!
//! JSON, one package per line, sorted by name, so the file diffs well and
//! the same graphs give the same bytes:
//!
//! ```text
//! {"format": "stream-layered-image-hints", "version": 1,
//!  "fields": ["changes", "seen", "images", "last"],
//!  "graphs": 12, "images": ["hello", "nginx"],
//!  "packages": {
//!   "glibc": [0, 12, "3", "5f0e0a1c9d2b7e44a1b2c3d4"],
//!   ...
//!  }}
//! ```
//!
//! # Cost
//!
//! Learning is linear in the paths and references of the graphs; the file
//! holds a few dozen bytes per package name, whatever the number of graphs.
//! The weights take one pass over the packages (the class means) and one
//! lookup per path of the graph laid out, the shared classes one more
//! lookup per path; the layering with them costs what it costs without
//! (see [`super::default`]), plus one union of closures per classed path.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::error::{LayeringError, Result};
use super::graph::Graph;

/// The value of the `format` key of every hints file.
pub const FORMAT: &str = "stream-layered-image-hints";
/// The only version of the format this build reads and writes.
pub const VERSION: u64 = 1;
/// The field names of a package's entry, in order.
const FIELDS: [&str; 4] = ["changes", "seen", "images", "last"];
/// Fixed-point scale of the weights given to the layering.
const SCALE: f64 = 1024.0;
/// How many changes at the overall mean rate each class of packages (see
/// [`Hints::weights`]) is assumed to have made before the counts, so that
/// a class of few packages or few changes keeps close to the overall mean.
const CLASS_PRIOR: f64 = 3.0;
/// Classes of packages by how many images they are in: one, 2–3, 4–7, …,
/// 64 or more; plus the images' own root packages.
const IMAGE_CLASSES: usize = 8;

/// What is known of one package name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// How often the package itself changed.
    pub changes: u64,
    /// In how many graphs it was.
    pub seen: u64,
    /// The images it was in: indices into [`Hints::images`].
    pub images: Vec<usize>,
    /// Fingerprints of the last store path, version and references seen.
    pub last: [u32; 3],
}

/// Learned layering hints.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    /// How many graphs they were learned from.
    pub graphs: u64,
    /// Image names, sorted.
    pub images: Vec<String>,
    /// Package name to what is known of it.
    pub packages: BTreeMap<String, Package>,
}

/// The name of a store path without its directory and hash.
fn base_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.split_once('-') {
        Some((_, name)) => name,
        None => base,
    }
}

/// Splits a store path's name into package name and version: the version
/// is the longest run of trailing `-`-separated parts that each start with
/// a digit (`gcc-12-base-12.2.0-14` is `gcc-12-base` at `12.2.0-14`,
/// `openssl-3.0.13` is `openssl` at `3.0.13`). Nix's `parseDrvName` cuts at
/// the first such part instead, which gives every `gcc-12-…` one name.
pub fn package_name(path: &str) -> (&str, &str) {
    let name = base_name(path);
    let mut cut = name.len();
    for (i, _) in name
        .match_indices('-')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let part = &name[i + 1..cut];
        if part.starts_with(|c: char| c.is_ascii_digit()) {
            cut = i;
        } else {
            break;
        }
    }
    if cut == 0 || cut == name.len() {
        return (name, "");
    }
    (&name[..cut], &name[cut + 1..])
}

/// The key hints know a store path by: its package name, with the output
/// name when the version ends in one (`openssl-3.0.13-dev` is
/// `openssl:dev`), so that a package's outputs are told apart; and its
/// version.
pub fn package_key(path: &str) -> (String, &str) {
    if let Some((rest, output)) = path.rsplit_once('-') {
        if !output.is_empty() && output.bytes().all(|b| b.is_ascii_lowercase()) {
            let (name, version) = package_name(rest);
            if !version.is_empty() {
                return (format!("{name}:{output}"), version);
            }
        }
    }
    let (name, version) = package_name(path);
    (name.to_string(), version)
}

/// A stable 32-bit fingerprint (FNV-1a, folded), the same on every machine.
fn fingerprint(parts: &[&str]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    (h ^ (h >> 32)) as u32
}

impl Hints {
    /// Folds graphs, oldest first, into the hints.
    pub fn learn(&mut self, graphs: &[Graph]) {
        for graph in graphs {
            self.learn_one(graph);
        }
    }

    fn image_index(&mut self, name: &str) -> usize {
        match self.images.binary_search_by(|n| n.as_str().cmp(name)) {
            Ok(i) => i,
            Err(i) => {
                self.images.insert(i, name.to_string());
                for p in self.packages.values_mut() {
                    for j in &mut p.images {
                        if *j >= i {
                            *j += 1;
                        }
                    }
                }
                i
            }
        }
    }

    fn learn_one(&mut self, graph: &Graph) {
        let mut roots: Vec<String> = (0..graph.len())
            .filter(|&i| graph.users(i).is_empty())
            .map(|i| package_key(&graph.node(i).path).0)
            .collect();
        roots.sort_unstable();
        roots.dedup();
        let image = self.image_index(&roots.join("+"));
        self.graphs += 1;
        // One observation per package name and graph, even when several of
        // its paths are in it (outputs, or packages whose names only
        // differ after the version): their names, versions and references
        // together make the state, whatever their order.
        // Per name: (file name, version, sorted references) of its paths.
        type Paths<'a> = Vec<(String, &'a str, Vec<String>)>;
        let mut grouped: HashMap<String, Paths> = HashMap::new();
        let file_name = |p: &str| p.rsplit('/').next().unwrap_or("").to_string();
        for node in graph.nodes() {
            let (name, version) = package_key(&node.path);
            // With their hashes: a dependency rebuilt under the same name
            // is a change of the references.
            let mut refs: Vec<String> = node
                .references
                .iter()
                .map(|&r| file_name(&graph.node(r).path))
                .collect();
            refs.sort_unstable();
            grouped
                .entry(name)
                .or_default()
                .push((file_name(&node.path), version, refs));
        }
        let mut observed: Vec<(String, [u32; 3])> = grouped
            .into_iter()
            .map(|(name, mut paths)| {
                paths.sort();
                let files: Vec<&str> = paths.iter().map(|p| p.0.as_str()).collect();
                let versions: Vec<&str> = paths.iter().map(|p| p.1).collect();
                let refs: Vec<&str> = paths
                    .iter()
                    .flat_map(|p| p.2.iter().map(String::as_str).chain(["\n"]))
                    .collect();
                let state = [
                    fingerprint(&files),
                    fingerprint(&versions),
                    fingerprint(&refs),
                ];
                (name, state)
            })
            .collect();
        observed.sort();
        for (name, state) in observed {
            let entry = self.packages.entry(name).or_insert_with(|| Package {
                changes: 0,
                seen: 0,
                images: Vec::new(),
                last: state,
            });
            entry.seen += 1;
            if let Err(i) = entry.images.binary_search(&image) {
                entry.images.insert(i, image);
            }
            let [path, version, refs] = state;
            if path != entry.last[0] && (version != entry.last[1] || refs == entry.last[2]) {
                entry.changes += 1;
            }
            entry.last = state;
        }
    }

    /// How strongly the counts say that packages change at different
    /// rates: the shape `k` of a Gamma prior over the rates, estimated
    /// from how often one package changed more than once. `None` when the
    /// counts give no evidence of different rates, so the hints should not
    /// move the layering at all.
    ///
    /// With `T` changes among `N` packages at one common rate, the number
    /// of pairs of changes of one package, `Σ c(c−1)/2`, is about Poisson
    /// with mean `E = T²/(2N)`; rates drawn from a Gamma of shape `k` make
    /// it `E·(1 + 1/k)` on average. Fewer than `E + 3√E` (and fewer than
    /// two) pairs is no evidence: a single repeat among a few hundred
    /// packages happens by chance one sequence in eight.
    pub fn shape(&self) -> Option<f64> {
        let n = self.packages.len() as f64;
        let total: f64 = self.packages.values().map(|p| p.changes as f64).sum();
        let pairs: f64 = self
            .packages
            .values()
            .map(|p| (p.changes as f64) * (p.changes.saturating_sub(1) as f64) / 2.0)
            .sum();
        if n == 0.0 || total == 0.0 {
            return None;
        }
        let expected = total * total / (2.0 * n);
        if pairs < 2.0 || pairs < expected + 3.0 * expected.sqrt() {
            return None;
        }
        Some(1.0 / (pairs / expected - 1.0))
    }

    /// The change weight of every path of `graph` (indexed like its nodes,
    /// in fixed point), and how many of its package names the hints know.
    ///
    /// A package's rate is estimated in two steps (empirical Bayes). First
    /// its class's mean: packages are classed by what `images` says of
    /// them, an image's own root package (the image is named by it) apart
    /// and the others by how many images they are in (1, 2–3, 4–7, …), so
    /// that what is shared by many images, which changed rarely, is
    /// expected to keep changing rarely, even for a package whose own
    /// count is 0 like most; a class's mean is its changes per package,
    /// with `CLASS_PRIOR` (3) changes at the overall mean added. Then, with
    /// the shape `k` of [`Hints::shape`], a package of class mean `m`
    /// changed `c` times has the Gamma-Poisson rate `(c + k)/(k/m + 1)`,
    /// given relative to a package of the overall mean `m̄` that never
    /// changed, `k/(k/m̄ + 1)`. With every class at the overall mean this
    /// is `(c + k)/k`. A package the hints do not know weighs as one that
    /// changed `m̄` times at the overall mean. Without evidence of
    /// different rates every path weighs the same, which is the layering
    /// without hints.
    pub fn weights(&self, graph: &Graph) -> (Vec<u64>, usize) {
        let shape = self.shape();
        let n = self.packages.len().max(1) as f64;
        let mean = self
            .packages
            .values()
            .map(|p| p.changes as f64)
            .sum::<f64>()
            / n;
        let class_of = |name: &str, p: &Package| -> usize {
            if self
                .images
                .binary_search_by(|i| i.as_str().cmp(name))
                .is_ok()
            {
                0
            } else {
                let images = p.images.len().max(1);
                (usize::BITS - images.leading_zeros()) as usize
            }
            .min(IMAGE_CLASSES - 1)
        };
        let mut totals = [(0.0f64, 0.0f64); IMAGE_CLASSES];
        for (name, p) in &self.packages {
            let t = &mut totals[class_of(name, p)];
            t.0 += p.changes as f64;
            t.1 += 1.0;
        }
        let class_mean: Vec<f64> = totals
            .iter()
            .map(|&(changes, count)| {
                if mean > 0.0 {
                    (changes + CLASS_PRIOR) / (count + CLASS_PRIOR / mean)
                } else {
                    mean
                }
            })
            .collect();
        let mut known = 0;
        let weights = graph
            .nodes()
            .iter()
            .map(|node| {
                let key = package_key(&node.path).0;
                let (changes, m) = match self.packages.get(&key) {
                    Some(p) => {
                        known += 1;
                        (p.changes as f64, class_mean[class_of(&key, p)])
                    }
                    None => (mean, mean),
                };
                match shape {
                    Some(k) => {
                        let rate = (changes + k) / (k / m + 1.0);
                        let base = k / (k / mean + 1.0);
                        ((rate / base) * SCALE).round().clamp(1.0, 1e15) as u64
                    }
                    None => SCALE as u64,
                }
            })
            .collect();
        (weights, known)
    }

    /// How many of the file's images a package must be in for
    /// [`Hints::shared_classes`] to class it: four fifths of them (10 of
    /// 12), and at least two.
    pub fn shared_threshold(&self) -> usize {
        (self.images.len() * 4).div_ceil(5).max(2)
    }

    /// For every path of `graph` (indexed like its nodes), the class of the
    /// paths that share its set of images, among the packages in at least
    /// [`Hints::shared_threshold`] images: the same number for the same
    /// set, 0 for the other paths and for packages the hints do not know.
    ///
    /// The set of images is the same in every image that holds the
    /// package, so every image of the set finds the same paths in the
    /// class: laid out as one layer, they make the same layer everywhere,
    /// pulled once per change for the whole fleet instead of once per
    /// image (see [`super::default`]).
    pub fn shared_classes(&self, graph: &Graph) -> Vec<u32> {
        let min = self.shared_threshold();
        let mut ids: HashMap<&[usize], u32> = HashMap::new();
        graph
            .nodes()
            .iter()
            .map(|node| match self.packages.get(&package_key(&node.path).0) {
                Some(p) if p.images.len() >= min => {
                    let next = ids.len() as u32 + 1;
                    *ids.entry(p.images.as_slice()).or_insert(next)
                }
                _ => 0,
            })
            .collect()
    }

    /// Renders the hints file: deterministic, one package per line.
    pub fn to_json(&self) -> String {
        let s = |v: &str| Value::String(v.to_string()).to_string();
        let mut out = String::new();
        out.push_str(&format!(
            "{{\"format\": {}, \"version\": {VERSION},\n \"fields\": [{}],\n \"graphs\": {},\n \"images\": [{}],\n \"packages\": {{",
            s(FORMAT),
            FIELDS.map(s).join(", "),
            self.graphs,
            self.images.iter().map(|i| s(i)).collect::<Vec<_>>().join(", "),
        ));
        for (i, (name, p)) in self.packages.iter().enumerate() {
            let mut mask = vec![0u8; self.images.len().div_ceil(4).max(1)];
            for &j in &p.images {
                let digit = mask.len() - 1 - j / 4;
                mask[digit] |= 1 << (j % 4);
            }
            let mask: String = mask
                .iter()
                .map(|&d| char::from_digit(u32::from(d), 16).unwrap_or('0'))
                .collect();
            let mask = mask.trim_start_matches('0');
            out.push_str(if i == 0 { "\n  " } else { ",\n  " });
            out.push_str(&format!(
                "{}: [{}, {}, \"{}\", \"{:08x}{:08x}{:08x}\"]",
                s(name),
                p.changes,
                p.seen,
                if mask.is_empty() { "0" } else { mask },
                p.last[0],
                p.last[1],
                p.last[2]
            ));
        }
        out.push_str("\n }}\n");
        out
    }

    /// Parses a hints file; `origin` names it in error messages.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Hints> {
        let bad = |message: String| LayeringError::BadHints {
            origin: origin.to_string(),
            message,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            bad(format!(
                "not a hints file: invalid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ))
        })?;
        let Some(map) = value.as_object() else {
            return Err(bad(format!(
                "not a hints file (expected an object with \"format\": {FORMAT:?})"
            )));
        };
        match map.get("format") {
            Some(Value::String(f)) if f == FORMAT => {}
            Some(other) => {
                return Err(bad(format!(
                    "not a hints file: \"format\" is {other}, expected {FORMAT:?}"
                )))
            }
            None => {
                return Err(bad(format!(
                    "not a hints file: no \"format\" key (expected {FORMAT:?})"
                )))
            }
        }
        match map.get("version") {
            Some(v) if v.as_u64() == Some(VERSION) => {}
            Some(v) => {
                return Err(bad(format!(
                    "hints version {v}, but this build reads only version {VERSION}"
                )))
            }
            None => return Err(bad("no \"version\" key".to_string())),
        }
        if let Some(fields) = map.get("fields") {
            let want = Value::Array(
                FIELDS
                    .iter()
                    .map(|f| Value::String(f.to_string()))
                    .collect(),
            );
            if *fields != want {
                return Err(bad(format!("\"fields\" is {fields}, expected {want}")));
            }
        }
        let graphs = match map.get("graphs") {
            None => 0,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| bad(format!("\"graphs\" is {v}, not a count")))?,
        };
        let images: Vec<String> = match map.get("images") {
            None => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(format!("\"images\": {v} is not a string")))
                })
                .collect::<Result<_>>()?,
            Some(v) => return Err(bad(format!("\"images\" is {v}, not a list"))),
        };
        if images.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("\"images\" is not sorted or has duplicates".to_string()));
        }
        let packages = match map.get("packages") {
            Some(Value::Object(p)) => p,
            Some(v) => return Err(bad(format!("\"packages\" is {}, not an object", kind(v)))),
            None => return Err(bad("no \"packages\" key".to_string())),
        };
        let mut out = BTreeMap::new();
        for (name, entry) in packages {
            let at = |message: &str| bad(format!("package {name:?}: {message}"));
            let Some(fields) = entry.as_array().filter(|f| f.len() == FIELDS.len()) else {
                return Err(at(&format!(
                    "expected [changes, seen, images, last], found {}",
                    kind(entry)
                )));
            };
            let count = |v: &Value, what: &str| {
                v.as_u64()
                    .ok_or_else(|| at(&format!("{what} is {v}, not a count")))
            };
            let changes = count(&fields[0], "changes")?;
            let seen = count(&fields[1], "seen")?;
            let mask = fields[2]
                .as_str()
                .filter(|m| {
                    !m.is_empty() && m.len() <= 4096 && m.bytes().all(|b| b.is_ascii_hexdigit())
                })
                .ok_or_else(|| at(&format!("images is {}, not a hexadecimal mask", fields[2])))?;
            let mut package_images = Vec::new();
            for (k, digit) in mask.bytes().rev().enumerate() {
                let d = char::from(digit).to_digit(16).unwrap_or(0);
                for bit in 0..4 {
                    if d >> bit & 1 == 1 {
                        let j = k * 4 + bit;
                        if j >= images.len() {
                            return Err(at(&format!(
                                "images mask {mask:?} names image {j}, but the file lists {}",
                                images.len()
                            )));
                        }
                        package_images.push(j);
                    }
                }
            }
            let last = fields[3]
                .as_str()
                .filter(|l| l.len() == 24 && l.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| at(&format!("last is {}, not 24 hexadecimal digits", fields[3])))?;
            let word = |k: usize| u32::from_str_radix(&last[k * 8..k * 8 + 8], 16).unwrap_or(0);
            if changes > seen {
                return Err(at(&format!("changes ({changes}) exceed seen ({seen})")));
            }
            out.insert(
                name.clone(),
                Package {
                    changes,
                    seen,
                    images: package_images,
                    last: [word(0), word(1), word(2)],
                },
            );
        }
        Ok(Hints {
            graphs,
            images,
            packages: out,
        })
    }

    /// Reads a hints file.
    pub fn read(path: &std::path::Path) -> Result<Hints> {
        let bytes = std::fs::read(path).map_err(|cause| LayeringError::Io {
            path: path.to_path_buf(),
            action: "reading",
            cause,
        })?;
        Hints::parse(&bytes, &path.display().to_string())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(changes: u64, images: &[usize]) -> Package {
        Package {
            changes,
            seen: 12,
            images: images.to_vec(),
            last: [0; 3],
        }
    }

    fn graph_of(names: &[&str]) -> Graph {
        let raw = names
            .iter()
            .map(|n| crate::layering::graph::RawNode {
                path: format!("/nix/store/{:032}-{n}-1.0", n.len()),
                references: Vec::new(),
                nar_size: Some(1),
                nar_hash: None,
            })
            .collect();
        Graph::from_raw(raw, "test").unwrap()
    }

    /// Two images `x` and `y`: their roots and the libraries of one image
    /// changed, the twenty libraries both share never did.
    fn two_images() -> Hints {
        let mut packages = BTreeMap::new();
        packages.insert("x".to_string(), package(6, &[0]));
        packages.insert("y".to_string(), package(6, &[1]));
        for i in 0..20 {
            packages.insert(format!("shared{i}"), package(0, &[0, 1]));
        }
        for (i, c) in [3, 3, 2, 0, 0, 0, 0, 0, 0, 0].into_iter().enumerate() {
            packages.insert(format!("own{i}"), package(c, &[i % 2]));
        }
        Hints {
            graphs: 12,
            images: vec!["x".to_string(), "y".to_string()],
            packages,
        }
    }

    #[test]
    fn packages_shared_by_more_images_weigh_as_their_class_changed() {
        let hints = two_images();
        let k = hints.shape().expect("evidence of different rates");
        let graph = graph_of(&["shared0", "own3", "own0", "x"]);
        let (w, known) = hints.weights(&graph);
        assert_eq!(known, 4);
        let at = |name: &str| {
            let i = graph
                .nodes()
                .iter()
                .position(|n| n.path.ends_with(&format!("-{name}-1.0")))
                .unwrap();
            w[i]
        };
        // Never changed either, but the libraries of one image did and the
        // shared ones did not: the shared library weighs less.
        assert!(at("shared0") < at("own3"), "{w:?}");
        assert!(at("shared0") < SCALE as u64, "{w:?}");
        // Within a class, more changes weigh more.
        assert!(at("own3") < at("own0"), "{w:?}");
        assert!(at("own0") < at("x"), "{w:?}");
        // One class (one image, named by none of them): the class mean is
        // the overall mean, and the weights are those without classes,
        // (c + k)/k.
        let mut flat = hints.clone();
        for p in flat.packages.values_mut() {
            p.images = vec![0];
        }
        flat.images = vec!["z".to_string()];
        assert_eq!(flat.shape(), Some(k));
        let (w, _) = flat.weights(&graph);
        for (i, c) in [(0usize, 0.0), (1, 0.0), (2, 3.0), (3, 6.0)] {
            let want = ((c + k) / k * SCALE).round();
            let name = ["shared0", "own3", "own0", "x"][i];
            let j = graph
                .nodes()
                .iter()
                .position(|n| n.path.ends_with(&format!("-{name}-1.0")))
                .unwrap();
            assert!(
                (w[j] as f64 - want).abs() <= 1.0,
                "{name}: {} vs {want}",
                w[j]
            );
        }
    }

    #[test]
    fn shared_classes_group_packages_by_their_set_of_images() {
        let mut packages = BTreeMap::new();
        // Five images: four fifths is four.
        packages.insert("libc".to_string(), package(0, &[0, 1, 2, 3, 4]));
        packages.insert("zlib".to_string(), package(2, &[0, 1, 2, 3, 4]));
        packages.insert("perl".to_string(), package(0, &[0, 1, 2, 3]));
        packages.insert("python".to_string(), package(0, &[1, 2, 3, 4]));
        packages.insert("gtk".to_string(), package(0, &[0, 1, 2]));
        packages.insert("app".to_string(), package(5, &[0]));
        let hints = Hints {
            graphs: 10,
            images: (0..5).map(|i| format!("image{i}")).collect(),
            packages,
        };
        assert_eq!(hints.shared_threshold(), 4);
        let names = ["libc", "zlib", "perl", "python", "gtk", "app", "unknown"];
        let graph = graph_of(&names);
        let classes = hints.shared_classes(&graph);
        let of = |name: &str| {
            let i = graph
                .nodes()
                .iter()
                .position(|n| n.path.ends_with(&format!("-{name}-1.0")))
                .unwrap();
            classes[i]
        };
        // The same set of images, whatever the changes: one class.
        assert_ne!(of("libc"), 0);
        assert_eq!(of("libc"), of("zlib"));
        // Four images each, but not the same four.
        assert_ne!(of("perl"), 0);
        assert_ne!(of("python"), 0);
        assert_ne!(of("perl"), of("python"));
        assert_ne!(of("perl"), of("libc"));
        // Too few images, or unknown.
        assert_eq!((of("gtk"), of("app"), of("unknown")), (0, 0, 0));
        // One image: nothing is shared.
        let single = Hints {
            images: vec!["x".to_string()],
            ..two_images()
        };
        assert_eq!(single.shared_threshold(), 2);
        let mut single = single;
        for p in single.packages.values_mut() {
            p.images = vec![0];
        }
        assert!(single.shared_classes(&graph).iter().all(|&c| c == 0));
    }

    #[test]
    fn package_names_drop_hash_and_version() {
        assert_eq!(
            package_name("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-openssl-3.0.13"),
            ("openssl", "3.0.13")
        );
        assert_eq!(
            package_name("/gnu/store/0123-python3-django-3.2.19-1"),
            ("python3-django", "3.2.19-1")
        );
        assert_eq!(package_name("/nix/store/abc-hello"), ("hello", ""));
        assert_eq!(
            package_key("/nix/store/abc-openssl-3.0.13-dev"),
            ("openssl:dev".to_string(), "3.0.13")
        );
        assert_eq!(
            package_key("/nix/store/abc-golang-1.19-go-1.19.8-2"),
            ("golang-1.19-go".to_string(), "1.19.8-2")
        );
        assert_eq!(
            package_name("/x/abc-gcc-12-base-12.2.0-14"),
            ("gcc-12-base", "12.2.0-14")
        );
        assert_eq!(package_name("/x/abc-2048-1.0"), ("2048", "1.0"));
        assert_eq!(package_name("/nix/store/abc-foo-bar-"), ("foo-bar-", ""));
    }
}
