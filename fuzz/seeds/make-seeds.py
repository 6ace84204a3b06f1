#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets (fuzz/seeds/<target>/).

Deterministic: running it again rewrites the same bytes. The tarheader
seeds are libFuzzer-structured inputs, kept as they were minimised, and are
not written here.
"""
import gzip
import hashlib
import io
import json
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    if isinstance(data, str):
        data = data.encode()
    return gzip.compress(data, mtime=0)


# spec ---------------------------------------------------------------------
S = "/nix/store/"
put("spec", "minimal.json", json.dumps({
    "architecture": "amd64", "config": {}, "created": "1970-01-01T00:00:01Z",
    "store_layers": [[S + "0000000000000000000000000000000a-hello"]],
    "repo_tag": "hello:latest"}))
put("spec", "full.json", json.dumps({
    "architecture": "arm64",
    "config": {"Cmd": ["/bin/sh", "-c", "echo hi"], "Env": ["PATH=/bin", "A=b=c"],
               "Labels": {"k": "v"}, "ExposedPorts": {"80/tcp": {}}, "User": "1000:1000"},
    "created": "2024-02-29T23:59:59.999999+05:30", "mtime": "now",
    "uid": 1000, "gid": 100, "uname": "user", "gname": "users",
    "store_dir": "/nix/store", "from_image": None,
    "customisation_layer": S + "0000000000000000000000000000000c-custom",
    "store_layers": [[S + "0000000000000000000000000000000a-hello",
                      S + "0000000000000000000000000000000b-lib/"],
                     [S + "0000000000000000000000000000000d-x//./y"]],
    "repo_tag": "r:t", "unknown": [1, 2.5, None, True]}, indent=2))
put("spec", "old.json", '{"architecture": "amd64", "config": {"Env": []}, '
    '"created": "now", "store_layers": [], "repo_tag": "a:b", '
    '"from_image": "/tmp/base.tar.gz"}')
put("spec", "guix.json", '{"architecture": "amd64", "config": {}, '
    '"created": "2020-01-01T00:00:00", "mtime": "1969-12-31T23:59:59-01:00", '
    '"store_dir": "/gnu/store/", "uid": "12", "gid": 1.9, "uname": "\\u00e9t\\u00e9", '
    '"store_layers": [["/gnu/store/aaaa-guile-3.0"]], "repo_tag": null}')
put("spec", "exotic.json", '{"architecture": "amd64", "created": "2000-01-01T00:00:00Z", '
    '"config": {"a": NaN, "b": Infinity, "c": -Infinity, "d": "\\ud800x", '
    '"e": 123456789012345678901234567890, "f": 1e400, "g": -0.0, "h": [[[{}]]], '
    '"a": "duplicate"}, "store_layers": [["/nix/store/x"]], "repo_tag": "t:1"}')

put("spec", "digests.json", json.dumps({
    "architecture": "amd64", "config": {}, "created": "1970-01-01T00:00:01Z",
    "store_layers": [[S + "0000000000000000000000000000000a-hello"]],
    "repo_tag": "hello:latest",
    "store_layer_digests": [{
        "key": "sha256:" + "1" * 64, "diff_id": "sha256:" + "2" * 64, "size": 10240,
        "blobs": {"gzip:5": {"digest": "sha256:" + "3" * 64, "size": 300},
                  "zstd:3": {"digest": "sha256:" + "4" * 64, "size": 200}}}]}))

# references graphs --------------------------------------------------------
nodes = [
    {"path": S + "aaaa-app", "narSize": 500,
     "references": [S + "aaaa-app", S + "bbbb-lib", S + "cccc-tool"]},
    {"path": S + "bbbb-lib", "narSize": 300, "references": [S + "dddd-glibc"]},
    {"path": S + "cccc-tool", "narSize": 200,
     "references": [S + "dddd-glibc", S + "eeee-data"]},
    {"path": S + "dddd-glibc", "narSize": 900, "references": []},
    {"path": S + "eeee-data", "narSize": 10, "references": []},
]
put("graph_json", "list.json", json.dumps(nodes))
put("graph_json", "graph-key.json", json.dumps({"graph": nodes}, indent=1))
put("graph_json", "attrs.json", json.dumps({"name": "img", "closure": nodes,
                                            "other": [1, 2]}))
put("graph_json", "no-sizes.json",
    json.dumps([{"path": n["path"], "references": n["references"] or None}
                for n in nodes]))


def text_graph(registration):
    out = []
    for n in nodes:
        out.append(n["path"])
        if registration:
            out.append("sha256:" + hashlib.sha256(n["path"].encode()).hexdigest())
            out.append(str(n["narSize"]))
            out.append("")
        else:
            out.append(S + "zzzz-" + n["path"][16:] + ".drv" if n["narSize"] > 250 else "")
        out.append(str(len(n["references"])))
        out.extend(n["references"])
    return "\n".join(out) + "\n"


put("graph_text", "text.txt", text_graph(False))
put("graph_text", "single.txt", S + "aaaa-app\n\n0\n")
put("graph_registration", "registration.txt", text_graph(True))
put("graph_registration", "single.txt", S + "aaaa-app\nsha256:00\n42\n\n1\n" + S + "aaaa-app\n")
# Regressions: a reference count the input cannot hold (reserved up front,
# it aborted the run), and a graph compressed twice.
put("graph_text", "huge-count.txt", S + "aaaa-app\n\n1702919981\n" + S + "aaaa-app\n")
put("graph_registration", "huge-count.txt", S + "aaaa-app\nsha256:00\n5\n\n18446744073709551615\n")
put("graph_gzip", "twice.gz", gz(gz(json.dumps(nodes))))
put("graph_gzip", "json.gz", gz(json.dumps(nodes)))
put("graph_gzip", "text.gz", gz(text_graph(False)))
put("graph_gzip", "registration.gz", gz(text_graph(True)))
put("graph_gzip", "plain.txt", text_graph(False))

# pipelines ----------------------------------------------------------------
pipelines = {
    "popularity.json": [["popularity_contest"], ["limit_layers", 3]],
    "split-paths.json": [["split_paths", [S + "bbbb-lib"]],
                         ["over", "main", ["pipe", [["popularity_contest"], ["limit_layers", 2]]]],
                         ["over", "rest", ["subcomponent_out", [S + "cccc-tool"]]]],
    "children-of.json": {"pipeline": [
        ["split_paths", [{"children_of": S + "aaaa-app"}]],
        ["over", "rest", ["split_every", 1]], ["flatten"], ["reverse"]]},
    "subcomponent.json": [["subcomponent_in", [S + "dddd-glibc"]],
                          ["over", "rest", ["remove_paths", S + "eeee-data"]]],
}
for name, p in pipelines.items():
    put("pipeline", name, json.dumps(p))

# base images --------------------------------------------------------------


def member(tar, name, data, **kw):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = kw.pop("mtime", 1)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data))


def trim(archive):
    """Drops tarfile's record padding, keeping the two zero blocks that end
    the archive: small seeds fuzz faster."""
    data = archive.rstrip(b"\0")
    data += b"\0" * (-len(data) % 512)
    return data + b"\0" * 1024


def layer_tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            member(t, name, data)
    return trim(buf.getvalue())


def docker_archive(fmt=tarfile.PAX_FORMAT, long_names=False, global_pax=False, odd=False):
    layers = [layer_tar([("etc/hello", b"hello\n")]),
              layer_tar([("bin/sh", b"#!x\n"), ("usr/share/doc", b"")])]
    digests = [hashlib.sha256(l).hexdigest() for l in layers]
    names = [d + ("x" * 100 if long_names else "") + "/layer.tar" for d in digests]
    config = json.dumps({"architecture": "amd64",
                         "config": {"Env": ["PATH=/usr/bin", "LANG=C"]},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + d for d in digests]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["base:1"],
                            "Layers": names}]).encode()
    buf = io.BytesIO()
    pax = {"comment": "seed"} if global_pax else None
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax) as t:
        for i, (name, data) in enumerate(zip(names, layers)):
            kw = {}
            if odd and i == 0:
                kw = {"uid": 8 ** 7 + 1, "uname": "\u00fcser", "mtime": -3, "mode": 0o4755}
            member(t, name, data, **kw)
        member(t, config_name, config)
        member(t, "manifest.json", manifest)
    return trim(buf.getvalue())


put("base_image", "plain.tar", docker_archive())
put("base_image", "gnu.tar", docker_archive(fmt=tarfile.GNU_FORMAT, long_names=True))
put("base_image", "pax-global-odd.tar", docker_archive(global_pax=True, odd=True, long_names=True))
put("base_image", "gzipped.tar.gz", gz(docker_archive()))

# gzip_layer ----------------------------------------------------------------
# A control byte (level and write size), then runs of 4 bytes: kind (0
# random, 1 one byte repeated, 2 text, 3 a copy of earlier bytes), half-KiB,
# seed, extra bytes.
put("gzip_layer", "empty", bytes([0]))
put("gzip_layer", "text-then-random", bytes([2, 2, 200, 0, 7, 0, 200, 9, 3]))
put("gzip_layer", "three-chunks", bytes([5] + [0, 255, 1, 0, 2, 255, 0, 0, 3, 255, 16, 5,
                                               0, 255, 4, 1, 1, 200, 65, 0] * 2))
put("gzip_layer", "random-pattern-repeated", bytes([1, 0, 16, 3, 0, 3, 255, 16, 0,
                                                    3, 255, 16, 0, 3, 255, 16, 0]))
put("gzip_layer", "small-runs", bytes([4] + [i % 4 for i in range(1, 200)]))

# hints ----------------------------------------------------------------------
HINTS = ('{"format": "stream-layered-image-hints", "version": 1,\n'
         ' "fields": ["changes", "seen", "images", "last"],\n'
         ' "graphs": 3,\n "images": ["app", "tool"],\n "packages": {\n'
         '  "app": [1, 3, "1", "0123456789abcdef01234567"],\n'
         '  "libc": [0, 3, "3", "89abcdef0123456789abcdef"],\n'
         '  "openssl:dev": [2, 3, "2", "00000000ffffffff00000000"]\n }}\n')
put("hints", "three.json", HINTS)
put("hints", "empty.json", '{"format": "stream-layered-image-hints", "version": 1, "packages": {}}')
put("hints", "version-2.json", '{"format": "stream-layered-image-hints", "version": 2}')
put("hints", "bad-entry.json", '{"format": "stream-layered-image-hints", "version": 1, '
    '"images": ["a"], "packages": {"x": [0, 1, "f", "0"]}}')
