"""What an upgrade runbook needs to know about the installed release: the diff, and whether the driver moves."""

from __future__ import annotations

from pathlib import Path

from mirrorkit.bundle.inputs import load_plan_or_lock
from mirrorkit.diff import compare, render
from mirrorkit.lock import Lock
from mirrorkit.rewrite.crchanges import cr_changes
from mirrorkit.rewrite.runbook import RunbookInput
from mirrorkit.rewrite.runbook_upgrade import UpgradeInput

# images the driver pods run: the driver container and its init container (the driver manager)
DRIVER_COMPONENTS = ("driver", "driver.manager")


def upgrade_input(new: RunbookInput, new_lock: Lock | None, old_source: str) -> UpgradeInput:
    old_plan, old_lock = load_plan_or_lock(old_source)
    diff = compare((old_plan, old_lock), (new.plan, new_lock))
    driver = [f"{c.component} {c.old} → {c.new}" for c in diff.changed if c.component in DRIVER_COMPONENTS]
    if not driver and any(i.component in DRIVER_COMPONENTS for i in new.plan.images
                          if i.source in set(diff.added)):
        driver = ["a new driver image"]
    old_is_bundle = old_lock is not None or Path(old_source).is_dir()
    return UpgradeInput(new=new, old_plan=old_plan, old_source=old_source, old_is_bundle=old_is_bundle,
                        changes=render(diff, "text"), driver_changes=driver, added=len(diff.added),
                        cr_changes=cr_changes(old_plan, new.plan))
