# conf.json, the spec stream-layered-image reads: the store layers (from
# `stream-layered-image layers` on the closure graph), repo_tag, created,
# mtime and the fields the Nix expression computed (confFields).
# Environment: sli, fromImage, maxLayers, created, createdJSON, mtime,
# mtimeJSON, repoTagJSON, repoNameJSON, confFields, includeStorePaths,
# excludePaths, layersArgs, pipelineJSON (optional), debug; graph (the
# closure's references graph, JSON with narSize) when includeStorePaths is
# set.
set -u

# Layers the base image takes: the length of .[0].Layers in its manifest.
base_layers() {
    manifest=$(tar -xOf "$1" manifest.json 2>/dev/null) || manifest=
    if [ -z "$manifest" ]; then
        manifest=$(gzip -dc <"$1" | tar -xOf - manifest.json) || {
            echo "conf: cannot read manifest.json from fromImage $1" >&2
            exit 1
        }
    fi
    m=$(printf '%s' "$manifest" | tr -d ' \t\r\n')
    case $m in
    *'"Layers":['*) ;;
    *)
        echo "conf: fromImage $1: manifest.json has no \"Layers\" list" >&2
        exit 1
        ;;
    esac
    m=${m#*\"Layers\":[}
    m=${m%%]*}
    n=0
    if [ -n "$m" ]; then
        n=1
        while :; do
            case $m in
            *,*) m=${m#*,} n=$((n + 1)) ;;
            *) break ;;
            esac
        done
    fi
    echo "$n"
}

used=1 # the customisation layer
if [ -n "$fromImage" ]; then
    used=$((used + $(base_layers "$fromImage")))
fi
if [ "$used" -ge "$maxLayers" ]; then
    echo "conf: fromImage and the customisation layer take $used layers, but maxLayers is" \
        "$maxLayers: at least 1 layer must be left for the store paths" >&2
    exit 1
fi
budget=$((maxLayers - used))

if [ -n "$includeStorePaths" ]; then
    printf '%s\n' $excludePaths >exclude
    if [ -n "${pipelineJSON:-}" ]; then
        printf '%s\n' "$pipelineJSON" >pipeline.json
        set -- --pipeline pipeline.json
    else
        set --
    fi
    if [ -n "$debug" ]; then
        set -- "$@" --explain
    fi
    echo "conf: layering the closure into at most $budget layers"
    # shellcheck disable=SC2086 # layersArgs is a list
    "$sli" layers --graph "$graph" --max-layers "$budget" --exclude exclude $layersArgs "$@" >layers.json
else
    echo '[]' >layers.json
fi

# "created" and "mtime" as nixpkgs writes them: date's ISO 8601 form when
# date understands the value, else the value itself (stream-layered-image
# reads ISO 8601 as Python's fromisoformat does).
time_json() {
    if [ "$1" != now ] && d=$(date -u -Iseconds -d "$1" 2>/dev/null) && [ -n "$d" ]; then
        printf '"%s"' "$d"
    else
        printf '%s' "$2"
    fi
}

if [ -n "$repoTagJSON" ]; then
    repo_tag=$repoTagJSON
else
    hash=${out##*/}
    hash=${hash%%-*}
    repo_tag="$repoNameJSON$hash\""
fi

{
    printf '{"store_layers": %s' "$(cat layers.json)"
    printf ', "repo_tag": %s' "$repo_tag"
    printf ', "created": %s' "$(time_json "$created" "$createdJSON")"
    printf ', "mtime": %s' "$(time_json "$mtime" "$mtimeJSON")"
    printf ', %s}\n' "$confFields"
} >"$out"
cat "$out"
