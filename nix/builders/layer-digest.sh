# One store layer's record for store_layer_digests: `stream-layered-image
# digest` on a spec of that layer alone. The derivation depends only on the
# layer's store paths (and this tool), so Nix keeps the record for as long
# as they stay the same.
# Environment: sli, specJSON, compressArgs.
set -u
printf '%s\n' "$specJSON" >spec.json
# shellcheck disable=SC2086 # compressArgs is a list
"$sli" digest spec.json --layer 0 $compressArgs >"$out"
cat "$out"
