//! Properties every strategy must have on any graph: every path in exactly
//! one layer, never more layers than the budget, no empty layer; and the
//! default strategy's grouping does not depend on the order of the input.

use std::collections::{BTreeSet, HashSet};

use proptest::prelude::*;
use stream_layered_image::layering::graph::RawNode;
use stream_layered_image::layering::{plan, Graph, Strategy as Layering};

/// A random DAG: node `i` may refer only to nodes `< i`.
fn dag() -> impl Strategy<Value = Vec<RawNode>> {
    (1usize..70).prop_flat_map(|n| {
        let nodes: Vec<_> = (0..n)
            .map(|i| {
                (
                    proptest::collection::vec(0..i.max(1), 0..=i.min(6)),
                    prop_oneof![Just(0u64), 0u64..100, 0u64..10_000_000],
                    any::<bool>(),
                )
            })
            .collect();
        nodes.prop_map(|nodes| {
            nodes
                .into_iter()
                .enumerate()
                .map(|(i, (refs, size, self_ref))| {
                    let name = |j: usize| {
                        format!("/nix/store/{:032}-pkg{}-1.{}", j * 7919 % 1000, j, j % 3)
                    };
                    let mut references: Vec<String> =
                        refs.into_iter().filter(|&r| r < i).map(name).collect();
                    if self_ref {
                        references.push(name(i));
                    }
                    RawNode {
                        path: name(i),
                        references,
                        nar_size: Some(size),
                        nar_hash: None,
                    }
                })
                .collect()
        })
    })
}

const STRATEGIES: [Layering; 4] = [
    Layering::Default,
    Layering::Popularity,
    Layering::Auto,
    Layering::Size,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_path_in_exactly_one_layer_within_budget(raw in dag(), budget in 1usize..40) {
        let graph = Graph::from_raw(raw, "prop").unwrap();
        for strategy in &STRATEGIES {
            let layers = plan(&graph, strategy, Some(budget), &HashSet::new()).unwrap();
            prop_assert!(layers.len() <= budget, "{}: {} layers", strategy.name(), layers.len());
            prop_assert!(layers.len() == budget.min(graph.len()) || matches!(strategy, Layering::Auto),
                "{} uses {} of {} layers for {} paths", strategy.name(), layers.len(), budget, graph.len());
            let mut seen = HashSet::new();
            for layer in &layers {
                prop_assert!(!layer.paths.is_empty(), "{}: empty layer", strategy.name());
                for path in &layer.paths {
                    prop_assert!(seen.insert(path.clone()), "{}: {} twice", strategy.name(), path);
                }
            }
            prop_assert_eq!(seen.len(), graph.len(), "{}", strategy.name());
        }
    }

    #[test]
    fn excluded_paths_are_left_out(raw in dag(), budget in 1usize..20, pick in any::<u64>()) {
        let graph = Graph::from_raw(raw, "prop").unwrap();
        let exclude: HashSet<String> = graph
            .nodes()
            .iter()
            .enumerate()
            .filter(|(i, _)| (pick >> (i % 64)) & 1 == 1)
            .map(|(_, n)| n.path.clone())
            .collect();
        for strategy in &STRATEGIES {
            let layers = plan(&graph, strategy, Some(budget), &exclude).unwrap();
            prop_assert!(layers.len() <= budget);
            let placed: Vec<&String> = layers.iter().flat_map(|l| &l.paths).collect();
            let unique: HashSet<&String> = placed.iter().copied().collect();
            prop_assert_eq!(placed.len(), unique.len());
            prop_assert_eq!(unique.len(), graph.len() - exclude.len());
            prop_assert!(placed.iter().all(|p| !exclude.contains(*p)));
        }
    }

    #[test]
    fn default_does_not_depend_on_input_order(raw in dag(), budget in 1usize..30, seed in any::<u64>()) {
        let a = Graph::from_raw(raw.clone(), "a").unwrap();
        let mut shuffled = raw;
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let b = Graph::from_raw(shuffled, "b").unwrap();
        let sets = |g: &Graph| -> BTreeSet<Vec<String>> {
            plan(g, &Layering::Default, Some(budget), &HashSet::new())
                .unwrap()
                .into_iter()
                .map(|l| l.paths)
                .collect()
        };
        prop_assert_eq!(sets(&a), sets(&b));
    }
}
