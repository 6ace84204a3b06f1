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
hexadecimal sha256 Cargo.lock records for it.  The file is named as Guix
names a crate's source (crate-name->package-name: `rust-', lower case, `_'
and `.' as `-'), so it is the same store item as Guix's own crate package's
source."
  (origin
    (method url-fetch)
    (uri (crate-uri name version))
    (file-name (string-append (downstream-package-name "rust-" name)
                              "-" version ".tar.gz"))
    (hash (content-hash (base16-string->bytevector checksum) sha256))))

(define %crates
  (map (match-lambda
         ((name version checksum) (crate-origin name version checksum)))
       (call-with-input-file (checkout-file "Cargo.lock")
         cargo-lock-registry-crates)))

(define %version
  (call-with-input-file (checkout-file "Cargo.toml")
    (lambda (port) (cargo-toml-package-field port "version"))))

;; The oldest rustc that builds Cargo.lock's crates: the newest rust-version
;; among them (their own Cargo.toml files say it; Cargo.lock does not), or
;; this package's, whichever is newer.  tests/guix_e2e.rs keeps it equal to
;; what the locked crates say, and compares it with Guix's rust.
(define %locked-crates-rust-version "1.82")

(define %rust-version
  (let ((own (call-with-input-file (checkout-file "Cargo.toml")
               (lambda (port) (cargo-toml-package-field port "rust-version")))))
    (if (version>? own %locked-crates-rust-version)
        own
        %locked-crates-rust-version)))

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
           #:cargo-test-flags ''("--lib" "--bins")
           #:phases
           #~(modify-phases %standard-phases
               (add-before 'build 'check-rustc-version
                 ;; An older rustc fails deep in some crate's build; say
                 ;; what is needed instead.  Pass #:rust to build with
                 ;; another one.
                 (lambda _
                   (define (numbers version)
                     (map (lambda (n) (or (string->number n) 0))
                          (string-split version #\.)))
                   (define (older? a b)
                     (let loop ((a (numbers a)) (b (numbers b)))
                       (cond ((null? b) #f)
                             ((null? a) #t)
                             ((< (car a) (car b)) #t)
                             ((> (car a) (car b)) #f)
                             (else (loop (cdr a) (cdr b))))))
                   (let* ((port ((@ (ice-9 popen) open-pipe*) OPEN_READ
                                 "rustc" "--version"))
                          (line ((@ (ice-9 rdelim) read-line) port))
                          (version (cadr (string-split line #\space))))
                     ((@ (ice-9 popen) close-pipe) port)
                     (when (older? version #$%rust-version)
                       (error (string-append
                               "rustc " version " is older than "
                               #$%rust-version ", the rust-version that "
                               "Cargo.lock's crates need; pass #:rust"))))))
               (add-after 'configure 'use-bundled-zstd
                 ;; cargo-build-system asks zstd-sys to link the system's
                 ;; zstd through pkg-config.  The crate's own copy instead:
                 ;; zstd-compressed layers are then the same bytes as those
                 ;; of a build by cargo or Nix, whatever zstd Guix has.
                 (lambda _
                   (unsetenv "ZSTD_SYS_USE_PKG_CONFIG")))
               (add-after 'install 'install-completions-and-man-page
                 ;; Generated by the tool from its own command line
                 ;; declaration, so they always match this version.
                 (lambda* (#:key outputs #:allow-other-keys)
                   (let* ((out (assoc-ref outputs "out"))
                          (tool (string-append out "/bin/stream-layered-image")))
                     (for-each
                      (lambda (file arguments)
                        (let ((file (string-append out file)))
                          (mkdir-p (dirname file))
                          (invoke "sh" "-c"
                                  (string-append tool " " arguments " > " file))))
                      '("/share/bash-completion/completions/stream-layered-image"
                        "/share/zsh/site-functions/_stream-layered-image"
                        "/share/fish/vendor_completions.d/stream-layered-image.fish"
                        "/share/man/man1/stream-layered-image.1")
                      '("completions bash" "completions zsh" "completions fish"
                        "man"))))))))
    (inputs %crates)
    (home-page #f)                      ;no public home page yet
    (synopsis "Stream layered container images of store items")
    (description
     "stream-layered-image writes a layered Docker image archive of Guix or
Nix store items to its standard output, from a JSON spec: the format of
nixpkgs' @code{streamLayeredImage}.  Its @command{layers} command splits a
closure into layers from a references graph.")
    (license license:expat)))
