"""Guest assets: what the guest runs, made on the host (harness/guest/*.py)."""
from pathlib import Path

GUEST_TOOLS = Path(__file__).resolve().parents[2] / "guest-tools"  # the guest's sources in this checkout
