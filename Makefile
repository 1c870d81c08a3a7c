# camlbeam: `make demo` runs the demo, `make test` runs the whole test suite.
# Both set the machine up first (scripts/setup.sh installs any missing Debian package).
BUILD ?= build
GENERATOR := $(shell command -v ninja >/dev/null 2>&1 && echo Ninja || echo "Unix Makefiles")

.PHONY: all setup build test demo bench clean

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

bench: build
	@bench/run.sh

clean:
	rm -rf build build-*
