# Unit test of the overlays (nix/overlays.nix), for tests/nix_integration.rs:
#
#   nix-instantiate --eval --strict --json tests/nix/overlay-unit.nix --argstr shape NAME
#
# It applies an overlay to a package set made from a recorded description
# of nixpkgs' dockerTools interface (nixpkgs-dockertools.nix): a
# dockerTools function with the recorded arguments, made overridable as
# callPackage does, whose streamLayeredImage builds its script with
# writePython3 "stream" as nixpkgs' does. Derivations are plain attribute
# sets here, so the result says exactly what the overlay replaced and what
# it passed through.
{
  shape,
  overlay ? "default",
}:

let
  recorded = (import ./nixpkgs-dockertools.nix).${shape};

  # makeOverridable as nixpkgs has it: the result gets `override`, which
  # takes new arguments or a function of the old ones, and whose
  # functionArgs are the function's.
  makeOverridable =
    f: args:
    f args
    // {
      override = {
        __functionArgs = f.__functionArgs;
        __functor =
          _: new: makeOverridable f (args // (if builtins.isFunction new then new args else new));
      };
    };

  fakeDerivation = kind: name: extra: { inherit kind name; } // extra;

  # pkgs/build-support/docker/default.nix, reduced to what matters: where
  # the streaming script and the default layering come from.
  dockerToolsFunction = {
    __functionArgs = builtins.listToAttrs (
      map (n: {
        name = n;
        value = n == "storeDir";
      }) recorded.args
    );
    __functor =
      _: args:
      let
        writePython3 = args.writePython3 or args.writers.writePython3;
      in
      {
        streamLayeredImage =
          { name, ... }:
          {
            inherit name;
            streamScript = writePython3 "stream" { } "./stream_layered_image.py";
            layers =
              if recorded.dockerAutoLayer then
                args.buildPackages.dockerAutoLayer {
                  closureRoots = [ "conf" ];
                  maxLayers = 100;
                }
              else
                "popularity";
          };
        # What every other writePython3 "NAME" call inside gets.
        otherScript = writePython3 "other" { } "./other.py";
        buildImage = "nixpkgs-buildImage";
        pullImage = "nixpkgs-pullImage";
        examples = "nixpkgs-examples";
      };
  };

  nixpkgsWritePython3 =
    name: options: script:
    fakeDerivation "nixpkgs-writePython3" name { inherit script; };

  base = final: {
    lib.warn = msg: builtins.trace "warning: ${msg}";
    buildPackages = final;
    callPackage = path: args: fakeDerivation "callPackage" (baseNameOf path) { };
    runCommand =
      name: env: script:
      fakeDerivation "runCommand" name { inherit env script; };
    writeText = name: text: fakeDerivation "writeText" name { inherit text; };
    jq = "jq";
    writers.writePython3 = nixpkgsWritePython3;
    dockerTools = makeOverridable dockerToolsFunction (
      builtins.listToAttrs (
        map (n: {
          name = n;
          value = final.${n} or "nixpkgs-${n}";
        }) recorded.args
      )
      // {
        writePython3 = nixpkgsWritePython3;
        writers.writePython3 = nixpkgsWritePython3;
        buildPackages = final;
      }
    );
  }
  // (if recorded.dockerAutoLayer then { dockerAutoLayer = args: fakeDerivation "nixpkgs-auto-layer" "layers.json" args; } else { });

  overlayFn = (import ../../nix/overlays.nix).${overlay};

  # The fixed point of the base set and the overlay, as nixpkgs makes it;
  # stream-layered-image is a stand-in for the package.
  final =
    let
      prev = base final;
    in
    prev // overlayFn final prev // { stream-layered-image = "/sli"; };

  original = base final;

  image = final.dockerTools.streamLayeredImage { name = "hello"; };
  originalImage = original.dockerTools.streamLayeredImage { name = "hello"; };
in
{
  stream_script_kind = image.streamScript.kind;
  stream_script_name = image.streamScript.name;
  stream_script = image.streamScript.script or null;
  # writePython3 for any other name is nixpkgs' own.
  other_writer_is_nixpkgs = final.dockerTools.otherScript == original.dockerTools.otherScript;
  # Everything but the streaming script and the layering is nixpkgs'.
  passed_through = builtins.all (n: final.dockerTools.${n} == original.dockerTools.${n}) [
    "buildImage"
    "pullImage"
    "examples"
  ];
  layers = if builtins.isAttrs image.layers then image.layers.kind or image.layers.name else image.layers;
  layers_script = if builtins.isAttrs image.layers then image.layers.script or null else null;
  same_as_nixpkgs = image == originalImage;
  has_package = final ? stream-layered-image;
}
