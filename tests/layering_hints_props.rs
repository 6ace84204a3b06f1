//! Property tests of the layering hints parser: what it writes it reads
//! back, and no input makes it panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use stream_layered_image::layering::hints::{Hints, Package};

fn hints() -> impl Strategy<Value = Hints> {
    (
        prop::collection::btree_set("[a-z][a-z0-9+.-]{0,8}", 0..6),
        0u64..1000,
    )
        .prop_flat_map(|(images, graphs)| {
            let images: Vec<String> = images.into_iter().collect();
            let count = images.len();
            let package = (
                0u64..50,
                0u64..50,
                prop::collection::btree_set(0..count.max(1), 0..=count),
                any::<[u32; 3]>(),
            )
                .prop_map(move |(changes, extra, imgs, last)| Package {
                    changes,
                    seen: changes + extra,
                    images: if count == 0 {
                        Vec::new()
                    } else {
                        imgs.into_iter().collect()
                    },
                    last,
                });
            (
                Just(images),
                Just(graphs),
                prop::collection::btree_map("[a-zA-Z0-9_\"\\\\ é-]{1,12}", package, 0..20),
            )
        })
        .prop_map(
            |(images, graphs, packages): (Vec<String>, u64, BTreeMap<String, Package>)| Hints {
                graphs,
                images,
                packages,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn written_hints_read_back(h in hints()) {
        let text = h.to_json();
        let back = Hints::parse(text.as_bytes(), "h.json").unwrap();
        prop_assert_eq!(&back, &h);
        prop_assert_eq!(back.to_json(), text);
    }

    #[test]
    fn any_bytes_are_an_answer_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = Hints::parse(&bytes, "h.json") {
            let message = e.to_string();
            prop_assert!(message.starts_with("h.json: "), "{}", message);
            prop_assert!(!message.contains('\n'), "{}", message);
        }
    }

    #[test]
    fn damaged_files_are_an_answer_not_a_panic(h in hints(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = h.to_json().into_bytes();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        if let Err(e) = Hints::parse(&bytes, "h.json") {
            prop_assert!(!e.to_string().contains('\n'), "{}", e);
        }
    }
}
