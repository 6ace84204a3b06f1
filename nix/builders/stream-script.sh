# The streaming script: `./result | docker load`. Extra arguments go to
# stream-layered-image (-t REPO:TAG, -o FILE, --quiet).
# Environment: shell, sli, conf.
printf '#!%s\nexec %s %s "$@"\n' "$shell" "$sli" "$conf" >"$out"
chmod 555 "$out"
