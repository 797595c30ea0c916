# margay: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test deps build lint unit bench soak clean-sandbox fuzz fuzz-ci

## demo: a 2-host sandbox in network namespaces with a local etcd, the hosts on
## two subnets behind a router that runs BIRD, BIRD + margay on each host; prints
## the routes learned over BGP, the connectivity matrix before and after a live
## policy change, then cleans up. Exit 0 only if observed matches expected.
## `make demo KEEP=1` leaves it running (and says how to look inside);
## `DATAPLANE=iptables` for the other backend; `ROUTING=direct` for one subnet
## without BGP (margay routes via bird_ip), `ROUTING=mesh` for the node mesh.
## Remove a kept sandbox with `make clean-sandbox`.
demo: deps
	$(CARGO) build --release -p margay-agent
	MARGAY_BIN="$${CARGO_TARGET_DIR:-target}/release/margay" bash deploy/sandbox/sandbox.sh demo \
		$(if $(KEEP),--keep) $(if $(DATAPLANE),--dataplane $(DATAPLANE)) \
		$(if $(ROUTING),--routing $(ROUTING)) $(DEMO_ARGS)

clean-sandbox:
	bash deploy/sandbox/sandbox.sh down --all

## test: everything CI runs: lint, unit, integration and end-to-end tests.
test: deps lint unit fuzz-ci

deps:
	bash scripts/install-deps.sh

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) deny check licenses bans

# The end-to-end tests run the real `margay` binary from target/debug, so it
# is built before the test binaries start. MARGAY_REQUIRE_ROOT makes a
# root-only test fail instead of skipping when run without root.
unit:
	$(CARGO) build -p margay-agent
	MARGAY_REQUIRE_ROOT=1 $(CARGO) test --workspace

## bench: every benchmark in a fixed order (root: namespaces, netlink), each
## one's output teed into target/bench/<name>.log, stopping at the first that
## fails; then `bench-table` rewrites the README's figure tables from the
## MARGAY-ROW lines they printed (date, machine and command in the heading).
## `make bench BENCHES="calc routes"` runs a subset: its rows are checked and
## printed, but the README is rewritten only by a run of every bench (a table
## is never rebuilt from some of its rows).
BENCH_ALL := calc routes nft iptables host_endpoints big_profile bgp bird_render \
	bgp_latency e2e_latency cold_start fanout
BENCHES ?= $(BENCH_ALL)
# Run once per firewall backend (MARGAY_BENCH_DATAPLANE); the others cover
# both backends inside one run or need none.
BENCH_PER_BACKEND := e2e_latency cold_start
# The benches asked for, in the fixed order; those left out; unknown names.
BENCH_RUN := $(filter $(BENCHES),$(BENCH_ALL))
BENCH_SUBSET := $(strip $(filter-out $(BENCHES),$(BENCH_ALL)))
BENCH_UNKNOWN := $(strip $(filter-out $(BENCH_ALL),$(BENCHES)))
bench: deps
	$(if $(BENCH_UNKNOWN),$(error unknown benches: $(BENCH_UNKNOWN); known: $(BENCH_ALL)))
	@set -euo pipefail; start=$$SECONDS; \
	trap 'echo "== make bench: $$((SECONDS - start)) s in all (builds included)"' EXIT; \
	set -x; \
	$(CARGO) build --release -p margay-agent; \
	$(CARGO) build --release -p margay-benches --bin bench-table; \
	$(CARGO) bench -p margay-benches --no-run $(foreach b,$(BENCH_RUN),--bench $(b)); \
	set +x; \
	target="$$(realpath "$${CARGO_TARGET_DIR:-target}")"; logs="$$target/bench"; \
	mkdir -p "$$logs"; rm -f "$$logs"/*.log; \
	export MARGAY_BIN="$$target/release/margay" MARGAY_REQUIRE_ROOT=1; \
	for b in $(BENCH_RUN); do \
		backends=-; \
		case " $(BENCH_PER_BACKEND) " in *" $$b "*) backends="nftables iptables";; esac; \
		for dp in $$backends; do \
			pick=(); [ "$$dp" = - ] || pick=("MARGAY_BENCH_DATAPLANE=$$dp"); \
			echo "== bench $$b $${pick[*]}"; t0=$$SECONDS; \
			env "$${pick[@]}" $(CARGO) bench -p margay-benches --bench "$$b" 2>&1 \
				| tee -a "$$logs/$$b.log"; \
			echo "== bench $$b $${pick[*]}: $$((SECONDS - t0)) s"; \
		done; \
	done; \
	logfiles=(); for b in $(BENCH_RUN); do logfiles+=("$$logs/$$b.log"); done; \
	if [ -z "$(BENCH_SUBSET)" ]; then \
		"$$target/release/bench-table" --readme "$(CURDIR)/README.md" "$${logfiles[@]}"; \
	else \
		echo "== a subset ran (not: $(BENCH_SUBSET)): README.md left as it is"; \
		"$$target/release/bench-table" --dry-run "$${logfiles[@]}"; \
	fi

## fuzz: every cargo-fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each
## (nightly, AddressSanitizer). Starts from the checked-in corpus
## fuzz/corpus/<target> and writes new inputs to fuzz/target/corpus/<target>
## only; a crash stops it with the input in fuzz/artifacts/<target>/ (fix
## the library, then copy the input into fuzz/corpus/<target>/).
## `make fuzz FUZZ_SECONDS=3600 FUZZ_TARGETS=selector` for a long run.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= datastore_update selector settings nft_roundtrip
FUZZ_FLAGS ?= -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
fuzz: deps
	cd fuzz && $(CARGO) +nightly fuzz build --target-dir target
	set -e; cd fuzz && for t in $(FUZZ_TARGETS); do \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		mkdir -p target/corpus/$$t; \
		$(CARGO) +nightly fuzz run --target-dir target $$t target/corpus/$$t corpus/$$t \
			-- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) $(if $(FUZZ_SEED),-seed=$(FUZZ_SEED)); \
	done

## fuzz-ci: the bounded run CI does: 30 s a target from a fixed seed, so a
## run is repeatable and CI does not turn red by luck; `make fuzz` (random
## seeds) is where new inputs are found.
fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=30 FUZZ_SEED=1

## soak: the long soak, by hand (root): the release `margay run` against a
## real etcd under SOAK_UPDATES endpoint/profile/policy updates with etcd
## compactions, etcd restarts and SIGHUPs; then checks kernel == `margay plan`,
## RSS growth after warm-up < 5 %, no fd growth, no restart, and prints the
## figures. The agent gets MALLOC_ARENA_MAX=2 and MALLOC_MMAP_THRESHOLD_=131072,
## as deploy/margay.service sets them.
## `make soak SOAK_UPDATES=100000 SOAK_DATAPLANE=iptables`.
SOAK_UPDATES ?= 1000000
SOAK_DATAPLANE ?= nftables
soak:
	$(CARGO) build --release -p margay-agent
	MARGAY_BIN="$$(realpath $${CARGO_TARGET_DIR:-target})/release/margay" MARGAY_REQUIRE_ROOT=1 \
		MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=131072 \
		SOAK_UPDATES=$(SOAK_UPDATES) SOAK_DATAPLANE=$(SOAK_DATAPLANE) \
		$(CARGO) test -p margay-tests --test soak -- --ignored --exact long_soak --nocapture
