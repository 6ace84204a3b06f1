# The stream-layered-image package, built with nixpkgs' rustPlatform.
{
  lib,
  rustPlatform,
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = cargoToml.package.name;
  inherit (cargoToml.package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../README.md
      ../src
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # The integration tests drive docker, podman, nix-build and guile, which a
  # build sandbox does not have; the unit tests run.
  cargoTestFlags = [
    "--lib"
    "--bins"
  ];

  meta = {
    inherit (cargoToml.package) description;
    license = lib.licenses.mit;
    mainProgram = "stream-layered-image";
    platforms = lib.platforms.unix;
  };
}
