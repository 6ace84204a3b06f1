//! nixpkgs' popularity contest
//! (`pkgs/build-support/references-by-popularity/closure-graph.py`, and the
//! `popularity_contest` step of flatten-references-graph).
//!
//! Unfold the graph into a tree from its roots (the paths nobody refers to).
//! A path's popularity is computed bottom-up: every child `c` of `v`
//! contributes 1 for `c` itself and, for every path `s` below `c`,
//! `popularity_below(c, s) + 1`. The popularity of `s` in the whole graph is
//! the same sum over the roots. Paths are then ordered by popularity, most
//! popular first, and equally popular paths by their "package name": the path
//! with its first `-`-separated part (the store directory and hash) moved to
//! the end, so `/nix/store/abc-foo-1.0` sorts as `foo-1.0-/nix/store/abc`.
//!
//! Popularity counts paths through the graph, which grows exponentially with
//! depth, so the counts are exact unbounded integers (as in Python): `u128`
//! first, and a limb vector if that overflows.

use std::cmp::Ordering;

/// The sort key nixpkgs uses for ties: the path with its first
/// `-`-separated part moved to the end.
pub fn package_name(path: &str) -> String {
    match path.split_once('-') {
        Some((start, rest)) => format!("{rest}-{start}"),
        None => path.to_string(),
    }
}

/// A counter that may overflow (u128) or not (limbs).
trait Counter: Clone + Ord {
    fn zero() -> Self;
    fn one() -> Self;
    /// Adds `other`; false on overflow.
    fn add(&mut self, other: &Self) -> bool;
}

impl Counter for u128 {
    fn zero() -> Self {
        0
    }
    fn one() -> Self {
        1
    }
    fn add(&mut self, other: &Self) -> bool {
        match self.checked_add(*other) {
            Some(v) => {
                *self = v;
                true
            }
            None => false,
        }
    }
}

/// An unbounded natural number: little-endian 64-bit limbs without
/// trailing zero limbs.
#[derive(Clone, PartialEq, Eq, Debug)]
struct Big(Vec<u64>);

impl Ord for Big {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

impl PartialOrd for Big {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Counter for Big {
    fn zero() -> Self {
        Big(Vec::new())
    }
    fn one() -> Self {
        Big(vec![1])
    }
    fn add(&mut self, other: &Self) -> bool {
        let mut carry = 0u64;
        for i in 0..self.0.len().max(other.0.len()) {
            if i == self.0.len() {
                self.0.push(0);
            }
            let b = other.0.get(i).copied().unwrap_or(0);
            let (s1, c1) = self.0[i].overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(carry);
            self.0[i] = s2;
            carry = u64::from(c1) + u64::from(c2);
        }
        if carry > 0 {
            self.0.push(carry);
        }
        true
    }
}

/// Orders the vertices `0..n` of a DAG (given by `succ`, without
/// self-loops) by popularity, as nixpkgs does. `name(i)` is the vertex's
/// store path. Returns the vertices, most popular first.
pub fn popularity_order(
    n: usize,
    succ: &[Vec<usize>],
    name: &dyn Fn(usize) -> String,
) -> Vec<usize> {
    match popularity_counts::<u128>(n, succ) {
        Some(counts) => order(counts, name),
        None => order(popularity_counts::<Big>(n, succ).unwrap_or_default(), name),
    }
}

fn order<C: Ord>(counts: Vec<C>, name: &dyn Fn(usize) -> String) -> Vec<usize> {
    let mut keyed: Vec<(C, String, usize)> = counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, package_name(&name(i)), i))
        .collect();
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// Popularity of every vertex; None if a counter overflows.
fn popularity_counts<C: Counter>(n: usize, succ: &[Vec<usize>]) -> Option<Vec<C>> {
    let mut has_pred = vec![false; n];
    let mut pred: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (v, children) in succ.iter().enumerate() {
        // Python builds each children dict keyed by path: repeats collapse.
        let mut seen = Vec::new();
        for &c in children {
            if c != v && !seen.contains(&c) {
                seen.push(c);
                has_pred[c] = true;
                pred[c].push(v);
            }
        }
    }
    let children: Vec<Vec<usize>> = (0..n)
        .map(|v| {
            let mut seen: Vec<usize> = Vec::new();
            for &c in &succ[v] {
                if c != v && !seen.contains(&c) {
                    seen.push(c);
                }
            }
            seen
        })
        .collect();
    let roots: Vec<usize> = (0..n).filter(|&v| !has_pred[v]).collect();
    let topo = topo_children_first(n, &children);
    let mut position = vec![0usize; n];
    for (p, &v) in topo.iter().enumerate() {
        position[v] = p;
    }
    let mut result = Vec::with_capacity(n);
    // Scratch space reused for every target.
    let mut below: Vec<bool> = vec![false; n]; // target strictly below v
    let mut f: Vec<C> = vec![C::zero(); n];
    let mut ancestors: Vec<usize> = Vec::new();
    let mut mark = vec![false; n];
    for s in 0..n {
        // The strict ancestors of s, children before parents.
        ancestors.clear();
        let mut stack = vec![s];
        while let Some(v) = stack.pop() {
            for &p in &pred[v] {
                if !mark[p] {
                    mark[p] = true;
                    ancestors.push(p);
                    stack.push(p);
                }
            }
        }
        ancestors.sort_unstable_by_key(|&v| position[v]);
        for &v in &ancestors {
            let mut total = C::zero();
            for &c in &children[v] {
                if c == s {
                    if !total.add(&C::one()) {
                        return None;
                    }
                } else if below[c] && (!total.add(&f[c]) || !total.add(&C::one())) {
                    return None;
                }
            }
            f[v] = total;
            below[v] = true;
        }
        let mut popularity = C::zero();
        for &r in &roots {
            if r == s {
                if !popularity.add(&C::one()) {
                    return None;
                }
            } else if below[r] && (!popularity.add(&f[r]) || !popularity.add(&C::one())) {
                return None;
            }
        }
        result.push(popularity);
        for &v in &ancestors {
            below[v] = false;
            mark[v] = false;
            f[v] = C::zero();
        }
    }
    Some(result)
}

/// Vertices ordered so that every vertex comes after its children.
fn topo_children_first(n: usize, children: &[Vec<usize>]) -> Vec<usize> {
    let mut pending: Vec<usize> = children.iter().map(Vec::len).collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (v, cs) in children.iter().enumerate() {
        for &c in cs {
            parents[c].push(v);
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&v| pending[v] == 0).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(v) = ready.pop() {
        out.push(v);
        for &p in &parents[v] {
            pending[p] -= 1;
            if pending[p] == 0 {
                ready.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_from_closure_graph_py() {
        // A - B - C - D - F, B - E, C - E, E - F, A - G
        let names = ["A", "B", "C", "D", "E", "F", "G"];
        let succ = vec![
            vec![1, 6],
            vec![2, 4],
            vec![3, 4],
            vec![5],
            vec![5],
            vec![],
            vec![],
        ];
        let counts = popularity_counts::<u128>(7, &succ).unwrap();
        assert_eq!(counts, vec![1, 2, 3, 4, 5, 9, 2]);
        let order = popularity_order(7, &succ, &|i| names[i].to_string());
        let ordered: Vec<&str> = order.iter().map(|&i| names[i]).collect();
        assert_eq!(ordered, ["F", "E", "D", "C", "B", "G", "A"]);
    }

    #[test]
    fn the_example_from_the_unit_tests() {
        // foo -> bar -> baz -> tux, foo -> baz
        let succ = vec![vec![1, 2], vec![2], vec![3], vec![]];
        assert_eq!(
            popularity_counts::<u128>(4, &succ).unwrap(),
            vec![1, 2, 4, 6]
        );
    }

    #[test]
    fn big_counts_agree_with_u128() {
        // A ladder: each rung doubles the number of paths.
        let n = 40;
        let succ: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                if i + 2 < n {
                    vec![i + 1, i + 2]
                } else if i + 1 < n {
                    vec![i + 1]
                } else {
                    vec![]
                }
            })
            .collect();
        let a = popularity_counts::<u128>(n, &succ).unwrap();
        let b = popularity_counts::<Big>(n, &succ).unwrap();
        for (x, y) in a.iter().zip(&b) {
            let mut v: u128 = 0;
            for (k, limb) in y.0.iter().enumerate() {
                v |= u128::from(*limb) << (64 * k);
            }
            assert_eq!(*x, v);
        }
    }

    #[test]
    fn overflow_falls_back_to_big() {
        let n = 400;
        let succ: Vec<Vec<usize>> = (0..n).map(|i| (i + 1..(i + 3).min(n)).collect()).collect();
        assert!(popularity_counts::<u128>(n, &succ).is_none());
        let order = popularity_order(n, &succ, &|i| format!("/s/{i:04}-x"));
        assert_eq!(order.len(), n);
        // The deepest vertex is reached by the most paths.
        assert_eq!(order[0], n - 1);
    }
}
