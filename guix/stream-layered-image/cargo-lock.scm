;;; stream-layered-image: the crates a Cargo.lock names, for the Guix package.
;;;
;;; Needs Guile only.  The package definition reads Cargo.lock with it, so
;;; its crate inputs follow the lock file without a generated list.

(define-module (stream-layered-image cargo-lock)
  #:use-module (ice-9 match)
  #:use-module (ice-9 rdelim)
  #:use-module (srfi srfi-1)
  #:export (read-cargo-lock
            cargo-lock-registry-crates
            cargo-toml-package-field))

(define (toml-string-value line key)
  "If LINE is KEY = \"VALUE\", return VALUE."
  (let ((prefix (string-append key " = \"")))
    (and (string-prefix? prefix line)
         (string-suffix? "\"" line)
         (substring line (string-length prefix) (- (string-length line) 1)))))

(define (read-cargo-lock port)
  "Read the [[package]] tables of the Cargo.lock on PORT: a list of
association lists with the keys name, version, source and checksum (those
a package has)."
  (define keys '("name" "version" "source" "checksum"))
  (let loop ((packages '()) (current #f))
    (define (flush) (if current (cons (reverse current) packages) packages))
    (let ((line (read-line port)))
      (cond
       ((eof-object? line) (reverse (flush)))
       ((string=? (string-trim-both line) "[[package]]") (loop (flush) '()))
       ((string-prefix? "[" (string-trim line)) (loop (flush) #f))
       ((not current) (loop packages current))
       (else
        (let ((line (string-trim-both line)))
          (match (filter-map (lambda (key)
                               (let ((value (toml-string-value line key)))
                                 (and value (cons key value))))
                             keys)
            ((pair) (loop packages (cons pair current)))
            (() (loop packages current)))))))))

(define (cargo-lock-registry-crates port)
  "The crates.io packages of the Cargo.lock on PORT, as a list of
(NAME VERSION SHA256-HEX): what cargo downloads, and the hash of each .crate
file."
  (filter-map (lambda (package)
                (let ((name (assoc-ref package "name"))
                      (version (assoc-ref package "version"))
                      (source (assoc-ref package "source"))
                      (checksum (assoc-ref package "checksum")))
                  (and source
                       (string-prefix? "registry+" source)
                       (begin
                         (unless (and checksum (= 64 (string-length checksum)))
                           (error "Cargo.lock: no sha256 checksum for" name version))
                         (list name version checksum)))))
              (read-cargo-lock port)))

(define (cargo-toml-package-field port key)
  "The string value of KEY in the [package] table of the Cargo.toml on PORT."
  (let loop ((in-package? #f))
    (let ((line (read-line port)))
      (cond
       ((eof-object? line) (error "Cargo.toml: no [package] field" key))
       ((string-prefix? "[" (string-trim line))
        (loop (string=? (string-trim-both line) "[package]")))
       ((and in-package? (toml-string-value (string-trim-both line) key)))
       (else (loop in-package?))))))
