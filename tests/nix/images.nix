# Images for tests/nix_integration.rs, built without nixpkgs: a few store
# paths made with `derivation` (a static busybox is the builder), and
# images of their closure made by nix/core.nix.
#
#   nix-build tests/nix/images.nix --argstr sli PATH --argstr busybox PATH -A image
#
# sli and busybox are files on this machine; builtins.path copies them into
# the store, so a new binary makes new derivations.
{
  # the stream-layered-image executable
  sli,
  # a static busybox executable
  busybox,
  # changes the message in `lib`, so `lib` and `app` get new store paths
  variant ? "1",
  # "busybox": busybox applets only; "host": a shell and a PATH given as
  # strings (hostShell; hostPrefix/bin on PATH), e.g. bash and the GNU
  # tools with fakeroot
  tools ? "busybox",
  hostShell ? "/bin/sh",
  hostPrefix ? "/usr",
  maxLayers ? 4,
  layeringStrategy ? "default",
  # a hints file for `layers --hints` (a path on this machine), or none
  layeringHints ? null,
  name ? "sli-nix-test",
}:

let
  system = builtins.currentSystem;

  # <store path>/busybox: busybox runs the applet its file name names.
  bbDir = builtins.path {
    path = dirOf (/. + busybox);
    name = "busybox";
    filter = path: type: baseNameOf path == baseNameOf busybox;
  };
  bb = "${bbDir}/${baseNameOf busybox}";
  sliStore = builtins.path {
    path = /. + sli;
    name = "stream-layered-image";
  };

  core =
    if tools == "busybox" then
      import ../../nix/core.nix {
        stream-layered-image = sliStore;
        busybox = bb;
      }
    else
      import ../../nix/core.nix {
        stream-layered-image = sliStore;
        shell = hostShell;
        tools = [ hostPrefix ];
      };

  # A store path built by SCRIPT (busybox sh); $bb is busybox.
  mk =
    name: script: env:
    derivation (
      {
        inherit name system;
        builder = bb;
        args = [
          "sh"
          "-ec"
          script
        ];
        inherit bb;
      }
      // env
    );

  # A few KiB of data that never changes.
  leaf = mk "sli-test-leaf" ''
    "$bb" mkdir -p "$out/share/leaf"
    i=0
    while [ $i -lt 200 ]; do
      echo "leaf line $i" >>"$out/share/leaf/data.txt"
      i=$((i + 1))
    done
  '' { };

  # Another independent path, with a symlink and an executable.
  data = mk "sli-test-data" ''
    "$bb" mkdir -p "$out/etc" "$out/bin"
    echo "data" >"$out/etc/data.conf"
    "$bb" ln -s data.conf "$out/etc/link.conf"
    printf '#!%s sh\necho data tool\n' "$bb" >"$out/bin/data-tool"
    "$bb" chmod 755 "$out/bin/data-tool"
  '' { };

  # Refers to leaf; its message depends on `variant`.
  lib = mk "sli-test-lib" ''
    "$bb" mkdir -p "$out/share"
    echo "hello from variant $variant" >"$out/share/msg"
    echo "$leaf" >"$out/share/leaf-path"
  '' { inherit leaf variant; };

  # The program the container runs: a busybox sh script that reads lib.
  app = mk "sli-test-app" ''
    "$bb" mkdir -p "$out/bin"
    printf '#!%s sh\n"%s" cat "%s/share/msg"\n"%s" wc -l <"%s/share/leaf/data.txt"\n' \
      "$bb" "$bb" "$lib" "$bb" "$leaf" >"$out/bin/hello"
    "$bb" chmod 755 "$out/bin/hello"
  '' { inherit lib leaf; };

  # The references graph of `app`, as exportReferencesGraph writes it: the
  # format of Guix's #:references-graphs too (tests/guix_modules.rs).
  appGraph = mk "sli-test-app-graph" ''
    "$bb" cp graph "$out"
  '' { exportReferencesGraph = [ "graph" app ]; };

  # A base image for fromImage: `data` and busybox in at most 3 layers.
  baseImage = core.buildLayeredImage {
    name = "sli-nix-test-base";
    tag = "base";
    compressor = "gz";
    config.Env = [ "FROM_BASE=1" ];
    maxLayers = 3;
    contents = [ data ];
  };

  common = {
    inherit name layeringStrategy;
    layeringHints =
      if layeringHints == null then
        null
      else
        builtins.path {
          path = /. + layeringHints;
          name = "hints.json";
        };
    # --argstr maxLayers N works too
    maxLayers = if builtins.isString maxLayers then builtins.fromJSON maxLayers else maxLayers;
    contents = [
      app
      data
    ];
    config = {
      Cmd = [ "/bin/hello" ];
      Env = [ "PATH=/bin" ];
      Labels."org.example.variant" = variant;
    };
    # As in a stdenv builder: sed on PATH, no `set -u`, NIX_BUILD_TOP set.
    extraCommands = ''
      mkdir -p tmp var/empty
      echo "made by extraCommands" > etc-note
      echo "hello world" | sed 's/world/sed/' > stdenv-note
      echo "unset: [$SLI_TEST_NOT_SET]" >> stdenv-note
      if [ -d "$NIX_BUILD_TOP" ]; then echo "build top bound" >> stdenv-note; fi
    '';
    passthru.sliTest = "user passthru";
    fakeRootCommands = ''
      chown 1000:100 var/empty
      chmod 1777 tmp
    '';
  };
in
{
  inherit
    bb
    leaf
    data
    lib
    app
    appGraph
    core
    baseImage
    ;

  # The streaming script (`./result | docker load`).
  stream = core.streamLayeredImage common;

  # The same, with a `digest` derivation per store layer and the records
  # in conf.json (store_layer_digests).
  digested = core.streamLayeredImage (
    common
    // {
      layerDigests = true;
      layerDigestCompressions = [
        "gzip"
        "zstd:3"
      ];
    }
  );

  # The same image, written into the store.
  image = core.buildLayeredImage (common // { compressor = "none"; });
  imageGz = core.buildLayeredImage (common // { compressor = "gz"; });
  imageZstd = core.buildLayeredImage (common // { compressor = "zstd"; });

  # On top of baseImage with maxLayers 5: the store gets what baseImage and
  # the customisation layer leave.
  onBase = core.buildLayeredImage (
    common
    // {
      name = "sli-nix-test-onbase";
      compressor = "none";
      fromImage = baseImage;
      maxLayers = 5;
    }
  );

  # A nixpkgs layering pipeline instead of a strategy: two layers.
  piped = core.buildLayeredImage (
    common
    // {
      compressor = "none";
      layeringPipeline = [
        [ "popularity_contest" ]
        [
          "limit_layers"
          2
        ]
      ];
    }
  );

  # One image for two platforms (both specs name the same store paths: the
  # index is what is tested, not a cross build).
  multi = core.multiPlatformImage {
    name = "sli-nix-test-multi";
    images = {
      amd64 = core.streamLayeredImage (common // { architecture = "amd64"; tag = "multi"; });
      arm64 = core.streamLayeredImage (
        common
        // {
          architecture = "arm64";
          variant = "v8";
          tag = "multi";
        }
      );
    };
  };

  # No store layers at all.
  noStore = core.buildLayeredImage (
    common
    // {
      compressor = "none";
      includeStorePaths = false;
      tag = "nostore";
    }
  );
}
