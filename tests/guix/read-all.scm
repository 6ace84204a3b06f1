;;; Reads every form of each file named on the command line with Guile's
;;; reader, the way Guix reads them: with the gexp syntax (#~ #$ #$@ #+ #+@)
;;; that (guix gexp) adds to the reader.  For a module file,
;;; guix/stream-layered-image/NAME.scm, the first form must be
;;; (define-module (stream-layered-image NAME) ...).
;;;
;;;   guile --no-auto-compile tests/guix/read-all.scm FILE...

(use-modules (ice-9 match))

(define (ungexp-reader native unquote-splicing)
  (lambda (chr port)
    (if (eqv? (peek-char port) #\@)
        (begin (read-char port) (list unquote-splicing (read port)))
        (list native (read port)))))

(read-hash-extend #\~ (lambda (chr port) (list 'gexp (read port))))
(read-hash-extend #\$ (ungexp-reader 'ungexp 'ungexp-splicing))
(read-hash-extend #\+ (ungexp-reader 'ungexp-native 'ungexp-native-splicing))

(define (read-forms file)
  (call-with-input-file file
    (lambda (port)
      (set-port-filename! port file)
      (let loop ((forms '()))
        (let ((form (read port)))
          (if (eof-object? form)
              (reverse forms)
              (loop (cons form forms))))))))

(define (expected-module file)
  ;; .../guix/stream-layered-image/spec.scm -> (stream-layered-image spec)
  (let ((at (string-contains file "guix/stream-layered-image/")))
    (and at
         (string-suffix? ".scm" file)
         (list 'stream-layered-image
               (string->symbol (basename file ".scm"))))))

(define failures 0)

(for-each
 (lambda (file)
   (catch #t
     (lambda ()
       (let ((forms (read-forms file))
             (module (expected-module file)))
         (when (null? forms)
           (error "no forms"))
         (when module
           (match (car forms)
             (('define-module (? (lambda (name) (equal? name module))) . _) #t)
             (_ (error "the first form is not (define-module" module))))
         (format #t "~a: ~a forms~%" file (length forms))))
     (lambda (key . args)
       (set! failures (+ failures 1))
       (format (current-error-port) "~a: ~a ~s~%" file key args))))
 (cdr (command-line)))

(exit (if (zero? failures) 0 1))
