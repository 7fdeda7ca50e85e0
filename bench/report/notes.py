"""The fixed prose at the end: what the measurements changed, and how to reproduce them."""
from __future__ import annotations


def changes_section(r: dict) -> str:
    """What the measurements changed in the code (fixed prose)."""
    return """## What the measurements changed

- **The reshaped package (session 3) against the code before it, batching measured in the same session**: the
  previous commit (6328a13, synthetic OCR) and the new code ran `python -m bench.run --only batching` one after the
  other on the quiet machine: clip_svm at concurrency 16, batched ÷ unbatched, old 1.65 and 1.34 (mean 1.50), new
  1.85 and 1.25 (mean 1.55); the gateway ÷ fan-out p50 ratio 1.025 before, 1.022 after. Within this VM's noise (a
  first full run of the new code measured 1.18 for batching, its unbatched rounds unusually fast).
- **OCR_MAX_BOXES=32**: a page full of text read every box (73) in 11.4 CPU-s against a 10 s member timeout; the
  32 largest in 7.5 (one thread, fp32 CRAFT, an earlier and slower machine). With the int8 CRAFT on this one: every
  box (64) in 2.9 CPU-s, the 32 largest in 1.9 (ACCURACY.md).

- **Dynamic batching** (`shared/serving/batching.py`): a batch waits for more requests only while more are known to be
  coming (as many were in flight recently as the batch would hold), never longer than `BATCH_MAX_WAIT_MS` after it
  could have run. At concurrency 1 nothing waits. The wait is counted from when the previous batch ended, not from
  the oldest arrival: counted from arrival, the clients answered by one batch came back to find a request that had
  queued during it and no wait left, and batches alternated 1 and N−1 (mean batch 2.0 at concurrency 4 in the first
  runs; a unit test keeps this from coming back).
- **BATCH_MAX_WAIT_MS default 5 → 20 ms**: with 5 ms the clients answered by one batch often came back too late
  for the next (mean batch 4.8–5.0 of a possible 8 at concurrency 16); with 20 ms batches fill (7.8) and
  throughput, p50 and p95 all improve (the row "BATCH_MAX_WAIT_MS=5" in the batching table). Concurrency 1 is
  unaffected: nothing waits when no other request is in flight.
- **Recogniser convolutions in channels-last layout** on CPU (`OcrReader.load`; same outputs, a unit test checks).
- **Idle OpenMP threads sleep** (`OMP_WAIT_POLICY=PASSIVE`, exported by the gunicorn config): with libgomp's
  default spinning a CLIP request cost about 3× the CPU when the services share the cores (see the section above).
- **CRAFT runs on ONNX Runtime** on CPU (`OCR_BACKEND=onnx`, `shared/features/craft_onnx.py`), its pool threads not
  spinning either; compared with the torch variants in the OCR section.
- **The meta-model combine sums the forest's trees in the request thread** (`shared.learning.meta_model.forest_proba`, the
  same numbers as `RandomForestClassifier.predict_proba`, a unit test checks): the forest's own method hands its
  100 trees to joblib even with n_jobs=1, which for the one row a request combines cost 10.9 ms against 1.5 ms
  (in-process, 300 calls each, the bench's trained stack). It runs after the slowest member has answered, so all
  of it was on the critical path; the gateway now adds about 1 ms after the slowest member's answer (its
  response's `latency_ms` minus the slowest member's, median of 48 requests).
- **The CLIP services keep only the image tower, and the members give back the heap freed by loading**
  (`ClipEmbedder.load` keeps `model.visual`: 63 M of ViT-B-32's 151 M parameters are the text tower, which
  serving never runs, and a unit test checks the embeddings equal the whole model's `encode_image`;
  `service.release_freed_memory` calls glibc's `malloc_trim` once a member is loaded). In-process, ViT-B-32 loaded
  and one batch of 4 embedded: 1,786 MiB RSS before, 1,415 MiB after (two runs each). torch with its CUDA
  libraries is about 0.9 GB of RSS per process before any model loads.
- **Batching slack behind the gateway** (`gateway.SlackPlanner`, `X-Batch-Slack-Ms`): see its section above.
  Without it the CLIP members batched near 1 behind the gateway at every concurrency, since requests reach them
  at the OCR member's pace.
- **The throughput ideal is measured where the members share the cores** (the fan-out load rows), with the
  members-alone ideal kept beside it: the previous run used only the latter and measured 0.855 at concurrency 1
  (goal 0.9), its gap being the members' own CPU growing when they share 2 cores, which the client's own
  fan-out pays as well."""


def reproduce_section(r: dict) -> str:
    """How to rerun the bench (fixed prose)."""
    return """## Reproduce

```
make bench                                   # full run, about 18 minutes on 2 cores; rewrites this file
.venv/bin/python -m bench.run --quick        # smoke run (tiny), into bench/results/quick/
.venv/bin/python -m bench.run --only ocr     # one section; then --report-only to re-render
```
The bench writes full-size synthetic weights, a small trained stack and a feature cache under `.cache/bench/`
(git-ignored), starts the services on ports 5100-5103 (never the 5000-5003 of `make serve`), and keeps service logs
in `bench/results/logs/`."""
