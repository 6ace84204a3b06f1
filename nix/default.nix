# For users without flakes:
#
#   nix-build nix -A stream-layered-image
#   let sli = import ./nix { inherit pkgs; };
#   in sli.streamLayeredImage { name = "hello"; config.Cmd = [ "${pkgs.hello}/bin/hello" ]; }
{
  pkgs ? import <nixpkgs> { },
}:

let
  stream-layered-image = pkgs.callPackage ./package.nix { };
  dockerTools = import ./nixpkgs.nix {
    inherit pkgs;
    stream-layered-image = pkgs.buildPackages.callPackage ./package.nix { };
    # includeNixDB images are nixpkgs' own.
    fallback = pkgs.dockerTools;
  };
in
{
  inherit stream-layered-image;
  inherit (dockerTools) streamLayeredImage buildLayeredImage;
  # The nixpkgs-independent builder (see core.nix) and the overlays.
  core = import ./core.nix;
  overlay = import ./overlay.nix;
  overlays = import ./overlays.nix;
}
