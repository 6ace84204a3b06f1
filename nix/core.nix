# The core builder: `streamLayeredImage` and `buildLayeredImage` with the
# interface of nixpkgs' dockerTools, built on stream-layered-image.
#
# It does not use nixpkgs. Every program that runs at build time comes in as
# an argument, so the nixpkgs wrappers (nixpkgs.nix) and the tests, which
# have no nixpkgs, run the same code:
#
#   import ./core.nix {
#     stream-layered-image = <package with bin/stream-layered-image, or the executable>;
#     busybox = <a static busybox>;        # the shell and every tool, from its applets
#   }
#
#   import ./core.nix {                    # what nixpkgs.nix passes
#     stream-layered-image = pkgs.stream-layered-image;
#     shell = "${pkgs.bash}/bin/bash";
#     tools = [ pkgs.coreutils pkgs.findutils pkgs.gnutar pkgs.gzip ];
#     inherit (pkgs) fakeroot proot pigz zstd;
#   }
#
# How an image is made:
#   1. customisation layer: `contents` merged into one tree (as symlinkJoin
#      does), changed by `extraCommands` and `fakeRootCommands`, packed into
#      layer.tar with its sha256 in `checksum`;
#   2. closure root: a file naming the customisation layer and holding the
#      image config, so its closure is every store path the image needs;
#   3. conf.json: `exportReferencesGraph` (with __structuredAttrs, so with
#      Nix's narSize) writes that closure's graph, and
#      `stream-layered-image layers` splits it into at most
#      maxLayers - (layers of fromImage) - 1 layers (one is kept for the
#      customisation layer);
#   4. streamLayeredImage: a script that runs `stream-layered-image conf.json`,
#      so `./result | docker load` loads the image;
#      buildLayeredImage: that script's output, written into the store
#      (compressor "none", "gz" or "zstd").
{
  # This tool: a package holding bin/stream-layered-image, or the executable.
  stream-layered-image,
  # A busybox package (with bin/busybox), or the path of a busybox executable
  # whose file name is `busybox` (busybox picks the applet to run from its
  # name). Statically linked for sandboxed builds. When set, its applets
  # come after `tools` on PATH, and its sh is the default shell.
  busybox ? null,
  # A POSIX shell, as the path of its executable. It runs every build step
  # and is the interpreter of the streaming script. `extraCommands` and
  # `fakeRootCommands` are evaluated by it, so use bash for nixpkgs users.
  shell ? null,
  # Packages (or directories) whose bin/ go on PATH, first one first. The
  # build steps need sh utilities (coreutils, or busybox), find, and tar (GNU
  # tar; busybox tar only when building as root).
  tools ? [ ],
  # Optional packages, each put on PATH only for the steps that use it:
  # fakeroot packs the customisation layer, as in nixpkgs (without it the
  # build must run as root, or use GNU tar and no fakeRootCommands); proot
  # runs fakeRootCommands with enableFakechroot; pigz (else gzip from
  # `tools`) and zstd compress buildLayeredImage's output.
  fakeroot ? null,
  proot ? null,
  pigz ? null,
  zstd ? null,
  # The platform the build steps run on, and its store.
  system ? builtins.currentSystem,
  storeDir ? builtins.storeDir,
  # The image's architecture unless the image says otherwise (Go's names);
  # null: the CPU of `system`.
  defaultArchitecture ? null,
}:

let
  inherit (builtins)
    concatStringsSep
    isAttrs
    isList
    stringLength
    substring
    toJSON
    ;

  optional = cond: x: if cond then [ x ] else [ ];

  letters = s: builtins.genList (i: substring i 1 s) (stringLength s);
  toLower = builtins.replaceStrings (letters "ABCDEFGHIJKLMNOPQRSTUVWXYZ") (
    letters "abcdefghijklmnopqrstuvwxyz"
  );

  # The Go names the image spec uses for architectures (what nixpkgs takes
  # from go.GOARCH).
  goArch = {
    x86_64 = "amd64";
    i686 = "386";
    aarch64 = "arm64";
    armv5tel = "arm";
    armv6l = "arm";
    armv7l = "arm";
    powerpc64le = "ppc64le";
    riscv64 = "riscv64";
    s390x = "s390x";
    mips64el = "mips64le";
    loongarch64 = "loong64";
  };
  cpu = builtins.head (builtins.match "([^-]*)-.*" system);
  architecture' = if defaultArchitecture != null then defaultArchitecture else goArch.${cpu} or cpu;

  executable = pkg: name: if isAttrs pkg then "${pkg}/bin/${name}" else "${pkg}";

  sli = executable stream-layered-image "stream-layered-image";

  busyboxExe = if busybox == null then null else executable busybox "busybox";

  # A directory of busybox applets: bin/<applet> -> busybox.
  busyboxApplets = derivation {
    name = "busybox-applets";
    inherit system;
    builder = busyboxExe;
    args = [
      "sh"
      "-ec"
      ''
        "$busybox" mkdir -p "$out/bin"
        for applet in $("$busybox" --list); do
          "$busybox" ln -s "$busybox" "$out/bin/$applet"
        done
      ''
    ];
    busybox = busyboxExe;
    preferLocalBuild = true;
    allowSubstitutes = false;
  };

  # PATH for a step that also uses the optional tools EXTRA (nulls ignored).
  pathWith =
    extra:
    concatStringsSep ":" (
      map (t: "${t}/bin") (
        builtins.filter (t: t != null) extra ++ tools ++ optional (busybox != null) busyboxApplets
      )
    );

  shellExe =
    if shell != null then
      "${shell}"
    else if busybox != null then
      "${busyboxApplets}/bin/sh"
    else
      throw "stream-layered-image core.nix: give `shell` or `busybox`";

  # A build step: SCRIPT (a file in ./builders) run by the shell with `set -e`.
  # Only the steps that run this tool get it (`sli`): the customisation
  # layer's store path, which the image's history names, then stays the
  # same when the tool is rebuilt, and so does the image ID.
  step =
    name: script: env:
    derivation (
      {
        inherit name system;
        builder = shellExe;
        args = [
          "-e"
          script
        ];
        PATH = pathWith [ ];
        shell = shellExe;
        storeDir = storeDir;
        preferLocalBuild = true;
        allowSubstitutes = false;
      }
      // env
    );

  # The inside of a JSON object: toJSON's text without the braces.
  jsonFields =
    attrs:
    let
      text = toJSON attrs;
    in
    substring 1 (stringLength text - 2) text;

  # The hash part of an output path, without string context.
  hashOf = drv: substring 0 32 (baseNameOf (builtins.unsafeDiscardStringContext drv.outPath));

  flag = b: if b then "1" else "";

  streamLayeredImage =
    {
      # Image name: the repository in repo_tag (lower-cased).
      name,
      # Image tag; null: the hash of the conf.json store path.
      tag ? null,
      # A base image (docker-archive, plain or gzipped) whose layers come first.
      fromImage ? null,
      # Store paths whose trees are merged into the image root.
      contents ? [ ],
      # The image config's "config" object (Cmd, Env, ...).
      config ? { },
      architecture ? architecture',
      # The CPU variant an image index names with the architecture (e.g.
      # "v8" for arm64), for multiPlatformImage; null: none.
      variant ? null,
      # "now" or an ISO 8601 time.
      created ? "1970-01-01T00:00:01Z",
      # The modification time of every file in the store layers.
      mtime ? "1970-01-01T00:00:01Z",
      # Owner of every file in the store layers.
      uid ? 0,
      gid ? 0,
      uname ? "root",
      gname ? "root",
      # Shell commands run in the image root before it is packed.
      extraCommands ? "",
      # Shell commands run as (fake) root in the image root before it is packed.
      fakeRootCommands ? "",
      # Run fakeRootCommands in a chroot of the image root (needs proot).
      enableFakechroot ? false,
      # At most this many layers, counting fromImage's and the customisation layer.
      maxLayers ? 100,
      # false: no store layers (for runtimes that bind-mount the store).
      includeStorePaths ? true,
      # A nixpkgs layering pipeline (a list of steps, or a JSON file) instead
      # of layeringStrategy.
      layeringPipeline ? null,
      # With no layeringPipeline: "default", "popularity", "auto" (nixpkgs'
      # own default split) or "size" (Guix's rule). See the README.
      layeringStrategy ? "default",
      # A hints file (`stream-layered-image hints` makes one from earlier
      # graphs) for `layers --hints`; null: no hints, nothing passed.
      layeringHints ? null,
      # Print the layering (`layers --explain`) into the build log.
      debug ? false,
      # One derivation per store layer runs `stream-layered-image digest`
      # on it, and conf.json carries the results (store_layer_digests):
      # the image then streams in one pass, and a push reads no layer the
      # registry has. Reads the layering at evaluation time
      # (import-from-derivation).
      layerDigests ? false,
      # The compressions whose blobs the records hold (--compress of
      # `digest`), e.g. [ "gzip" "zstd:3" ]: those a push will use.
      layerDigestCompressions ? [ "gzip" ],
      passthru ? { },
      meta ? { },
    }:
    assert
      maxLayers > 1
      || throw "streamLayeredImage: maxLayers must be greater than 1 (it is ${toString maxLayers})";
    let
      baseName = baseNameOf name;
      imageName = toLower name;
      contentsList = if isList contents then contents else [ contents ];

      customisationLayer = step "${baseName}-customisation-layer" ./builders/customisation-layer.sh {
        contents = contentsList;
        inherit extraCommands fakeRootCommands;
        enableFakechroot = flag enableFakechroot;
        packLayer = ./builders/pack-layer.sh;
        # What nixpkgs' stdenv sets: the customisation layers' mtime.
        SOURCE_DATE_EPOCH = "315532800";
        PATH = pathWith ([ fakeroot ] ++ optional enableFakechroot proot);
      };

      # Its closure is everything the image needs: the customisation layer
      # (which refers to `contents`) and the store paths the config names.
      closureRoot = step "${baseName}-closure" ./builders/closure.sh {
        text = concatStringsSep "\n" [
          (toJSON {
            inherit architecture config;
            os = "linux";
          })
          "${customisationLayer}"
        ];
      };

      hintsArgs =
        if layeringHints == null then
          [ ]
        else
          [
            "--hints"
            "${layeringHints}"
          ];

      # The closure's references graph as Nix exports it with
      # __structuredAttrs: with each path's narSize, which `layers` then
      # takes instead of measuring the files. The builder gets no
      # environment but the attributes file, whose "outputs" names $out.
      graphJSON = derivation {
        name = "${baseName}-graph.json";
        inherit system;
        __structuredAttrs = true;
        builder = shellExe;
        args = [
          "-ec"
          ''
            PATH=${pathWith [ ]}
            out=$(sed -n 's/.*"outputs":{"out":"\([^"]*\)".*/\1/p' "$NIX_ATTRS_JSON_FILE")
            cp "$NIX_ATTRS_JSON_FILE" "$out"
            # The shell, not cp, ends the build: left last, cp is exec'd by
            # the shell, closes its stderr before it exits, and Nix 2.8 takes
            # the log's end for the builder's and may kill it with SIGKILL
            # first ("failed due to signal 9", NixOS/nix#2176).
            exit 0
          ''
        ];
        exportReferencesGraph.graph = [ closureRoot ];
        preferLocalBuild = true;
        allowSubstitutes = false;
      };

      layering = layeringChoice // {
        layersArgs = layeringChoice.layersArgs ++ hintsArgs;
      };

      layeringChoice =
        if layeringPipeline == null then
          {
            layersArgs = [
              "--strategy"
              layeringStrategy
            ];
          }
        else if isList layeringPipeline then
          {
            pipelineJSON = toJSON layeringPipeline;
            layersArgs = [ ];
          }
        else
          {
            layersArgs = [
              "--pipeline"
              "${layeringPipeline}"
            ];
          };

      conf = step "${baseName}-conf.json" ./builders/conf.sh (
        {
          inherit sli fromImage maxLayers created mtime;
          createdJSON = toJSON created;
          mtimeJSON = toJSON mtime;
          repoTagJSON = if tag == null then "" else toJSON "${imageName}:${toString tag}";
          # `"name:` — the shell appends the hash of $out and the closing quote.
          repoNameJSON =
            let
              t = toJSON "${imageName}:";
            in
            substring 0 (stringLength t - 1) t;
          confFields = jsonFields (
            {
            inherit
              architecture
              config
              uid
              gid
              uname
              gname
              ;
            os = "linux";
            store_dir = storeDir;
          }
          // (if variant == null then { } else { inherit variant; })
          // {
            from_image = if fromImage == null then null else "${fromImage}";
            customisation_layer = "${customisationLayer}";
          });
          includeStorePaths = flag includeStorePaths;
          excludePaths = [
            closureRoot
            customisationLayer
          ];
          debug = flag debug;
        }
        // layering
        // (if includeStorePaths then { graph = graphJSON; } else { })
      );

      imageTag = if tag != null then toString tag else hashOf conf;

      # With layerDigests: the layering, read back (import from
      # derivation), gives one `digest` derivation per store layer. Each
      # gets a spec of its layer alone, whose store paths carry no context
      # but their own (not conf.json's), so it is rebuilt only when they
      # change.
      confRead = builtins.fromJSON (builtins.unsafeDiscardStringContext (builtins.readFile conf));
      plain = v: if builtins.isString v then builtins.unsafeDiscardStringContext v else v;
      withContext =
        p:
        let
          path = builtins.unsafeDiscardStringContext p;
        in
        builtins.appendContext path { ${path} = { path = true; }; };
      layerDigest =
        paths:
        step "stream-layered-image-layer-digest" ./builders/layer-digest.sh {
          inherit sli;
          specJSON = toJSON {
            store_layers = [ (map withContext paths) ];
            store_dir = storeDir;
            created = "1970-01-01T00:00:01Z";
            mtime = plain confRead.mtime;
            uid = plain confRead.uid;
            gid = plain confRead.gid;
            uname = plain confRead.uname;
            gname = plain confRead.gname;
            architecture = plain confRead.architecture;
            config = { };
          };
          compressArgs = concatStringsSep " " (map (c: "--compress ${c}") layerDigestCompressions);
        };
      digestedConf = step "${baseName}-conf.json" ./builders/conf-digests.sh {
        inherit conf;
        digests = map layerDigest confRead.store_layers;
      };
      finalConf = if layerDigests then digestedConf else conf;

      script = step "stream-${baseName}" ./builders/stream-script.sh {
        inherit sli imageName;
        conf = finalConf;
      };
    in
    script
    // passthru
    // {
      # As nixpkgs' passthru: conf knows the image's name and tag, and
      # streamScript is the program the script runs (this tool).
      conf = finalConf // {
        inherit imageName imageTag;
      };
      streamScript = sli;
      inherit
        customisationLayer
        imageName
        imageTag
        meta
        ;
      # Distinguishes a streaming script from an image file, as in nixpkgs.
      isExe = true;
    };

  compressors = {
    none = "";
    gz = ".gz";
    zstd = ".zst";
  };

  buildLayeredImage =
    {
      name,
      # "none", "gz" (as in nixpkgs, the default) or "zstd".
      compressor ? "gz",
      ...
    }@args:
    let
      stream = streamLayeredImage (removeAttrs args [ "compressor" ]);
      ext =
        compressors.${compressor}
          or (throw "buildLayeredImage ${name}: unknown compressor ${compressor} (expected none, gz or zstd)");
      image = step "${baseNameOf name}.tar${ext}" ./builders/build-image.sh {
        inherit stream compressor;
        inherit (stream) imageName;
        allowSubstitutes = true;
        PATH = pathWith (
          if compressor == "gz" then
            [ pigz ]
          else if compressor == "zstd" then
            [ zstd ]
          else
            [ ]
        );
      };
    in
    image
    // {
      inherit stream;
      inherit (stream) imageName imageTag meta;
    };
  # One image for several platforms: the streamLayeredImage results of
  # `images` (a list, or an attribute set such as { x86_64-linux = ...;
  # aarch64-linux = ...; }), each with its own architecture (and variant).
  # The result is a script that builds them all and an OCI image index
  # naming each with its platform: `./result --push REGISTRY/NAME:TAG`, or
  # `./result --format oci-archive -o image.tar`. Extra arguments go to
  # stream-layered-image.
  multiPlatformImage =
    {
      name,
      images,
    }:
    let
      list = if builtins.isAttrs images then builtins.attrValues images else images;
    in
    step "stream-${baseNameOf name}" ./builders/multi-platform-script.sh {
      inherit sli;
      confs = map (image: "${image.conf}") list;
    }
    // {
      images = list;
      isExe = true;
    };
in
{
  inherit streamLayeredImage buildLayeredImage multiPlatformImage;
  defaultArchitecture = architecture';
}
