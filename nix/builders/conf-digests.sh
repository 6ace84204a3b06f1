# conf.json with store_layer_digests: the layering's conf.json (one line,
# a JSON object) with the records of its store layers, one file each, added
# as its last key.
# Environment: conf, digests (the record files, in store_layers' order).
set -u
records=
for d in $digests; do
    records="$records${records:+, }$(cat "$d")"
done
text=$(cat "$conf")
printf '%s, "store_layer_digests": [%s]}\n' "${text%\}}" "$records" >"$out"
cat "$out"
