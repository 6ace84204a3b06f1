# The customisation layer: the trees of `contents` merged into one root (as
# symlinkJoin's lndir does: directories are made, files are linked, links
# are copied, the first path that provides a name wins), changed by
# extraCommands, then
# packed by pack-layer.sh (under fakeroot, and in proot with
# enableFakechroot) into $out/layer.tar, with its sha256 in $out/checksum.
# Environment: shell, contents, extraCommands, fakeRootCommands,
# enableFakechroot, packLayer, storeDir, SOURCE_DATE_EPOCH.
set -u

root=$PWD/root
mkdir "$root"

# merge SRC: links the tree of SRC into $root.
merge() {
    src=$1
    if [ ! -d "$src" ]; then
        echo "customisation layer: $src (in contents) is not a directory" >&2
        exit 1
    fi
    (cd "$src" && find . ! -name . -print) >entries
    while IFS= read -r rel; do
        rel=${rel#./}
        case $rel in
        */*) parent=$root/${rel%/*} ;;
        *) parent=$root ;;
        esac
        # An earlier path put a file or a link where this tree has a
        # directory: that name is taken, and so is everything below it.
        if [ -L "$parent" ] || [ ! -d "$parent" ]; then
            continue
        fi
        dst=$root/$rel
        if [ -d "$src/$rel" ] && [ ! -L "$src/$rel" ]; then
            if [ ! -e "$dst" ] && [ ! -L "$dst" ]; then
                mkdir "$dst"
            fi
        elif [ -e "$dst" ] || [ -L "$dst" ]; then
            : # an earlier path provides it
        elif [ -L "$src/$rel" ]; then
            # As lndir (symlinkJoin) does: a link is copied, its target as
            # it is, so a relative link stays relative to the image root.
            ln -s "$(readlink "$src/$rel")" "$dst"
        else
            ln -s "$src/$rel" "$dst"
        fi
    done <entries
    rm entries
}

for p in $contents; do
    merge "$p"
done

# User code runs as in a stdenv builder: without `set -u`, from the root.
if [ -n "$extraCommands" ]; then
    (
        set +u
        cd "$root"
        eval "$extraCommands"
    )
fi

mkdir "$out"

# Who owns the files in the layer: fakeroot's root when it is on PATH (as in
# nixpkgs), else the builder, which must then be root, unless GNU tar can
# rewrite the owners (and there are no fakeRootCommands to honour).
gnu_tar=
case $(tar --version 2>/dev/null) in
*"GNU tar"*) gnu_tar=1 ;;
esac
tar_owner=
set --
if command -v fakeroot >/dev/null 2>&1; then
    set -- fakeroot --
elif [ "$(id -u)" != 0 ]; then
    if [ -n "$fakeRootCommands" ]; then
        echo "customisation layer: fakeRootCommands need fakeroot on PATH (or a build as root)" >&2
        exit 1
    fi
    if [ -z "$gnu_tar" ]; then
        echo "customisation layer: this tar cannot set file owners; put fakeroot or GNU tar on PATH" >&2
        exit 1
    fi
    tar_owner=1
fi
export gnu_tar tar_owner

if [ -n "$enableFakechroot" ]; then
    if ! command -v proot >/dev/null 2>&1; then
        echo "customisation layer: enableFakechroot needs proot on PATH" >&2
        exit 1
    fi
    chrooted=1
    export chrooted
    proot -r "$root" -b /dev -b /proc -b /sys -b "$storeDir" -b "$out" -w / \
        "$@" "$shell" -e "$packLayer"
else
    chrooted=
    export chrooted
    (cd "$root" && "$@" "$shell" -e "$packLayer")
fi

set -- $(sha256sum "$out/layer.tar")
printf '%s\n' "$1" >"$out/checksum"
