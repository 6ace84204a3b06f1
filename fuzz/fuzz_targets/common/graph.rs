//! What every references-graph target checks once the input parsed: the
//! graph validates or is refused with an error (never a panic), a valid
//! graph has a topological order, and every layering strategy puts each
//! path that is not excluded into exactly one layer, within the budget.

use std::collections::{HashMap, HashSet};

use stream_layered_image::layering::{self, graph, Graph, Strategy};

/// Parses `data` as a references graph in whatever format it is, then
/// checks the graph and plans layers with every strategy.
pub fn check(data: &[u8]) {
    let Ok(raw) = graph::parse_raw(data, "<fuzz>") else {
        return;
    };
    check_raw(raw);
}

/// As [`check`], for records already parsed.
pub fn check_raw(mut raw: Vec<graph::RawNode>) {
    // A record without a size would be measured on disk, at whatever path
    // the input names: give it one instead.
    for node in &mut raw {
        node.nar_size.get_or_insert(node.path.len() as u64);
    }
    let Ok(g) = Graph::from_raw(raw, "<fuzz>") else {
        return;
    };
    assert!(!g.is_empty());

    let order = g.topological_order();
    assert_eq!(order.len(), g.len(), "the order misses a path");
    let mut position = vec![usize::MAX; g.len()];
    for (at, &i) in order.iter().enumerate() {
        assert_eq!(position[i], usize::MAX, "the order repeats a path");
        position[i] = at;
    }
    for (i, node) in g.nodes().iter().enumerate() {
        assert_eq!(g.index_of(&node.path), Some(i));
        for &r in &node.references {
            assert_ne!(r, i, "a self-reference was kept");
            assert!(
                position[r] < position[i],
                "a reference comes after its user"
            );
            assert!(g.users(r).contains(&i));
        }
    }

    // The strategies are superlinear in places; fuzz inputs are small, but
    // keep the work per input bounded all the same.
    if g.len() > 200 {
        return;
    }
    let none = HashSet::new();
    let first: HashSet<String> = [g.node(0).path.clone()].into();
    for exclude in [&none, &first] {
        for strategy in [
            Strategy::Default,
            Strategy::Popularity,
            Strategy::Auto,
            Strategy::Size,
        ] {
            for budget in [1, 2, 3, 7, 100] {
                let layers = layering::plan(&g, &strategy, Some(budget), exclude)
                    .unwrap_or_else(|e| panic!("{} with budget {budget}: {e}", strategy.name()));
                assert!(layers.len() <= budget, "{}: over budget", strategy.name());
                let mut seen: HashMap<&str, usize> = HashMap::new();
                for layer in &layers {
                    for path in &layer.paths {
                        *seen.entry(path).or_default() += 1;
                    }
                }
                for node in g.nodes() {
                    let want = usize::from(!exclude.contains(&node.path));
                    let got = seen.remove(node.path.as_str()).unwrap_or(0);
                    assert_eq!(
                        got,
                        want,
                        "{} with budget {budget}: {:?} is in {got} layers",
                        strategy.name(),
                        node.path
                    );
                }
                assert!(seen.is_empty(), "paths outside the graph: {seen:?}");
            }
        }
    }
}
