# buildLayeredImage: the streamed image, written into the store.
# Environment: stream (the streaming script), compressor (none, gz, zstd).
set -u

cores=${NIX_BUILD_CORES:-0}
if [ "$cores" -lt 1 ]; then
    cores=$(nproc 2>/dev/null || echo 1)
fi

case $compressor in
none)
    exec "$stream" -o "$out"
    ;;
gz)
    if command -v pigz >/dev/null 2>&1; then
        set -- pigz -nTR -p "$cores"
    else
        set -- gzip -n
    fi
    ;;
zstd)
    set -- zstd -q -T"$cores"
    ;;
*)
    echo "build-image: unknown compressor $compressor" >&2
    exit 1
    ;;
esac

# A failing stream must fail the build even though it is not the pipeline's
# last command (POSIX sh has no pipefail).
failed=$PWD/stream-failed
{ "$stream" || : >"$failed"; } | "$@" -c >"$out"
if [ -e "$failed" ]; then
    echo "build-image: streaming the image failed" >&2
    exit 1
fi
