;;; Checks, for tests/guix_e2e.rs, with the real Guix modules on the load
;;; path:
;;;
;;;   guile --no-auto-compile -L GUIX-TREE -L guix tests/guix/check-modules.scm CHECKOUT
;;;
;;; 0. loading (stream-layered-image pack) and the guix docker-layered
;;;    extension loads no (gnu packages ...) module;
;;; 1. every module under guix/stream-layered-image/, and the guix
;;;    docker-layered extension, compiles without an
;;;    unbound-variable (or arity) warning: a name used but not imported
;;;    fails only when the code runs, maybe first in a user's build;
;;; 2. the examples of the README's Guix section and of the pack module's
;;;    header import every name they use.  The modules they name are read,
;;;    not loaded (a (gnu packages ...) module takes minutes to load
;;;    interpreted): a module exports what its define-module form exports
;;;    or re-exports, its define-public forms, and, for (gnu), the modules
;;;    it lists in %public-modules.

(use-modules (system base compile)
             (srfi srfi-1)
             (ice-9 match)
             (ice-9 rdelim))

(define checkout (cadr (command-line)))
(define failures '())

(define (fail! fmt . args)
  (let ((message (apply format #f fmt args)))
    (format (current-error-port) "check-modules: ~a~%" message)
    (set! failures (cons message failures))))

;;; 0. Loading the pack module and the extension loads no (gnu packages
;;;    ...) module: the default tools are looked up when used.  (Checked
;;;    first, before compiling anything loads more.)

(resolve-module '(stream-layered-image pack))
(resolve-module '(guix extensions docker-layered))

(let* ((gnu (nested-ref-module (resolve-module '() #f) '(gnu)))
       (packages (and gnu (nested-ref-module gnu '(packages))))
       (loaded (if packages
                   (hash-map->list (lambda (name module) name)
                                   (module-submodules packages))
                   '())))
  (if (null? loaded)
      (format #t "loading the pack module and the extension loads no \
(gnu packages ...) module~%")
      (fail! "loading the pack module loads (gnu packages ~a)" loaded)))

;;; 1. Compilation warnings.

(define (scandir* dir)
  (let ((d (opendir dir)))
    (let loop ((acc '()))
      (let ((entry (readdir d)))
        (if (eof-object? entry)
            (begin (closedir d) (sort acc string<?))
            (loop (if (member entry '("." "..")) acc (cons entry acc))))))))

(define module-dir (string-append checkout "/guix/stream-layered-image"))

(for-each
 (lambda (base)
   (let* ((file (string-append module-dir "/" base))
          (output (string-append (or (getenv "TMPDIR") "/tmp")
                                 "/check-modules-" (number->string (getpid))
                                 "-" (basename base) ".go"))
          (warnings
           (call-with-output-string
             (lambda (port)
               (parameterize ((current-warning-port port))
                 (compile-file file
                               #:output-file output
                               #:opts '(#:warnings (unbound-variable
                                                    arity-mismatch
                                                    format))))))))
     (when (file-exists? output) (delete-file output))
     ;; Only the compiler's warnings (";;; LOCATION: warning: ..."):
     ;; Guix's own modules print other things while they load.
     (match (filter (lambda (line) (string-contains line ": warning: "))
                    (string-split warnings #\newline))
       (() (format #t "~a: compiles without warnings~%" base))
       (lines (fail! "~a: ~a" base (string-join lines "\n"))))))
 (append (filter (lambda (f) (string-suffix? ".scm" f))
                 (scandir* module-dir))
         '("../guix/extensions/docker-layered.scm")))

;;; 2. Examples.

(define (read-forms port)
  (let loop ((forms '()))
    (let ((form (read port)))
      (if (eof-object? form) (reverse forms) (loop (cons form forms))))))

(define (module-file module)
  (let ((relative (string-append
                   (string-join (map symbol->string module) "/") ".scm")))
    (or (search-path %load-path relative)
        (begin (fail! "no source file for module ~s" module) #f))))

(define (export-names spec)
  ;; An #:export list entry: NAME or (NAME . PUBLIC-NAME).
  (match spec
    ((name . public) public)
    (name name)))

(define (define-module-exports form)
  (match form
    (('define-module name . options)
     (let loop ((options options) (acc '()))
       (match options
         (((or #:export #:re-export #:replace #:re-export-and-replace)
           (names ...) . rest)
          (loop rest (append (map export-names names) acc)))
         ((_ . rest) (loop rest acc))
         (() acc))))
    (_ '())))

(define (public-modules-list forms)
  ;; (define %public-modules '(MODULE ...)) anywhere in FORMS.
  (let search ((x forms))
    (match x
      (('define '%public-modules ('quote (modules ...))) modules)
      ((a . b) (or (search a) (search b)))
      (_ #f))))

(define module-exports
  (let ((cache (make-hash-table)))
    (lambda (module)
      (or (hash-ref cache module)
          (let* ((file (module-file module))
                 (forms (if file
                            (call-with-input-file file read-forms)
                            '()))
                 (exports
                  (append
                   (append-map define-module-exports forms)
                   (filter-map (match-lambda
                                 (('define-public (name . _) . _) name)
                                 (('define-public name . _) name)
                                 (_ #f))
                               forms)
                   (append-map module-exports
                               (or (public-modules-list forms) '())))))
            (hash-set! cache module exports)
            exports)))))

(define (core-binding? name)
  (module-variable (resolve-module '(guile)) name))

(define (example-modules forms)
  (append-map (match-lambda
                (('use-modules modules ...)
                 (map (match-lambda
                        (((? symbol? first) . rest) (cons first rest))
                        ((module . _) module))
                      modules))
                (('use-package-modules names ...)
                 (map (lambda (n) `(gnu packages ,n)) names))
                (_ '()))
              forms))

(define (used-names form)
  ;; The symbols FORM evaluates as variables: quoted data is skipped.
  (match form
    (('quote _) '())
    (('quasiquote _) '())
    ((? symbol? s) (list s))
    ((head . tail) (append (used-names head) (used-names tail)))
    (_ '())))

(define (check-example where text)
  (let* ((forms (call-with-input-string text read-forms))
         (modules (example-modules forms))
         (body (remove (match-lambda
                         (((or 'use-modules 'use-package-modules) . _) #t)
                         (_ #f))
                       forms))
         (available (append '(use-package-modules use-modules)
                            (append-map module-exports modules)))
         (missing (delete-duplicates
                   (remove (lambda (name)
                             (or (core-binding? name)
                                 (memq name available)))
                           (append-map used-names body)))))
    (when (null? body)
      (fail! "~a: no example found" where))
    (if (null? missing)
        (format #t "~a: the example imports every name it uses (~a)~%"
                where modules)
        (fail! "~a: the example uses ~a, which ~s do not export"
               where missing modules))))

(define (read-lines file)
  (call-with-input-file file
    (lambda (port)
      (let loop ((acc '()))
        (let ((line (read-line port)))
          (if (eof-object? line) (reverse acc) (loop (cons line acc))))))))

;; The pack module's header: the indented lines of its first comment block.
(let* ((lines (read-lines (string-append module-dir "/pack.scm")))
       (header (take-while (lambda (l) (string-prefix? ";;;" l)) lines))
       (code (filter-map (lambda (l)
                           (and (string-prefix? ";;;   " l)
                                (substring l 3)))
                         header)))
  (check-example "pack.scm header" (string-join code "\n")))

;; The README's Scheme blocks that make layered images (of one platform or
;; several).
(let loop ((lines (read-lines (string-append checkout "/README.md")))
           (block #f)
           (found 0))
  (match lines
    (()
     (when (zero? found)
       (fail! "README.md: no Scheme example of layered-docker-image")))
    ((line . rest)
     (cond
      ((and (not block) (string=? (string-trim-both line) "```scheme"))
       (loop rest '() found))
      ((and block (string=? (string-trim-both line) "```"))
       (let ((text (string-join (reverse block) "\n")))
         (if (string-contains text "layered-")
             (begin
               (check-example (format #f "README.md example ~a" (+ found 1))
                              text)
               (loop rest #f (+ found 1)))
             (loop rest #f found))))
      (block (loop rest (cons line block) found))
      (else (loop rest #f found))))))

(exit (if (null? failures) 0 1))
