;;; Runs (stream-layered-image spec)'s build-layered-image outside Guix, for
;;; tests/guix_modules.rs.  The one argument is an association list of its
;;; keyword arguments, written as an S-expression:
;;;
;;;   guile --no-auto-compile -L guix tests/guix/build-image.scm \
;;;     '((output . "img.tar") (tool . "stream-layered-image") (graph . "g") ...)'

(use-modules (stream-layered-image spec) (ice-9 match))

(define args
  (call-with-input-string (cadr (command-line)) read))

(define (arg key default)
  (match (assq key args)
    ((_ . value) value)
    (#f default)))

(build-layered-image (arg 'output #f)
                     #:tool (arg 'tool "stream-layered-image")
                     #:graph (arg 'graph #f)
                     #:store-dir (arg 'store-dir "/gnu/store")
                     #:max-layers (arg 'max-layers 100)
                     #:strategy (arg 'strategy 'size)
                     #:config (arg 'config '())
                     #:architecture (arg 'architecture "amd64")
                     #:repo-tag (arg 'repo-tag "guix-test:latest")
                     #:profile (arg 'profile #f)
                     #:symlinks (arg 'symlinks '())
                     #:compressor (arg 'compressor #f)
                     #:explain? (arg 'explain? #f)
                     #:work-directory (arg 'work-directory "."))
