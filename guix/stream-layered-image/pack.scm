;;; stream-layered-image: layered Docker images of Guix profiles, a stand-in
;;; for `guix pack -f docker --max-layers=N'.
;;;
;;; In a file for `guix build -f' (run with `-L guix' from this checkout):
;;;
;;;   (use-modules (gnu) (stream-layered-image pack))
;;;   (use-package-modules base bash)
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
;;; with stream-layered-image as the build step.

(define-module (stream-layered-image pack)
  #:use-module (guix gexp)
  #:use-module (guix modules)
  #:use-module (guix profiles)
  #:use-module (guix search-paths)
  #:use-module ((guix store) #:select (%store-prefix))
  #:use-module (gnu packages base)
  #:use-module (gnu packages compression)
  #:use-module (stream-layered-image package)
  #:use-module ((stream-layered-image spec)
                #:select (system->docker-architecture))
  #:use-module (ice-9 match)
  #:export (layered-docker-image
            manifest->layered-docker-image))

(define %compressors
  ;; name -> (extension . command), as guix pack names them.
  `((gzip ".gz" ,(file-append gzip "/bin/gzip") "-9n")
    (zstd ".zst" ,(file-append zstd "/bin/zstd") "-19" "-q")
    (xz ".xz" ,(file-append xz "/bin/xz") "-e")
    (none "")))

(define* (layered-docker-image name profile
                               #:key
                               (tool stream-layered-image)
                               (max-layers 100)
                               (strategy 'size)
                               entry-point
                               (entry-point-arguments '())
                               (symlinks '())
                               image-tag
                               (compressor 'gzip)
                               (config '())
                               (system (%current-system))
                               explain?)
  "Return a file-like object: a Docker image archive (for `docker load') of
PROFILE, a <profile>, and its closure, in at most MAX-LAYERS layers counting
the customisation layer, as `guix pack -f docker --max-layers' does.

STRATEGY chooses which store items share a layer: 'size (the default, Guix's
rule: the largest items get a layer each), 'default (stream-layered-image's
own, which keeps layers stable across updates; see its README),
'popularity or 'auto.  ENTRY-POINT is a file name relative to the profile,
run with ENTRY-POINT-ARGUMENTS; SYMLINKS are (SOURCE -> TARGET) pairs, as
`guix pack -S' takes them; the environment is the profile's search paths.
IMAGE-TAG is the repository name (default: NAME).  COMPRESSOR is one of
'gzip, 'zstd, 'xz or 'none.  CONFIG is an association list of more entries
of the image config (such as (\"WorkingDir\" . \"/root\")).  TOOL is the
stream-layered-image package."
  (define compression
    (or (assq-ref %compressors compressor)
        (error "unknown compressor (expected gzip, zstd, xz or none):"
               compressor)))

  (define compressor-command
    (match (cdr compression)
      ((extension) #f)
      ((extension . command) #~(list #+@command))))

  (define search-paths
    (map search-path-specification->sexp
         (manifest-search-paths (profile-content profile))))

  (define (imported-module? name)
    ;; source-module-closure follows Guix's modules only by default.
    (match name
      (('stream-layered-image _ ...) #t)
      (_ (guix-module-name? name))))

  (define build
    (with-imported-modules (source-module-closure
                            '((stream-layered-image spec)
                              (guix search-paths))
                            #:select? imported-module?)
      #~(begin
          (use-modules (stream-layered-image spec)
                       (guix search-paths)
                       (ice-9 match))

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
           #:tool #+(file-append tool "/bin/stream-layered-image")
           ;; Written by #:references-graphs: the profile's closure.
           #:graph "profile"
           #:store-dir #$(%store-prefix)
           #:max-layers #$max-layers
           #:strategy '#$strategy
           #:explain? #$explain?
           #:config config
           #:architecture #$(system->docker-architecture system)
           #:repo-tag (string-append
                       (canonicalize-repository-name #$(or image-tag name))
                       ":latest")
           #:profile #$profile
           #:symlinks '#$symlinks
           #:tar #+(file-append tar "/bin/tar")
           #:sha256sum #+(file-append coreutils "/bin/sha256sum")
           #:compressor #$compressor-command))))

  (computed-file (string-append name ".tar" (car compression))
                 build
                 #:options `(#:references-graphs (("profile" ,profile)))))

(define* (manifest->layered-docker-image name manifest . args)
  "Like layered-docker-image, for the profile of MANIFEST."
  (apply layered-docker-image name
         (profile (content manifest) (name (string-append name "-profile")))
         args))
