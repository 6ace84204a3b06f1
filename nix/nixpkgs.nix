# dockerTools.streamLayeredImage and dockerTools.buildLayeredImage for
# nixpkgs, built on stream-layered-image: core.nix given nixpkgs' tools.
#
#   let sli = import ./nix/nixpkgs.nix { inherit pkgs; };
#   in sli.streamLayeredImage { name = "hello"; config.Cmd = [ "${pkgs.hello}/bin/hello" ]; }
{
  pkgs,
  # The tool runs at build time: it comes from buildPackages.
  stream-layered-image ?
    pkgs.buildPackages.stream-layered-image or (pkgs.buildPackages.callPackage ./package.nix { }),
  # nixpkgs' own dockerTools: images that ask for what this builder does not
  # do (includeNixDB) are handed to it. null: such images are an error.
  fallback ? null,
}:

let
  inherit (pkgs) lib buildPackages;

  core = import ./core.nix {
    inherit stream-layered-image;
    shell = "${buildPackages.bash}/bin/bash";
    # What a stdenv builder has on PATH, for extraCommands and
    # fakeRootCommands: coreutils, findutils, diffutils, sed, grep, awk,
    # tar, gzip.
    tools = [
      buildPackages.coreutils
      buildPackages.findutils
      buildPackages.diffutils
      buildPackages.gnused
      buildPackages.gnugrep
      buildPackages.gawk
      buildPackages.gnutar
      buildPackages.gzip
    ];
    inherit (buildPackages) fakeroot proot pigz zstd;
    system = buildPackages.stdenv.buildPlatform.system;
    storeDir = builtins.storeDir;
    defaultArchitecture = pkgs.stdenv.hostPlatform.go.GOARCH or null;
  };

  # includeNixDB (nixpkgs >= 24.05) needs nix-store and sqlite in the image
  # build; that stays with nixpkgs' builder.
  withFallback =
    fname: ours: args:
    if args.includeNixDB or false then
      if fallback != null then
        fallback.${fname} (removeAttrs args [
          "layeringStrategy"
          "layeringHints"
          "layerDigests"
          "layerDigestCompressions"
        ])
      else
        throw "${fname} ${args.name or ""}: includeNixDB is not supported by stream-layered-image's builder"
    else
      ours (removeAttrs args [ "includeNixDB" ]);
  # Like nixpkgs' own: overridable, and callers can see the arguments.
  wrap =
    fname: f: extraArgs:
    lib.makeOverridable (
      lib.setFunctionArgs (withFallback fname f) (
        builtins.functionArgs core.streamLayeredImage // extraArgs // { includeNixDB = true; }
      )
    );
in
{
  streamLayeredImage = wrap "streamLayeredImage" core.streamLayeredImage { };
  buildLayeredImage = wrap "buildLayeredImage" core.buildLayeredImage { compressor = true; };
  inherit (core) defaultArchitecture;
}
