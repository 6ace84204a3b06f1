;;; Unit tests of the Guix-free modules, with plain Guile:
;;;
;;;   guile --no-auto-compile -L guix tests/guix/unit.scm CHECKOUT

(use-modules (stream-layered-image spec)
             (stream-layered-image cargo-lock)
             (srfi srfi-1)
             (srfi srfi-64)
             (ice-9 match))

(define checkout (cadr (command-line)))

(test-begin "stream-layered-image-guile")

;;; References graphs.

(define graph-text
  "/gnu/store/aaaa-app\n/gnu/store/xxxx-app.drv\n2\n/gnu/store/aaaa-app\n/gnu/store/bbbb-lib\n\
/gnu/store/bbbb-lib\n\n0\n")

(test-equal "read-references-graph"
  '(("/gnu/store/aaaa-app" "/gnu/store/xxxx-app.drv"
     ("/gnu/store/aaaa-app" "/gnu/store/bbbb-lib"))
    ("/gnu/store/bbbb-lib" "" ()))
  (call-with-input-string graph-text read-references-graph))

(test-equal "an empty graph"
  '()
  (call-with-input-string "" read-references-graph))

(test-error "a graph cut short" #t
  (call-with-input-string "/gnu/store/aaaa-app\n\n3\n/gnu/store/aaaa-app\n"
    read-references-graph))

(test-error "a count that is not a number" #t
  (call-with-input-string "/gnu/store/aaaa-app\n\nmany\n" read-references-graph))

;;; JSON.

(test-equal "JSON values"
  "{\"s\": \"a\\\"b\\\\c\\nd\\u0001\", \"n\": [1, -2, true, false, null], \"o\": {}, \"r\": [[\"x\"]]}"
  (json->string `(("s" . "a\"b\\c\nd\x01")
                  ("n" . #(1 -2 #t #f null))
                  ("o" . ())
                  ("r" . ,(json-raw "[[\"x\"]]")))))

(test-equal "non-ASCII strings are written as they are"
  "\"é☃\""
  (json->string "é☃"))

(test-error "symbols other than null are refused" #t (json->string 'nil))

;;; Layering and metadata.

(test-equal "guix pack counts the customisation layer" 99 (guix-max-layers->budget 100))
(test-error "at least 2 layers" #t (guix-max-layers->budget 1))

(test-equal "layers arguments"
  '("layers" "--graph" "g" "--max-layers" "9" "--strategy" "size")
  (layers-arguments "g" 9))

(test-equal "layers arguments with our strategy"
  '("layers" "--graph" "g" "--max-layers" "3" "--strategy" "default"
    "--exclude" "x" "--explain")
  (layers-arguments "g" 3 #:strategy 'default #:exclude "x" #:explain? #t))

(test-equal "a hints file is passed to layers"
  '("layers" "--graph" "g" "--max-layers" "3" "--strategy" "size"
    "--hints" "/gnu/store/abc-hints.json")
  (layers-arguments "g" 3 #:hints "/gnu/store/abc-hints.json"))

(test-error "unknown strategy" #t (layering-strategy->string 'largest))

;; guix pack's rule: join the names; drop the last ones while 40 or more
;; characters and more than one name remain.
(test-equal "friendly name of one entry" "hello" (friendly-name '("hello")))
(test-equal "friendly name of a few entries" "hello-bash-coreutils"
  (friendly-name '("hello" "bash" "coreutils")))
(test-equal "friendly name drops the last entries"
  "python-numpy-scipy-matplotlib-jupyter"
  (friendly-name '("python-numpy-scipy-matplotlib" "jupyter" "pandas")))
(test-equal "friendly name of exactly 40 characters drops one"
  (make-string 20 #\a)
  (friendly-name (list (make-string 20 #\a) (make-string 19 #\b))))
(test-equal "friendly name of one long entry stays whole"
  (make-string 50 #\x)
  (friendly-name (list (make-string 50 #\x))))

(test-equal "repository names" "my.image_name." (canonicalize-repository-name "My/Image_Name!"))
(test-equal "short repository names" "xa" (canonicalize-repository-name "-x-"))
(test-equal "long repository names" 255
  (string-length (canonicalize-repository-name (make-string 300 #\a))))

(test-equal "architectures"
  '("amd64" "arm64" "386" "arm" "ppc64le" "riscv64")
  (map system->docker-architecture
       '("x86_64-linux" "aarch64-linux" "i686-linux" "armhf-linux"
         "powerpc64le-linux" "riscv64-linux")))

(test-equal "variants"
  '("v8" #f "v7" "v7" #f)
  (map system->docker-variant
       '("aarch64-linux" "x86_64-linux" "armhf-linux" "arm-linux-gnueabihf"
         "riscv64-linux")))

(test-assert "a variant is in the spec, after the architecture"
  (string-contains
   (json->string (docker-spec #:store-layers "[]" #:architecture "arm64"
                              #:variant "v8" #:repo-tag "app:latest"))
   "\"architecture\": \"arm64\", \"variant\": \"v8\", \"os\""))

(test-equal "the spec"
  (string-append
   "{\"store_layers\": [[\"/gnu/store/bbbb-lib\"]], \"store_dir\": \"/gnu/store\", "
   "\"config\": {\"Env\": [\"PATH=/x\"]}, \"architecture\": \"arm64\", \"os\": \"linux\", "
   "\"repo_tag\": \"app:latest\", \"created\": \"1970-01-01T00:00:01Z\", "
   "\"mtime\": \"1970-01-01T00:00:01Z\", \"uid\": 0, \"gid\": 0, \"uname\": \"root\", "
   "\"gname\": \"root\", \"from_image\": null, \"customisation_layer\": \"/tmp/c\"}")
  (json->string (docker-spec #:store-layers "[[\"/gnu/store/bbbb-lib\"]]"
                             #:config '(("Env" . #("PATH=/x")))
                             #:architecture "arm64"
                             #:repo-tag "app:latest"
                             #:customisation-layer "/tmp/c")))

;;; Layer digests.

(test-assert "records are the spec's last key, in store_layers' order"
  (string-suffix?
   "\"customisation_layer\": null, \"store_layer_digests\": [{\"diff_id\": \"a\"}, {\"diff_id\": \"b\"}]}"
   (json->string (docker-spec #:store-layers "[[\"/gnu/store/aaaa-app\"], [\"/gnu/store/bbbb-lib\"]]"
                              #:repo-tag "app:latest"
                              #:store-layer-digests
                              '("{\"diff_id\": \"a\"}" "{\"diff_id\": \"b\"}")))))

(test-assert "no records, no key"
  (not (string-contains
        (json->string (docker-spec #:store-layers "[]" #:repo-tag "app:latest"))
        "store_layer_digests")))

;; What decides a store layer's bytes (the store directory, the time
;; stamps and the owner) is the image spec's: a record taken of the
;; layer's own spec is one the image's spec accepts.
(test-equal "a layer's own spec stamps its files as the image's does"
  (let ((image (docker-spec #:store-layers "[]" #:repo-tag "app:latest"
                            #:store-dir "/x/store")))
    (map (lambda (key) (assoc key image))
         '("store_dir" "created" "mtime" "uid" "gid" "uname" "gname")))
  (let ((layer (layer-digest-spec '("/x/store/aaaa-app") #:store-dir "/x/store")))
    (map (lambda (key) (assoc key layer))
         '("store_dir" "created" "mtime" "uid" "gid" "uname" "gname"))))

(test-equal "a layer's own spec holds that layer only"
  '("store_layers" . #(#("/gnu/store/aaaa-app" "/gnu/store/bbbb-lib")))
  (assoc "store_layers"
         (layer-digest-spec '("/gnu/store/aaaa-app" "/gnu/store/bbbb-lib"))))

(test-equal "digest arguments"
  '("digest" "spec.json" "--layer" "0" "--compress" "gzip" "--compress" "zstd:3")
  (layer-digest-arguments "spec.json" '("gzip" "zstd:3")))

;;; Cargo.lock, for the package's crate inputs.

(define crates
  (call-with-input-file (string-append checkout "/Cargo.lock")
    cargo-lock-registry-crates))

(test-assert "crates from Cargo.lock" (> (length crates) 10))
(test-assert "every crate has a sha256"
  (every (match-lambda
           ((name version checksum)
            (and (string-every (char-set-union char-set:digit
                                               (string->char-set "abcdef"))
                               checksum)
                 (= 64 (string-length checksum)))))
         crates))
(test-assert "the checkout itself is not a crate input"
  (not (assoc "stream-layered-image" crates)))
(test-assert "serde_json is one"
  (assoc "serde_json" crates))

(test-equal "a lock file"
  '(("dep" "1.2.3" "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"))
  (call-with-input-string
      "version = 3\n\n[[package]]\nname = \"dep\"\nversion = \"1.2.3\"\n\
source = \"registry+https://github.com/rust-lang/crates.io-index\"\n\
checksum = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"\n\
dependencies = [\n \"other\",\n]\n\n[[package]]\nname = \"me\"\nversion = \"0.1.0\"\n\
dependencies = [\n \"dep\",\n]\n"
    cargo-lock-registry-crates))

(test-equal "the package version"
  "0.1.0"
  (call-with-input-string
      "[package]\nname = \"x\"\nversion = \"0.1.0\"\n\n[dependencies]\nversion = \"9\"\n"
    (lambda (port) (cargo-toml-package-field port "version"))))

(define failed (test-runner-fail-count (test-runner-current)))
(test-end "stream-layered-image-guile")
(exit (if (zero? failed) 0 1))
