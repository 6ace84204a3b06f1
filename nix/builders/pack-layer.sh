# Runs fakeRootCommands in the image root (the working directory), then
# packs it into $out/layer.tar: names sorted, every mtime
# SOURCE_DATE_EPOCH, hard links stored as files, numeric owners.
# Environment: fakeRootCommands, out, storeDir, SOURCE_DATE_EPOCH, gnu_tar,
# tar_owner, chrooted (set under proot, where /dev, /proc, /sys and the
# store are bound into the root and stay out of the layer).
set -u

if [ -n "$fakeRootCommands" ]; then
    # As in a stdenv builder: no `set -u` for user code.
    set +u
    eval "$fakeRootCommands"
    set -u
fi

if [ -n "$gnu_tar" ]; then
    set -- --sort=name --numeric-owner --mtime "@$SOURCE_DATE_EPOCH" --hard-dereference
    if [ -n "$tar_owner" ]; then
        set -- "$@" --owner=0 --group=0
    fi
    if [ -n "$chrooted" ]; then
        set -- "$@" --exclude=./dev --exclude=./proc --exclude=./sys --exclude=".$storeDir"
    fi
    exec tar "$@" -cf "$out/layer.tar" .
fi

# Another tar (busybox): list every name, sorted, and set the times first.
list() {
    if [ -n "$chrooted" ]; then
        find . \( -path ./dev -o -path ./proc -o -path ./sys -o -path ".$storeDir" \) -prune -o -print
    else
        find . -print
    fi | LC_ALL=C sort
}
list | while IFS= read -r f; do
    touch -h -d "@$SOURCE_DATE_EPOCH" "$f"
done
IFS='
'
set -f
# shellcheck disable=SC2046 # one name a line
exec tar -c --no-recursion -f "$out/layer.tar" $(list)
