# Convenience wrapper around CMake. The two quick-start commands:
#   make demo    build, then run ramfit on the embedded model
#   make check   build and run the test suite
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
MODEL ?= models/stories260k

.PHONY: all deps deps-test configure build demo check asan clean

all: build

deps:
	@sh scripts/deps.sh build
deps-test:
	@sh scripts/deps.sh test

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: deps-test $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The whole pipeline on the embedded model: analyse once, plan for a budget (the report),
# write the MLX checkpoint, read it back, run it.
DEMO_BUDGET ?= 260kB
demo: build
	./$(BUILD)/ramfit inspect $(MODEL)
	./$(BUILD)/ramfit analyse $(MODEL) --mode opt -o $(BUILD)/demo.profile.json
	./$(BUILD)/ramfit plan $(BUILD)/demo.profile.json --budget $(DEMO_BUDGET) -o $(BUILD)/demo.plan.json
	./$(BUILD)/ramfit quantize $(MODEL) --plan $(BUILD)/demo.plan.json -o $(BUILD)/demo-mlx --force
	./$(BUILD)/ramfit inspect $(BUILD)/demo-mlx
	./$(BUILD)/ramfit generate $(BUILD)/demo-mlx -p "Once upon a time" -n 48

check: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

asan: deps-test
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DRF_SANITIZE=ON -DRF_BENCH=OFF
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD) build-asan build-fuzz
