;;; The Guix end-to-end test's Guix side, for tests/guix_e2e.rs.  It runs
;;; with the real Guix modules on the load path and a real guix-daemon
;;; listening (see scripts/guix-daemon):
;;;
;;;   guile --no-auto-compile -L GUIX-TREE -L guix tests/guix/e2e.scm ARGS
;;;
;;; ARGS is an association list, written as an S-expression, with the keys
;;; checkout, work (a directory for the inputs made here), busybox (a static
;;; busybox), tool (this project's executable), guile (a guile executable),
;;; gzip, zstd, builds (images of the module, see build-image),
;;; command-builds (images by guix docker-layered's options, see
;;; build-command-image), result (a file for the results, JSON) and,
;;; optionally, hints (a hints file), multi-builds (multi-platform
;;; images, see build-multi-platform-image) and layer-digests (images with
;;; #:layer-digests?, see build-layer-digests).
;;;
;;; It evaluates guix.scm and reports the package; runs the build phases
;;; the package adds, after the real cargo-build-system's configure; then
;;; builds images with (stream-layered-image pack) of a real profile, with
;;; the real #:references-graphs, each built twice (from two derivations,
;;; so that the Rust side can compare the bytes).  No package
;;; is built: every program comes in as an argument.

(use-modules (guix store)
             (guix gexp)
             (guix derivations)
             (guix monads)
             (guix profiles)
             (guix packages)
             (guix utils)
             (guix build-system)
             (guix base16)
             (stream-layered-image pack)
             (stream-layered-image spec)
             (guix extensions docker-layered)
             (srfi srfi-1)
             (srfi srfi-26)
             (ice-9 match))

(define args
  (call-with-input-string (cadr (command-line)) read))

(define (arg key)
  (match (assq key args)
    ((_ . value) value)
    (#f (error "e2e.scm: missing argument" key))))

(define checkout (arg 'checkout))
(define work (arg 'work))

(define (mkdir-p dir)
  (unless (or (string-null? dir) (file-exists? dir))
    (mkdir-p (dirname dir))
    (mkdir dir)))

(define (write-file file text)
  (mkdir-p (dirname file))
  (call-with-output-file file (lambda (port) (display text port))))

(define (copy-file* from to)
  (mkdir-p (dirname to))
  (copy-file from to))


;;;
;;; The package of guix.scm.
;;;

(define package
  (load (string-append checkout "/guix.scm")))

(define (origin-report origin)
  `(("uri" . ,(match (origin-uri origin)
                ((? string? uri) uri)
                ((uri . _) uri)))
    ("file_name" . ,(origin-file-name origin))
    ("sha256" . ,(bytevector->base16-string (content-hash-value
                                      (origin-hash origin))))))

(define (argument-keywords arguments)
  (let loop ((rest arguments) (acc '()))
    (match rest
      (((? keyword? k) _ . rest)
       (loop rest (cons (symbol->string (keyword->symbol k)) acc)))
      (() (reverse acc)))))

(define (keyword-value arguments key)
  (let loop ((rest arguments))
    (match rest
      (((? keyword? k) v . rest) (if (eq? k key) v (loop rest)))
      (() #f))))

;; The build phases the package adds, taken from its #:phases and run after
;; the real cargo-build-system's configure phase: whatever they do to the
;; environment is what zstd-sys's build script sees.
(define (zstd-phase-report)
  (define standard
    (map car (module-ref (resolve-interface '(guix build cargo-build-system))
                         '%standard-phases)))
  (let* ((phases-gexp (keyword-value (package-arguments package) #:phases))
         (sexp (and phases-gexp
                    (with-store store
                      (run-with-store store
                        ((@@ (guix gexp) gexp->sexp) phases-gexp
                         (%current-system) #f))))))
    (define module
      (let ((m (make-fresh-user-module)))
        (module-use! m (resolve-interface '(guix build utils)))
        (module-use! m (resolve-interface '(guix build cargo-build-system)))
        m))
    (if (not sexp)
        '(("phases" . null))
        (let* ((phases (eval sexp module))
               (names (map car phases)))
          ;; What cargo-build-system's configure phase sets.
          (setenv "ZSTD_SYS_USE_PKG_CONFIG" "1")
          (for-each (lambda (name)
                      (unless (memq name standard)
                        ((assq-ref phases name))))
                    (take-while (lambda (name) (not (eq? name 'build)))
                                (cdr (memq 'configure names))))
          `(("phases" . ,(list->vector (map symbol->string names)))
            ("zstd_sys_use_pkg_config_after_configure"
             . ,(or (getenv "ZSTD_SYS_USE_PKG_CONFIG") 'null)))))))

(define package-report
  `(("name" . ,(package-name package))
    ("version" . ,(package-version package))
    ("build_system" . ,(symbol->string
                        (build-system-name (package-build-system package))))
    ("argument_keywords"
     . ,(list->vector (argument-keywords (package-arguments package))))
    ("cargo_test_flags"
     . ,(match (keyword-value (package-arguments package) #:cargo-test-flags)
          (('quote (flags ...)) (list->vector flags))
          ((flags ...) (list->vector flags))
          (_ 'null)))
    ("install_source"
     . ,(keyword-value (package-arguments package) #:install-source?))
    ("origins"
     . ,(list->vector
         (filter-map (match-lambda
                       ((label (? origin? o)) (origin-report o))
                       ((label (? origin? o) _) (origin-report o))
                       ((? origin? o) (origin-report o))
                       (_ #f))
                     (package-inputs package))))
    ("zstd" . ,(zstd-phase-report))))


;;;
;;; Store inputs that need no building.
;;;

(define store (open-connection))

;; A directory holding bin/busybox and its applets: the builder of the
;; derivations below, and an entry of the profile.
(define busybox-dir
  (let ((dir (string-append work "/busybox")))
    (copy-file* (arg 'busybox) (string-append dir "/bin/busybox"))
    (chmod (string-append dir "/bin/busybox") #o555)
    (for-each (lambda (applet)
                (symlink "busybox" (string-append dir "/bin/" applet)))
              '("sh" "cat" "echo"))
    dir))

(define busybox-item
  (add-to-store store "busybox" #t "sha256" busybox-dir))

;; Guile for the build side: Guix's own cannot be built here.  A copy of
;; the real binary, not a wrapper script (busybox sh drops the variables
;; with spaces in their names that Guix sets).
(define guile-drv
  (let ((binary (add-to-store store "guile" #f "sha256" (arg 'guile))))
    (derivation store "guile-3.0"
                (string-append busybox-item "/bin/busybox")
                `("sh" "-c"
                  ,(string-append "b=" busybox-item "/bin/busybox; "
                                  "$b mkdir -p $out/bin && "
                                  "$b cp " binary " $out/bin/guile && "
                                  "$b chmod 555 $out/bin/guile"))
                #:sources (list busybox-item binary))))

;; The app: a script, a message, and a data file large enough to order
;; the store items by size.
(define app-dir
  (let ((dir (string-append work "/app")))
    (write-file (string-append dir "/bin/app")
                "#!/bin/sh\necho \"app: $(cat \"$(dirname \"$0\")/../share/app/message\")\"\n")
    (chmod (string-append dir "/bin/app") #o555)
    (write-file (string-append dir "/share/app/message") "hello from a Guix profile\n")
    (write-file (string-append dir "/share/app/data")
                (make-string 300000 #\a))
    dir))

(define* (make-data-dir #:optional (name "data") (extra ""))
  (let ((dir (string-append work "/" name)))
    (write-file (string-append dir "/share/data/blob")
                (string-append (make-string 120000 #\d) extra))
    dir))

(define data-dir (make-data-dir))

(define (manifest-with-data data-dir)
  (manifest
   (list (manifest-entry
           (name "app") (version "1.0")
           (item (local-file app-dir "app" #:recursive? #t)))
         (manifest-entry
           (name "busybox") (version "1.36")
           (item (local-file busybox-dir "busybox" #:recursive? #t)))
         (manifest-entry
           (name "data") (version "1.0")
           (item (local-file data-dir "data" #:recursive? #t))))))

(define the-manifest (manifest-with-data data-dir))

(define (profile-of manifest)
  (profile (content manifest) (hooks '()) (locales? #f)))

(define the-profile (profile-of the-manifest))

(define (executable file name)
  (local-file file name #:recursive? #t))

(define tool (executable (arg 'tool) "stream-layered-image"))

(define compressor-programs
  `((gzip . ,(executable (arg 'gzip) "gzip"))
    (zstd . ,(executable (arg 'zstd) "zstd"))
    (none . #f)))


;;;
;;; Images.
;;;

(define* (image-derivation name compressor max-layers keywords
                           #:key (profile the-profile)
                           (make layered-docker-image))
  ;; The symbol hints-file among KEYWORDS stands for the file the hints
  ;; argument names, as a local-file.
  (define keywords*
    (map (lambda (x)
           (if (eq? x 'hints-file) (local-file (arg 'hints) "hints.json") x))
         keywords))
  (let ((image (apply make name profile
                      #:tool tool
                      #:guile guile-drv
                      #:compressor compressor
                      #:compressor-program
                      (assq-ref compressor-programs compressor)
                      #:max-layers max-layers
                      #:entry-point "bin/app"
                      #:symlinks '(("/bin" -> "bin")
                                   ("/café" -> "share/app"))
                      keywords*)))
    (parameterize ((%guile-for-build guile-drv))
      (run-with-store store (lower-object image)))))

(define (build-image spec)
  ;; SPEC: (NAME COMPRESSOR MAX-LAYERS KEYWORD-ARGUMENTS...).  Each image is
  ;; built twice, from two derivations that differ in their name only (this
  ;; daemon, without a chroot, cannot `--check'): the second build starts
  ;; from scratch, and its bytes must be the first's.
  (match spec
    ((name compressor max-layers . keywords)
     (let* ((drv (image-derivation name compressor max-layers keywords))
            (again (image-derivation (string-append name "-again")
                                     compressor max-layers keywords))
            (start (get-internal-real-time)))
       (build-derivations store (list drv))
       (let ((seconds (exact->inexact
                       (/ (- (get-internal-real-time) start)
                          internal-time-units-per-second))))
         (build-derivations store (list again))
         `(("name" . ,name)
           ("compressor" . ,(symbol->string compressor))
           ("max_layers" . ,max-layers)
           ("output" . ,(derivation->output-path drv))
           ("again" . ,(derivation->output-path again))
           ("local_build" . ,(or (assoc-ref (derivation-builder-environment-vars drv)
                                            "preferLocalBuild")
                                 'null))
           ("milliseconds" . ,(inexact->exact (round (* 1000 seconds))))))))))

;; `guix docker-layered' images: the command's own option parsing and image,
;; from a manifest file of the same entries.  COMMAND-BUILDS: a list of (NAME
;; ARGUMENT ...), where the argument "MANIFEST" stands for that file.
(define manifest-file
  (let ((file (string-append work "/manifest.scm")))
    (call-with-output-file file
      (lambda (port)
        (write `(manifest
                 (list ,@(map (match-lambda
                                ((name version dir)
                                 `(manifest-entry
                                    (name ,name) (version ,version)
                                    (item (local-file ,dir ,name
                                                      #:recursive? #t)))))
                              `(("app" "1.0" ,app-dir)
                                ("busybox" "1.36" ,busybox-dir)
                                ("data" "1.0" ,data-dir)))))
               port)))
    file))

(define (build-command-image spec)
  (match spec
    ((name . arguments)
     (let* ((opts (parse-docker-layered-arguments
                   (map (lambda (a) (if (equal? a "MANIFEST") manifest-file a))
                        arguments)))
            (image (options->layered-image
                    opts
                    ;; What a manifest file here can use without loading
                    ;; (gnu), and a profile that needs no package built.
                    #:user-modules '((guix profiles) (guix gexp))
                    #:profile-hooks '()
                    #:locales? #f
                    #:image-keywords
                    `(#:guile ,guile-drv
                      #:compressor-program
                      ,(assq-ref compressor-programs
                                 (assq-ref opts 'compressor)))))
            (drv (parameterize ((%guile-for-build guile-drv))
                   (run-with-store store (lower-object image)))))
       (build-derivations store (list drv))
       `(("name" . ,name)
         ("output" . ,(derivation->output-path drv)))))))

(define profile-item
  (parameterize ((%guile-for-build guile-drv))
    (let ((drv (run-with-store store (lower-object the-profile))))
      (build-derivations store (list drv))
      (derivation->output-path drv))))

(define images
  (map build-image (arg 'builds)))

;; Multi-platform images: MULTI-BUILDS is a list of (NAME (SYSTEM ...)
;; KEYWORD-ARGUMENTS...).  The profile's spec is made once per system, each
;; with that #:system (this daemon builds for its own system only, and the
;; test profile holds no compiled code), then one multi-platform image of
;; them all.
(define (build-multi-platform-image spec)
  (match spec
    ((name systems . keywords)
     (let* ((specs (map (lambda (system)
                          (layered-image-spec (string-append name "-" system)
                                              the-profile
                                              #:tool tool
                                              #:guile guile-drv
                                              #:max-layers 4
                                              #:entry-point "bin/app"
                                              #:system system))
                        systems))
            (image (apply multi-platform-layered-image name specs
                          #:tool tool
                          #:guile guile-drv
                          keywords))
            (drv (parameterize ((%guile-for-build guile-drv))
                   (run-with-store store (lower-object image)))))
       (build-derivations store (list drv))
       `(("name" . ,name)
         ("output" . ,(derivation->output-path drv)))))))

;; Layer digests: LAYER-DIGESTS is (NAME MAX-LAYERS TOKEN).  The image
;; with #:layer-digests? and without (to compare the bytes), the spec with
;; them; then the spec of a profile whose data holds TOKEN (a store item
;; that no earlier run made), with the record derivations that its build
;; has to build, as Guix's build plan names them, before it builds them.
(define (record-derivation? drv)
  (string-suffix? "-stream-layered-image-layer-digest.drv"
                  (derivation-file-name drv)))

(define (records-to-build drv)
  (filter record-derivation?
          (derivation-build-plan store (list (derivation-input drv))
                                 #:substitutable-info (const #f))))

(define (build-layer-digests spec)
  (match spec
    ((name max-layers token)
     (let* ((digested '(#:layer-digests? #t
                        #:layer-digest-compressions ("gzip:5" "zstd:3")))
            (plain (image-derivation (string-append name "-plain")
                                     'none max-layers '()))
            (image (image-derivation name 'none max-layers digested))
            (spec (image-derivation name 'none max-layers digested
                                    #:make layered-image-spec))
            (first-records (records-to-build spec)))
       (build-derivations store (list plain image spec))
       (let* ((changed-profile
               (profile-of (manifest-with-data
                            (make-data-dir "data-changed" token))))
              (changed (image-derivation name 'none max-layers digested
                                         #:profile changed-profile
                                         #:make layered-image-spec))
              (changed-records (records-to-build changed)))
         (build-derivations store (list changed))
         (report-layer-digests plain image spec first-records
                               changed changed-records))))))

(define (report-layer-digests plain image spec first-records
                              changed changed-records)
  (for-each (lambda (drv)
              (unless (every (cut valid-path? store <>)
                             (derivation-output-paths drv))
                (error "a record derivation was not built:"
                       (derivation-file-name drv))))
            changed-records)
  `(("plain" . ,(derivation->output-path plain))
    ("image" . ,(derivation->output-path image))
    ("spec" . ,(derivation->output-path spec))
    ("first_records_built" . ,(length first-records))
    ("changed_spec" . ,(derivation->output-path changed))
    ("changed_records_built" . ,(length changed-records))
    ("bad_keyword_error" . ,(bad-layer-digests-error))
    ;; The changed spec's record derivations, built then or before.
    ("record_derivations"
     . ,(list->vector
         (map derivation-file-name
              (filter record-derivation?
                      (map derivation-input-derivation
                           (derivation-inputs changed))))))))

;; The message a #:layer-digests? that is not a boolean gets.
(define (bad-layer-digests-error)
  (catch #t
    (lambda ()
      (layered-docker-image "bad" the-profile #:tool tool
                            #:layer-digests? 'yes)
      'null)
    (lambda (key . args)
      (match args
        ((who message arguments . _)
         (apply format #f message arguments))))))

(define (derivation-output-paths drv)
  (map (match-lambda ((_ . output) (derivation-output-path output)))
       (derivation-outputs drv)))

(define (store-items)
  ;; The profile's closure, as the daemon knows it.
  (requisites store (list profile-item)))

(call-with-output-file (arg 'result)
  (lambda (port)
    (set-port-encoding! port "UTF-8")
    (write-json
     `(("package" . ,package-report)
       ("profile" . ,profile-item)
       ("closure" . ,(list->vector (store-items)))
       ("images" . ,(list->vector images))
       ("layer_digests"
        . ,(match (assq 'layer-digests args)
             ((_ . spec) (build-layer-digests spec))
             (#f 'null)))
       ("multi_platform_images"
        . ,(list->vector (map build-multi-platform-image
                              (match (assq 'multi-builds args)
                                ((_ . builds) builds)
                                (#f '())))))
       ("command_images"
        . ,(list->vector (map build-command-image
                              (match (assq 'command-builds args)
                                ((_ . builds) builds)
                                (#f '()))))))
     port)
    (newline port)))

(close-connection store)
