# The default overlay (see overlays.nix): nixpkgs' dockerTools with this
# tool as the engine of streamLayeredImage, and pkgs.stream-layered-image.
(import ./overlays.nix).default
