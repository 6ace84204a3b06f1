# The overlays: nixpkgs' own dockerTools, with this tool as its engine.
#
#   overlays = [ (import ./nix/overlays.nix).default ];        # the flake's overlays.default
#   overlays = [ (import ./nix/overlays.nix).with-layering ];  # overlays.with-layering
#
# nixpkgs makes dockerTools with callPackage and passes it writePython3; its
# streamLayeredImage builds the streaming script as
# `writePython3 "stream" { } ./stream_layered_image.py`. The default overlay
# overrides that one argument: for "stream" it returns this tool's
# executable, for any other name nixpkgs' own writer. Everything else
# (conf.json, the customisation layer, the layering, the passthru, every
# other function of dockerTools) stays nixpkgs' code, and conf.json does
# not depend on the streaming script, so an image is byte for byte the one
# nixpkgs streams without the overlay: same layers, same image ID, same tag.
#
# with-layering also replaces dockerAutoLayer, nixpkgs' default split of the
# closure (auto-layer.py, nixpkgs since late 2025), with
# `stream-layered-image layers --strategy auto`: the same split, faster on
# large closures. The layers and the image ID stay; an image without an
# explicit `tag` gets another one, since its default tag is the hash of
# conf.json, whose inputs then differ.
#
# A nixpkgs whose dockerTools takes no writePython3 argument (or whose
# override does not say which arguments it takes) is left as it is, with a
# warning: its images are built by nixpkgs' Python script.
let
  # The arguments an overridable function takes, as lib.functionArgs reads
  # them (nixpkgs' makeOverridable mirrors them onto `override`).
  functionArgs = f: f.__functionArgs or (builtins.functionArgs f);

  warn = prev: msg: value: (prev.lib.warn or builtins.trace) "stream-layered-image overlay: ${msg}" value;

  # The streaming script: this tool's executable under the name nixpkgs
  # gives its script. nixpkgs calls it as `stream conf.json [ARGS]`, the
  # interface stream-layered-image implements.
  streamScript =
    final:
    final.buildPackages.runCommand "stream"
      {
        preferLocalBuild = true;
        allowSubstitutes = false;
      }
      ''
        ln -s ${final.buildPackages.stream-layered-image}/bin/stream-layered-image $out
      '';

  engine =
    final: prev:
    let
      dockerTools = prev.dockerTools;
      takes = if dockerTools ? override then functionArgs dockerTools.override else { };
    in
    {
      stream-layered-image = final.callPackage ./package.nix { };

      dockerTools =
        if takes ? writePython3 then
          dockerTools.override (old: {
            writePython3 =
              name: options: script:
              if name == "stream" then streamScript final else old.writePython3 name options script;
          })
        else
          warn prev
            "this nixpkgs' dockerTools takes no writePython3 argument; its images are built by nixpkgs' own stream_layered_image.py"
            dockerTools;
    };

  # nixpkgs' dockerAutoLayer interface: auto-layer.nix's arguments, and a
  # layers.json of store_layers.
  autoLayer =
    final:
    {
      closureRoots,
      excludePaths ? [ ],
      maxLayers ? 100,
      fromImage ? null,
      debug ? false,
    }:
    final.runCommand "layers.json"
      {
        __structuredAttrs = true;
        exportReferencesGraph.graph = closureRoots;
        inherit fromImage maxLayers;
        nativeBuildInputs = [
          final.jq
          final.buildPackages.stream-layered-image
        ];
        excludePathsFile = final.writeText "excludePaths" (
          builtins.concatStringsSep "" (map (x: "${x}\n") excludePaths)
        );
      }
      ''
        # As auto-layer.nix counts: the customisation layer and fromImage's
        # layers come out of maxLayers.
        usedLayers=1
        if [ -n "$fromImage" ]; then
          baseImageLayersCount=$(tar -xOf "$fromImage" manifest.json | jq '.[0].Layers | length')
          (( usedLayers += baseImageLayersCount ))
        fi
        if ! (( usedLayers < maxLayers )); then
          echo >&2 "Error: usedLayers $usedLayers layers to store 'fromImage' and" \
                    "'extraCommands', but only maxLayers=$maxLayers were" \
                    "allowed. At least 1 layer is required to store contents."
          exit 1
        fi
        stream-layered-image layers --graph "$NIX_ATTRS_JSON_FILE" \
          --max-layers $(( maxLayers - usedLayers )) --strategy auto \
          --exclude "$excludePathsFile" ${if debug then "--explain" else ""} > "$out"
      '';

  withLayering =
    final: prev:
    engine final prev
    // (
      if prev ? dockerAutoLayer then
        { dockerAutoLayer = autoLayer final; }
      else
        warn prev "this nixpkgs has no dockerAutoLayer; its layering is its own" { }
    );
in
{
  default = engine;
  with-layering = withLayering;
}
