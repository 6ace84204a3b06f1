{
  description = "stream-layered-image: layered container images from Nix store paths, with dockerTools.streamLayeredImage and buildLayeredImage built on it";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # streamLayeredImage and buildLayeredImage for a package set.
      dockerToolsFor =
        pkgs:
        import ./nix/nixpkgs.nix {
          inherit pkgs;
          stream-layered-image = self.packages.${pkgs.stdenv.buildPlatform.system}.stream-layered-image;
          # includeNixDB images are nixpkgs' own.
          fallback = pkgs.dockerTools;
        };
    in
    {
      packages = forAllSystems (pkgs: {
        stream-layered-image = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.stream-layered-image;
      });

      # nixpkgs' own dockerTools with this tool as the engine of
      # streamLayeredImage (the same images, byte for byte), and
      # pkgs.stream-layered-image; with-layering also replaces nixpkgs'
      # dockerAutoLayer (see nix/overlays.nix).
      overlays = import ./nix/overlays.nix;

      # lib.<system>.streamLayeredImage / buildLayeredImage: nixpkgs'
      # interface (plus layeringStrategy), for nixpkgs.legacyPackages.<system>.
      # lib.dockerToolsFor pkgs: the same for another package set.
      # lib.core: the nixpkgs-independent builder (nix/core.nix), which takes
      # its tools as arguments.
      lib = forAllSystems dockerToolsFor // {
        inherit dockerToolsFor;
        core = import ./nix/core.nix;
      };

      checks = forAllSystems (
        pkgs:
        let
          sli = dockerToolsFor pkgs;
        in
        {
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.stream-layered-image;
        }
        // nixpkgs.lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          # An image of GNU hello, written into the store.
          hello-image = sli.buildLayeredImage {
            name = "hello";
            tag = "latest";
            contents = [ pkgs.hello ];
            config.Cmd = [ "/bin/hello" ];
          };
        }
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
