//! The `default` strategy: put store paths together when they are replaced
//! together, and pay for every byte in proportion to how often it will have
//! to be pulled again.
//!
//! # Inputs
//!
//! Only the references graph (with sizes) and the budget. Nothing about
//! other images or past builds is needed: the grouping of a set of paths
//! depends only on those paths and their dependencies, which is what lets
//! several images built from one package set share layers.
//!
//! Optionally, [`super::hints`] learned from earlier builds of a fleet of
//! images: a change weight per path in place of 1, and classes of the
//! paths nearly every image holds, each class starting as one layer
//! before the merge (see "With hints" below).
//!
//! # What the anchors miss
//!
//! * The popularity contest (nixpkgs' older default, nix2container's) ranks
//!   paths by how many paths lead to them and gives the `N - 1` most
//!   popular a layer each. Popular paths are the deep, small libraries; the
//!   big applications and everything specific to this image land in the
//!   last layer, which changes on nearly every rebuild and holds most of the
//!   bytes (nix2container #31, #113).
//! * Guix's size rule gives the largest paths their own layers but knows
//!   nothing of the graph: the catch-all layer mixes stable small libraries
//!   with the image's own, ever-changing top.
//! * nixpkgs' auto-layer makes the largest paths layer roots and groups the
//!   rest by which roots use them. It weighs size, but not change: it does
//!   not see that a layer is replaced whenever *any* path in its closure
//!   changes.
//!
//! # The model
//!
//! Nix and Guix store paths are input-addressed: when a package changes,
//! it and every path that depends on it, directly or not, get new names.
//! So a path `p` is replaced whenever anything in its closure `C(p)` (its
//! dependencies and itself) changes. If packages change independently and
//! about equally often, `p` is replaced with a frequency proportional to
//! `|C(p)|`, and a layer `L` — replaced when any of its paths is — with a
//! frequency proportional to `|C(L)| = |∪ C(p)|` over `p ∈ L`. The bytes a
//! host must pull for `L` over time are then proportional to
//!
//! ```text
//! cost(L) = size(L) × |C(L)|
//! ```
//!
//! and a split into layers costs the sum over its layers. One path per
//! layer is the floor; every merge of two layers `A` and `B` adds
//!
//! ```text
//! Δ(A, B) = size(A)·(|C(A∪B)| − |C(A)|) + size(B)·(|C(A∪B)| − |C(B)|) ≥ 0.
//! ```
//!
//! # The algorithm
//!
//! Start with one layer per path and, while there are more layers than the
//! budget, merge the two layers with the smallest `Δ` (ties broken by the
//! smallest path names, so the result is deterministic). This is greedy
//! agglomerative clustering. Done over all pairs it costs `O(n²)` prices
//! per merge round and `O(n)` words per price (closures as bitsets), about
//! `n³/64` word operations and `n²/8` bytes: 13,500 paths took minutes. So
//! it runs in two phases.
//!
//! **Coarsening** (only when there are more than `EXACT_GROUPS` (512) paths):
//! the same greedy merge, cheapest `Δ` first with the same tie-break, but
//! over *candidate* pairs only: a path and each path it refers to, and
//! paths that refer to a common path and are next to each other when that
//! path's users are ordered by closure weight (a chain per path, so `O(E)`
//! pairs in all, not `O(degree²)`). A merged layer inherits the candidates
//! of both halves. Cheap merges are between paths with nearly the same
//! closure or with little size, and those are nearly always such pairs; a
//! pair that is neither is one whose closures differ, so it is dear. Parts
//! of the graph no pair links (paths without references or users,
//! unrelated closures) are chained by size once the linked merges run
//! out. It stops at `EXACT_GROUPS` (512) layers. Each layer keeps a shortlist
//! of its few cheapest partners and a lower bound for all the others, and
//! a heap holds each layer's cheapest merge, so a merge prices only the
//! merged layer's candidates, and skips a pair whenever the lower bound
//! `size(A)·(w − w(A)) + size(B)·(w − w(B))` with `w = max(w(A), w(B))`
//! (no union weighs less than its heavier half) shows it cannot matter.
//! Closures are sorted lists while small (a path's closure in a real graph
//! is a few dozen paths) and bitsets once large.
//!
//! **Exact merging** of the remaining `EXACT_GROUPS` (512) layers over all
//! pairs, down to the budget: `Δ` of a pair never changes until one of the
//! pair is merged, so each layer keeps its best partners and only layers
//! whose best partner was just merged are rescanned. A graph of at most
//! `EXACT_GROUPS` (512) paths (most images) is merged exactly from the start.
//!
//! **Cost**, for `n` paths, `E` references and `M` = `EXACT_GROUPS` (512):
//! closures take `O(Σ|C(p)|)` memory and `O(E · |C|)` time (`|C|` the
//! typical closure size, ~50 in Debian's graph); coarsening prices
//! `O(n · d)` candidate pairs, `d` the typical number of candidates per
//! layer (~45 prices per path measured on Debian closures of 13,500 and
//! 50,000 paths), each in `O(|C|)`, or `O(n/64)` when both closures are
//! bitsets, plus a heap operation per price; its worst case, a layer
//! with `O(n)` candidates merged `O(n)` times, is `O(n²)` prices. The exact
//! phase is `O(M² · n/64)` word operations and `O(M · n/8)` bytes.
//! Measured figures are in the README (`scripts/layering-scale`).
//!
//! Coarsening gives up exactness only in which pairs it looks at. On a
//! 5,000-path Debian closure (where the exact merge takes half a minute)
//! the two-phase result's cost `Σ size(L)·|C(L)|` is within 1% of the
//! exact greedy's at budgets 8 to 100, better at some (greedy is not
//! optimal either).
//!
//! What it does in practice:
//!
//! * Tiny paths merge first, whatever they are: they cost little wherever
//!   they go. The leftovers of many small paths become one small layer that
//!   changes often, which is cheap.
//! * A small dependency joins a large path that depends on it only if the
//!   extra changes it brings are few (`size(dep) × (|C(p)| − |C(dep)|)`),
//!   so large, stable bases (a libc, a language runtime) keep layers of
//!   their own and are not dragged into the churn of the image's top.
//! * Large paths with very different closures are never merged while
//!   cheaper merges exist, so a bump deep in the graph invalidates only the
//!   layers above it, and a bump near the top invalidates only small ones.
//! * Because `Δ` depends only on the two layers' own paths and closures,
//!   two images that share a part of their closure make the same cheap
//!   merges inside it, and the resulting layers are byte-identical and
//!   shared on hosts and in registries.
//!
//! `scripts/layering-bench` measures the result against the anchors on
//! Debian's real dependency graph turned into input-addressed store paths.
//!
//! # With hints
//!
//! The same merge, with two changes. Each path counts its learned change
//! weight in `|C(L)|` instead of 1. And the paths of each shared class
//! (`classes[i]`, the same number for the packages that nearly every image
//! of the fleet holds and that have the same set of images) are one layer
//! from the start, before coarsening. The cheap merges inside such a class
//! are made anyway; what the class adds is that the budget pressure of one
//! image, which differs from image to image, cannot split the class or
//! mix a part of it with the image's own paths while keeping the rest
//! apart. So every image that holds the class starts from the same layer
//! for it and, unless its budget forces a merge of that layer too, ships
//! it byte-identical, and a host running the fleet pulls a new version of
//! it once, not once per image.
//! Joining a class costs one union of closures per classed path; the
//! coarsening then links a joined layer through all its members'
//! references and users.
//!
//! # Excluded paths
//!
//! Excluded paths still count for the closures (they still change their
//! users' names), but are not placed in any layer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rayon::prelude::*;

use super::auto::short_name;
use super::graph::Graph;
use super::Layer;

/// How often each path is expected to change, relative to the others, in
/// fixed point: `None` counts every path once (the model above); hints
/// (see [`super::hints`]) give learned rates.
type Weights<'a> = Option<&'a [u64]>;

fn weight(weights: Weights, i: usize) -> u64 {
    weights.map_or(1, |w| w[i])
}

/// A fixed-width bitset over the graph's paths.
#[derive(Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    fn or_assign(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    fn weight(&self, weights: Weights) -> u64 {
        match weights {
            None => popcount(&self.0, &self.0, |a, _| a),
            Some(w) => ones(self.0.iter().copied()).map(|i| w[i]).sum(),
        }
    }
    fn common_weight(&self, other: &Bits, weights: Weights) -> u64 {
        match weights {
            None => popcount(&self.0, &other.0, |a, b| a & b),
            Some(w) => ones(self.0.iter().zip(&other.0).map(|(a, b)| a & b))
                .map(|i| w[i])
                .sum(),
        }
    }
    fn union_weight(&self, other: &Bits, weights: Weights) -> u64 {
        match weights {
            None => popcount(&self.0, &other.0, |a, b| a | b),
            Some(w) => ones(self.0.iter().zip(&other.0).map(|(a, b)| a | b))
                .map(|i| w[i])
                .sum(),
        }
    }
}

/// The number of ones in `op(a[i], b[i])` over all words. Counting bits is
/// most of what the exact merge does. (Without a popcount instruction in
/// the baseline x86-64 target this compiles to a few shifts and adds per
/// word; the crate keeps `unsafe` to its one mmap module rather than
/// dispatch on CPU features here.)
#[inline]
fn popcount(a: &[u64], b: &[u64], op: impl Fn(u64, u64) -> u64) -> u64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| u64::from(op(x, y).count_ones()))
        .sum()
}

/// The indices of the set bits of a sequence of words.
fn ones(words: impl Iterator<Item = u64>) -> impl Iterator<Item = usize> {
    words.enumerate().flat_map(|(k, mut word)| {
        std::iter::from_fn(move || {
            (word != 0).then(|| {
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                k * 64 + bit
            })
        })
    })
}

struct Group {
    members: Vec<usize>,
    size: u64,
    closure: Bits,
    changes: u64,
    /// Rank of the smallest member path among all paths, for
    /// deterministic tie-breaking.
    first: usize,
    /// Bumped whenever another layer is merged into this one.
    version: u32,
}

fn delta(a: &Group, b: &Group, weights: Weights) -> u128 {
    let union = a.closure.union_weight(&b.closure, weights);
    u128::from(a.size) * u128::from(union - a.changes)
        + u128::from(b.size) * u128::from(union - b.changes)
}

/// How many best partners each layer remembers between full scans.
const CANDIDATES: usize = 32;

/// A layer's best known partners, cheapest first.
#[derive(Default)]
struct Candidates {
    /// (Δ, partner's first rank, partner, partner's version)
    list: Vec<(u128, usize, usize, u32)>,
    /// Every partner not in `list` sorts at or after this (Δ, first rank);
    /// `None` when `list` held every partner at the last full scan.
    threshold: Option<(u128, usize)>,
}

impl Candidates {
    /// Keeps the best of all partners' prices.
    fn from_all(mut all: Vec<(u128, usize, usize, u32)>) -> Candidates {
        let threshold = if all.len() > CANDIDATES {
            all.select_nth_unstable_by_key(CANDIDATES, |e| (e.0, e.1));
            let t = (all[CANDIDATES].0, all[CANDIDATES].1);
            all.truncate(CANDIDATES);
            Some(t)
        } else {
            None
        };
        all.sort_unstable_by_key(|e| (e.0, e.1));
        all.shrink_to_fit();
        Candidates {
            list: all,
            threshold,
        }
    }

    fn insert(&mut self, entry: (u128, usize, usize, u32)) {
        let pos = self
            .list
            .partition_point(|e| (e.0, e.1) < (entry.0, entry.1));
        self.list.insert(pos, entry);
        if self.list.len() > CANDIDATES {
            let dropped = self.list.pop().expect("non-empty");
            let key = (dropped.0, dropped.1);
            self.threshold = Some(self.threshold.map_or(key, |t| t.min(key)));
        }
    }
}

/// Merges layers greedily by smallest Δ until at most `max_layers` remain.
fn cluster(groups: &mut [Option<Group>], max_layers: usize, weights: Weights) {
    let mut active = groups.iter().flatten().count();
    if active <= max_layers {
        return;
    }
    let full_scan = |groups: &[Option<Group>], a: usize| -> Candidates {
        let ga = groups[a].as_ref().expect("active");
        let all: Vec<(u128, usize, usize, u32)> = groups
            .iter()
            .enumerate()
            .filter_map(|(b, gb)| {
                let gb = gb.as_ref()?;
                (b != a).then(|| (delta(ga, gb, weights), gb.first, b, gb.version))
            })
            .collect();
        Candidates::from_all(all)
    };
    let mut cands: Vec<Option<Candidates>> = (0..groups.len())
        .into_par_iter()
        .map(|a| groups[a].as_ref().map(|_| full_scan(groups, a)))
        .collect();
    // The best valid partner of `a`, rescanning when the list cannot tell.
    let best = |groups: &[Option<Group>],
                cands: &mut Vec<Option<Candidates>>,
                a: usize|
     -> Option<(u128, usize, usize, u32)> {
        loop {
            let c = cands[a].as_mut()?;
            c.list
                .retain(|&(_, _, b, v)| groups[b].as_ref().is_some_and(|g| g.version == v));
            match c.list.first() {
                Some(&e) if c.threshold.is_none_or(|t| (e.0, e.1) < t) => return Some(e),
                None if c.threshold.is_none() => return None,
                _ => cands[a] = Some(full_scan(groups, a)),
            }
        }
    };
    let mut cached: Vec<Option<(u128, usize, usize, u32)>> = (0..groups.len())
        .map(|a| best(groups, &mut cands, a))
        .collect();
    while active > max_layers {
        // The globally cheapest pair: (Δ, smaller first rank, larger).
        let mut pick: Option<((u128, usize, usize), usize, usize)> = None;
        for (a, entry) in cached.iter().enumerate() {
            let (Some(ga), Some((d, b_first, b, _))) = (groups[a].as_ref(), entry) else {
                continue;
            };
            let key = (*d, ga.first.min(*b_first), ga.first.max(*b_first));
            if pick.as_ref().is_none_or(|(k, _, _)| key < *k) {
                pick = Some((key, a, *b));
            }
        }
        let Some((_, a, b)) = pick else { break };
        let gb = groups[b].take().expect("active");
        cands[b] = None;
        cached[b] = None;
        let ga = groups[a].as_mut().expect("active");
        ga.members.extend(gb.members);
        ga.size += gb.size;
        ga.closure.or_assign(&gb.closure);
        ga.changes = ga.closure.weight(weights);
        ga.first = ga.first.min(gb.first);
        ga.version += 1;
        active -= 1;
        // Everyone learns the merged layer's price; it scans everyone.
        let merged = groups[a].as_ref().expect("active");
        let (m_first, m_version) = (merged.first, merged.version);
        let prices: Vec<Option<u128>> = groups
            .par_iter()
            .enumerate()
            .map(|(x, gx)| {
                gx.as_ref()
                    .filter(|_| x != a)
                    .map(|gx| delta(gx, merged, weights))
            })
            .collect();
        // Δ is symmetric: the same prices are the merged layer's scan.
        let own: Vec<(u128, usize, usize, u32)> = prices
            .iter()
            .enumerate()
            .filter_map(|(x, p)| {
                p.map(|d| {
                    (
                        d,
                        groups[x].as_ref().map_or(0, |g| g.first),
                        x,
                        groups[x].as_ref().map_or(0, |g| g.version),
                    )
                })
            })
            .collect();
        for (x, price) in prices.into_iter().enumerate() {
            let Some(d) = price else { continue };
            let entry = (d, m_first, a, m_version);
            if let Some(c) = cands[x].as_mut() {
                c.insert(entry);
            }
            match cached[x] {
                Some((_, _, p, _)) if p == a || p == b => cached[x] = best(groups, &mut cands, x),
                Some(old) if (d, m_first) < (old.0, old.1) => cached[x] = Some(entry),
                Some(_) => {}
                None => cached[x] = best(groups, &mut cands, x),
            }
        }
        cands[a] = Some(Candidates::from_all(own));
        cached[a] = best(groups, &mut cands, a);
    }
}

/// How many layers the exact greedy merge starts from; larger graphs are
/// first coarsened to this many (see the module documentation). At 512 the
/// exact phase costs about as much as coarsening on 13,500 paths, and its
/// result's cost is as close to the all-exact one as with 1,024.
const EXACT_GROUPS: usize = 512;

/// A closure while coarsening: a sorted list of path indices while it is
/// small (most are: a path's closure is a few dozen paths in real graphs),
/// a bitset once scanning the list would cost more than the bitset's words.
enum Closure {
    List(Vec<u32>),
    Bits(Bits),
}

impl Closure {
    fn new(list: Vec<u32>, n: usize) -> Closure {
        if list.len() > n / 64 {
            let mut bits = Bits::new(n);
            for &x in &list {
                bits.set(x as usize);
            }
            Closure::Bits(bits)
        } else {
            Closure::List(list)
        }
    }

    fn weight(&self, weights: Weights) -> u64 {
        match self {
            Closure::List(l) => l.iter().map(|&x| weight(weights, x as usize)).sum(),
            Closure::Bits(b) => b.weight(weights),
        }
    }

    /// The weight of the union with `other`, given each one's own weight.
    fn union_weight(&self, own: u64, other: &Closure, other_own: u64, weights: Weights) -> u64 {
        let outside = |bits: &Bits, list: &[u32]| -> u64 {
            list.iter()
                .filter(|&&x| !bits.get(x as usize))
                .map(|&x| weight(weights, x as usize))
                .sum()
        };
        match (self, other) {
            (Closure::List(a), Closure::List(b)) => own + other_own - common_weight(a, b, weights),
            (Closure::Bits(a), Closure::List(b)) => own + outside(a, b),
            (Closure::List(a), Closure::Bits(b)) => other_own + outside(b, a),
            (Closure::Bits(a), Closure::Bits(b)) => a.union_weight(b, weights),
        }
    }

    /// The weight shared with `other`, given this closure as a bitset too
    /// (`dense`), so that a list costs only its own length.
    fn common_dense(&self, dense: &Bits, other: &Closure, weights: Weights) -> u64 {
        let inside = |bits: &Bits, list: &[u32]| -> u64 {
            list.iter()
                .filter(|&&x| bits.get(x as usize))
                .map(|&x| weight(weights, x as usize))
                .sum()
        };
        match (self, other) {
            (_, Closure::List(l)) => inside(dense, l),
            (Closure::List(l), Closure::Bits(b)) => inside(b, l),
            (Closure::Bits(a), Closure::Bits(b)) => a.common_weight(b, weights),
        }
    }

    fn set_into(&self, scratch: &mut Bits, on: bool) {
        if let Closure::List(l) = self {
            for &x in l {
                let (w, bit) = (x as usize / 64, x % 64);
                if on {
                    scratch.0[w] |= 1 << bit;
                } else {
                    scratch.0[w] &= !(1 << bit);
                }
            }
        }
    }

    fn union(self, other: Closure, n: usize) -> Closure {
        match (self, other) {
            (Closure::List(a), Closure::List(b)) => Closure::new(union(&a, &b), n),
            (Closure::Bits(mut a), Closure::List(l)) | (Closure::List(l), Closure::Bits(mut a)) => {
                for x in l {
                    a.set(x as usize);
                }
                Closure::Bits(a)
            }
            (Closure::Bits(mut a), Closure::Bits(b)) => {
                a.or_assign(&b);
                Closure::Bits(a)
            }
        }
    }

    fn into_bits(self, n: usize) -> Bits {
        match self {
            Closure::Bits(b) => b,
            Closure::List(l) => {
                let mut bits = Bits::new(n);
                for x in l {
                    bits.set(x as usize);
                }
                bits
            }
        }
    }
}

/// A layer while coarsening.
struct Fine {
    members: Vec<usize>,
    size: u64,
    closure: Closure,
    changes: u64,
    first: usize,
    version: u32,
}

/// The weight of the intersection of two sorted closures.
fn common_weight(a: &[u32], b: &[u32], weights: Weights) -> u64 {
    let (mut i, mut j, mut total) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        if x == y {
            total += weight(weights, x as usize);
        }
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    total
}

fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        out.push(x);
        i += usize::from(a[i] == x);
        j += usize::from(b[j] == x);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// A lower bound of [`fine_delta`] from the two weights alone: the union
/// weighs at least as much as the heavier closure.
fn fine_bound(a: &Fine, b: &Fine) -> u128 {
    let union = a.changes.max(b.changes);
    u128::from(a.size) * u128::from(union - a.changes)
        + u128::from(b.size) * u128::from(union - b.changes)
}

fn fine_delta(a: &Fine, b: &Fine, weights: Weights) -> u128 {
    let union = a
        .closure
        .union_weight(a.changes, &b.closure, b.changes, weights);
    u128::from(a.size) * u128::from(union - a.changes)
        + u128::from(b.size) * u128::from(union - b.changes)
}

/// Every path's closure (itself and everything it refers to, directly or
/// not) as a sorted list of indices.
fn closures(graph: &Graph) -> Vec<Vec<u32>> {
    let n = graph.len();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    // `mark[x] == i + 1` while collecting the closure of `i`.
    let mut mark = vec![0usize; n];
    for i in graph.topological_order() {
        let mut closure = vec![i as u32];
        mark[i] = i + 1;
        for &r in &graph.node(i).references {
            for &x in &out[r] {
                if mark[x as usize] != i + 1 {
                    mark[x as usize] = i + 1;
                    closure.push(x);
                }
            }
        }
        closure.sort_unstable();
        closure.shrink_to_fit();
        out[i] = closure;
    }
    out
}

/// The same greedy merge as [`cluster`], restricted to candidate pairs,
/// until `target` layers remain. Candidates are the pairs that can be
/// cheap: a path and the paths it refers to, paths that refer to a common
/// path and have closures of about the same weight, and paths of about
/// the same size; a merged layer inherits the candidates of both halves.
fn coarsen(graph: &Graph, groups: &mut [Option<Fine>], target: usize, weights: Weights) {
    let n = groups.len();
    let mut active = groups.iter().flatten().count();
    if active <= target {
        return;
    }
    // A layer put together before coarsening (see [`join_classes`]) lives
    // under one member's index, and its members' links are its own.
    let mut owner: Vec<u32> = (0..n as u32).collect();
    for (i, g) in groups.iter().enumerate() {
        for &m in g.iter().flat_map(|g| &g.members) {
            owner[m] = i as u32;
        }
    }
    let alive = |i: usize| groups[owner[i] as usize].is_some();
    let mut neighbours: Vec<Vec<u32>> = vec![Vec::new(); n];
    let link = |neighbours: &mut Vec<Vec<u32>>, a: usize, b: usize| {
        if a != b {
            neighbours[a].push(b as u32);
            neighbours[b].push(a as u32);
        }
    };
    for i in (0..n).filter(|&i| alive(i)) {
        for &r in &graph.node(i).references {
            if alive(r) {
                link(&mut neighbours, owner[i] as usize, owner[r] as usize);
            }
        }
    }
    let key = |g: &Option<Fine>| g.as_ref().map(|g| (g.changes, g.size, g.first));
    for d in 0..n {
        let mut users: Vec<usize> = graph
            .users(d)
            .iter()
            .copied()
            .filter(|&u| alive(u))
            .map(|u| owner[u] as usize)
            .collect();
        users.sort_unstable();
        users.dedup();
        users.sort_by_key(|&u| key(&groups[u]));
        for pair in users.windows(2) {
            link(&mut neighbours, pair[0], pair[1]);
        }
    }
    for list in &mut neighbours {
        list.sort_unstable();
        list.dedup();
    }
    let price = |groups: &[Option<Fine>], a: usize, b: usize| -> Best {
        let (ga, gb) = (
            groups[a].as_ref().expect("active"),
            groups[b].as_ref().expect("active"),
        );
        (
            fine_delta(ga, gb, weights),
            ga.first.min(gb.first),
            ga.first.max(gb.first),
            b as u32,
            gb.version,
        )
    };
    // The same price, with `a`'s closure also given as a bitset.
    let price_dense = |groups: &[Option<Fine>], a: usize, dense: &Bits, b: usize| -> Best {
        let (ga, gb) = (
            groups[a].as_ref().expect("active"),
            groups[b].as_ref().expect("active"),
        );
        let union = ga.changes + gb.changes - ga.closure.common_dense(dense, &gb.closure, weights);
        (
            u128::from(ga.size) * u128::from(union - ga.changes)
                + u128::from(gb.size) * u128::from(union - gb.changes),
            ga.first.min(gb.first),
            ga.first.max(gb.first),
            b as u32,
            gb.version,
        )
    };
    let mut scratch = Bits::new(n);
    let bound = |groups: &[Option<Fine>], a: usize, b: usize| -> Best {
        let (ga, gb) = (
            groups[a].as_ref().expect("active"),
            groups[b].as_ref().expect("active"),
        );
        (fine_bound(ga, gb), 0, 0, 0, 0)
    };
    // Prices every candidate of `a` that could be among its best few.
    let scan = |groups: &[Option<Fine>], a: usize, list: &[u32]| -> Shortlist {
        let mut short = Shortlist::default();
        for &x in list {
            let low = bound(groups, a, x as usize);
            if short.rejects(low) {
                short.note(low);
            } else {
                short.insert(price(groups, a, x as usize));
            }
        }
        short
    };
    let mut shortlists: Vec<Shortlist> = (0..n)
        .into_par_iter()
        .map(|a| match groups[a] {
            Some(_) => scan(groups, a, &neighbours[a]),
            None => Shortlist::default(),
        })
        .collect();
    // One entry per layer and version, keyed by a lower bound of its
    // cheapest merge (exact unless that partner has merged since).
    let mut heap: BinaryHeap<Reverse<(Best, u32, u32)>> = shortlists
        .iter()
        .enumerate()
        .filter_map(|(a, s)| s.list.first().map(|&k| Reverse((k, a as u32, 0))))
        .collect();
    // Merged layers live on under the index of one of their halves.
    let mut parent: Vec<u32> = owner;
    fn find(parent: &mut [u32], mut x: usize) -> usize {
        while parent[x] as usize != x {
            let up = parent[parent[x] as usize];
            parent[x] = up;
            x = up as usize;
        }
        x
    }
    let version = |groups: &[Option<Fine>], i: usize| groups[i].as_ref().map(|g| g.version);
    let mut chained = false;
    while active > target {
        let Some(Reverse((key, a, va))) = heap.pop() else {
            if chained {
                break;
            }
            // Disconnected parts (paths nothing links, separate closures)
            // are merged by size too, as the exact merge would eventually.
            chained = true;
            let mut by_size: Vec<usize> = (0..n).filter(|&i| groups[i].is_some()).collect();
            by_size.sort_by_key(|&i| groups[i].as_ref().map(|g| (g.size, g.first)));
            for pair in by_size.windows(2) {
                link(&mut neighbours, pair[0], pair[1]);
            }
            for &a in &by_size {
                let mut list = std::mem::take(&mut neighbours[a]);
                for x in &mut list {
                    *x = find(&mut parent, *x as usize) as u32;
                }
                list.sort_unstable();
                list.dedup();
                list.retain(|&x| x as usize != a);
                neighbours[a] = list;
            }
            let groups_ref = &*groups;
            shortlists = (0..n)
                .into_par_iter()
                .map(|a| match groups_ref[a] {
                    Some(_) => scan(groups_ref, a, &neighbours[a]),
                    None => Shortlist::default(),
                })
                .collect();
            heap = shortlists
                .iter()
                .enumerate()
                .filter_map(|(a, s)| {
                    let v = version(groups, a)?;
                    s.list.first().map(|&k| Reverse((k, a as u32, v)))
                })
                .collect();
            continue;
        };
        let a = a as usize;
        if version(groups, a) != Some(va) {
            continue;
        }
        // The cheapest valid partner, pricing the candidates again when the
        // shortlist cannot tell.
        let current = loop {
            let short = &mut shortlists[a];
            short
                .list
                .retain(|&(_, _, _, x, vx)| version(groups, x as usize) == Some(vx));
            match short.list.first() {
                Some(&k) if short.threshold.is_none_or(|t| k < t) => break Some(k),
                None if short.threshold.is_none() => break None,
                _ => {}
            }
            let mut list = std::mem::take(&mut neighbours[a]);
            for x in &mut list {
                *x = find(&mut parent, *x as usize) as u32;
            }
            list.sort_unstable();
            list.dedup();
            list.retain(|&x| x as usize != a);
            let ga = groups[a].as_ref().expect("active");
            ga.closure.set_into(&mut scratch, true);
            let dense = match &ga.closure {
                Closure::Bits(b) => b,
                Closure::List(_) => &scratch,
            };
            let mut short = Shortlist::default();
            for &x in &list {
                let low = bound(groups, a, x as usize);
                if short.rejects(low) {
                    short.note(low);
                } else {
                    short.insert(price_dense(groups, a, dense, x as usize));
                }
            }
            ga.closure.set_into(&mut scratch, false);
            shortlists[a] = short;
            neighbours[a] = list;
        };
        let Some(current) = current else { continue };
        if current != key {
            heap.push(Reverse((current, a as u32, va)));
            continue;
        }
        let b = current.3 as usize;
        let gb = groups[b].take().expect("active");
        shortlists[b] = Shortlist::default();
        let ga = groups[a].as_mut().expect("active");
        ga.members.extend(gb.members);
        ga.size += gb.size;
        let closure = std::mem::replace(&mut ga.closure, Closure::List(Vec::new()));
        ga.closure = closure.union(gb.closure, n);
        ga.changes = ga.closure.weight(weights);
        ga.first = ga.first.min(gb.first);
        ga.version += 1;
        let va = ga.version;
        parent[b] = a as u32;
        active -= 1;
        let mut list = std::mem::take(&mut neighbours[a]);
        list.extend(std::mem::take(&mut neighbours[b]));
        for x in &mut list {
            *x = find(&mut parent, *x as usize) as u32;
        }
        list.sort_unstable();
        list.dedup();
        list.retain(|&x| x as usize != a);
        // Price only the pairs that can enter the merged layer's shortlist
        // or a neighbour's; the others leave a lower bound behind. First
        // the ones a neighbour needs, then those that could still enter
        // the merged layer's (its shortlist only shrinks as prices come,
        // so this prices no fewer pairs than it must).
        let ga = groups[a].as_ref().expect("active");
        ga.closure.set_into(&mut scratch, true);
        let dense = match &ga.closure {
            Closure::Bits(b) => b,
            Closure::List(_) => &scratch,
        };
        let first: Vec<(Best, Option<Best>)> = maybe_par(&list, |x| {
            let low = bound(groups, a, x);
            let p = (!shortlists[x].rejects(low)).then(|| price_dense(groups, a, dense, x));
            (low, p)
        });
        let mut own = Shortlist::default();
        for p in first.iter().filter_map(|e| e.1) {
            own.insert(p);
        }
        let more: Vec<Option<Best>> = maybe_par_zip(&list, &first, |x, (low, p)| {
            (p.is_none() && !own.rejects(*low)).then(|| price_dense(groups, a, dense, x))
        });
        ga.closure.set_into(&mut scratch, false);
        for ((&x, (low, p)), q) in list.iter().zip(&first).zip(more) {
            let x = x as usize;
            if let Some(q) = q {
                own.insert(q);
            }
            match p.or(q) {
                Some(p) => {
                    let theirs = (p.0, p.1, p.2, a as u32, va);
                    shortlists[x].insert(theirs);
                    if shortlists[x].list.first() == Some(&theirs) {
                        let vx = version(groups, x).expect("active");
                        heap.push(Reverse((theirs, x as u32, vx)));
                    }
                }
                None => {
                    own.note(*low);
                    shortlists[x].note(*low);
                }
            }
        }
        if let Some(&k) = own.list.first() {
            heap.push(Reverse((k, a as u32, va)));
        }
        shortlists[a] = own;
        neighbours[a] = list;
    }
}

/// Maps `f` over `list`, on several threads when it is long enough to pay.
fn maybe_par<T: Send>(list: &[u32], f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    if list.len() > 64 {
        list.par_iter().map(|&x| f(x as usize)).collect()
    } else {
        list.iter().map(|&x| f(x as usize)).collect()
    }
}

fn maybe_par_zip<U: Sync, T: Send>(
    list: &[u32],
    with: &[U],
    f: impl Fn(usize, &U) -> T + Sync,
) -> Vec<T> {
    if list.len() > 64 {
        list.par_iter()
            .zip(with)
            .map(|(&x, u)| f(x as usize, u))
            .collect()
    } else {
        list.iter()
            .zip(with)
            .map(|(&x, u)| f(x as usize, u))
            .collect()
    }
}

/// (Δ, smaller first rank, larger first rank, partner, partner's version)
type Best = (u128, usize, usize, u32, u32);

/// How many cheapest partners a layer remembers while coarsening.
const SHORTLIST: usize = 4;

/// A layer's cheapest known partners while coarsening.
#[derive(Default)]
struct Shortlist {
    /// Cheapest first, at most [`SHORTLIST`].
    list: Vec<Best>,
    /// Every candidate not in `list` costs at least this; `None` when
    /// there is none.
    threshold: Option<Best>,
}

impl Shortlist {
    /// Whether a partner that costs at least `low` cannot enter the list.
    fn rejects(&self, low: Best) -> bool {
        self.list.len() == SHORTLIST && self.list.last().is_some_and(|&k| low > k)
    }

    fn note(&mut self, low: Best) {
        self.threshold = Some(self.threshold.map_or(low, |t| t.min(low)));
    }

    fn insert(&mut self, entry: Best) {
        let pos = self.list.partition_point(|&k| k < entry);
        self.list.insert(pos, entry);
        if self.list.len() > SHORTLIST {
            let dropped = self.list.pop().expect("non-empty");
            self.note(dropped);
        }
    }
}

/// Splits `graph` into at most `max_layers` layers (see the module
/// documentation), leaving out paths for which `exclude` is true.
pub fn default_layers(
    graph: &Graph,
    max_layers: usize,
    exclude: &dyn Fn(&str) -> bool,
) -> Vec<Layer> {
    layers_with(graph, max_layers, exclude, None, None, EXACT_GROUPS)
}

/// [`default_layers`] with a change weight per path instead of one for
/// every path, and where the paths of one class start as one layer, so
/// that every image that holds them lays them out as the same layer (the
/// paths nearly every image of a fleet holds, by their set of images: see
/// [`super::hints`]). Both are indexed like the graph's nodes; class 0 is
/// no class.
pub(crate) fn layers_classed(
    graph: &Graph,
    max_layers: usize,
    exclude: &dyn Fn(&str) -> bool,
    weights: Weights,
    classes: &[u32],
) -> Vec<Layer> {
    layers_with(
        graph,
        max_layers,
        exclude,
        weights,
        Some(classes),
        EXACT_GROUPS,
    )
}

/// Puts the layers of each class together, under the index of its first
/// path.
fn join_classes(fine: &mut [Option<Fine>], classes: &[u32], weights: Weights) {
    let n = fine.len();
    let mut head: HashMap<u32, usize> = HashMap::new();
    for i in 0..n {
        if classes[i] == 0 || fine[i].is_none() {
            continue;
        }
        let h = *head.entry(classes[i]).or_insert(i);
        if h == i {
            continue;
        }
        let g = fine[i].take().expect("active");
        let f = fine[h].as_mut().expect("active");
        f.members.extend(g.members);
        f.size += g.size;
        let closure = std::mem::replace(&mut f.closure, Closure::List(Vec::new()));
        f.closure = closure.union(g.closure, n);
        f.changes = f.closure.weight(weights);
        f.first = f.first.min(g.first);
    }
}

fn layers_with(
    graph: &Graph,
    max_layers: usize,
    exclude: &dyn Fn(&str) -> bool,
    weights: Weights,
    classes: Option<&[u32]>,
    exact_groups: usize,
) -> Vec<Layer> {
    let n = graph.len();
    let mut by_name: Vec<usize> = (0..n).collect();
    by_name.sort_by(|&a, &b| graph.node(a).path.cmp(&graph.node(b).path));
    let mut rank = vec![0usize; n];
    for (r, &i) in by_name.iter().enumerate() {
        rank[i] = r;
    }
    let mut fine: Vec<Option<Fine>> = closures(graph)
        .into_iter()
        .enumerate()
        .map(|(i, closure)| {
            (!exclude(&graph.node(i).path)).then(|| Fine {
                members: vec![i],
                size: graph.node(i).nar_size,
                changes: closure.iter().map(|&x| weight(weights, x as usize)).sum(),
                closure: Closure::new(closure, n),
                first: rank[i],
                version: 0,
            })
        })
        .collect();
    if let Some(classes) = classes {
        join_classes(&mut fine, classes, weights);
    }
    coarsen(graph, &mut fine, exact_groups.max(max_layers), weights);
    let mut groups: Vec<Option<Group>> = fine
        .into_iter()
        .flatten()
        .map(|f| {
            Some(Group {
                members: f.members,
                size: f.size,
                closure: f.closure.into_bits(n),
                changes: f.changes,
                first: f.first,
                version: 0,
            })
        })
        .collect();
    cluster(&mut groups, max_layers, weights);

    let mut layers: Vec<(u64, Vec<String>, String)> = groups
        .into_iter()
        .flatten()
        .map(|g| {
            let closure_size: u64 = (0..n)
                .filter(|&i| g.closure.get(i))
                .map(|i| graph.node(i).nar_size)
                .sum();
            let mut paths: Vec<String> = g
                .members
                .iter()
                .map(|&i| graph.node(i).path.clone())
                .collect();
            paths.sort();
            let mut by_size = g.members.clone();
            by_size.sort_by_key(|&i| std::cmp::Reverse(graph.node(i).nar_size));
            let names: Vec<&str> = by_size
                .iter()
                .take(3)
                .map(|&i| short_name(&graph.node(i).path))
                .collect();
            let reason = if g.members.len() == 1 {
                format!(
                    "default: {} alone; replaced when any of its {} closure paths changes",
                    names[0], g.changes
                )
            } else {
                format!(
                    "default: {}{} replaced together when any of {} closure paths changes",
                    names.join(", "),
                    if g.members.len() > 3 {
                        format!(" and {} more", g.members.len() - 3)
                    } else {
                        String::new()
                    },
                    g.changes
                )
            };
            (closure_size, paths, reason)
        })
        .collect();
    // Dependencies before their users, like auto-layer's order.
    layers.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    layers
        .into_iter()
        .map(|(_, paths, reason)| Layer { paths, reason })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(i: usize, size: u64, closure: &[usize], n: usize) -> Group {
        let mut bits = Bits::new(n);
        for &c in closure {
            bits.set(c);
        }
        let changes = bits.weight(None);
        Group {
            members: vec![i],
            size,
            closure: bits,
            changes,
            first: i,
            version: 0,
        }
    }

    /// The same greedy merge, the slow and obvious way.
    fn naive(groups: &mut [Option<Group>], max_layers: usize) {
        while groups.iter().flatten().count() > max_layers {
            let mut pick: Option<((u128, usize, usize), usize, usize)> = None;
            for a in 0..groups.len() {
                for b in a + 1..groups.len() {
                    if let (Some(ga), Some(gb)) = (&groups[a], &groups[b]) {
                        let key = (
                            delta(ga, gb, None),
                            ga.first.min(gb.first),
                            ga.first.max(gb.first),
                        );
                        if pick.as_ref().is_none_or(|(k, _, _)| key < *k) {
                            pick = Some((key, a, b));
                        }
                    }
                }
            }
            let (_, a, b) = pick.unwrap();
            let gb = groups[b].take().unwrap();
            let ga = groups[a].as_mut().unwrap();
            ga.members.extend(gb.members);
            ga.size += gb.size;
            ga.closure.or_assign(&gb.closure);
            ga.changes = ga.closure.weight(None);
            ga.first = ga.first.min(gb.first);
        }
    }

    #[test]
    fn candidate_lists_give_the_naive_result() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        for round in 0..40 {
            let n = 20 + (next(80) as usize);
            // Random DAG closures: i depends on a few lower indices.
            let mut closures: Vec<Vec<usize>> = Vec::new();
            for i in 0..n {
                let mut c = vec![i];
                for _ in 0..next(4) {
                    if i > 0 {
                        let d = next(i as u64) as usize;
                        c.extend(closures[d].iter().copied());
                    }
                }
                c.sort_unstable();
                c.dedup();
                closures.push(c);
            }
            let sizes: Vec<u64> = (0..n)
                .map(|_| match next(3) {
                    0 => next(10),
                    1 => next(1000),
                    _ => next(1 << 30),
                })
                .collect();
            let make = || -> Vec<Option<Group>> {
                (0..n)
                    .map(|i| Some(group(i, sizes[i], &closures[i], n)))
                    .collect()
            };
            let budget = 1 + next(n as u64) as usize;
            let (mut fast, mut slow) = (make(), make());
            cluster(&mut fast, budget, None);
            naive(&mut slow, budget);
            let members = |g: &[Option<Group>]| -> Vec<Vec<usize>> {
                let mut out: Vec<Vec<usize>> = g
                    .iter()
                    .flatten()
                    .map(|g| {
                        let mut m = g.members.clone();
                        m.sort_unstable();
                        m
                    })
                    .collect();
                out.sort();
                out
            };
            assert_eq!(
                members(&fast),
                members(&slow),
                "round {round}, n {n}, budget {budget}"
            );
        }
    }
}

#[cfg(test)]
mod coarsening_tests {
    use super::*;
    use crate::layering::graph::RawNode;

    /// A random DAG: `n` paths, each referring to a few earlier ones,
    /// sizes spread over six orders of magnitude, plus `isolated` paths
    /// that refer to nothing and that nothing refers to.
    fn random_graph(seed: u64, n: usize, isolated: usize) -> Graph {
        let mut state = seed | 1;
        let mut next = move |m: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % m
        };
        let name = |i: usize| format!("/nix/store/{:032}-p{i}", i * 7919 % 100_003);
        let raw: Vec<RawNode> = (0..n + isolated)
            .map(|i| RawNode {
                path: name(i),
                references: if i < n && i > 0 {
                    (0..1 + next(4))
                        .map(|_| name(next(i as u64) as usize))
                        .collect()
                } else {
                    Vec::new()
                },
                nar_size: Some(10u64.pow(next(7) as u32) * (1 + next(9))),
                nar_hash: None,
            })
            .collect();
        Graph::from_raw(raw, "test").unwrap()
    }

    /// What `default` minimises: Σ size(L) · |closure(L)|.
    fn cost(graph: &Graph, layers: &[Layer]) -> u128 {
        let closures = closures(graph);
        layers
            .iter()
            .map(|l| {
                let mut closure: Vec<u32> = Vec::new();
                let mut size = 0u64;
                for p in &l.paths {
                    let i = graph.index_of(p).unwrap();
                    size += graph.node(i).nar_size;
                    closure = union(&closure, &closures[i]);
                }
                u128::from(size) * closure.len() as u128
            })
            .sum()
    }

    fn check_partition(graph: &Graph, layers: &[Layer], budget: usize) {
        assert!(layers.len() <= budget, "{} layers > {budget}", layers.len());
        let mut all: Vec<&String> = layers.iter().flat_map(|l| &l.paths).collect();
        all.sort();
        let mut want: Vec<&String> = graph.nodes().iter().map(|n| &n.path).collect();
        want.sort();
        assert_eq!(all, want);
    }

    #[test]
    fn coarsening_costs_about_what_the_exact_merge_costs() {
        let (mut coarse_total, mut exact_total) = (0u128, 0u128);
        for seed in 1..=6 {
            let graph = random_graph(seed, 300, 0);
            for budget in [4, 8, 16] {
                let coarse = layers_with(&graph, budget, &|_| false, None, None, 40);
                let exact = layers_with(&graph, budget, &|_| false, None, None, usize::MAX);
                check_partition(&graph, &coarse, budget);
                check_partition(&graph, &exact, budget);
                coarse_total += cost(&graph, &coarse);
                exact_total += cost(&graph, &exact);
            }
        }
        let ratio = coarse_total as f64 / exact_total as f64;
        assert!(
            ratio < 1.05,
            "coarsening costs {ratio:.3} times the exact merge"
        );
    }

    #[test]
    fn small_graphs_are_merged_exactly() {
        let graph = random_graph(7, 200, 20);
        let via_default = default_layers(&graph, 10, &|_| false);
        let exact = layers_with(&graph, 10, &|_| false, None, None, usize::MAX);
        assert_eq!(via_default, exact);
    }

    /// Regression: coarsening stopped when no candidate pair was left, so
    /// paths that nothing links all reached the quadratic exact phase.
    #[test]
    fn unlinked_paths_are_coarsened_too() {
        let graph = random_graph(3, 100, 2000);
        let mut fine: Vec<Option<Fine>> = closures(&graph)
            .into_iter()
            .enumerate()
            .map(|(i, closure)| {
                Some(Fine {
                    members: vec![i],
                    size: graph.node(i).nar_size,
                    changes: closure.len() as u64,
                    closure: Closure::new(closure, graph.len()),
                    first: i,
                    version: 0,
                })
            })
            .collect();
        coarsen(&graph, &mut fine, 50, None);
        assert_eq!(fine.iter().flatten().count(), 50);
        let layers = layers_with(&graph, 8, &|_| false, None, None, 50);
        check_partition(&graph, &layers, 8);
    }

    #[test]
    fn joined_classes_stay_together_through_coarsening() {
        for seed in 1..=4 {
            let graph = random_graph(seed, 300, 20);
            // Three classes of scattered paths, the rest unclassed.
            let classes: Vec<u32> = (0..graph.len())
                .map(|i| if i % 5 == 0 { (i % 3) as u32 + 1 } else { 0 })
                .collect();
            for (exact, budget) in [(40, 8), (usize::MAX, 8), (40, 60)] {
                let layers = layers_with(&graph, budget, &|_| false, None, Some(&classes), exact);
                check_partition(&graph, &layers, budget);
                for class in 1..=3 {
                    let holding: Vec<usize> = layers
                        .iter()
                        .enumerate()
                        .filter(|(_, l)| {
                            l.paths
                                .iter()
                                .any(|p| classes[graph.index_of(p).unwrap()] == class)
                        })
                        .map(|(k, _)| k)
                        .collect();
                    assert_eq!(holding.len(), 1, "seed {seed}, class {class}");
                }
            }
            // Without classes the same graph spreads them over layers.
            let plain = layers_with(&graph, 60, &|_| false, None, None, 40);
            let spread = plain
                .iter()
                .filter(|l| {
                    l.paths
                        .iter()
                        .any(|p| classes[graph.index_of(p).unwrap()] == 1)
                })
                .count();
            assert!(spread > 1, "seed {seed}");
        }
    }

    #[test]
    fn coarsening_leaves_excluded_paths_out() {
        let graph = random_graph(5, 400, 10);
        let excluded: Vec<String> = graph
            .nodes()
            .iter()
            .step_by(3)
            .map(|n| n.path.clone())
            .collect();
        let layers = layers_with(
            &graph,
            8,
            &|p| excluded.iter().any(|e| e == p),
            None,
            None,
            30,
        );
        assert!(layers.len() <= 8);
        let placed: Vec<&String> = layers.iter().flat_map(|l| &l.paths).collect();
        assert_eq!(placed.len(), graph.len() - excluded.len());
        assert!(placed.iter().all(|p| !excluded.contains(p)));
    }
}
