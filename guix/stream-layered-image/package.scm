;;; stream-layered-image: the Guix package, built from this checkout with
;;; cargo-build-system.  Its crate inputs are read from Cargo.lock.
;;;
;;;   guix build -f guix.scm
;;;   guix build -L guix stream-layered-image

(define-module (stream-layered-image package)
  #:use-module (guix packages)
  #:use-module (guix gexp)
  #:use-module (guix download)
  #:use-module (guix git-download)
  #:use-module (guix base16)
  #:use-module (guix utils)
  #:use-module (guix build-system cargo)
  #:use-module ((guix licenses) #:prefix license:)
  #:use-module (stream-layered-image cargo-lock)
  #:use-module (ice-9 match)
  #:export (stream-layered-image))

;; The checkout: two levels up from guix/stream-layered-image/.
(define %checkout
  (dirname (dirname (current-source-directory))))

(define (checkout-file name)
  (string-append %checkout "/" name))

(define (crate-origin name version checksum)
  "The .crate file of NAME at VERSION from crates.io; CHECKSUM is the
hexadecimal sha256 Cargo.lock records for it."
  (origin
    (method url-fetch)
    (uri (crate-uri name version))
    (file-name (string-append "rust-" name "-" version ".tar.gz"))
    (hash (content-hash (base16-string->bytevector checksum) sha256))))

(define %crates
  (map (match-lambda
         ((name version checksum) (crate-origin name version checksum)))
       (call-with-input-file (checkout-file "Cargo.lock")
         cargo-lock-registry-crates)))

(define %version
  (call-with-input-file (checkout-file "Cargo.toml")
    (lambda (port) (cargo-toml-package-field port "version"))))

(define (source-file? file stat)
  ;; Without Git (a tarball of the sources), everything but build outputs.
  (not (member (basename file) '("target" ".git" "result"))))

(define stream-layered-image
  (package
    (name "stream-layered-image")
    (version %version)
    (source (local-file %checkout "stream-layered-image-checkout"
                        #:recursive? #t
                        #:select? (or (git-predicate %checkout)
                                      source-file?)))
    (build-system cargo-build-system)
    (arguments
     (list #:install-source? #f
           ;; The integration tests drive docker, podman, nix-build and
           ;; guile, which the build environment does not have.
           #:cargo-test-flags ''("--lib" "--bins")))
    (inputs %crates)
    (home-page #f)                      ;no public home page yet
    (synopsis "Stream layered container images of store items")
    (description
     "stream-layered-image writes a layered Docker image archive of Guix or
Nix store items to its standard output, from a JSON spec: the format of
nixpkgs' @code{streamLayeredImage}.  Its @command{layers} command splits a
closure into layers from a references graph.")
    (license license:expat)))
