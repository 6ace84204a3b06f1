//! `stream-layered-image custom-layer`: writes the customisation layer of a
//! spec (`layer.tar` and `checksum`) from a directory tree, deterministically
//! (see [`stream_layered_image::image::custom_layer`]).
//!
//! ```text
//! stream-layered-image custom-layer --root DIR --out DIR [--mtime SECONDS]
//! ```

use stream_layered_image::image::custom_layer;

use super::args::CustomLayerArgs;

/// Runs the `custom-layer` subcommand: writes the layer, prints its sha256.
pub fn run(args: CustomLayerArgs) -> anyhow::Result<()> {
    let digest = custom_layer::write(&args.root, &args.out, args.mtime)?;
    println!("{digest}");
    Ok(())
}
