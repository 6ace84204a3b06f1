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
//! agglomerative clustering; `Δ` of a pair never changes until one of the
//! pair is merged, so each layer keeps its best partner and only layers
//! whose best partner was just merged are rescanned.
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
//! # Excluded paths
//!
//! Excluded paths still count for the closures (they still change their
//! users' names), but are not placed in any layer.

use rayon::prelude::*;

use super::auto::short_name;
use super::graph::Graph;
use super::Layer;

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
    fn or_assign(&mut self, other: &Bits) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    fn union_count(&self, other: &Bits) -> u64 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| u64::from((a | b).count_ones()))
            .sum()
    }
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

fn delta(a: &Group, b: &Group) -> u128 {
    let union = a.closure.union_count(&b.closure);
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
fn cluster(groups: &mut [Option<Group>], max_layers: usize) {
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
                (b != a).then(|| (delta(ga, gb), gb.first, b, gb.version))
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
        ga.changes = ga.closure.count();
        ga.first = ga.first.min(gb.first);
        ga.version += 1;
        active -= 1;
        // Everyone learns the merged layer's price; it scans everyone.
        let merged = groups[a].as_ref().expect("active");
        let (m_first, m_version) = (merged.first, merged.version);
        let prices: Vec<Option<u128>> = groups
            .par_iter()
            .enumerate()
            .map(|(x, gx)| gx.as_ref().filter(|_| x != a).map(|gx| delta(gx, merged)))
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

/// Splits `graph` into at most `max_layers` layers (see the module
/// documentation), leaving out paths for which `exclude` is true.
pub fn default_layers(
    graph: &Graph,
    max_layers: usize,
    exclude: &dyn Fn(&str) -> bool,
) -> Vec<Layer> {
    let n = graph.len();
    // Closures, dependencies first.
    let mut closures: Vec<Option<Bits>> = vec![None; n];
    for i in graph.topological_order() {
        let mut bits = Bits::new(n);
        bits.set(i);
        for &r in &graph.node(i).references {
            if let Some(c) = &closures[r] {
                bits.or_assign(c);
            }
        }
        closures[i] = Some(bits);
    }
    let mut by_name: Vec<usize> = (0..n).collect();
    by_name.sort_by(|&a, &b| graph.node(a).path.cmp(&graph.node(b).path));
    let mut rank = vec![0usize; n];
    for (r, &i) in by_name.iter().enumerate() {
        rank[i] = r;
    }
    let mut groups: Vec<Option<Group>> = (0..n)
        .filter(|&i| !exclude(&graph.node(i).path))
        .map(|i| {
            let closure = closures[i].take().unwrap_or_else(|| Bits::new(n));
            let changes = closure.count();
            Some(Group {
                members: vec![i],
                size: graph.node(i).nar_size,
                closure,
                changes,
                first: rank[i],
                version: 0,
            })
        })
        .collect();
    cluster(&mut groups, max_layers);

    let mut layers: Vec<(u64, Vec<String>, String)> = groups
        .into_iter()
        .flatten()
        .map(|g| {
            let closure_size: u64 = (0..n)
                .filter(|&i| g.closure.0[i / 64] >> (i % 64) & 1 == 1)
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
        let changes = bits.count();
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
                            delta(ga, gb),
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
            ga.changes = ga.closure.count();
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
            cluster(&mut fast, budget);
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
