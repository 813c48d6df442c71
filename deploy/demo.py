"""``make demo``: a whole federation on this machine, ending in a release a person can open.

Generates a synthetic sector, makes throw-away certificates, starts one coordinator and one node
process per institution over mutual-TLS gRPC on 127.0.0.1, runs the demo plan, stops the nodes
and prints what was released, next to the truth that only a synthetic sector can show.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from deploy.devcerts import DevPki, make_dev_pki
from synthetic import Sector, SectorConfig, generate_sector
from synthetic.geography import pc4_table

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PLAN = REPO / "deploy" / "plans" / "s1-demo.toml"
BUDGET_CAP = "1.0"

NODE_TOML = """\
# Written by the publiek demo. See `publiek-node example-config` for every option.
institution_id = "{id}"
institution_type = "{type}"
institution_region = "{region}"

[data]
tickets = "{tickets}"
country = "{country}"

[coordinator]
address = "127.0.0.1:{port}"
server_name = "localhost"

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"

[ledger]
path = "ledger.sqlite"

[budget]
rho_cap = "{cap}"
period = "year"
max_rho_per_task = "0.5"

[policy]
allowed_modes = ["secure"]

[matching]
key_file = "{match_key}"

# Where the institution's venue is, and where postcode areas are (the synthetic sector's own
# PC4 table): without them every customer's distance would be unknown (S4 all "unknown").
[geography]
location = "{lat:.5f}, {lon:.5f}"
pc4_centroids = "{pc4}"
"""


class DemoFailed(Exception):
    pass


def write_node_configs(
    out: Path, sector: Sector, pki: DevPki, port: int | str, match_key: Path
) -> dict[str, Path]:
    """One node.toml per institution under ``out/nodes``, with the synthetic sector's PC4
    table beside them (shared by the demo and the Flower simulation)."""
    pc4 = out / "nodes" / "pc4_centroids.csv"
    pc4.parent.mkdir(parents=True, exist_ok=True)
    pc4_table().write_csv(pc4)
    configs = {}
    for inst in sector.institutions:
        folder = out / "nodes" / inst.institution_id
        folder.mkdir(parents=True)
        pair = pki.nodes[inst.institution_id]
        config = folder / "node.toml"
        config.write_text(
            NODE_TOML.format(
                id=inst.institution_id,
                type=inst.type,
                region=inst.region,
                tickets=(out / "sector" / inst.institution_id / "ticket_line.csv").resolve(),
                country=inst.country,
                port=port,
                ca=pki.ca.resolve(),
                cert=pair.cert.resolve(),
                key=pair.key.resolve(),
                cap=BUDGET_CAP,
                match_key=match_key.resolve(),
                lat=inst.lat,
                lon=inst.lon,
                pc4=pc4.resolve(),
            ),
            encoding="utf-8",
        )
        configs[inst.institution_id] = config
    return configs


def write_match_key(folder: Path) -> Path:
    """The match-key secret all nodes share and the coordinator never reads (sector reach,
    docs/reach.md): a new one per run, as a sector's data-protection officer would hand out,
    owner-only as the node requires."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "match.key"
    path.write_text(secrets.token_hex(32) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path.resolve()


def _script(name: str) -> list[str]:
    """The installed console script, so the demo runs what a user would run."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    module = "node" if name == "publiek-node" else "coordinator"
    return [sys.executable, "-m", module]


class Step:
    def __init__(self, total: int) -> None:
        self.total = total
        self.n = 0
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total}] {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _wait_for_file(path: Path, proc: subprocess.Popen[Any], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            raise DemoFailed(f"the coordinator exited early (code {proc.returncode})")
        time.sleep(0.1)
    raise DemoFailed(f"the coordinator did not start within {timeout_s:.0f} s")


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _stream(proc: subprocess.Popen[str], prefix: str) -> None:
    out: IO[str] | None = proc.stdout
    assert out is not None
    for line in out:
        print(f"{prefix}{line.rstrip()}", flush=True)


def _truth_by_discipline(sector: Sector, year: int) -> dict[str, int]:
    """Counted tickets per discipline in the synthetic truth (pooling is fine for fake people)."""
    frame = sector.truth.tickets_by("discipline", "year")
    return {
        r["discipline"]: int(r["tickets"]) for r in frame.iter_rows(named=True) if r["year"] == year
    }


def _summary(out: Path, release: dict[str, Any], sector: Sector, elapsed: float) -> None:
    tables = {t["analysis_id"]: t for t in release["tables"]}
    priv = release["privacy"]
    print()
    print(f"Release {release['release_id']}: {release['title']}")
    print(
        f"  {len(release['participants'])} institutions took part; each spent rho"
        f" {priv['rho_per_node']} (epsilon {priv['epsilon_per_node']:.2f} at delta"
        f" {priv['delta']:g}) of a yearly cap of rho {BUDGET_CAP}; mode: {priv['mode']}"
    )
    _tickets_summary(tables, sector)
    _reach_summary(tables, sector)
    _segments_summary(release, out)
    print(f"\nDone in {elapsed:.0f} s. Where to look:")
    print(f"  {out / 'release.json'}   the release, with its full provenance")
    for t in release["tables"]:
        print(f"  {out / (t['analysis_id'] + '.csv')}   the table as CSV")
    first = out / "nodes" / release["participants"][0]["institution_id"] / "node.toml"
    print(f"  publiek-node ledger --config {first}   what left one institution")
    print(f"  publiek-coordinator releases --store {out / 'releases.sqlite'}   the release store")
    print(f"  publiek-coordinator status --state {out / 'state.sqlite'}   runs and nodes")
    print(f"  {out / 'logs'}/   coordinator and node logs")


def _tickets_summary(tables: dict[str, dict[str, Any]], sector: Sector) -> None:
    """Tickets by discipline next to the synthetic truth, if the plan has that table (the demo
    plan and the sector plan do; a plan of other statistics skips this)."""
    table = next(
        (
            t
            for t in tables.values()
            if [d["name"] for d in t["dimensions"]] == ["discipline"]
            and t.get("measure") == "tickets"
        ),
        None,
    )
    quarters = [d for t in tables.values() for d in t["dimensions"] if d["name"] == "quarter"]
    if table is None or not quarters:
        return
    year = int(quarters[0]["keys"][0][:4])
    truth = _truth_by_discipline(sector, year)
    print(f"\n  Tickets in {year} by discipline (estimate, 95% interval; synthetic truth):")
    cells = [c for c in table["cells"] if "discipline" in c]
    for cell in sorted(cells, key=lambda c: -(c["estimate"] or 0)):
        est = "suppressed" if cell["estimate"] is None else f"{cell['estimate']:,}"
        interval = f"[{cell['ci95_low']:,} – {cell['ci95_high']:,}]"
        print(
            f"    {cell['discipline']:<28} {est:>10}  {interval:<22} truth"
            f" {truth.get(cell['discipline'], 0):>10,}"
        )
    post = table["post_processing"]
    if post["consistent_with"]:
        partners = ", ".join(post["consistent_with"])
        print(f"  Consistent with {partners}: its cells add up to these totals exactly.")
    if post.get("not_fitted_with"):
        print(
            f"  Not fitted with {', '.join(post['not_fitted_with'])}: the two count different"
            " things (their caps differ), and their sums differ by more than the noise explains."
        )
    bound = table["noise"]["bound"]
    known = [c for c in cells if c["estimate"] is not None and c["discipline"] in truth]
    inside = sum(c["ci95_low"] <= truth[c["discipline"]] <= c["ci95_high"] for c in known)
    below = sum(c["ci95_high"] < truth[c["discipline"]] for c in known)
    kept = sum(c["estimate"] for c in known) / max(1, sum(truth[c["discipline"]] for c in known))
    print(
        f"\n  The truth is inside {inside} of these {len(known)} intervals and above {below}."
        " The intervals cover the noise only. Before the noise, each customer was capped at"
        f" {bound['max_cells']} cells and {bound['max_per_cell']} tickets a cell, which trims the"
        f" heaviest buyers (schools, groups): the estimates add up to {kept:.1%} of the true"
        " tickets, so a large total sits under the truth by more than its interval is wide."
        " Read it as 'at least about' (docs/statistics.md)."
    )


def _segments_summary(release: dict[str, Any], out: Path) -> None:
    """The shared segmentation (S12), if the plan had a [[segmentation]]: each segment's label
    and noisy share, and how an institution applies the model to its own customers."""
    for model in release.get("segmentations", []):
        card = model["card"]
        if "applied" in card:
            how = f"a model made before ({card['applied']['file']}), no fit; this run's shares"
        else:
            how = f"epsilon {card['privacy']['epsilon_spent']:.2f} per node for the fit"
        print(f"\n  {model['title']} (S12; {how}; docs/segmentation.md):")
        for seg in model["segments"]:
            print(f"    {seg['key']}  {seg['share'] or 0:6.1%}  {seg['label']}")
        first = out / "nodes" / release["participants"][0]["institution_id"] / "node.toml"
        path = out / f"segment-model-{model['model_id']}.json"
        print(f"  publiek-node segments {path} --config {first}   one institution's audience")


def _reach_summary(tables: dict[str, dict[str, Any]], sector: Sector) -> None:
    """Sector reach (S7) and S10 next to the synthetic truth, if the plan had [[reach]]."""
    people = [t for t in tables.values() if t["statistic"] == "S7" and "reach" in t]
    sector_tables = [t for t in people if t["dimensions"][0]["name"] == "sector"]
    if not sector_tables:
        return
    [cell] = sector_tables[0]["cells"]
    section = sector_tables[0]["reach"]["section"]
    first_year = int(sector_tables[0]["title"].rsplit(", ", 1)[1][:4])
    print(f"\n  Sector reach ({section}; distinct people, 95% interval; synthetic truth):")
    print(
        f"    {'people reached':<28} {cell['estimate']:>10,}"
        f"  [{cell['ci95_low']:,} – {cell['ci95_high']:,}]  truth"
        f" {sector.truth.reach(first_year):>10,}"
    )
    shown = [t["analysis_id"] for t in tables.values() if "reach" in t]
    print(f"    also released: {', '.join(shown)} (S7-S10, docs/reach.md)")


def _shown(path: Path) -> str:
    """A path as the user can type it from where they are (relative when it is below)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _write_report(out: Path, release_id: str) -> Path:
    """The release as one self-contained HTML file, written by the real export command."""
    report = out / "report.html"
    done = subprocess.run(
        [
            *_script("publiek-coordinator"),
            "export", release_id,
            "--store", str(out / "releases.sqlite"),
            "--html", str(report),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoFailed(f"the report could not be written: {done.stderr.strip()}")
    return report


def _policymakers(out: Path, report: Path) -> None:
    # Last, so that the two things to do next are the last lines on the screen. The demo does
    # not start the dashboard itself: it returns when done, and serving is the user's choice.
    serve = [*_script("publiek-coordinator"), "serve", "--store", str(out / "releases.sqlite")]
    print("\nFor policymakers:")
    print(
        f"  {_shown(report)}   the release as one page (charts, tables, downloads; opens offline)"
    )
    print("  the dashboard of every release in this store (Ctrl-C stops it):")
    print("    " + shlex.join(_shown(Path(a)) if a.startswith("/") else a for a in serve))


def run_demo(
    out: Path, n_institutions: int, seed: int, scale: float, plan: Path, years: tuple[int, int]
) -> int:
    step = Step(total=7)
    if out.exists():
        shutil.rmtree(out)
    (out / "logs").mkdir(parents=True)
    print(f"publiek demo: {n_institutions} synthetic institutions, seed {seed}, output in {out}/")

    step(f"generating the synthetic sector ({n_institutions} institutions, {years[0]}-{years[1]})")
    t0 = time.monotonic()
    sector = generate_sector(
        SectorConfig(n_institutions=n_institutions, seed=seed, years=years, scale=scale)
    )
    sector.write(out / "sector")
    rows = sum(sector.tickets(i.institution_id).height for i in sector.institutions)
    print(f"      {rows:,} ticket lines written in {time.monotonic() - t0:.1f} s", flush=True)

    step("creating throw-away certificates (a demo CA, the coordinator, one per node)")
    ids = [i.institution_id for i in sector.institutions]
    pki = make_dev_pki(out / "pki", ids)

    step("starting the coordinator on 127.0.0.1 (mutual TLS)")
    port_file = out / "coordinator.port"
    coord_log = (out / "logs" / "coordinator.log").open("w")
    coordinator = subprocess.Popen(
        [
            *_script("publiek-coordinator"),
            "run",
            str(plan),
            "--listen", "127.0.0.1:0",
            "--port-file", str(port_file),
            # The demo's own state and release store, in its output folder: a demo never
            # resumes or versions against another one's files.
            "--state", str(out / "state.sqlite"),
            "--store", str(out / "releases.sqlite"),
            "--out", str(out),
            "--expect-nodes", str(len(ids)),
            "--wait-s", "120",
            "--coordinator-id", "publiek-demo-coordinator",
            "--ca", str(pki.ca),
            "--cert", str(pki.server.cert),
            "--key", str(pki.server.key),
        ],
        stdout=subprocess.PIPE,
        stderr=coord_log,
        text=True,
    )  # fmt: skip
    nodes: dict[str, subprocess.Popen[Any]] = {}
    try:
        port = _wait_for_file(port_file, coordinator, 60)
        step(f"starting {len(ids)} node processes (logs in {out / 'logs'}/)")
        match_key = write_match_key(out / "nodes")
        configs = write_node_configs(out, sector, pki, port, match_key)
        for inst in sector.institutions:
            config = configs[inst.institution_id]
            log = (out / "logs" / f"{inst.institution_id}.log").open("w")
            nodes[inst.institution_id] = subprocess.Popen(
                [*_script("publiek-node"), "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        step("running the plan (coordinator progress below)")
        _stream(coordinator, "      coordinator | ")
        code = coordinator.wait()
        for nid, proc in nodes.items():
            if proc.poll() is not None:
                print(f"      node {nid} exited early with code {proc.returncode}:")
                print(_tail(out / "logs" / f"{nid}.log"))
        if code != 0:
            print(_tail(out / "logs" / "coordinator.log"))
            raise DemoFailed(f"the coordinator exited with code {code}")
    finally:
        for proc in nodes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in nodes.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if coordinator.poll() is None:
            coordinator.kill()
        coord_log.close()
    step("nodes stopped; release written")
    release = json.loads((out / "release.json").read_text(encoding="utf-8"))
    step("writing the policymakers' report of the release (charts, tables, downloads)")
    report = _write_report(out, release["release_id"])
    _summary(out, release, sector, step.elapsed())
    _policymakers(out, report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.demo",
        description="Run a local publiek federation on synthetic data (what `make demo` does).",
    )
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    parser.add_argument("--institutions", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="size of each institution")
    parser.add_argument("--plan", type=Path, default=DEFAULT_PLAN)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return run_demo(
            args.out.resolve(),
            args.institutions,
            args.seed,
            args.scale,
            args.plan.resolve(),
            (2023, 2024),
        )
    except DemoFailed as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
