;;; stream-layered-image: layered Docker images of Guix profiles, a stand-in
;;; for `guix pack -f docker --max-layers=N'.
;;;
;;; In a file for `guix build -f' (run with `-L guix' from this checkout):
;;;
;;;   (use-modules (guix profiles)            ;packages->manifest
;;;                (gnu packages base)        ;hello
;;;                (gnu packages bash)        ;bash
;;;                (stream-layered-image pack))
;;;
;;;   (manifest->layered-docker-image
;;;    "hello"
;;;    (packages->manifest (list hello bash))
;;;    #:max-layers 20                       ;the whole image, as guix pack counts
;;;    #:entry-point "bin/hello"
;;;    #:symlinks '(("/bin" -> "bin")))
;;;
;;; The image is a computed-file: its build gets the closure of the profile
;;; from #:references-graphs and runs (stream-layered-image spec) on it,
;;; with stream-layered-image as the build step.  Every program the build
;;; runs (the tool, the compressor, guile) is an argument whose default is
;;; Guix's package; the defaults are looked up only when they are used, so
;;; loading this module loads no (gnu packages ...) module.

(define-module (stream-layered-image pack)
  #:use-module (guix gexp)
  #:use-module (guix modules)
  #:use-module (guix monads)
  #:use-module ((guix derivations)
                #:select (built-derivations derivation->output-path))
  #:use-module (guix profiles)
  #:use-module (guix search-paths)
  #:use-module ((guix packages) #:select (package?))
  #:use-module ((guix store) #:select (%store-prefix %store-monad))
  #:use-module ((guix utils) #:select (%current-system))
  #:use-module ((stream-layered-image spec)
                #:select (system->docker-architecture
                          system->docker-variant
                          friendly-name
                          json->string
                          layer-digest-spec
                          layer-digest-arguments))
  #:use-module (json)
  #:use-module (srfi srfi-1)
  #:use-module (srfi srfi-9)
  #:use-module (ice-9 match)
  #:export (%compressors
            compressor-extension
            compressor-command
            layered-docker-image
            layered-image-spec
            multi-platform-layered-image
            manifest->layered-image-spec
            manifest->layered-docker-image))

(define (package-ref module name)
  "The variable NAME of MODULE, resolved when first needed: a (gnu packages
...) module costs seconds to load, and nothing needs it when the caller
passes every tool."
  (module-ref (resolve-interface module) name))

(define %compressors
  ;; name -> (extension package-module package program argument ...), with
  ;; the arguments guix pack uses.
  '((gzip ".gz" (gnu packages compression) gzip "gzip" "-9n")
    (zstd ".zst" (gnu packages compression) zstd "zstd" "-19" "-q")
    (xz ".xz" (gnu packages compression) xz "xz" "-e")
    (none "")))

(define (compressor-entry compressor)
  (or (assq-ref %compressors compressor)
      (error "unknown compressor (expected gzip, zstd, xz or none):"
             compressor)))

(define (compressor-extension compressor)
  "The file name extension of an image compressed with COMPRESSOR."
  (car (compressor-entry compressor)))

(define* (compressor-command compressor #:optional program)
  "A gexp of the command (PROGRAM ARGUMENT ...) that compresses with
COMPRESSOR, a symbol of %compressors, or #f for 'none.  PROGRAM is the
compressor's executable, a file-like object; by default, the program of
Guix's package."
  (match (compressor-entry compressor)
    ((extension) #f)
    ((extension module package-name executable . arguments)
     (let ((program (or program
                        (file-append (package-ref module package-name)
                                     "/bin/" executable))))
       #~(list #+program #$@arguments)))))

(define (tool-executable tool)
  ;; A package holds bin/stream-layered-image; anything else (a local-file,
  ;; a file-append) is the executable itself.
  (if (package? tool)
      (file-append tool "/bin/stream-layered-image")
      tool))

;; An image whose derivation needs its layering first: one record
;; derivation per store layer.  LAYERING is the file-like layering, MAKE a
;; procedure from the layers (lists of store file names) to the image.
(define-record-type <layer-digested-image>
  (layer-digested-image layering make)
  layer-digested-image?
  (layering layer-digested-image-layering)
  (make layer-digested-image-make))

(define-gexp-compiler (layer-digested-image-compiler
                       (image <layer-digested-image>) system target)
  ;; Which derivations the records need is known only from the layering,
  ;; so it is built now, while the image is lowered (as grafting builds
  ;; what it needs to look into).
  (mlet* %store-monad ((drv (lower-object (layer-digested-image-layering image)
                                          system #:target target))
                       (_ (built-derivations (list drv))))
    (let ((layers (call-with-input-file (derivation->output-path drv)
                    json->scm)))
      (lower-object ((layer-digested-image-make image)
                     (map vector->list (vector->list layers)))
                    system #:target target))))

(define (layered-docker-image name profile . arguments)
  "Return a file-like object: a Docker image archive (for `docker load') of
PROFILE, a <profile>, and its closure, in at most MAX-LAYERS layers counting
the customisation layer, as `guix pack -f docker --max-layers' does.
ARGUMENTS are keywords; see layered-image* for them."
  (apply layered-image* 'docker-archive name profile arguments))

(define (layered-image-spec name profile . arguments)
  "Return a file-like object: a directory holding the spec (spec.json) and
the customisation layer of the image layered-docker-image makes of PROFILE
with the same keyword ARGUMENTS (#:compressor aside), for
multi-platform-layered-image.  It refers to the image's closure, so the
store keeps it."
  (apply layered-image* 'spec name profile arguments))

(define* (multi-platform-layered-image name specs
                                       #:key
                                       (tool (package-ref '(stream-layered-image package)
                                                          'stream-layered-image))
                                       (sbom '())
                                       guile
                                       (local-build? #f))
  "Return a file-like object: an OCI image layout as a tar (an oci-archive,
for `skopeo copy --all oci-archive:FILE docker://...' or `podman load')
holding one image for each spec of SPECS, results of layered-image-spec
(one per system, each made with its #:system, or of a profile built for
that system), and an OCI image index naming each image with its platform.
Layers the images share are stored once.  SBOM is a list of SBOM formats
('spdx, 'cyclonedx): each image gets them as OCI artifacts in the layout."
  (define build
    #~(let ((status
             (apply system* #+(tool-executable tool)
                    (append (map (lambda (directory)
                                   (string-append directory "/spec.json"))
                                 (list #$@specs))
                            (list "--format" "oci-archive" "-o" #$output
                                  "--progress" "plain")
                            (if (null? '#$sbom)
                                '()
                                (list "--sbom"
                                      (string-join
                                       (map symbol->string '#$sbom) ",")))))))
        (unless (zero? (status:exit-val status))
          (error "stream-layered-image failed on the specs:" (list #$@specs)))))
  (apply computed-file (string-append name ".tar")
         build
         #:local-build? local-build?
         (if guile (list #:guile guile) '())))

(define* (layered-image* kind name profile
                         #:key
                         (tool (package-ref '(stream-layered-image package)
                                            'stream-layered-image))
                         (max-layers 100)
                         (strategy 'size)
                         hints
                         entry-point
                         (entry-point-arguments '())
                         (symlinks '())
                         image-tag
                         (compressor 'gzip)
                         compressor-program
                         (config '())
                         system
                         (locale "C.UTF-8")
                         guile
                         (local-build? #f)
                         explain?
                         (layer-digests? #f)
                         (layer-digest-compressions '("gzip")))
  "Return a file-like object of KIND: 'docker-archive, a Docker image
archive (for `docker load') of PROFILE, a <profile>, and its closure, in at
most MAX-LAYERS layers counting the customisation layer, as `guix pack -f
docker --max-layers' does; 'spec, a directory of the spec and the
customisation layer of that image.

STRATEGY chooses which store items share a layer: 'size (the default, Guix's
rule: the largest items get a layer each), 'default (stream-layered-image's
own, which keeps layers stable across updates; see its README),
'popularity or 'auto.  HINTS, when true, is a file-like object passed to
`stream-layered-image layers --hints'.  ENTRY-POINT is a file name relative
to the profile, run with ENTRY-POINT-ARGUMENTS; SYMLINKS are (SOURCE ->
TARGET) pairs, as `guix pack -S' takes them; the environment is the
profile's search paths.  IMAGE-TAG is the repository name (default: the
manifest's friendly name, as guix pack makes it); the tag is `latest'.
COMPRESSOR is one of 'gzip, 'zstd, 'xz or 'none.  CONFIG is an association
list of more entries of the image config (such as (\"WorkingDir\" .
\"/root\")).

The image's architecture (and variant, such as v8 for aarch64) is that of
SYSTEM, by default the system (or target) the image is built for, as `guix
build --system' sets it.  The
build runs in LOCALE (#f: the C locale), so that file names that are not
ASCII survive.

The programs: TOOL is the stream-layered-image package (or its executable,
a file-like object), COMPRESSOR-PROGRAM the compressor's executable
(default: from Guix's package), GUILE the guile package the build runs
with (default: Guix's).  LOCAL-BUILD? is passed on, as for any derivation;
guix pack offloads its image builds, so it is #f by default.

With LAYER-DIGESTS?, the spec carries `store_layer_digests', one record
per store layer with a blob for each of LAYER-DIGEST-COMPRESSIONS (as
`stream-layered-image digest --compress' takes them): the tool then
streams the image in one pass, and a push reads no layer the registry has.
The layering is built first, when the image is lowered, then each record
by a derivation of its layer's store items alone, which Guix keeps for as
long as they do not change.  The image's bytes are the same either way."
  (unless (boolean? layer-digests?)
    (error "layer-digests? must be #t or #f, not:" layer-digests?))
  (unless (and (list? layer-digest-compressions)
               (every string? layer-digest-compressions))
    (error "layer-digest-compressions must be a list of strings (such as \
\"gzip\" or \"zstd:3\"), not:" layer-digest-compressions))

  (define extension (compressor-extension compressor))

  (define compress
    ;; A spec is not compressed: the compressor is not even looked up.
    (and (eq? kind 'docker-archive)
         (compressor-command compressor compressor-program)))

  (define search-paths
    (map search-path-specification->sexp
         (manifest-search-paths (profile-content profile))))

  (define repository
    (or image-tag
        (friendly-name (map manifest-entry-name
                            (manifest-entries (profile-content profile))))))

  (define architecture
    (if system
        (system->docker-architecture system)
        (let-system (system target)
          (system->docker-architecture (or target system)))))

  (define variant
    (if system
        (system->docker-variant system)
        (let-system (system target)
          (system->docker-variant (or target system)))))

  (define (imported-module? name)
    ;; source-module-closure follows Guix's modules only by default.
    (match name
      (('stream-layered-image _ ...) #t)
      (_ (guix-module-name? name))))

  (define (build layering digests)
    ;; LAYERING: #f, or the file write-layering wrote, with DIGESTS the
    ;; record files of its store layers.
    (with-imported-modules (source-module-closure
                            '((stream-layered-image spec)
                              (guix search-paths))
                            #:select? imported-module?)
      #~(begin
          (use-modules (stream-layered-image spec)
                       (guix search-paths)
                       (ice-9 match))

          (when #$locale
            (setlocale LC_ALL #$locale))

          (define environment
            (map (match-lambda
                   ((spec . value)
                    (string-append (search-path-specification-variable spec)
                                   "=" value)))
                 (evaluate-search-paths
                  (map sexp->search-path-specification '#$search-paths)
                  (list #$profile))))

          (define config
            `(("Env" . ,(list->vector environment))
              ,@(if #$entry-point
                    `(("Entrypoint"
                       . ,(list->vector
                           (cons (string-append #$profile "/" #$entry-point)
                                 '#$entry-point-arguments))))
                    '())
              ,@'#$config))

          (build-layered-image
           #$output
           #:tool #+(tool-executable tool)
           ;; Written by #:references-graphs: the profile's closure.
           #:graph "profile"
           #:store-dir #$(%store-prefix)
           #:max-layers #$max-layers
           #:strategy '#$strategy
           #:hints #$hints
           #:explain? #$explain?
           #:config config
           #:architecture #$architecture
           #:variant #$variant
           #:spec-only? #$(eq? kind 'spec)
           #:repo-tag (string-append
                       (canonicalize-repository-name #$repository)
                       ":latest")
           #:profile #$profile
           #:symlinks '#$symlinks
           ;; As guix pack: the store directory itself is in the image.
           #:directories '(("/tmp" . #o1777) (#$(%store-prefix) . #o755))
           #:compressor #$compress
           ;; Only with layer digests, so that the derivation of an
           ;; image without them stays what it was.
           #$@(if layering
                  (list #:layers-file layering
                        #:layer-digests #~(list #$@digests))
                  '())))))

  (define (image layering digests)
    (apply computed-file (if (eq? kind 'spec)
                             (string-append name "-spec")
                             (string-append name ".tar" extension))
           (build layering digests)
           #:local-build? local-build?
           #:options `(#:references-graphs (("profile" ,profile)))
           (if guile (list #:guile guile) '())))

  (define layering
    (with-imported-modules (source-module-closure
                            '((stream-layered-image spec))
                            #:select? imported-module?)
      (apply computed-file (string-append name "-layers.json")
             #~(begin
                 (use-modules (stream-layered-image spec))
                 (write-layering #$output
                                 #:tool #+(tool-executable tool)
                                 #:graph "profile"
                                 #:max-layers #$max-layers
                                 #:strategy '#$strategy
                                 #:hints #$hints
                                 #:explain? #$explain?))
             #:local-build? local-build?
             #:options `(#:references-graphs (("profile" ,profile)))
             (if guile (list #:guile guile) '()))))

  (define (digest paths)
    (layer-digest-file tool paths layer-digest-compressions
                       #:guile guile
                       #:local-build? local-build?))

  (if layer-digests?
      (layer-digested-image layering
                            (lambda (layers)
                              (image layering (map digest layers))))
      (image #f '())))

(define* (layer-digest-file tool paths compressions
                            #:key guile (local-build? #f))
  "A file-like object: the record `stream-layered-image digest' takes of the
store layer of PATHS, for `store_layer_digests'.  Its derivation depends on
PATHS, TOOL and COMPRESSIONS only, not on the image or its other layers."
  (define spec
    (json->string (layer-digest-spec paths #:store-dir (%store-prefix))))
  (apply computed-file "stream-layered-image-layer-digest"
         #~(begin
             (use-modules (ice-9 popen) (rnrs io ports))
             ;; PATHS as the derivation's inputs: the store items to read.
             (define paths '#$paths)
             (call-with-output-file "spec.json"
               (lambda (port)
                 (set-port-encoding! port "UTF-8")
                 (put-string port #$spec)))
             (let* ((port (apply open-pipe* OPEN_READ #+(tool-executable tool)
                                 '#$(layer-digest-arguments "spec.json"
                                                            compressions)))
                    (record (get-string-all port)))
               (unless (and (zero? (status:exit-val (close-pipe port)))
                            (string-prefix? "{" record))
                 (error "stream-layered-image digest failed on:" paths))
               (call-with-output-file #$output
                 (lambda (out) (put-string out record)))))
         #:local-build? local-build?
         (if guile (list #:guile guile) '())))

(define* (manifest->layered-image-spec name manifest
                                       #:key system #:allow-other-keys
                                       #:rest arguments)
  "Like layered-image-spec, for the profile of MANIFEST, built for SYSTEM
when it is given (on a machine or offload target of that system, or with
QEMU's binfmt support), and otherwise for the system the image is built
for.  ARGUMENTS, SYSTEM among them, go to layered-image-spec."
  (let ((the-profile (profile (content manifest)
                              (name (string-append name "-profile")))))
    (apply layered-image-spec name
           (if system
               (with-parameters ((%current-system system)) the-profile)
               the-profile)
           arguments)))

(define* (manifest->layered-docker-image name manifest . args)
  "Like layered-docker-image, for the profile of MANIFEST."
  (apply layered-docker-image name
         (profile (content manifest) (name (string-append name "-profile")))
         args))
