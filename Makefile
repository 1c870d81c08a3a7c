# camlbeam: `make demo` runs the demo, `make test` runs the whole test suite.
# Both set the machine up first (scripts/setup.sh installs any missing Debian package).
BUILD ?= build
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")

.PHONY: all setup build test demo bench clean install-ocaml

all: build

setup:
	@scripts/setup.sh

# The C++ tree, the workers (copied into erlang/priv), the OCaml packages, the examples; then
# the Erlang application, into erlang/_build/default/lib (ERL_LIBS, docs/getting-started.md).
build: setup
	@cmake -S . -B $(BUILD) -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD)
	@cd erlang && REBAR_OFFLINE=1 REBAR_COLOR=none rebar3 compile

# The suite also runs on OCaml 5.3, which scripts/setup-ocaml5.sh builds once into a prefix
# outside the clone (about 6 to 9 minutes on a fresh machine; silent afterwards).
test: setup
	@scripts/setup-ocaml5.sh
	@scripts/test.sh

demo: build
	@scripts/demo.sh

# The OCaml packages camlbeam and camlbeam.host, for building plugins with ocamlfind
# (docs/plugins.md): into OCaml's library directory (as root), or under PREFIX=dir, then
# export OCAMLPATH=dir/lib. dune alone builds them, in seconds; in the build directory and
# profile the CMake build uses (cmake/CamlbeamHost.cmake), so neither rebuilds the other's.
install-ocaml: setup
	@dune build --root ocaml --build-dir $(CURDIR)/$(BUILD)/ocaml --profile release --display quiet @install
	@dune install --root ocaml --build-dir $(CURDIR)/$(BUILD)/ocaml $(if $(PREFIX),--prefix $(PREFIX))

bench: build
	@bench/run.sh

clean:
	rm -rf build build-*
