# A recorded description of how nixpkgs makes dockerTools, for the unit
# test of the overlay (overlay-unit.nix): the arguments of
# pkgs/build-support/docker/default.nix, and whether the package set has
# dockerAutoLayer, for the shapes of nixpkgs the overlay meets.
#
# All of them are made by callPackage, which hands makeOverridable every
# argument the function takes, and pass writePython3 explicitly:
#   dockerTools = callPackage ../build-support/docker {
#     writePython3 = buildPackages.writers.writePython3;
#   };
# and build the streaming script inside streamLayeredImage as
#   streamScript = writePython3 "stream" { } ./stream_layered_image.py;
{
  # default.nix with runCommandNoCC and writeReferencesToFile (read at
  # nixpkgs commit 34b7a306c35b).
  writeReferencesToFile-era = {
    args = [
      "bashInteractive"
      "buildPackages"
      "cacert"
      "callPackage"
      "closureInfo"
      "coreutils"
      "e2fsprogs"
      "fakechroot"
      "fakeNss"
      "fakeroot"
      "go"
      "jq"
      "jshon"
      "lib"
      "makeWrapper"
      "moreutils"
      "nix"
      "nixosTests"
      "pigz"
      "rsync"
      "runCommand"
      "runCommandNoCC"
      "runtimeShell"
      "shadow"
      "skopeo"
      "storeDir"
      "substituteAll"
      "symlinkJoin"
      "tarsum"
      "util-linux"
      "vmTools"
      "writeReferencesToFile"
      "writeScript"
      "writeShellScriptBin"
      "writeText"
      "writeTextDir"
      "writePython3"
    ];
    dockerAutoLayer = false;
  };

  # default.nix with devShellTools, proot, writeClosure and zstd
  # (compressor, includeNixDB, layeringPipeline through dockerMakeLayers).
  writeClosure-era = {
    args = [
      "bashInteractive"
      "buildPackages"
      "cacert"
      "callPackage"
      "closureInfo"
      "coreutils"
      "devShellTools"
      "e2fsprogs"
      "proot"
      "fakeNss"
      "fakeroot"
      "file"
      "go"
      "jq"
      "jshon"
      "lib"
      "makeWrapper"
      "moreutils"
      "nix"
      "nixosTests"
      "pigz"
      "rsync"
      "runCommand"
      "runtimeShell"
      "shadow"
      "skopeo"
      "stdenv"
      "storeDir"
      "symlinkJoin"
      "tarsum"
      "util-linux"
      "vmTools"
      "writeClosure"
      "writeScript"
      "writeShellScriptBin"
      "writeText"
      "writeTextDir"
      "writePython3"
      "zstd"
    ];
    dockerAutoLayer = false;
  };

  # The same, with nixpkgs' top-level dockerAutoLayer (auto-layer.nix:
  # closureRoots, excludePaths, maxLayers, fromImage, debug), its default
  # layering when layeringPipeline is null.
  auto-layer-era = {
    args = [
      "bashInteractive"
      "buildPackages"
      "cacert"
      "callPackage"
      "closureInfo"
      "coreutils"
      "devShellTools"
      "e2fsprogs"
      "proot"
      "fakeNss"
      "fakeroot"
      "file"
      "go"
      "jq"
      "jshon"
      "lib"
      "makeWrapper"
      "moreutils"
      "nix"
      "nixosTests"
      "pigz"
      "rsync"
      "runCommand"
      "runtimeShell"
      "shadow"
      "skopeo"
      "stdenv"
      "storeDir"
      "symlinkJoin"
      "tarsum"
      "util-linux"
      "vmTools"
      "writeClosure"
      "writeScript"
      "writeShellScriptBin"
      "writeText"
      "writeTextDir"
      "writePython3"
      "zstd"
    ];
    dockerAutoLayer = true;
  };

  # A dockerTools that reaches the Python writer through `writers` rather
  # than a writePython3 argument (as forks of default.nix do): the overlay
  # has no hook there and must leave it alone, loudly.
  writers-argument = {
    args = [
      "buildPackages"
      "lib"
      "runCommand"
      "writers"
    ];
    dockerAutoLayer = false;
  };
}
