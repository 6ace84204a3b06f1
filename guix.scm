;;; Build stream-layered-image from this checkout with Guix:
;;;
;;;   guix build -f guix.scm
;;;   guix shell -f guix.scm -- stream-layered-image --help
;;;
;;; The package is defined in guix/stream-layered-image/package.scm; the
;;; layered Docker images of Guix profiles are made by
;;; guix/stream-layered-image/pack.scm (see the README).

(add-to-load-path (string-append (dirname (current-filename)) "/guix"))

(use-modules (stream-layered-image package))

stream-layered-image
