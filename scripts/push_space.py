"""Deploy the app to a Hugging Face Space with huggingface_hub's upload_folder (no git-lfs needed:
the Hub stores the weights and screenshots in its LFS/Xet storage on upload).

    python -m scripts.push_space USER/SPACE            # needs a write token: `hf auth login` or $HF_TOKEN
    python -m scripts.push_space USER/SPACE --dry-run  # only list what would be uploaded

The Space is created if it does not exist (Gradio SDK, the hardware README.md's header asks for).
What goes up is the working tree minus IGNORE: the app, its code, checkpoints, README and docs;
never the virtual environment, datasets, training runs, caches or tests.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# huggingface_hub patterns (fnmatch; "*" also crosses "/"), relative to the repository root
IGNORE = [
    ".git/*",
    ".venv*/*",  # every virtual environment: .venv, and .venv-gpu-image (scripts/gpu_image_check.sh)
    "data/*",
    "runs/*",
    "artifacts/*",
    "lightning_logs/*",
    "flagged/*",
    ".gradio/*",
    ".pytest_cache/*",
    ".ruff_cache/*",
    "*.egg-info/*",
    "build/*",
    "*__pycache__/*",
    "*.pyc",
    ".ci/*",
    "tests/*",
]
# folders skipped whole while listing (and every .venv*), so the listing does not walk a multi-GB
# virtual environment
_PRUNE = {".git", "data", "runs", "artifacts", "lightning_logs", "flagged", ".gradio", "__pycache__"}


def space_files(root: Path = ROOT) -> list[str]:
    """The files (relative POSIX paths) an upload of `root` sends, filtered as upload_folder filters."""
    from huggingface_hub.utils import filter_repo_objects

    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _PRUNE and not d.startswith(".venv")]
        found += [(Path(folder) / f).relative_to(root).as_posix() for f in files]
    return sorted(filter_repo_objects(found, ignore_patterns=IGNORE))


def push_space(repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create the Space if needed and upload the app in one commit; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="space",
        folder_path=str(ROOT),
        ignore_patterns=IGNORE,
        commit_message="Deploy Transformer Playground",
    )
    return str(commit)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("repo_id", help="USER/SPACE (or ORG/SPACE)")
    p.add_argument("--dry-run", action="store_true", help="list the files and their total size, upload nothing")
    p.add_argument("--private", action="store_true")
    args = p.parse_args()
    if args.dry_run:
        files = space_files()
        for name in files:
            print(name)
        total = sum((ROOT / name).stat().st_size for name in files)
        print(f"{len(files)} files, {total / 2**20:.1f} MiB would go to the Space {args.repo_id}")
        return
    print(push_space(args.repo_id, private=args.private))


if __name__ == "__main__":
    main()
