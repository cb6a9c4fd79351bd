#!/usr/bin/env bash
# Runs the README's quick start and its synthetic examples, as shown, in a fresh clone.
#
# Usage: scripts/check_readme_quickstart.sh [CLONE_DIR]
#
# Clones this repository's HEAD into CLONE_DIR (default: a new temporary folder), then runs, in
# README order, every command of the bash blocks marked `<!-- fresh-clone: run -->`: first
# `make demo` and `make test`, then the synthetic examples (prepare, pretrain, fine-tune,
# compare, training curves, resume, publish --dry-run) with .venv/bin on the PATH, as a user who
# activated the environment would. Stops at the first command that fails and names it. Needs
# python3 (3.10 or newer), make and git; downloads only the Python packages. It runs `make demo`
# and `make test` first, so it takes longer than both together. tests/test_readme.py checks, in
# seconds, that every command of the README parses; this script is the one that runs them.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
clone=${1:-$(mktemp -d -t mmseqrec-readme-XXXXXX)}
git clone --quiet "$repo" "$clone"
cd "$clone"
echo "fresh clone of $(git -C "$repo" rev-parse --short HEAD) in $clone"

mapfile -t commands < <(python3 scripts/readme_commands.py --fresh-clone README.md)
[[ ${#commands[@]} -ge 2 && ${commands[0]} == "make demo" ]] || { echo "no marked quick start in README.md" >&2; exit 1; }
for command in "${commands[@]}"; do
  echo
  echo "\$ $command"
  start=$SECONDS
  if ! PATH="$clone/.venv/bin:$PATH" bash -c "$command"; then
    echo "FAILED after $((SECONDS - start)) s: $command" >&2
    exit 1
  fi
  echo "ok ($((SECONDS - start)) s)"
done
echo
echo "all ${#commands[@]} commands of the README's fresh-clone blocks ran ($((SECONDS / 60)) min in all)"
