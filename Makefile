# camlbeam: `make demo` runs the demo, `make test` runs the whole test suite.
# Both set the machine up first (scripts/setup.sh installs any missing Debian package).
BUILD ?= build
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")

.PHONY: all setup build test demo bench clean install-ocaml

all: build

setup:
	@scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -G "$(GENERATOR)" -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD)

test: setup
	@scripts/test.sh

demo: build
	@scripts/demo.sh

# The OCaml packages camlbeam and camlbeam.host, for building plugins with ocamlfind
# (docs/plugins.md): into OCaml's library directory (as root), or under PREFIX=dir, then
# export OCAMLPATH=dir/lib.
install-ocaml: build
	@dune install --root ocaml --build-dir $(CURDIR)/$(BUILD)/ocaml $(if $(PREFIX),--prefix $(PREFIX))

bench: build
	@bench/run.sh

clean:
	rm -rf build build-*
