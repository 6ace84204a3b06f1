//! `digest`: a spec's store layers hashed ahead of the build, as the
//! records of its `store_layer_digests` key.

use std::io::Write;

use stream_layered_image::compress::Compression;
use stream_layered_image::record;
use stream_layered_image::spec::Spec;

use super::args::DigestArgs;

/// Runs the digest command: one record (`--layer N`) or the list of all.
pub fn run(args: DigestArgs) -> anyhow::Result<()> {
    let compressions = args
        .compress
        .iter()
        .map(|c| Compression::parse(c))
        .collect::<stream_layered_image::Result<Vec<_>>>()?;
    let spec = Spec::load(&args.spec)?;
    let value = match args.layer {
        Some(index) => record::compute(&spec, index, &compressions)?.to_json(),
        None => serde_json::Value::Array(
            record::compute_all(&spec, &compressions)?
                .iter()
                .map(record::LayerRecord::to_json)
                .collect(),
        ),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()?;
    Ok(())
}
