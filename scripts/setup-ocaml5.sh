#!/usr/bin/env bash
# Installs an OCaml 5.3.0 toolchain (compiler, dune 3, zarith, alcotest and
# its dependencies) into a prefix outside the clone, so camlbeam can be built
# and tested on OCaml 5.3 beside Debian's 4.13.
#
#   scripts/setup-ocaml5.sh              install what is missing (silent when all is there)
#   scripts/setup-ocaml5.sh --print-env  print the lines a caller evals:
#       eval "$(scripts/setup-ocaml5.sh --print-env)"
#   scripts/setup-ocaml5.sh --prefix     print the prefix (CMake's CAMLBEAM_OCAML_PREFIX)
#
# Prefix: $CAMLBEAM_OCAML5_PREFIX, default ~/.cache/camlbeam/ocaml-5.3.0.
# Each component is stamped ($prefix/stamps/NAME) only after it was installed
# and checked; a stamped component is skipped. Build logs: $prefix/logs/NAME.log.
#
# Sources: the compiler from the npm package ocaml@5.3.0 (the upstream source
# tree, checked by sha256); everything else from Debian source packages,
# fetched by apt-get source with a private apt configuration under the prefix
# (apt checks the tarballs against the signed Sources index; /etc/apt is left
# alone). The machine's own Debian mirror is used.
set -euo pipefail
shopt -s inherit_errexit

prefix=${CAMLBEAM_OCAML5_PREFIX:-$HOME/.cache/camlbeam/ocaml-5.3.0}

OCAML_VERSION=5.3.0
OCAML_SHA256=c4108bac7b45c46325f0e15a988c308f7785cd6c4d29dac190df06f543f7c992

print_env() {
  # shellcheck disable=SC2016 # $PATH is for the caller's shell to expand
  printf 'export PATH=%q:"$PATH"\n' "$prefix/bin"
  printf 'export OCAMLFIND_CONF=%q\n' "$prefix/etc/findlib.conf"
  printf 'unset OCAMLPATH OCAMLLIB CAMLLIB OCAMLFIND_DESTDIR OCAMLFIND_TOOLCHAIN OCAMLFIND_LDCONF OCAMLFIND_COMMANDS OCAMLFIND_METADIR OCAMLFIND_IGNORE_DUPS_IN\n'
}

if [ "${1:-}" = "--print-env" ]; then
  print_env
  exit 0
elif [ "${1:-}" = "--prefix" ]; then
  echo "$prefix"
  exit 0
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--print-env | --prefix]" >&2
  exit 2
fi

mkdir -p "$prefix/stamps" "$prefix/logs" "$prefix/build"
# One run at a time in a prefix: a second one waits, then finds the stamps.
if command -v flock >/dev/null; then
  exec 9>"$prefix/.lock"
  flock 9
fi

# The environment every build runs in: the 5.3 compiler first in PATH, our
# findlib configuration, nothing of Debian's 4.13 library path.
export PATH="$prefix/bin:$PATH"
export OCAMLFIND_CONF="$prefix/etc/findlib.conf"
unset OCAMLPATH OCAMLLIB CAMLLIB OCAMLFIND_DESTDIR OCAMLFIND_TOOLCHAIN OCAMLFIND_LDCONF OCAMLFIND_COMMANDS OCAMLFIND_METADIR OCAMLFIND_IGNORE_DUPS_IN
# Dune's shared cache would be written outside the prefix (~/.cache/dune).
export DUNE_CACHE=disabled
jobs=$(nproc 2>/dev/null || echo 2)

fail_log() {
  local what=$1 log=$2 rc=$3
  echo "setup-ocaml5: $what failed (exit $rc); log: $log" >&2
  echo "---- last 30 lines of $log ----" >&2
  tail -n 30 "$log" >&2
  exit 1
}

# step NAME DESCRIPTION FUNCTION: unless NAME is stamped, run FUNCTION in a
# fresh build directory with its output in $prefix/logs/NAME.log; stamp NAME
# when FUNCTION (which installs and checks the component) succeeded.
step() {
  local name=$1 desc=$2 fn=$3
  local stamp="$prefix/stamps/$name" log="$prefix/logs/$name.log"
  [ -e "$stamp" ] && return 0
  echo "setup-ocaml5: building $desc (log: $log)"
  local dir="$prefix/build/$name"
  rm -rf "$dir"
  mkdir -p "$dir"
  local start=$SECONDS rc
  # Not under `||` or `if`, so that set -e stays in force inside the subshell.
  set +e
  (set -e; cd "$dir"; "$fn") >"$log" 2>&1
  rc=$?
  set -e
  [ "$rc" -eq 0 ] || fail_log "building $desc" "$log" "$rc"
  echo "setup-ocaml5: $desc took $((SECONDS - start)) s" >>"$log"
  rm -rf "$dir"
  date -u +%FT%TZ >"$stamp"
}

# ---------------------------------------------------------------- compiler
build_ocaml() {
  npm pack --silent "ocaml@$OCAML_VERSION"
  local tgz="ocaml-$OCAML_VERSION.tgz"
  echo "$OCAML_SHA256  $tgz" | sha256sum -c -
  tar xzf "$tgz"
  cd package
  ./configure --prefix="$prefix"
  make -j"$jobs"
  make install
  "$prefix/bin/ocamlopt" -version | grep -qx "$OCAML_VERSION"
  test -e "$prefix/lib/ocaml/unix/META"
  test -e "$prefix/lib/ocaml/threads/META"
}
step ocaml "OCaml $OCAML_VERSION" build_ocaml

# ---------------------------------------------------------------- findlib
# Debian's ocamlfind (/usr/bin/ocamlfind) with a configuration of our own:
# it sees the 5.3 standard library directory (which has the META files of
# unix, threads, dynlink, str...) and the libraries installed here, nothing
# of Debian's 4.13. Dune reads the same file through OCAMLFIND_CONF.
setup_findlib() {
  command -v ocamlfind
  local lib="$prefix/lib/ocaml" b="$prefix/bin"
  mkdir -p "$prefix/etc" "$lib/stublibs"
  cat >"$prefix/etc/findlib.conf" <<EOF
destdir="$lib"
path="$lib"
stdlib="$lib"
ldconf="$lib/ld.conf"
ocamlc="$b/ocamlc.opt"
ocamlopt="$b/ocamlopt.opt"
ocamldep="$b/ocamldep.opt"
ocamldoc="$b/ocamldoc.opt"
ocamlcp="$b/ocamlcp"
ocamloptp="$b/ocamloptp"
ocamlmklib="$b/ocamlmklib"
ocamlmktop="$b/ocamlmktop"
EOF
  # The dummy packages that OCaml >= 4.07 stands in for (Debian's compiler
  # package ships the same two META files): re needs seq, alcotest needs
  # stdlib-shims.
  local pkg desc
  for pkg in seq stdlib-shims; do
    case $pkg in
      seq) desc="dummy backward-compatibility package for iterators" ;;
      *) desc="dummy backward-compatibility package for Stdlib" ;;
    esac
    mkdir -p "$lib/$pkg"
    printf 'name="%s"\nversion="[distributed with OCaml 4.07 or above]"\ndescription="%s"\nrequires=""\n' \
      "$pkg" "$desc" >"$lib/$pkg/META"
  done
  ocamlfind printconf
  [ "$(ocamlfind printconf stdlib)" = "$lib" ]
  [ "$(ocamlfind query unix)" = "$lib/unix" ] || [ "$(ocamlfind query unix)" = "$lib" ]
  ocamlfind list
  # Nothing of Debian's: its alcotest would be found here.
  if ocamlfind query alcotest; then exit 1; fi
}
step findlib "findlib configuration" setup_findlib

# ---------------------------------------------------------------- Debian sources
# A private apt configuration under the prefix: deb-src lines for bookworm and
# trixie on the machine's own mirror, lists and cache of its own.
apt_dir="$prefix/apt"
apt_opts=(
  -o "Dir::Etc::sourcelist=$apt_dir/sources.list"
  -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "APT::Sandbox::User=root"
  -o "Debug::NoLocking=1"
)

debian_mirror() {
  local m=""
  if [ -r /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -r /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) { print $i; exit } }' /etc/apt/sources.list)
  fi
  [ -n "$m" ] || { echo "no Debian mirror found in /etc/apt" >&2; return 1; }
  echo "$m"
}

apt_update() {
  local m
  m=$(debian_mirror)
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  local key=/usr/share/keyrings/debian-archive-keyring.gpg
  printf 'deb-src [signed-by=%s] %s %s main\n' "$key" "$m" bookworm "$key" "$m" trixie \
    >"$apt_dir/sources.list"
  apt-get "${apt_opts[@]}" update
}

# Refreshed once per run, and only when some Debian source is to be built.
apt_updated=""
need_apt() {
  [ -n "$apt_updated" ] && return 0
  local log="$prefix/logs/apt-update.log" rc
  set +e
  (set -e; apt_update) >"$log" 2>&1
  rc=$?
  set -e
  [ "$rc" -eq 0 ] || fail_log "apt-get update (private configuration)" "$log" "$rc"
  apt_updated=1
}

# debian_source: fetch the source package $SRC_PKG=$SRC_VERSION (checked by
# apt against the signed Sources index) into the current directory, extract
# its upstream tarball and enter the directory it made.
debian_source() {
  apt-get "${apt_opts[@]}" source --download-only "$SRC_PKG=$SRC_VERSION"
  local orig
  for orig in "${SRC_PKG}_${SRC_VERSION%-*}".orig.tar.*; do
    mkdir src
    tar xf "$orig" -C src
  done
  cd src/*/
}

# A component from a Debian source package: NAME PACKAGE VERSION FUNCTION.
debian_step() {
  local name=$1 pkg=$2 version=$3 fn=$4
  [ -e "$prefix/stamps/$name" ] && return 0
  need_apt
  SRC_PKG=$pkg SRC_VERSION=$version step "$name" "$name ${version%-*}" "$fn"
}

# dune_package PACKAGE: build and install a dune-built package of the current
# directory into the prefix, where both dune and ocamlfind find it.
dune_package() {
  local pkg=$1
  dune build -p "$pkg" @install
  dune install --prefix "$prefix" --libdir "$prefix/lib/ocaml" "$pkg"
  ocamlfind query "$pkg" | grep -qx "$prefix/lib/ocaml/$pkg"
}

# ---------------------------------------------------------------- dune
# Debian's dune 2.9.3 cannot drive OCaml 5.3; trixie's 3.17.2 bootstraps with
# the 5.3 compiler alone.
build_dune() {
  debian_source
  make release
  install -m 755 _build/install/default/bin/dune "$prefix/bin/dune"
  "$prefix/bin/dune" --version | grep -qx "${SRC_VERSION%-*}"
}
debian_step dune ocaml-dune 3.17.2-1 build_dune

# ---------------------------------------------------------------- zarith
build_zarith() {
  debian_source
  ./configure
  make
  make install
  local dir
  dir=$(ocamlfind query zarith)
  [ "$dir" = "$prefix/lib/ocaml/zarith" ]
  test -e "$dir/libzarith.a"
  test -e "$dir/zarith.cmxa"
}
debian_step zarith ocaml-zarith 1.12-1 build_zarith

# ---------------------------------------------------------------- alcotest and its dependencies
build_cmdliner() {
  debian_source
  dune_package cmdliner
}
debian_step cmdliner cmdliner 1.1.1-1 build_cmdliner

build_re() {
  debian_source
  dune_package re
}
debian_step re ocaml-re 1.10.4-1 build_re

# fmt, uutf and astring are built with topkg upstream: a dune-project and a
# src/dune of our own stand in (the modules and libraries of their pkg/META
# and src/*.mllib; the toplevel printers are left out).
topkg_dune_project() {
  printf '(lang dune 3.0)\n(name %s)\n(version %s)\n(package (name %s))\n' \
    "$1" "${SRC_VERSION%-*}" "$1" >dune-project
}

build_uutf() {
  debian_source
  topkg_dune_project uutf
  cat >src/dune <<'EOF'
(library
 (name uutf)
 (public_name uutf)
 (modules uutf)
 (flags :standard -w -a))
EOF
  dune_package uutf
}
debian_step uutf uutf 1.0.3-1 build_uutf

build_astring() {
  debian_source
  topkg_dune_project astring
  cat >src/dune <<'EOF'
(library
 (name astring)
 (public_name astring)
 (wrapped false)
 (modules astring_unsafe astring_base astring_escape astring_char astring_sub
  astring_string astring)
 (flags :standard -w -a))
EOF
  dune_package astring
}
debian_step astring ocaml-astring 0.8.5-1 build_astring

build_fmt() {
  debian_source
  topkg_dune_project fmt
  cat >src/dune <<'EOF'
(library
 (name fmt)
 (public_name fmt)
 (wrapped false)
 (modules fmt)
 (flags :standard -w -a))

(library
 (name fmt_tty)
 (public_name fmt.tty)
 (wrapped false)
 (modules fmt_tty)
 (libraries fmt unix)
 (flags :standard -w -a))

(library
 (name fmt_cli)
 (public_name fmt.cli)
 (wrapped false)
 (modules fmt_cli)
 (libraries fmt cmdliner)
 (flags :standard -w -a))
EOF
  dune_package fmt
}
debian_step fmt ocaml-fmt 0.9.0-2 build_fmt

build_alcotest() {
  debian_source
  dune_package alcotest
}
debian_step alcotest ocaml-alcotest 1.6.0-1 build_alcotest

# ---------------------------------------------------------------- check
# The toolchain as camlbeam uses it: a dune project with zarith, alcotest,
# threads.posix, dynlink and unix runs its alcotest test, and ocamlfind
# links a program with zarith, threads and dynlink.
check_toolchain() {
  mkdir -p proj/test
  cat >proj/dune-project <<'EOF'
(lang dune 3.0)
EOF
  cat >proj/test/dune <<'EOF'
(test
 (name t)
 (libraries zarith alcotest threads.posix dynlink unix))
EOF
  cat >proj/test/t.ml <<'EOF'
let big () =
  Alcotest.(check string) "2^100" "1267650600228229401496703205376"
    (Z.to_string (Z.pow (Z.of_int 2) 100))

let thread () =
  let r = ref 0 in
  let t = Thread.create (fun () -> r := Unix.getpid ()) () in
  Thread.join t;
  Alcotest.(check int) "pid" (Unix.getpid ()) !r

let dyn () = Alcotest.(check bool) "native" true Dynlink.is_native

let () =
  if Sys.ocaml_version <> "5.3.0" then failwith Sys.ocaml_version;
  Alcotest.run "toolchain"
    [ ("ocaml5", [ Alcotest.test_case "zarith" `Quick big;
                   Alcotest.test_case "threads" `Quick thread;
                   Alcotest.test_case "dynlink" `Quick dyn ]) ]
EOF
  (cd proj && dune build --root . @runtest --force)
  (cd proj && ./_build/default/test/t.exe) >t.out
  cat t.out
  grep -q 'Test Successful' t.out

  cat >f.ml <<'EOF'
let () =
  let t = Thread.create (fun () -> print_endline (Z.to_string (Z.of_int 42))) () in
  Thread.join t;
  ignore Dynlink.is_native
EOF
  ocamlfind ocamlopt -thread -package zarith,threads.posix,dynlink -linkpkg f.ml -o f.exe
  [ "$(./f.exe)" = 42 ]
}
step complete "the toolchain check" check_toolchain
