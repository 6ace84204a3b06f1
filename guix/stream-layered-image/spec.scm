;;; stream-layered-image: from a references graph to a layered Docker image.
;;;
;;; This module needs Guile only, not Guix: it runs inside the build of
;;; (stream-layered-image pack), and the project's tests load it with a
;;; plain `guile'.  Given the references graph that `#:references-graphs'
;;; writes (the text format Nix's exportReferencesGraph also writes), it
;;;
;;;   1. asks `stream-layered-image layers' how to split the closure into
;;;      layers (Guix's `size' rule by default),
;;;   2. makes the customisation layer (symlinks into the profile, /tmp),
;;;      with `stream-layered-image custom-layer', deterministically,
;;;   3. writes the JSON spec stream-layered-image reads, and
;;;   4. runs stream-layered-image on it, compressing the archive if asked.
;;;
;;; With layer digests, the layering (1) is a derivation of its own, and
;;; each store layer's record (`stream-layered-image digest') another, so
;;; that a record is rebuilt only when its layer's store items change.

(define-module (stream-layered-image spec)
  #:use-module (ice-9 match)
  #:use-module (ice-9 popen)
  #:use-module (ice-9 rdelim)
  #:use-module (rnrs bytevectors)
  #:use-module (rnrs io ports)
  #:use-module (srfi srfi-1)
  #:use-module (srfi srfi-9)
  #:export (read-references-graph
            references-graph-store-paths

            json-raw
            json-raw?
            write-json
            json->string

            guix-max-layers->budget
            layering-strategy->string
            layers-arguments
            run-layers

            canonicalize-repository-name
            friendly-name
            system->docker-architecture
            system->docker-variant

            populate-image-root
            make-customisation-layer

            docker-spec
            write-docker-spec
            layer-digest-spec
            layer-digest-arguments
            write-layering
            build-layered-image))


;;;
;;; References graphs.
;;;

(define (read-references-graph port)
  "Read from PORT a references graph in the text format of
`#:references-graphs' (and of Nix's exportReferencesGraph): for each store
item, its file name, its deriver (maybe empty), the number of references N,
then N lines of references.  Return a list of (ITEM DERIVER (REFERENCES ...))."
  (define (fail fmt . args)
    (apply error (string-append "references graph: " fmt) args))
  (let loop ((items '()))
    (let ((item (read-line port)))
      (cond
       ((eof-object? item) (reverse items))
       ((string-null? item) (loop items))
       (else
        (let* ((deriver (read-line port))
               (count-line (read-line port))
               (count (and (string? count-line) (string->number count-line))))
          (unless (and (string? deriver) count (exact-integer? count) (>= count 0))
            (fail "after ~s: expected a deriver line and a reference count" item))
          (let refs ((n count) (acc '()))
            (if (zero? n)
                (loop (cons (list item deriver (reverse acc)) items))
                (let ((ref (read-line port)))
                  (when (eof-object? ref)
                    (fail "~s: ~a references announced, the file ends first"
                          item count))
                  (refs (- n 1) (cons ref acc)))))))))))

(define (references-graph-store-paths file)
  "The store items of the references graph in FILE, in file order."
  (map first (call-with-input-file file read-references-graph)))


;;;
;;; JSON.
;;;

;; JSON text to write as it is (such as the output of `layers').
(define-record-type <json-raw>
  (json-raw text)
  json-raw?
  (text json-raw-text))

(define (write-json-string str port)
  (put-char port #\")
  (string-for-each
   (lambda (c)
     (case c
       ((#\") (put-string port "\\\""))
       ((#\\) (put-string port "\\\\"))
       ((#\newline) (put-string port "\\n"))
       ((#\return) (put-string port "\\r"))
       ((#\tab) (put-string port "\\t"))
       (else
        (if (< (char->integer c) #x20)
            (put-string port
                        (string-append
                         "\\u00"
                         (string-pad (number->string (char->integer c) 16)
                                     2 #\0)))
            (put-char port c)))))
   str)
  (put-char port #\"))

(define (write-json value port)
  "Write VALUE to PORT as JSON: strings, exact integers, #t and #f, the
symbol null, vectors (arrays), association lists with string keys (objects;
'() is the empty object) and json-raw texts."
  (match value
    ((? string?) (write-json-string value port))
    ((? exact-integer?) (put-string port (number->string value)))
    (#t (put-string port "true"))
    (#f (put-string port "false"))
    ('null (put-string port "null"))
    ((? json-raw?) (put-string port (json-raw-text value)))
    ((? vector?)
     (put-char port #\[)
     (let loop ((i 0))
       (when (< i (vector-length value))
         (unless (zero? i) (put-string port ", "))
         (write-json (vector-ref value i) port)
         (loop (+ i 1))))
     (put-char port #\]))
    (((keys . values) ...)
     (put-char port #\{)
     (let loop ((keys keys) (values values) (first? #t))
       (match keys
         (() #t)
         ((key . rest)
          (unless (string? key)
            (error "JSON object key is not a string:" key))
          (unless first? (put-string port ", "))
          (write-json-string key port)
          (put-string port ": ")
          (write-json (car values) port)
          (loop rest (cdr values) #f))))
     (put-char port #\}))
    (_ (error "cannot write as JSON:" value))))

(define (json->string value)
  (call-with-output-string (lambda (port) (write-json value port))))


;;;
;;; Layering.
;;;

(define (guix-max-layers->budget max-layers)
  "The layer budget for store items when the whole image may have MAX-LAYERS
layers, as `guix pack -f docker --max-layers' counts them: one of them is
the customisation layer."
  (unless (and (exact-integer? max-layers) (>= max-layers 2))
    (error "max-layers must be an integer of at least 2 (one layer is the \
customisation layer):" max-layers))
  (- max-layers 1))

(define %strategies '(size default popularity auto))

(define (layering-strategy->string strategy)
  "STRATEGY, a symbol: `size' (Guix's rule: the largest items get a layer
each, the rest share the last), `default' (stream-layered-image's own),
`popularity' or `auto' (nixpkgs')."
  (if (memq strategy %strategies)
      (symbol->string strategy)
      (error "unknown layering strategy (expected one of size, default, \
popularity, auto):" strategy)))

(define* (layers-arguments graph budget
                           #:key (strategy 'size) exclude hints explain?)
  "The arguments of `stream-layered-image layers' that split the closure in
the references graph file GRAPH into at most BUDGET layers.  HINTS, when
true, is a hints file for `--hints'; without it, nothing is added."
  `("layers" "--graph" ,graph
    "--max-layers" ,(number->string budget)
    "--strategy" ,(layering-strategy->string strategy)
    ,@(if exclude (list "--exclude" exclude) '())
    ,@(if hints (list "--hints" hints) '())
    ,@(if explain? '("--explain") '())))

(define (read-all port)
  (let loop ((chunks '()))
    (let ((chunk (get-string-n port 65536)))
      (if (eof-object? chunk)
          (string-concatenate-reverse chunks)
          (loop (cons chunk chunks))))))

(define* (run-layers tool graph budget
                     #:key (strategy 'size) exclude hints explain?)
  "Run TOOL (the stream-layered-image executable) to layer the references
graph file GRAPH; return its `store_layers' JSON text."
  (let* ((args (layers-arguments graph budget
                                 #:strategy strategy
                                 #:exclude exclude
                                 #:hints hints
                                 #:explain? explain?))
         (port (apply open-pipe* OPEN_READ tool args))
         (text (read-all port))
         (status (close-pipe port)))
    (unless (and (zero? (status:exit-val status))
                 (string-prefix? "[" (string-trim text)))
      (error "stream-layered-image layers failed:" (cons tool args)))
    (string-trim-both text)))


;;;
;;; Image metadata.
;;;

(define (canonicalize-repository-name name)
  "NAME as a Docker repository name: lower case, characters other than
a-z, 0-9, `_', `-' and `.' replaced by `.', 2 to 255 characters."
  (define allowed
    (char-set-union char-set:digit
                    (string->char-set "abcdefghijklmnopqrstuvwxyz_-.")))
  (let* ((trimmed (string-trim-both (string-downcase name)
                                    (string->char-set "_-.")))
         (mapped (string-map (lambda (c)
                               (if (char-set-contains? allowed c) c #\.))
                             trimmed))
         (len (string-length mapped)))
    (cond ((> len 255) (string-take mapped 255))
          ((< len 2) (string-append mapped (make-string (- 2 len) #\a)))
          (else mapped))))

(define (friendly-name names)
  "The repository name guix pack gives an image of a manifest whose entries
have NAMES: the names joined with `-', the last ones dropped while the
result has 40 characters or more and more than one name is left."
  (let loop ((names names))
    (let ((joined (string-join names "-")))
      (if (or (< (string-length joined) 40)
              (<= (length names) 1))
          joined
          (loop (drop-right names 1))))))

(define (system->docker-architecture system)
  "The Go architecture name Docker uses for SYSTEM, a Guix system type such as
\"x86_64-linux\" or a GNU triplet."
  (let ((cpu (car (string-split system #\-))))
    (cond ((string=? cpu "x86_64") "amd64")
          ((member cpu '("i386" "i486" "i586" "i686")) "386")
          ((string=? cpu "aarch64") "arm64")
          ((string-prefix? "arm" cpu) "arm")
          ((string=? cpu "powerpc64le") "ppc64le")
          ((string=? cpu "riscv64") "riscv64")
          ((string=? cpu "s390x") "s390x")
          ((string=? cpu "mips64el") "mips64le")
          ((string=? cpu "loongarch64") "loong64")
          (else cpu))))

(define (system->docker-variant system)
  "The platform variant an OCI image index gives images of SYSTEM (\"v8\"
for aarch64, as Docker names it; \"v7\" for armhf), or #f."
  (let ((cpu (car (string-split system #\-))))
    (cond ((string=? cpu "aarch64") "v8")
          ((or (string=? cpu "armhf") (string-suffix? "gnueabihf" system)) "v7")
          (else #f))))


;;;
;;; The customisation layer.
;;;

(define (mkdir-p dir)
  (unless (or (string-null? dir) (file-exists? dir))
    (mkdir-p (dirname dir))
    (mkdir dir)))

(define* (populate-image-root root #:key profile (symlinks '())
                              (directories '(("/tmp" . #o1777))))
  "Make ROOT the file system tree of the customisation layer: DIRECTORIES,
a list of (NAME . MODE), and SYMLINKS, a list of (SOURCE -> TARGET) where
TARGET is relative to PROFILE, as `guix pack -S' takes them."
  (mkdir-p root)
  (for-each (match-lambda
              ((name . mode)
               (let ((dir (string-append root "/" (string-trim name #\/))))
                 (mkdir-p dir)
                 (chmod dir mode))))
            directories)
  (for-each (match-lambda
              ((source '-> target)
               (let ((link (string-append root "/" (string-trim source #\/))))
                 (mkdir-p (dirname link))
                 (symlink (string-append profile "/" (string-trim target #\/))
                          link))))
            symlinks))

(define (invoke program . args)
  (let ((status (apply system* program args)))
    (unless (zero? (status:exit-val status))
      (error "command failed:" (cons program args)))))

(define* (make-customisation-layer tool root directory #:key (mtime 1))
  "Make DIRECTORY the `customisation_layer' of a spec: layer.tar, the tree
ROOT packed by TOOL (the stream-layered-image executable) with every owner
root and every mtime MTIME, and its sha256 in DIRECTORY/checksum.  The
archive depends on the tree only, not on any tar that happens to be around."
  (invoke tool "custom-layer" "--root" root "--out" directory
          "--mtime" (number->string mtime)))


;;;
;;; The spec and the image.
;;;

(define* (docker-spec #:key store-layers (store-dir "/gnu/store")
                      (config '()) (architecture "amd64") variant repo-tag
                      (created "1970-01-01T00:00:01Z") mtime
                      customisation-layer from-image
                      (uid 0) (gid 0) (uname "root") (gname "root")
                      store-layer-digests)
  "The JSON spec of stream-layered-image, as an association list.
STORE-LAYERS is the JSON text `layers' printed (or a vector of vectors of
file names); CONFIG the image config's \"config\" object.
STORE-LAYER-DIGESTS, when true, is a list of the JSON texts `digest
--layer' printed, one per store layer, in STORE-LAYERS' order."
  `(("store_layers" . ,(if (string? store-layers)
                           (json-raw store-layers)
                           store-layers))
    ("store_dir" . ,store-dir)
    ("config" . ,config)
    ("architecture" . ,architecture)
    ,@(if variant `(("variant" . ,variant)) '())
    ("os" . "linux")
    ("repo_tag" . ,repo-tag)
    ("created" . ,created)
    ("mtime" . ,(or mtime created))
    ("uid" . ,uid)
    ("gid" . ,gid)
    ("uname" . ,uname)
    ("gname" . ,gname)
    ("from_image" . ,(or from-image 'null))
    ("customisation_layer" . ,(or customisation-layer 'null))
    ,@(if store-layer-digests
          `(("store_layer_digests"
             . ,(list->vector (map json-raw store-layer-digests))))
          '())))

(define* (layer-digest-spec paths #:key (store-dir "/gnu/store"))
  "The spec `stream-layered-image digest' reads to take the record of the
store layer of PATHS, a list of store file names.  It holds nothing but
that layer and what decides its bytes, which are those of build-layered-image's
images (the same store directory, time stamps and owner), so that the
record's derivation depends on that layer alone."
  (docker-spec #:store-layers (vector (list->vector paths))
               #:store-dir store-dir
               #:repo-tag "layer:latest"))

(define (layer-digest-arguments spec compressions)
  "The arguments of `stream-layered-image' that print the record of the one
store layer of SPEC, with a blob for each of COMPRESSIONS (strings such as
\"gzip\" or \"zstd:3\", as `--compress' takes them)."
  `("digest" ,spec "--layer" "0"
    ,@(append-map (lambda (c) (list "--compress" c)) compressions)))

(define (write-docker-spec file spec)
  (call-with-output-file file
    (lambda (port)
      (set-port-encoding! port "UTF-8")
      (write-json spec port)
      (newline port))))

(define (copy-port-to-file in file)
  (call-with-output-file file
    (lambda (out)
      (let loop ()
        (let ((bv (get-bytevector-some in)))
          (unless (eof-object? bv)
            (put-bytevector out bv)
            (loop)))))
    #:binary #t))

(define* (write-layering output #:key tool graph (max-layers 100)
                         (strategy 'size) exclude hints explain?)
  "Write to OUTPUT the `store_layers' JSON text of the closure in the
references graph file GRAPH, as build-layered-image splits it."
  (let ((layers (run-layers tool graph (guix-max-layers->budget max-layers)
                            #:strategy strategy
                            #:exclude exclude
                            #:hints hints
                            #:explain? explain?)))
    (call-with-output-file output
      (lambda (port)
        (put-string port layers)
        (newline port)))
    output))

(define (read-file-trimmed file)
  (string-trim-both (call-with-input-file file read-all)))

(define* (build-layered-image output
                              #:key tool graph
                              (store-dir "/gnu/store")
                              (max-layers 100) (strategy 'size) exclude hints
                              (config '()) (architecture "amd64") variant
                              repo-tag (created "1970-01-01T00:00:01Z")
                              profile (symlinks '())
                              (directories '(("/tmp" . #o1777)))
                              compressor explain? spec-only?
                              layers-file layer-digests
                              (work-directory "."))
  "Write to OUTPUT a docker-archive of the closure in the references graph
file GRAPH, with at most MAX-LAYERS layers counted as `guix pack' counts
them (the customisation layer included), split by STRATEGY (and HINTS, a file for `layers --hints', when true).
TOOL is the stream-layered-image executable.  The customisation layer holds DIRECTORIES
and SYMLINKS into PROFILE (see populate-image-root).  COMPRESSOR, when true,
is a command such as (\"gzip\" \"-9n\") that compresses its file argument
to stdout with `-c'.  With SPEC-ONLY?, OUTPUT is instead a directory holding
the image's spec.json and its customisation layer, for a later run of the
tool (several platforms' specs in one run make a multi-platform image).
LAYERS-FILE, when true, is the layering write-layering wrote, used instead
of running `layers'; LAYER-DIGESTS, when true, the files of its store
layers' records, in its order, for the spec's `store_layer_digests'."
  (when spec-only?
    (mkdir-p output))
  (let* ((items (references-graph-store-paths graph))
         (budget (guix-max-layers->budget max-layers))
         (root (string-append work-directory "/image-root"))
         (custom (string-append (if spec-only? output work-directory)
                                "/customisation-layer"))
         (spec-file (string-append (if spec-only? output work-directory)
                                   "/spec.json"))
         (archive (if compressor
                      (string-append work-directory "/image.tar")
                      output)))
    (when (null? items)
      (error "the references graph holds no store item:" graph))
    (format #t "layering ~a store items into at most ~a layers (~a)~%"
            (length items) budget strategy)
    (let ((layers (if layers-file
                      (read-file-trimmed layers-file)
                      (run-layers tool graph budget
                                  #:strategy strategy
                                  #:exclude exclude
                                  #:hints hints
                                  #:explain? explain?))))
      (populate-image-root root
                           #:profile profile
                           #:symlinks symlinks
                           #:directories directories)
      (make-customisation-layer tool root custom)
      (write-docker-spec spec-file
                         (docker-spec #:store-layers layers
                                      #:store-dir store-dir
                                      #:config config
                                      #:architecture architecture
                                      #:variant variant
                                      #:repo-tag repo-tag
                                      #:created created
                                      #:customisation-layer custom
                                      #:store-layer-digests
                                      (and layer-digests
                                           (map read-file-trimmed
                                                layer-digests))))
      (unless spec-only?
        (invoke tool spec-file "-o" archive))
      (when (and compressor (not spec-only?))
        (let ((port (apply open-pipe* OPEN_READ
                           (append compressor (list "-c" archive)))))
          (copy-port-to-file port output)
          (unless (zero? (status:exit-val (close-pipe port)))
            (error "compressing the image failed:" compressor))
          (delete-file archive)))
      output)))
