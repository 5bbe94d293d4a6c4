# strata: one binary (build/strata) and one test runner (build/tests).
# `make` builds, `make test` runs the default suite, `make asan` runs it under ASan+UBSan,
# `make bench` prints benchmarks, `make deps` installs what a fresh Debian 12 machine lacks.
# `make format` formats the tree; `make format-check`, `make check-limits`,
# `make check-headers` and `make ansible-check` are the checks .ci/run makes before building.
# `make install PREFIX=DIR` installs the binary, configs and models (docs/operations.md).

BUILD    ?= build
CC       ?= cc
PKGS     := openblas libzmq msgpack yaml-0.1 jansson libpng zlib libsodium libmicrohttpd
OPT      ?= -O2
CFLAGS   ?=
# -ffp-contract=off: no multiply-add is fused into an FMA, so the AVX-512, AVX2 and baseline
# versions of the hot loops (OP_VECTOR_CLONES in kernels/ops.h) give the same bits.
CFLAGS   += -std=c17 $(OPT) -g -Wall -Wextra -Werror -Wno-format-truncation -D_GNU_SOURCE -fopenmp -MMD -MP \
            -ffp-contract=off \
            -I. $(shell pkg-config --cflags $(PKGS))
# MPI (OpenMPI) for worker rank groups: only the files that see mpi.h get its include flags.
MPI_CFLAGS := $(shell mpicc --showme:compile)
MPI_LIBS   := $(shell mpicc --showme:link)
LDLIBS   += $(shell pkg-config --libs $(PKGS)) $(MPI_LIBS) -fopenmp -lm -lpthread
MODULES  := common kernels proto worker coordinator cluster

LIB_SRC  := $(filter-out cluster/main.c,$(foreach m,$(MODULES),$(wildcard $(m)/*.c)))
# tests/mpi: the rank group tests (test_*.c); ring.c is the test bed's own MPI program.
TEST_SRC := $(wildcard tests/*.c) $(foreach m,$(MODULES),$(wildcard tests/$(m)/*.c)) \
            $(wildcard tests/mpi/test_*.c) $(wildcard tests/fuzz/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/obj/%.o)

.PHONY: all test asan fuzz fuzz-bins fuzz-seeds bench bench-sr eval chaos test-4k test-4k-ranks test-plan \
        bench-mpi deps fixtures format format-check check-limits check-headers clean install \
        test-cluster ansible-check

all: $(BUILD)/strata $(BUILD)/tests $(BUILD)/fuzz-seeds

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo '  CC    $<'
	@$(CC) $(CFLAGS) -c $< -o $@

# The activation loops vectorise only when the compiler may assume finite values.
$(BUILD)/obj/kernels/act.o: CFLAGS += -ffinite-math-only -fno-signed-zeros

$(BUILD)/obj/worker/rank_group.o $(BUILD)/obj/worker/tile_exchange.o $(BUILD)/obj/worker/tile_group.o: CFLAGS += $(MPI_CFLAGS)

$(BUILD)/strata: $(BUILD)/obj/cluster/main.o $(LIB_OBJ)
	@echo '  LINK  $@'
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests: $(TEST_OBJ) $(LIB_OBJ)
	@echo '  LINK  $@'
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS)

# The default suite: unit, parity and command-line tests. TESTS=pattern runs a subset.
# STRATA_COORD_CHECK=1: every coordinator the tests start verifies its invariants per message.
test: all
	STRATA_COORD_CHECK=1 STRATA_BIN=$(BUILD)/strata ./$(BUILD)/tests $(TESTS)

# The whole suite, at full size, under AddressSanitizer + UndefinedBehaviorSanitizer, in its own
# build folder (about 11 minutes on 2 busy cores, the cascade test 9 of them); each test's time
# limit is tripled. QUICK=1 shrinks the slow tests' work (STRATA_TEST_QUICK) for a fast local run.
# OpenBLAS's own threads are not instrumented; leak checks cover our allocations, test by test.
QUICK ?= 0
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	  -fno-sanitize-recover=undefined" LDFLAGS="-fsanitize=address,undefined" all
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 STRATA_TEST_TIMEOUT_SCALE=3 \
	  STRATA_COORD_CHECK=1 STRATA_BIN=build-asan/strata STRATA_TEST_QUICK=$(QUICK) ./build-asan/tests $(TESTS)

# libFuzzer (clang 14: `tools/deps.sh --fuzz`) on every reader of outside bytes: one target per
# tests/fuzz/fuzz_*.c, each built with ASan+UBSan in build-fuzz/ and run FUZZ_SECONDS on its
# corpus (tests/fuzz/corpus/TARGET, which grows); tests/fuzz/run.sh adds a line per target to
# tests/fuzz/tally.tsv and prints the totals. FUZZ_TARGETS=msg,png picks some. `make test`
# replays every corpus and regression input (fuzz_corpus_replay).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang-14 OPT="-O1 -fno-omit-frame-pointer -Wno-unknown-warning-option -Wno-pass-failed -DSTRATA_LIBFUZZER \
	  -fsanitize=fuzzer-no-link $(FUZZ_SAN)" fuzz-bins
	tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS) $(subst $(comma), ,$(FUZZ_TARGETS))

comma := ,
fuzz-bins: $(patsubst %,$(BUILD)/fuzz/%,$(subst $(comma), ,$(FUZZ_TARGETS)))

$(BUILD)/fuzz/%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/util.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo '  LINK  $@'
	@$(CC) $(CFLAGS) -fsanitize=fuzzer $^ -o $@ $(LDFLAGS) $(LDLIBS)

# The seeds of the fuzz corpora, once, into tests/fuzz/corpus: messages, a journal, PNGs and a
# safetensors file written by the product's own writers (tests/fuzz/seeds/make_seeds.c), and the
# shipped job, pipeline and model JSON files and the safetensors fixtures.
# `all` builds the program too, so that a change to the messages it writes cannot leave it behind.
$(BUILD)/fuzz-seeds: $(BUILD)/obj/tests/fuzz/seeds/make_seeds.o $(LIB_OBJ)
	@echo '  LINK  $@'
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS)

fuzz-seeds: $(BUILD)/fuzz-seeds
	./$(BUILD)/fuzz-seeds tests/fuzz/corpus
	mkdir -p tests/fuzz/corpus/job tests/fuzz/corpus/pipeline tests/fuzz/corpus/config
	cp configs/jobs/*.yaml tests/fuzz/corpus/job/
	cp configs/pipelines/*.yaml tests/fuzz/corpus/pipeline/
	for m in models/*/; do n=$$(basename $$m); cp $$m/config.json tests/fuzz/corpus/config/$$n.json; \
	  cp $$m/scheduler_config.json tests/fuzz/corpus/config/$$n.sched.json; done
	cp tests/fixtures/io/*.safetensors tests/fuzz/corpus/safetensors/

# Engine beside PyTorch (ddpm-cifar10, then the l4096 SR model at its 1056 tile: GFLOP/s against
# the sgemm peak, time per megapixel by tile side), then the farm (pipelining, coordinator
# throughput). Wants an idle machine. `make bench-sr`: the SR model's part alone.
bench: all
	tools/bench.sh
	python3 tools/bench_farm.py

bench-sr: all
	tools/bench.sh sr

# One 4096x4096 image through 5 levels of tiny random models (tiles from 1024 on): memory,
# tiles and 48 MB frames at full size; prints each level's time and the peak memory (about 6 min).
# The chaos run of "Nothing lost, no one let in" (tests/chaos/chaos.sh): 200 images of test-4k at
# 256 px on a standing coordinator with --state, random worker SIGKILLs every second, a SIGSTOP of
# 6 s, two coordinator SIGKILLs and restarts; byte-identical to a clean render. `make test` runs a
# short variant (farm_chaos_short).
chaos: all
	tests/chaos/chaos.sh $(BUILD)/strata $(BUILD)/chaos $(or $(CHAOS_COUNT),200) 256 2

test-4k: all
	/usr/bin/time -f "largest process of the farm (its peak RSS): %M kB" \
	  $(BUILD)/strata render --pipeline configs/pipelines/test-4k.yaml --count 1 \
	  --resolution 4096 --threads 2 --out $(BUILD)/test-4k --verbose 2>&1 | \
	  grep -E "done by worker|failed|largest|images in" | sed -e 's/.*(render #0 //'

# Does `strata plan` predict a farm? Plans the default pipeline for one node of this machine's
# cores, renders 24 images at 128 with the planned pools, then checks the per-level times, the
# bottleneck pool's busy fraction (>= 80%) and the throughput (within 20%) from the job's
# timings.jsonl (tests/plan/test_plan.sh; README "Planning a farm"). Wants an idle machine.
test-plan: all
	tests/plan/test_plan.sh $(BUILD)/strata $(BUILD)/test-plan $(or $(PLAN_COUNT),24) 128

# Rank invariance at size: test-4k.yaml at 1024 with --ranks l1024=1, 2, 3 against no --ranks
# (byte-identical PNGs; about 3 minutes on 2 cores; the default suite runs a smaller cascade).
test-4k-ranks: all
	tests/mpi/test_4k_ranks.sh $(BUILD)/strata $(BUILD)/test-4k-ranks

# Strong scaling of a rank group, 1 -> 2 ranks, and its memory at 4096 (README, "Rank groups").
bench-mpi: all
	tests/mpi/bench_mpi.sh $(BUILD)/strata $(BUILD)/bench-mpi

# Checks of the shipped cascade's quality (needs the venv and tools/data_emoji.py's data).
eval: all
	.venv/bin/python tools/eval_cascade.py

# Installs the system packages the build, the tests and `strata render` need (Debian 12, root).
deps:
	tools/deps.sh

# Regenerates the reference fixtures with diffusers and torch (needs the venv: tools/venv.sh).
fixtures:
	.venv/bin/python tools/make_fixtures.py --out tests/fixtures/unet
	.venv/bin/python tools/make_sampler_fixtures.py
	.venv/bin/python tools/make_io_fixtures.py
	.venv/bin/python tools/make_resize_fixture.py

# ---- test-netns: the multi-node test bed (tests/mpi/netns.sh; docs/cluster.md) ----
# Network namespaces on a veth bridge stand for nodes. An MPI ring (tests/mpi/ring.c, no strata
# code) runs on 2 then 3 of them over TCP and must see one address per rank, then again through
# the `--` hook that strata's rank groups will use; a job of the tiny cascade through a coordinator
# on the bridge and workers on the nodes must give strata render's bytes (netns_farm.sh); the
# Slurm script, with a stand-in for Slurm, must start a pool on both nodes with pinned kernels
# (netns_slurm.sh); `strata render --bind BRIDGE --ranks l1024=2` with a rank per node must give
# the bytes of the render without --ranks (netns_render.sh); a standing coordinator's 2-node
# l1024 group losing rank 1 to SIGKILL mid-task, restarted, must still give render's bytes and
# list the image once (netns_farm_kill.sh). The last two render test-4k at 1024: ~5 minutes.
# Needs root and OpenMPI, else it says "skip: ..." (status 77) and passes.
.PHONY: test-netns
$(BUILD)/mpi/ring: tests/mpi/ring.c
	@mkdir -p $(dir $@)
	mpicc -std=c17 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE $< -o $@
test-netns: $(BUILD)/strata
	@command -v mpicc >/dev/null || { echo "skip: no mpicc (OpenMPI: make deps)"; exit 0; }; \
	$(MAKE) --no-print-directory $(BUILD)/mpi/ring || exit 1; \
	for n in 2 3; do tests/mpi/netns.sh --nodes $$n --timeout 60 mpi $(BUILD)/mpi/ring --distinct; \
	  rc=$$?; [ $$rc = 77 ] && exit 0; [ $$rc = 0 ] || exit $$rc; done; \
	tests/mpi/netns.sh --timeout 60 -- sh -c \
	  'mpirun $$STRATA_NETNS_MPIRUN_ARGS -np 2 $(BUILD)/mpi/ring --distinct' && \
	tests/mpi/netns.sh --timeout 120 -- tests/mpi/netns_farm.sh $(BUILD)/strata && \
	tests/mpi/netns.sh --timeout 120 -- tests/mpi/netns_slurm.sh $(BUILD)/strata && \
	tests/mpi/netns.sh --timeout 400 -- tests/mpi/netns_render.sh $(BUILD)/strata && \
	tests/mpi/netns.sh --timeout 400 -- tests/mpi/netns_farm_kill.sh $(BUILD)/strata
# ---- end test-netns ----

# ---- test-cluster: the Ansible playbook on a 3-host cluster of network namespaces ----
# tests/cluster/netns_cluster.sh starts sshd in 3 nodes of the netns bed (tests/mpi/netns.sh);
# tests/cluster/test_playbook.sh runs ansible/site.yml over SSH: it installs and starts a
# coordinator and the test-tiny pools, a job's bytes must be strata render's, a second run must
# report changed=0, and raising then lowering l32's count must start then drain exactly those
# workers while a job runs (docs/operations.md). Needs root, sshd and Ansible, else it says
# "skip: ..." and passes. A few minutes on an idle machine (each task is an SSH round trip).
test-cluster: all
	@tests/mpi/netns.sh --nodes 3 --timeout 3000 -- tests/cluster/netns_cluster.sh \
	  tests/cluster/test_playbook.sh $(BUILD)/strata; rc=$$?; [ $$rc = 77 ] && exit 0; exit $$rc

# ---- ansible-check: what CI checks of ansible/ (ansible-lint's default profile, offline) ----
ansible-check:
	cd ansible && ansible-lint --offline --nocolor -q && \
	  ansible-playbook -i inventory.example.ini --syntax-check site.yml

# ---- install: `make install PREFIX=/opt/strata` (default /usr/local; DESTDIR for packaging) ----
# PREFIX/bin/strata, and under PREFIX/share/strata the shipped configs (configs/, pipelines in
# configs/pipelines/) and every model directory a shipped pipeline names. The share tree keeps the
# repository's layout, so the pipelines' relative model paths (../../models/l32,
# ../../tests/fixtures/unet/sr/model) resolve there as they do in the checkout. `install -C`
# leaves a file that is already the same untouched (its time too), and a line "'SRC' -> 'DST'" is
# printed only for a file copied: a second run prints none (the Ansible role counts on it).
PREFIX  ?= /usr/local
comma   := ,
SHARE   := $(DESTDIR)$(PREFIX)/share/strata
# The model directories the shipped pipelines name, relative to the repository root.
INSTALL_MODELS := $(sort $(patsubst ../../%,%,$(shell sed -n \
  's|.*model: *\(\.\./\.\./[^ $(comma)}]*\).*|\1|p' configs/pipelines/*.yaml)))
install: $(BUILD)/strata
	@install -d $(DESTDIR)$(PREFIX)/bin $(SHARE)/configs/pipelines $(SHARE)/configs/jobs $(SHARE)/models
	@install -C -v -m 755 $(BUILD)/strata $(DESTDIR)$(PREFIX)/bin/strata
	@install -C -v -m 644 configs/*.yaml $(SHARE)/configs/
	@install -C -v -m 644 configs/pipelines/*.yaml $(SHARE)/configs/pipelines/
	@install -C -v -m 644 configs/jobs/* $(SHARE)/configs/jobs/
	@install -C -v -m 644 models/LICENSES.md $(SHARE)/models/LICENSES.md
	@for m in $(INSTALL_MODELS); do install -d $(SHARE)/$$m && \
	  install -C -v -m 644 $$m/* $(SHARE)/$$m/ || exit 1; done

# ---- checks of what the repository promises (run by .ci/run) ----
# Every .c and .h of the product folders and of tests/ (all its subfolders), formatted with the
# repository's .clang-format by clang-format 14 (Debian 12's: tools/deps.sh).
FORMAT_SRC := $(shell find $(MODULES) tests -name '*.[ch]' | LC_ALL=C sort)
HEADERS    := $(filter %.h,$(FORMAT_SRC))

format:
	clang-format -i $(FORMAT_SRC)

# Fails listing the files `make format` would change.
format-check:
	@clang-format --version | grep -q 'version 14\.' || \
	  echo "format-check: warning: the tree is formatted by clang-format 14, this is $$(clang-format --version)"
	@bad=$$(for f in $(FORMAT_SRC); do clang-format --dry-run -Werror "$$f" >/dev/null 2>&1 || echo "$$f"; done); \
	if [ -n "$$bad" ]; then echo "format-check: not formatted (make format fixes them):"; \
	  echo "$$bad" | sed 's/^/  /'; exit 1; fi; \
	echo "format-check: $(words $(FORMAT_SRC)) files formatted"

# No product file over 500 lines, no function over 60 (tools/check_limits.sh); prints the largest.
check-limits:
	@tools/check_limits.sh --top

# Each header (product and tests) compiles on its own, included twice (it includes what it needs and is
# guarded), with the build's warnings.
check-headers:
	@fail=0; for h in $(HEADERS); do \
	  printf '#include "%s"\n#include "%s"\n' $$h $$h | \
	    $(CC) $(filter-out -MMD -MP,$(CFLAGS)) -x c -fsyntax-only - || \
	    { echo "check-headers: $$h does not compile on its own"; fail=1; }; \
	done; [ $$fail = 0 ] && echo "check-headers: $(words $(HEADERS)) headers compile on their own"

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/obj/cluster/main.d
