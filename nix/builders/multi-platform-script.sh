# The script of a multi-platform image: every platform's spec in one run of
# stream-layered-image, which writes the image index. Extra arguments (a
# --push target, or --format oci-archive -o FILE) go to it.
# Environment: shell, sli, confs (the specs, space-separated store paths).
printf '#!%s\nexec %s %s "$@"\n' "$shell" "$sli" "$confs" >"$out"
chmod 555 "$out"
