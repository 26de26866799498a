"""Two real sim runners (ACCOUNT f1, f2) on one SQLite file with a small firm gross cap: entries
get vetoed_firm_gross and the recorded firm gross stays within the cap (up to the marks' drift
of positions already held: the cap is checked at entry, at entry prices)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import yaml

from prod_core.storage import Storage
from tests.runner.helpers import REPO, PaperProcess, active_governance

CAP = 6000.0
DRIFT = 1.10  # marks move after the reservation; fills slip


def _start(tmp: Path, db: Path, configs: Path, account: str, seed: int) -> PaperProcess:
    work = tmp / account
    work.mkdir(exist_ok=True)
    return PaperProcess(work, "--bar-interval", "0.05", "--linger", "0", "--seed", str(seed), "--max-seconds", "200",
                        "--run-id", f"run-{account}",
                        env={"ACCOUNT": account, "DB_PATH": str(db), "CONFIG_DIR": str(configs),
                             "PROMETHEUS_SD_DIR": str(tmp / "sd")})


def _vetoes(db: Path) -> int:
    with Storage(str(db), create=False) as st:
        return int(st.query("SELECT COUNT(*) AS n FROM plans WHERE decision = 'vetoed_firm_gross'")[0]["n"])


def _firm_total(db: Path) -> float:
    with Storage(str(db), create=False) as st:
        return sum(r["gross_usd"] for r in st.firm_exposure())


def test_two_runners_share_a_firm_gross_cap(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    active_governance(configs)
    path = configs / "governance.yaml"
    gov = yaml.safe_load(path.read_text())
    gov["portfolio"]["firm_max_gross_exposure_usd"] = CAP
    path.write_text(yaml.safe_dump(gov, sort_keys=False))
    db = tmp_path / "crupto.db"
    runs = {a: _start(tmp_path, db, configs, a, seed) for a, seed in (("f1", 21), ("f2", 22))}
    try:
        for run in runs.values():
            run.wait_for_line("Фид sim зарегистрирован")
        highest = 0.0
        deadline = time.time() + 120.0
        while time.time() < deadline:
            highest = max(highest, _firm_total(db))
            if _vetoes(db) >= 3:
                break
            time.sleep(0.2)
        assert _vetoes(db) >= 3, "no entry was vetoed_firm_gross: " + "\n".join(r.output()[-2000:] for r in runs.values())
        assert highest <= CAP * DRIFT, highest
        with Storage(str(db), create=False) as st:
            assert {r["account"] for r in st.firm_exposure()} == {"f1", "f2"}
            approved = st.query("SELECT COUNT(*) AS n FROM plans WHERE status <> 'vetoed'")[0]["n"]
        assert approved >= 1
        print(f"\nfirm gross cap {CAP:.0f} USD: highest recorded firm gross {highest:.2f} USD, "
              f"{_vetoes(db)} vetoed_firm_gross, {approved} entries passed")
    finally:
        for run in runs.values():
            run.interrupt()
        for run in runs.values():
            run.wait()
    # a clean stop records each account's real gross (pending entries cancelled first)
    assert _firm_total(db) <= CAP * DRIFT
