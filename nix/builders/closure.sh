# The closure root: a file whose references are every store path the image
# needs (the customisation layer and the paths named in the config).
# Environment: text.
printf '%s\n' "$text" >"$out"
