# An overlay: pkgs.stream-layered-image, and dockerTools.streamLayeredImage
# and dockerTools.buildLayeredImage built on it. Everything else in
# dockerTools (buildImage, pullImage, streamNixShellImage, ...) is nixpkgs'.
final: prev: {
  stream-layered-image = final.callPackage ./package.nix { };

  dockerTools =
    prev.dockerTools
    // builtins.removeAttrs (import ./nixpkgs.nix {
      pkgs = final;
      fallback = prev.dockerTools;
    }) [ "defaultArchitecture" ];
}
