;;; `guix docker-layered': layered Docker images of packages or a manifest,
;;; as `guix pack -f docker --max-layers=N' makes them, built by
;;; (stream-layered-image pack).  A Guix extension:
;;;
;;;   export GUIX_EXTENSIONS_PATH=$CHECKOUT/guix/guix/extensions
;;;   guix docker-layered --max-layers=20 -S /bin=bin --entry-point=bin/hello hello
;;;   docker load < $(guix docker-layered -m manifest.scm --strategy=default)
;;;
;;; It takes guix pack's options where they apply (-S, --entry-point,
;;; --entry-point-argument, -C, -m, --image-tag, --system, --target,
;;; -r), and --strategy, --hints, --layer-digests and --tool of its own.  The modules under
;;; guix/ of the checkout are found from this file's place.

(eval-when (expand load eval)
  ;; guix/guix/extensions/docker-layered.scm -> guix/.  (No file name when
  ;; the compiler reads the file from elsewhere; the load path has the
  ;; modules then.)
  (let ((file (current-filename)))
    (when file
      (let ((modules (dirname (dirname (dirname file)))))
        (unless (member modules %load-path)
          (add-to-load-path modules))))))

(define-module (guix extensions docker-layered)
  #:use-module (guix ui)
  #:use-module (guix scripts)
  #:use-module (guix store)
  #:use-module (guix monads)
  #:use-module (guix gexp)
  #:use-module (guix derivations)
  #:use-module (guix profiles)
  #:use-module (guix utils)
  #:use-module (stream-layered-image pack)
  #:use-module ((stream-layered-image spec) #:select (friendly-name))
  #:use-module (srfi srfi-1)
  #:use-module (srfi srfi-37)
  #:use-module (ice-9 match)
  #:export (docker-layered-options
            parse-docker-layered-arguments
            options->layered-image
            guix-docker-layered))

(define %default-options
  '((max-layers . 100)
    (strategy . size)
    (compressor . gzip)
    (symlinks . ())
    (entry-point-arguments . ())))

(define (show-help)
  (display "Usage: guix docker-layered [OPTION]... PACKAGE...
Make a layered Docker image of PACKAGE... (or of a manifest), with at most
N layers, as 'guix pack -f docker --max-layers=N' does.\n")
  (display "
      --max-layers=N     at most N layers, the customisation layer included
                         (default: 100)
      --strategy=S       which store items share a layer: size (guix pack's
                         rule, the default), default, popularity or auto
      --hints=FILE       a hints file for 'stream-layered-image layers'
      --layer-digests    record each store layer's digests in the spec, one
                         derivation per layer (see 'stream-layered-image
                         digest')
  -m, --manifest=FILE    the packages of the manifest in FILE
  -S, --symlink=SPEC     make SPEC, of the form SOURCE=TARGET, in the image
      --entry-point=PROGRAM
                         PROGRAM, relative to the profile, is the entry point
      --entry-point-argument=ARG
                         append ARG to the entry point's arguments
  -C, --compression=TOOL gzip (the default), zstd, xz or none
      --image-tag=NAME   the repository name (default: from the packages)
  -s, --system=SYSTEM    build for SYSTEM, e.g. \"aarch64-linux\"
      --target=TRIPLET   declare the image for TRIPLET
      --tool=FILE        the stream-layered-image executable to build with
  -r, --root=FILE        make FILE a symlink to the image, a GC root
  -h, --help             display this help and exit\n"))

(define (symlink-spec arg)
  (match (string-split arg #\=)
    ((source target)
     (when (string-prefix? "/" target)
       (leave (G_ "symlink target is absolute: '~a'~%") target))
     `(,source -> ,target))
    (_ (leave (G_ "~a: invalid symlink specification~%") arg))))

(define (alist-set key value alist)
  (alist-cons key value (alist-delete key alist eq?)))

(define docker-layered-options
  (list (option '(#\h "help") #f #f
                (lambda _ (show-help) (exit 0)))
        (option '("max-layers") #t #f
                (lambda (opt name arg result)
                  (let ((n (string->number arg)))
                    (unless (and (exact-integer? n) (>= n 2))
                      (leave (G_ "--max-layers: ~a: expected an integer of \
at least 2~%") arg))
                    (alist-set 'max-layers n result))))
        (option '("strategy") #t #f
                (lambda (opt name arg result)
                  (let ((s (string->symbol arg)))
                    (unless (memq s '(size default popularity auto))
                      (leave (G_ "--strategy: ~a: expected size, default, \
popularity or auto~%") arg))
                    (alist-set 'strategy s result))))
        (option '("hints") #t #f
                (lambda (opt name arg result)
                  (unless (file-exists? arg)
                    (leave (G_ "--hints: ~a: no such file~%") arg))
                  (alist-set 'hints arg result)))
        (option '("layer-digests") #f #f
                (lambda (opt name arg result)
                  (alist-set 'layer-digests? #t result)))
        (option '(#\m "manifest") #t #f
                (lambda (opt name arg result)
                  (alist-cons 'manifest arg result)))
        (option '(#\S "symlink") #t #f
                (lambda (opt name arg result)
                  (alist-set 'symlinks
                             (append (assq-ref result 'symlinks)
                                     (list (symlink-spec arg)))
                             result)))
        (option '("entry-point") #t #f
                (lambda (opt name arg result)
                  (alist-set 'entry-point arg result)))
        (option '("entry-point-argument") #t #f
                (lambda (opt name arg result)
                  (alist-set 'entry-point-arguments
                             (append (assq-ref result 'entry-point-arguments)
                                     (list arg))
                             result)))
        (option '(#\C "compression") #t #f
                (lambda (opt name arg result)
                  (let ((c (string->symbol arg)))
                    (unless (memq c (map car %compressors))
                      (leave (G_ "--compression: ~a: expected gzip, zstd, \
xz or none~%") arg))
                    (alist-set 'compressor c result))))
        (option '("image-tag") #t #f
                (lambda (opt name arg result)
                  (alist-set 'image-tag arg result)))
        (option '(#\s "system") #t #f
                (lambda (opt name arg result)
                  (alist-set 'system arg result)))
        (option '("target") #t #f
                (lambda (opt name arg result)
                  (alist-set 'target arg result)))
        (option '("tool") #t #f
                (lambda (opt name arg result)
                  (unless (file-exists? arg)
                    (leave (G_ "--tool: ~a: no such file~%") arg))
                  (alist-set 'tool arg result)))
        (option '(#\r "root") #t #f
                (lambda (opt name arg result)
                  (alist-set 'root arg result)))))

(define (parse-docker-layered-arguments args)
  "The options of ARGS, the command line after `docker-layered', as an
association list; each PACKAGE is an (argument . SPEC) entry."
  (args-fold args docker-layered-options
             (lambda (opt name arg result)
               (leave (G_ "~a: unrecognized option~%") name))
             (lambda (arg result)
               (alist-cons 'argument arg result))
             %default-options))

(define* (options->manifest opts #:key (user-modules '((guix profiles) (gnu))))
  (let ((specs (reverse (filter-map (match-lambda
                                      (('argument . spec) spec)
                                      (_ #f))
                                    opts)))
        (manifests (reverse (filter-map (match-lambda
                                          (('manifest . file) file)
                                          (_ #f))
                                        opts))))
    (cond
     ((and (pair? specs) (pair? manifests))
      (leave (G_ "both a manifest and a package list were given~%")))
     ((pair? manifests)
      (concatenate-manifests
       (map (lambda (file)
              (load* file (make-user-module user-modules)))
            manifests)))
     ((pair? specs)
      ;; (gnu packages) is looked up here only: it loads every package
      ;; module, which a manifest file does not need.
      ((module-ref (resolve-interface '(gnu packages))
                   'specifications->manifest)
       specs))
     (else
      (leave (G_ "no packages specified; doing nothing~%"))))))

(define* (options->layered-image opts
                                 #:key
                                 (user-modules '((guix profiles) (gnu)))
                                 (profile-hooks %default-profile-hooks)
                                 (locales? #t)
                                 (image-keywords '()))
  "The image OPTS (from parse-docker-layered-arguments) describe, a
file-like object.  Manifest files are loaded in a module that uses
USER-MODULES, as guix pack does; the profile has PROFILE-HOOKS and, when
LOCALES? is true, locales, as guix pack's.  IMAGE-KEYWORDS go to
layered-docker-image after those OPTS give (such as #:guile or
#:compressor-program)."
  (define manifest (options->manifest opts #:user-modules user-modules))
  (define (opt key) (assq-ref opts key))
  (apply layered-docker-image
         (friendly-name (map manifest-entry-name (manifest-entries manifest)))
         (profile (content manifest)
                  (hooks profile-hooks)
                  (locales? locales?))
         `(#:max-layers ,(opt 'max-layers)
           #:strategy ,(opt 'strategy)
           #:compressor ,(opt 'compressor)
           #:symlinks ,(opt 'symlinks)
           #:entry-point ,(opt 'entry-point)
           #:entry-point-arguments ,(opt 'entry-point-arguments)
           ,@(match (opt 'image-tag)
               (#f '())
               (tag `(#:image-tag ,tag)))
           ,@(match (opt 'hints)
               (#f '())
               (file `(#:hints ,(local-file file "hints.json"))))
           ,@(if (opt 'layer-digests?)
                 '(#:layer-digests? #t)
                 '())
           ,@(match (opt 'tool)
               (#f '())
               (file `(#:tool ,(local-file file "stream-layered-image"
                                           #:recursive? #t))))
           ,@(match (or (opt 'target) (opt 'system))
               (#f '())
               (system `(#:system ,system)))
           ,@image-keywords)))

(define-command (guix-docker-layered . args)
  (category development)
  (synopsis "make layered Docker images with stream-layered-image")

  (with-error-handling
    (let* ((opts (parse-docker-layered-arguments args))
           (image (options->layered-image opts)))
      (with-store store
        (let* ((drv (run-with-store store
                      (lower-object image (or (assq-ref opts 'system)
                                              (%current-system)))))
               (output (derivation->output-path drv)))
          (build-derivations store (list drv))
          (match (assq-ref opts 'root)
            (#f #t)
            (root
             (when (false-if-exception (lstat root))
               (delete-file root))
             (symlink output root)
             (add-indirect-root store (canonicalize-path root))))
          (display output)
          (newline))))))
