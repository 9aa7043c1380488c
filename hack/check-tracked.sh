#!/usr/bin/env bash
# Refuses build outputs in git: a tracked file over 1 MB, or a tracked executable that is not a script (an ELF or other
# binary; scripts with a #! line are fine). Run by `make lint`.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((1024 * 1024))
bad=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue
	size=$(stat -c %s "$f")
	if [ "$size" -gt "$limit" ]; then
		echo "tracked file over 1 MB: $f ($size bytes); build outputs and large data do not belong in git" >&2
		bad=1
	fi
	if [ -x "$f" ] && [ "$(head -c 2 "$f")" != "#!" ]; then
		echo "tracked executable that is not a script: $f; build outputs do not belong in git (add it to .gitignore, git rm --cached it)" >&2
		bad=1
	fi
done < <(git ls-files -z)
exit "$bad"
