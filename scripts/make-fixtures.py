#!/usr/bin/env python3
"""Builds the fixture store and specs used by the golden tests.

    scripts/make-fixtures.py ROOT [--with-busybox PATH]

Creates, deterministically:

  ROOT/nix/store/<hash>-NAME        store paths of the Nix cases
  ROOT/gnu/store/<hash>-NAME        store paths of the Guix case
  ROOT/specs/CASE.json              the spec each case passes to the tool
  ROOT/reference-specs/CASE.json    for cases whose spec the reference script
                                    cannot read as-is (old-spec): the same spec
                                    with the omitted keys filled in with the
                                    defaults the tool must apply
  ROOT/env/CASE                     extra environment (NAME=VALUE lines) for
                                    cases that need one
  ROOT/fixture-tree.sha256          digest of everything above except the
                                    busybox extras; tests/golden/digests.txt
                                    records the value its digests belong to

Specs name absolute /nix/store and /gnu/store paths, so whatever reads them
must see ROOT/nix at /nix and ROOT/gnu at /gnu (tests/common/fixtures.rs does
that in a private mount namespace).

The result depends on nothing but this script: not on ROOT, the umask, or
what ROOT held before (an existing ROOT is made writable again and replaced).
Run it as root: one customisation layer belongs to uid/gid 4242.

--with-busybox PATH adds a store path holding a copy of the static busybox at
PATH (bin/busybox, bin/sh -> busybox) and a spec "runnable" whose image runs
it; that case has no golden digest, since its content depends on PATH.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import sys
import tarfile

NIX32 = "0123456789abcdfghijklmnpqrsvwxyz"

DIR_MODE = 0o555
FILE_MODE = 0o444
EXEC_MODE = 0o555


def fake_hash(store_dir, name):
    """A 32-character hash in Nix's base-32 alphabet, derived from the name."""
    n = int.from_bytes(hashlib.sha256(f"{store_dir}\0{name}".encode()).digest()[:20], "big")
    return "".join(NIX32[(n >> (5 * i)) & 31] for i in range(32))


def data(label, size):
    """Deterministic pseudo-random bytes."""
    return hashlib.shake_256(label.encode()).digest(size)


def fsb(p):
    """str (possibly holding surrogate escapes for raw bytes) or bytes -> bytes."""
    return p if isinstance(p, bytes) else os.fsencode(p)


class Fs:
    """Creates files, remembering the final mode of each, applied by finish()."""

    def __init__(self):
        self.modes = {}

    def mkdir(self, path, mode=DIR_MODE):
        path = fsb(path)
        parent = os.path.dirname(path)
        if parent and not os.path.isdir(parent):
            self.mkdir(parent)
        if not os.path.isdir(path):
            os.mkdir(path, 0o755)
        if mode != DIR_MODE or path not in self.modes:
            self.modes[path] = mode
        return path

    def file(self, path, content=b"", mode=FILE_MODE):
        path = fsb(path)
        self.mkdir(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(content)
        os.chmod(path, 0o644)
        self.modes[path] = mode
        return path

    def symlink(self, target, path):
        path = fsb(path)
        self.mkdir(os.path.dirname(path))
        os.symlink(fsb(target), path)
        return path

    def hardlink(self, existing, path):
        path = fsb(path)
        self.mkdir(os.path.dirname(path))
        os.link(fsb(existing), path)
        return path

    def finish(self):
        # Deepest first, so directories lose their write bit after their
        # contents are final.
        for path in sorted(self.modes, key=lambda p: (-p.count(b"/"), p)):
            os.chmod(path, self.modes[path])


class Store:
    def __init__(self, fs, root, prefix):
        self.fs = fs
        self.dir = f"/{prefix}/store"
        self.host = os.path.join(root, prefix.encode(), b"store")

    def base(self, name):
        return f"{fake_hash(self.dir, name)}-{name}"

    def path(self, name):
        """The store path (a str) of NAME."""
        return f"{self.dir}/{self.base(name)}"

    def host_path(self, name, *rest):
        return os.path.join(self.host, fsb(self.base(name)), *map(fsb, rest))

    def dir_path(self, name):
        """Creates the directory store path NAME; returns a builder for it."""
        return Tree(self.fs, self.fs.mkdir(self.host_path(name)))


class Tree:
    def __init__(self, fs, base):
        self.fs = fs
        self.base = base

    def p(self, rel):
        return os.path.join(self.base, fsb(rel))

    def dir(self, rel, mode=DIR_MODE):
        return self.fs.mkdir(self.p(rel), mode)

    def file(self, rel, content=b"", mode=FILE_MODE):
        return self.fs.file(self.p(rel), content, mode)

    def symlink(self, target, rel):
        return self.fs.symlink(target, self.p(rel))

    def hardlink(self, existing, rel):
        return self.fs.hardlink(existing, self.p(rel))


# ---------------------------------------------------------------------------
# tar helpers (base images, customisation layers)


def tar_bytes(members, fmt, pax_headers=None):
    """members: list of (TarInfo, content bytes or None)."""
    buf = io.BytesIO()
    kw = {"pax_headers": pax_headers} if pax_headers else {}
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8", **kw) as tar:
        for ti, content in members:
            tar.addfile(ti, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def ti(name, kind="file", size=0, mode=None, mtime=1, uid=0, gid=0, uname="", gname="", linkname="", pax=None):
    t = tarfile.TarInfo(name)
    t.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE}[kind]
    t.size = size
    t.mode = mode if mode is not None else (0o755 if kind != "file" else 0o644)
    t.mtime = mtime
    t.uid, t.gid, t.uname, t.gname = uid, gid, uname, gname
    t.linkname = linkname
    if pax:
        t.pax_headers = dict(pax)
    return t


def fentry(name, content, **kw):
    return (ti(name, "file", size=len(content), **kw), content)


def patch_mode(archive, member, mode_field):
    """Rewrites the raw mode field of MEMBER's ustar header (tarfile would mask
    it with 0o7777; Docker writes file-type bits there) and fixes the checksum."""
    b = bytearray(archive)
    off = 0
    while off + 512 <= len(b):
        hdr = b[off:off + 512]
        if hdr == bytes(512):
            break
        name = hdr[0:100].rstrip(b"\0").decode()
        size = int(hdr[124:136].rstrip(b"\0 ") or b"0", 8)
        if name == member and hdr[156:157] == b"0":
            hdr[100:108] = mode_field
            hdr[148:156] = b"        "
            hdr[148:156] = b"%06o\0 " % sum(hdr)
            b[off:off + 512] = hdr
            return bytes(b)
        off += 512 + (size + 511) // 512 * 512
    raise SystemExit(f"patch_mode: no member {member}")


def customisation_layer(store, name, contents, owner=None, mode=FILE_MODE):
    """A store path like nixpkgs' customisation layer: layer.tar (GNU tar,
    './'-relative names) and checksum (sha256 hex + newline)."""
    members = [(ti("./", "dir", mode=0o755), None)]
    for rel, kind, value in contents:
        if kind == "dir":
            members.append((ti("./" + rel, "dir", mode=0o755), None))
        elif kind == "sym":
            members.append((ti("./" + rel, "sym", mode=0o777, linkname=value), None))
        else:
            members.append(fentry("./" + rel, value, mode=0o444))
    layer = tar_bytes(members, tarfile.GNU_FORMAT)
    t = store.dir_path(name)
    lt = t.file("layer.tar", layer, mode=mode)
    t.file("checksum", (hashlib.sha256(layer).hexdigest() + "\n").encode())
    if owner is not None and os.geteuid() == 0:
        os.chown(lt, owner, owner)
    return store.path(name)


def base_layer(files):
    members = []
    seen = set()
    for rel, content in files:
        d = os.path.dirname(rel)
        if d and d not in seen:
            seen.add(d)
            members.append((ti(d + "/", "dir", mode=0o755, mtime=0), None))
        members.append(fentry(rel, content, mtime=0, mode=0o644))
    return tar_bytes(members, tarfile.USTAR_FORMAT)


def make_base_images(fs, store):
    """Single-file store paths holding docker archives (like fromImage)."""
    la = base_layer([("etc/os-release", b"ID=fixture\nVERSION_ID=1\n"),
                          ("usr/lib/data.bin", data("base-a", 3000))])
    lb = base_layer([("etc/motd", "Wëlcome\n".encode())])
    lc = base_layer([("etc/issue", b"fixture\n")])
    sha = lambda b: hashlib.sha256(b).hexdigest()
    id_a = hashlib.sha256(b"legacy-id-a").hexdigest()
    id_b = hashlib.sha256(b"legacy-id-b").hexdigest()

    # --- legacy `docker save` style, GNU format (like GNU tar output), with a
    # layer whose member name needs a GNU long-name record.
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin", "LANG=C", "JUSTKEY", "DUP=base"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(la), "sha256:" + sha(lb)]},
        "history": [{"created": "1970-01-01T00:00:00Z"}, {"created": "1970-01-01T00:00:00Z"}],
    }
    config_b = json.dumps(config, separators=(",", ":")).encode()
    cfg_name = sha(config_b) + ".json"
    name_a = f"{id_a}/layer.tar"
    name_b = f"{id_b}/{'very-long-directory-name-' * 3}x/layer.tar"
    manifest = [{"Config": cfg_name, "RepoTags": ["base:latest"], "Layers": [name_a, name_b]}]
    members = [
        fentry("repositories", b'{"base":{"latest":"%s"}}' % id_b.encode(), mtime=0),
        (ti(f"{id_b}/", "dir", mtime=0), None),
        fentry(f"{id_b}/VERSION", b"1.0", mtime=0),
        fentry(name_b, lb, mode=0o444, uid=1000, gid=100, uname="builder", gname="nixbld", mtime=1700000000),
        (ti(f"{id_a}/", "dir", mtime=0), None),
        fentry(f"{id_a}/VERSION", b"1.0", mtime=0),
        fentry(name_a, la, mode=0o644, mtime=0),
        fentry(cfg_name, config_b, mtime=0),
        fentry("manifest.json", json.dumps(manifest).encode(), mtime=0),
    ]
    gnu = tar_bytes(members, tarfile.GNU_FORMAT)
    fs.file(store.host_path("docker-image-base.tar"), gnu)
    fs.file(store.host_path("docker-image-base.tar.gz"), gzip.compress(gnu, compresslevel=9, mtime=0))

    # --- newer `docker save` style (OCI blobs), PAX format: a global header
    # (its records belong to every later member), per-member PAX records
    # (float mtime, xattr, non-ASCII uname, long path), a layer with no records
    # of its own, and a Docker-style mode field with file-type bits.
    config2 = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(x) for x in (la, lb, lc)]},
    }
    config2_b = json.dumps(config2, indent=2).encode()
    cfg2_name = f"blobs/sha256/{sha(config2_b)}"
    name2_a = f"blobs/sha256/{sha(la)}"
    name2_b = "layers/" + "deep/" * 20 + sha(lb) + ".tar"
    name2_c = f"blobs/sha256/{sha(lc)}"
    manifest2 = [{"Config": cfg2_name, "RepoTags": None, "Layers": [name2_a, name2_b, name2_c]}]
    members = [
        (ti("blobs/", "dir", mtime=0), None),
        (ti("blobs/sha256/", "dir", mtime=0), None),
        fentry(name2_c, lc, mtime=1600000002, mode=0o600),
        fentry(name2_a, la, mtime=1600000000, uname="ünï", gname="wheel",
               pax={"mtime": "1600000000.5", "SCHILY.xattr.user.note": "kept"}),
        fentry(name2_b, lb, mtime=1600000001, uid=5, gid=6),
        fentry(cfg2_name, config2_b, mtime=0),
        fentry("index.json", b'{"schemaVersion":2,"manifests":[]}', mtime=0),
        fentry("manifest.json", json.dumps(manifest2).encode(), mtime=0),
        fentry("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', mtime=0),
    ]
    pax = tar_bytes(members, tarfile.PAX_FORMAT, pax_headers={"comment": "fixture base image"})
    pax = patch_mode(pax, name2_a, b"0100644\0")
    fs.file(store.host_path("docker-image-base-pax.tar"), pax)
    return {
        "gnu": store.path("docker-image-base.tar"),
        "gz": store.path("docker-image-base.tar.gz"),
        "pax": store.path("docker-image-base-pax.tar"),
    }


# ---------------------------------------------------------------------------
# store contents


def make_hello(store, name="hello-2.12.1"):
    t = store.dir_path(name)
    t.file("bin/hello", b"#!/bin/sh\necho hello\n", EXEC_MODE)
    t.file("share/doc/hello/README", b"GNU hello, or something like it.\n")
    t.dir("share/empty-dir")
    t.file("share/empty-file", b"")
    t.file(".dotfile", b"dot\n")
    t.file(".hidden-dir/.inner", b"inner\n")
    t.file("lib/libhello.so.1.2.3", data("libhello", 5000), EXEC_MODE)
    t.symlink("libhello.so.1.2.3", "lib/libhello.so.1")
    t.symlink("libhello.so.1", "lib/libhello.so")
    return store.path(name)


def make_sizes(store):
    t = store.dir_path("sizes")
    for n in (0, 1, 100, 511, 512, 513, 1023, 1024, 1025, 10239, 10240, 10241, 65536, 65537):
        t.file(f"size-{n:06}", data(f"size-{n}", n))
    mib = 1 << 20
    t.file("big-20MiB-plus-123", data("big", 20 * mib + 123))
    t.file("big-8MiB-plus-3", data("big8", 8 * mib + 3))
    t.file("big-8MiB-exact", data("big8e", 8 * mib))
    t.file("big-8MiB-minus-1", data("big8m", 8 * mib - 1), EXEC_MODE)
    return store.path("sizes")


def make_pax_after_big(t, label):
    """Entries needing PAX headers (long path, non-ASCII name, long link
    target), each right after a file above the tool's 256 KiB read limit
    (read through its mapped path) whose size is not a multiple of 512: the
    PAX records must be padded to a block boundary of the stream, not of
    whatever buffer they are gathered in after the file's data and padding.
    Names are chosen so that pathlib's order keeps each pair adjacent."""
    kib = 1 << 10
    d = "pax-after-big/"
    long_name = "b-" + "long-name-after-a-mapped-file-" * 3
    t.file(d + "a-big-256KiB-plus-123", data(f"{label}-a", 256 * kib + 123))
    t.file(d + long_name, b"long path after a mapped file\n")
    t.file(d + "c-big-1MiB-plus-7", data(f"{label}-c", 1024 * kib + 7))
    t.file(d + "d-ünïcödé-dïrëctörÿ-wïth-a-löng-nön-ÄSCÏÏ-nämé-日本語-目录/inner-file",
           b"inside a non-ASCII directory after a mapped file\n")
    t.file(d + "e-big-512KiB-plus-301", data(f"{label}-e", 512 * kib + 301), EXEC_MODE)
    t.symlink("../pax-after-big/" + long_name, d + "f-symlink-with-a-long-target")


def make_names(store):
    t = store.dir_path("names")
    for n in ["héllo wörld.txt", "日本語", "🦀", "caf\udce9", "\udcff", "mixed-é-\udcff",
              "with space", "new\nline", "tab\tname", "back\\slash", "quote'\"", "-leading-dash",
              "trailing-space ", "#hash", "%percent", "*star?", "colon:name", "=eq", "\x01ctrl",
              "del\x7f", "UPPER", "upper", ".a", "..b"]:
        t.file(n, f"content of {n!r}\n".encode("utf-8", "surrogateescape"))
    t.file("dir-\udcff/inner-ü", b"x\n")
    t.file("dir-\udcff/\udce9\udcff", b"y\n")
    t.dir("ünïcödé-dir/empty")
    t.dir("dir with\nnewline")
    make_pax_after_big(t, "names")
    return store.path("names")


def make_long_names(store, name="long-names"):
    t = store.dir_path(name)
    # Archive names are "/<prefix>/store/<hash>-long-names/<rel>".
    prefix = len(store.path(name)) + 1
    fill = lambda n, c: c * (n - prefix)
    for total in (99, 100, 101):
        t.file(fill(total, "f"), f"{total}\n".encode())
    for total in (98, 99, 100):  # +1 for the "/" tarfile appends to directories
        t.dir(fill(total, "d"))
    t.file("L" * 255, b"255\n")
    t.file("ü" * 100, b"200 bytes\n")
    t.file("é" * (100 - prefix), b"100 characters, more bytes\n")
    deep = "deep/" + "/".join(f"level{i:02}" for i in range(40))
    t.file(deep + "/leaf", b"leaf\n")
    t.dir(deep + "/empty")
    t.file("p" * 60 + "/" + "q" * 60, b"splittable as ustar prefix/name\n")
    make_pax_after_big(t, f"{store.dir}/{name}")
    return store.path(name)


def make_symlinks(store, hello):
    t = store.dir_path("symlinks")
    prefix = len(store.path("symlinks")) + 1
    t.file("target-file", b"target\n")
    t.symlink("target-file", "rel")
    t.symlink(hello + "/bin/hello", "abs")
    t.file("realdir/inside", b"inside\n")
    t.symlink("realdir", "dirlink")
    t.symlink("/etc", "etc")
    t.symlink("does/not/exist", "dangling")
    t.symlink("x/" * 60 + "end", "long-target")
    t.symlink("t" * 100, "target-100")
    t.symlink("t" * 101, "target-101")
    t.symlink("ünïcödé/目标", "unicode-target")
    t.symlink(b"bad-\xff-target", "nonutf8-target")
    t.symlink(".", "dot")
    t.symlink("loop", "loop")
    t.symlink("target-file", "s" * (100 - prefix))
    return store.path("symlinks")


def make_hardlinks(store):
    a = store.dir_path("hardlinks-a")
    x = a.file("x", b"shared by four names\n")
    a.hardlink(x, "y")
    a.hardlink(x, "sub/z")
    e = a.file("exec", b"#!/bin/sh\n", EXEC_MODE)
    a.hardlink(e, "exec2")
    b = store.dir_path("hardlinks-b")
    b.hardlink(x, "w")
    b.file("own", b"own\n")
    return store.path("hardlinks-a"), store.path("hardlinks-b")


def make_modes(store):
    t = store.dir_path("modes")
    t.file("setuid", b"u\n", 0o4555)
    t.file("setgid", b"g\n", 0o2555)
    t.file("setuid-setgid", b"ug\n", 0o6555)
    t.dir("sticky-dir", 0o1555)
    t.file("sticky-dir/inside", b"s\n")
    t.dir("setgid-dir", 0o2555)
    t.file("exec", b"#!/bin/sh\n", EXEC_MODE)
    t.file("readonly", b"r\n")
    t.file("ordinary-644", b"o\n", 0o644)
    t.dir("ordinary-755", 0o755)
    return store.path("modes")


# Names where pathlib's order (per component, by code point, with undecodable
# bytes as U+DC80..U+DCFF) differs from a byte-wise sort of the whole path.
SORT_FILES = [
    "a b", "a-b", "a.b", "a0", "a_b", "ab", "A", "B", "b", "Z", "_", "~", "0", "9", "x-y",
    "p q", "\udced", "\ud7ff", "é", "\u00ff", "\uffff", "\udcc3", "\udc80", "f-\ue000",
    "f-\U00010000", "f-\udcff", "f-\udced", "f-\ud7ff",
]
SORT_NESTED = [
    "a/b/c", "a/b-c", "a/b.c", "a/b c", "a/b0", "x/y", "x.y/z", "p/q", "\ue000/\udcff", "\ue000/é",
    "\udcff/\ue000", "\U00010000/a", "M/m", "m/M",
]


def make_sort_traps(store, name="sort-traps"):
    t = store.dir_path(name)
    for n in SORT_FILES + SORT_NESTED:
        t.file(n, n.encode("utf-8", "surrogateescape") + b"\n")
    return store.path(name)


def make_single_files(store, hello):
    store.fs.file(store.host_path("builder.sh"), b"#!/bin/sh\nexec true\n", EXEC_MODE)
    store.fs.file(store.host_path("data.json"), b'{"k": "v"}\n')
    store.fs.symlink(hello, store.host_path("hello-link"))
    store.fs.symlink(store.path("builder.sh"), store.host_path("builder-link"))
    return store.path("builder.sh"), store.path("data.json"), store.path("hello-link"), store.path("builder-link")


REPR_NAMES = [
    "it's", 'say"hi"', "both'\"", "back\\slash", "ünï", "nbsp\xa0x", "zwsp\u200bx", "ideo\u3000x",
    "private\ue000x", "unassigned\u0378x", "crab🦀", "shaking-face\U0001fae8", "linear-b\U00010000",
    "tab\tx", "nl\nx", "cr\rx", "del\x7fx", "esc\x1bx", "c1\x85x", "surrogate-free-日本",
]


def make_repr_paths(store):
    out = []
    for i, n in enumerate(REPR_NAMES):
        store.fs.file(store.host_path(n), f"{i}\n".encode())
        out.append(store.path(n))
    return out


def make_many(store, count):
    out = []
    for i in range(count):
        t = store.dir_path(f"pkg-{i:02}")
        t.file(f"share/pkg-{i:02}/data", data(f"pkg{i}", (i * 997) % 7000))
        t.file("bin/run", b"#!/bin/sh\n", EXEC_MODE)
        out.append(store.path(f"pkg-{i:02}"))
    return out


# ---------------------------------------------------------------------------
# specs

SPEC_DEFAULTS = {
    "architecture": "amd64",
    "config": {},
    "created": "1970-01-01T00:00:01+00:00",
    "customisation_layer": None,
    "from_image": None,
    "gid": 0,
    "gname": "root",
    "mtime": "1970-01-01T00:00:01+00:00",
    "repo_tag": None,
    "store_dir": "/nix/store",
    "store_layers": [],
    "uid": 0,
    "uname": "root",
}


def spec_text(spec, raw_config=None):
    """Keys sorted like Nix's builtins.toJSON; RAW_CONFIG is spliced in verbatim."""
    parts = []
    for k in sorted(spec):
        v = raw_config if (k == "config" and raw_config is not None) else json.dumps(spec[k], ensure_ascii=False)
        parts.append(f"  {json.dumps(k)}: {v}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


# Standard JSON whose Python round trip (json.load, then json.dumps with
# indent=4 and ensure_ascii) rewrites numbers and strings.
NUMBERS_CONFIG = r"""{
    "Cmd": ["/bin/true"],
    "Floats": [1E+2, 1e2, 5e-324, 1e-7, 1e16, 1e22, 0.1, 1.7976931348623157e308, 2.5e-5, -0.0, 0.0,
               1.0, 1.10, 123.456e-2, 0.30000000000000004, 1.00000000000000000001, 9007199254740993.0,
               1e-320, 12345678.9, 1e15, 123456789012345680000.0, -1.5e-10],
    "Ints": [0, -0, -1, 123456789012345678901234567890, -9223372036854775809, 18446744073709551616],
    "Strings": ["\u0000", "\u001f", "\u007f", "\udbff\udfff", "é", "\u00e9", "\t\n\r\b\f",
                "/\/", "\\", "\"", "😀", "\ud83d\ude00", "\u2028\u2029", "<>&'", "\u0080\u00ff"],
    "Order": {"z": 1, "a": 2, "m": {"y": [], "b": {}}},
    "": "empty key",
    "Literals": [true, false, null],
    "Deep": [[[[[[[[[[[]]]]]]]]]]]
}"""

# What Python's json module accepts beyond the standard (Nix never writes it).
NONSTANDARD_CONFIG = r"""{
    "dup": 1,
    "Floats": [NaN, Infinity, -Infinity, 1e400, -1e400],
    "Strings": ["\ud800", "\udfff\ud800", "a\udc00b"],
    "dup": {"replaced": true, "position": "first"}
}"""


def write_specs(root, specs, reference_specs, envs):
    for sub, table in (("specs", specs), ("reference-specs", reference_specs)):
        d = os.path.join(root, sub.encode())
        os.mkdir(d, 0o755)
        for case, text in table.items():
            p = os.path.join(d, f"{case}.json".encode())
            with open(p, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(p, 0o644)
    d = os.path.join(root, b"env")
    os.mkdir(d, 0o755)
    for case, lines in envs.items():
        p = os.path.join(d, case.encode())
        with open(p, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
        os.chmod(p, 0o644)


def build(root, busybox):
    fs = Fs()
    nix = Store(fs, root, "nix")
    gnu = Store(fs, root, "gnu")
    for prefix in (b"nix", b"gnu"):
        os.mkdir(os.path.join(root, prefix), 0o755)
    fs.mkdir(nix.host, DIR_MODE)
    fs.mkdir(gnu.host, DIR_MODE)

    hello = make_hello(nix)
    sizes = make_sizes(nix)
    names = make_names(nix)
    long_names = make_long_names(nix)
    links = make_symlinks(nix, hello)
    hl_a, hl_b = make_hardlinks(nix)
    modes = make_modes(nix)
    sort = make_sort_traps(nix)
    single, single_data, hello_link, builder_link = make_single_files(nix, hello)
    repr_paths = make_repr_paths(nix)
    many = make_many(nix, 40)
    bases = make_base_images(fs, nix)

    cust_contents = [("etc", "dir", None), ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\n"),
                     ("bin", "sym", hello + "/bin")]
    cust = customisation_layer(nix, "hello-customisation-layer", cust_contents)
    cust_owner = customisation_layer(nix, "owned-customisation-layer", cust_contents, owner=4242, mode=0o640)

    # Guix store
    g_hello = make_hello(gnu, "guile-3.0.9")
    g_long = make_long_names(gnu)
    g_sort = make_sort_traps(gnu)
    fs.file(gnu.host_path("builder"), b"#!/bin/sh\n", EXEC_MODE)
    fs.symlink(g_hello, gnu.host_path("guile-link"))
    g_cust = customisation_layer(gnu, "guix-customisation-layer",
                                 [("bin", "sym", g_hello + "/bin"), ("etc/motd", "file", "ünï\n".encode())])

    def spec(**kw):
        s = dict(SPEC_DEFAULTS)
        s["customisation_layer"] = cust
        s.update(kw)
        return s

    # The cases:
    #   basic                  every kind of content, one store path per layer
    #   grouped                several paths per layer, unsorted (single-file and
    #                          symlink store paths, hard links across paths)
    #   nonroot, nonroot-pax   ownership; PAX uid/gid/uname/gname records
    #   base-image(-gz, -pax)  fromImage as GNU tar, gzip'd, and PAX tar
    #   config-json, config-numbers, config-nonstandard
    #                          Python's JSON round trip of the config (the last
    #                          with what only Python's parser accepts)
    #   created-*, naive-local-time, mtime-*
    #                          time parsing, formatting and ranges
    #   old-spec               mtime/uid/gid/uname/gname left to their defaults
    #   repr-names             Python repr() of store paths in history comments
    #   empty-layers, many-layers, repo-tag-override, gnu-store
    #   customisation-owner    the customisation layer's own stat data
    # The names and long-names (so basic, grouped, nonroot-pax and gnu-store) hold
    # pax-after-big/: PAX headers right after files read through the mapped path.
    specs, reference_specs, envs = {}, {}, {}
    specs["basic"] = spec_text(spec(
        repo_tag="basic:latest",
        config={"Cmd": [hello + "/bin/hello"], "Env": ["PATH=/bin"]},
        store_layers=[[hello], [sizes], [names], [long_names], [links], [hl_a], [modes], [sort]]))
    specs["grouped"] = spec_text(spec(
        repo_tag="grouped:1",
        store_layers=[[hello_link, hl_b, hello, single, hl_a, builder_link],
                      [sort, names, single_data, modes], [links]]))
    specs["nonroot"] = spec_text(spec(
        repo_tag="nonroot:latest", uid=1000, gid=100, uname="user", gname="users",
        config={"User": "user"}, store_layers=[[hello, links], [modes]]))
    specs["nonroot-pax"] = spec_text(spec(
        repo_tag="nonroot-pax:latest", uid=4000000000, gid=2097152, uname="ünï-user", gname="g" * 40,
        store_layers=[[hello], [long_names]]))
    specs["base-image"] = spec_text(spec(
        repo_tag="base-image:latest", from_image=bases["gnu"],
        config={"Cmd": [hello + "/bin/hello"], "WorkingDir": "/"}, store_layers=[[hello]]))
    specs["base-image-gz"] = spec_text(spec(
        repo_tag="base-image-gz:latest", from_image=bases["gz"],
        config={"Env": ["LANG=C.UTF-8"], "Cmd": ["/bin/sh"]}, store_layers=[[hello], [single]]))
    specs["base-image-pax"] = spec_text(spec(
        repo_tag="base-image-pax:latest", from_image=bases["pax"],
        config={"Env": ["A=1", "B=2", "A=3"], "Entrypoint": ["/bin/sh"]}, store_layers=[[single]]))
    specs["config-json"] = spec_text(spec(
        repo_tag="config-json:latest", from_image=bases["gnu"], store_layers=[[single]]),
        raw_config="""{
    "User": "nobody",
    "Env": ["DUP=final", "NEW=ünï ✓", "PATH=/custom", "EQ=a=b=c", "NEW=twice"],
    "Cmd": ["/bin/echo", "日本語", "🦀"],
    "Labels": {"z": "last", "a": "first", "ünï": "välüe ✓ 🦀", "org.example.quote": "\\"q\\" 'q'"},
    "ExposedPorts": {"80/tcp": {}},
    "Volumes": {},
    "Numbers": {"int": 42, "neg": -7, "big": 12345678901234567890, "float": 1.5, "exp": 1e2,
                "negzero": -0.0, "frac": 0.1, "small": 1e-7, "zero": 0},
    "Nested": {"list": [1, [2, [3, {}]], [], null, true, false], "empty": ""},
    "WorkingDir": "/"
}""")
    specs["config-numbers"] = spec_text(spec(
        repo_tag="config-numbers:latest", store_layers=[[single]]), raw_config=NUMBERS_CONFIG)
    specs["config-nonstandard"] = spec_text(spec(
        repo_tag="config-nonstandard:latest", store_layers=[[single]]), raw_config=NONSTANDARD_CONFIG)
    specs["created-offset"] = spec_text(spec(
        repo_tag="created-offset:latest", created="2021-03-04T05:06:07.123456+02:00",
        mtime="2020-02-29T23:59:59.999-05:30", store_layers=[[hello], [single]]))
    specs["created-formats"] = spec_text(spec(
        repo_tag="created-formats:latest", created="2011-W01-2T00:05:23.283",
        mtime="20200102T030405-0130", store_layers=[[single]]))
    specs["naive-local-time"] = spec_text(spec(
        repo_tag="naive-local-time:latest", created="2022-06-15 08:00:00", mtime="2022-06-15T08:00:00",
        store_layers=[[single]]))
    envs["naive-local-time"] = ["TZ=IST-5:30"]
    specs["mtime-negative"] = spec_text(spec(
        repo_tag="mtime-negative:latest", created="1969-12-31T23:59:58.5+00:00",
        mtime="1969-12-31T23:59:58.5+00:00", store_layers=[[hello]]))
    specs["mtime-far-future"] = spec_text(spec(
        repo_tag="mtime-far-future:latest", mtime="2300-01-01T00:00:00+00:00", store_layers=[[hello]]))
    specs["repo-tag-override"] = spec_text(spec(
        repo_tag="ignored:tag", store_layers=[[hello]]))
    specs["gnu-store"] = spec_text(spec(
        repo_tag="guix:latest", store_dir="/gnu/store", customisation_layer=g_cust,
        config={"Cmd": [g_hello + "/bin/hello"]},
        store_layers=[[g_hello], [g_long, gnu.path("builder")], [gnu.path("guile-link"), g_sort]]))
    old = spec(repo_tag="old-spec:latest", created="2001-02-03T04:05:06.5Z", store_layers=[[hello], [links]])
    for k in ("mtime", "uid", "gid", "uname", "gname"):
        del old[k]
    specs["old-spec"] = spec_text(old)
    old.update(mtime=old["created"], uid=0, gid=0, uname="root", gname="root")
    reference_specs["old-spec"] = spec_text(old)
    specs["repr-names"] = spec_text(spec(
        repo_tag="repr-names:latest", store_layers=[repr_paths[:4], repr_paths[4:]]))
    specs["empty-layers"] = spec_text(spec(
        repo_tag="empty-layers:latest", store_layers=[[], [single], []]))
    specs["customisation-owner"] = spec_text(spec(
        repo_tag="customisation-owner:latest", customisation_layer=cust_owner, store_layers=[[single]]))
    specs["many-layers"] = spec_text(spec(
        repo_tag="many-layers:latest", store_layers=[[p] for p in many]))

    fs.finish()
    write_specs(root, specs, reference_specs, envs)
    digest = tree_digest(root)
    with open(os.path.join(root, b"fixture-tree.sha256"), "w") as f:
        f.write(digest + "\n")

    if busybox:
        add_busybox(root, busybox)
    return digest


def add_busybox(root, busybox):
    fs = Fs()
    nix = Store(fs, root, "nix")
    os.chmod(nix.host, 0o755)
    t = nix.dir_path("busybox-static")
    with open(busybox, "rb") as f:
        t.file("bin/busybox", f.read(), EXEC_MODE)
    t.symlink("busybox", "bin/sh")
    bb = nix.path("busybox-static")
    cust = customisation_layer(nix, "runnable-customisation-layer", [("bin", "sym", bb + "/bin")])
    fs.modes[nix.host] = DIR_MODE
    fs.finish()
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    s = dict(SPEC_DEFAULTS, architecture=arch, customisation_layer=cust, repo_tag="runnable:latest",
             config={"Cmd": ["/bin/sh", "-c", "echo runnable-ok"], "Env": ["PATH=/bin"]},
             store_layers=[[bb], [nix.path("hello-2.12.1")]])
    p = os.path.join(root, b"specs", b"runnable.json")
    with open(p, "w", encoding="utf-8") as f:
        f.write(spec_text(s))
    os.chmod(p, 0o644)


def tree_digest(root):
    """sha256 over paths, types, modes, owners, contents and hard-link
    structure of nix/, gnu/, specs/, reference-specs/ and env/ (gzip files:
    their decompressed content, as zlib builds differ)."""
    entries = []
    for top in (b"nix", b"gnu", b"specs", b"reference-specs", b"env"):
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            for n in dirnames + filenames:
                entries.append(os.path.relpath(os.path.join(dirpath, n), root))
    h = hashlib.sha256()
    first = {}
    for rel in sorted(entries):
        st = os.lstat(os.path.join(root, rel))
        rec = [rel, b"%o %d %d" % (st.st_mode, st.st_uid, st.st_gid)]
        if stat.S_ISLNK(st.st_mode):
            rec.append(os.readlink(os.path.join(root, rel)))
        elif stat.S_ISREG(st.st_mode):
            with open(os.path.join(root, rel), "rb") as f:
                content = f.read()
            if rel.endswith(b".gz"):
                content = gzip.decompress(content)
            rec.append(hashlib.sha256(content).hexdigest().encode())
            if st.st_nlink > 1:
                rec.append(first.setdefault((st.st_dev, st.st_ino), rel))
        for field in rec:
            h.update(b"%d:" % len(field) + field)
    return h.hexdigest()


def make_writable(path):
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
        os.chmod(dirpath, 0o755)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--with-busybox", metavar="PATH")
    args = ap.parse_args()
    os.umask(0o022)
    root = os.path.abspath(os.fsencode(args.root))
    os.makedirs(root, exist_ok=True)
    for sub in (b"nix", b"gnu", b"specs", b"reference-specs", b"env", b"fixture-tree.sha256"):
        p = os.path.join(root, sub)
        if os.path.isdir(p) and not os.path.islink(p):
            make_writable(p)
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)
    if os.geteuid() != 0:
        print("make-fixtures: warning: not root; ownership-dependent cases will not match", file=sys.stderr)
    print(build(root, args.with_busybox))


if __name__ == "__main__":
    main()
