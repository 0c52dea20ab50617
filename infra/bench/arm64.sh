#!/usr/bin/env bash
# Builds functions the way `sam build` does (cargo lambda build --release
# --arm64, with the pinned tools of infra/build-tools.txt) and reports the
# size of each bootstrap and of its zip (what Lambda loads).
#
#   infra/bench/arm64.sh [BINARY...]     default: health-check query-ask ingest-worker
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

bins=("$@")
(( ${#bins[@]} )) || bins=(health-check query-ask ingest-worker)

tools=.local/build-tools
stamp="$tools/.installed"
if [[ ! -f "$stamp" || infra/build-tools.txt -nt "$stamp" ]]; then
  echo "arm64: installing the build tools into $tools" >&2
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet --disable-pip-version-check -r infra/build-tools.txt
  touch "$stamp"
fi
export PATH="$PWD/$tools/bin:$PATH"
rustup target add aarch64-unknown-linux-gnu >/dev/null

echo "cargo-lambda: $(cargo lambda --version)"
echo "zig: $(python -m ziglang version)"
target="${CARGO_TARGET_DIR:-target}"
flags=()
for b in "${bins[@]}"; do flags+=(--bin "$b"); done
start=$SECONDS
cargo lambda build --release --arm64 "${flags[@]}"
echo "build: $((SECONDS - start)) s"

python3 - "$target" "${bins[@]}" <<'PY'
import io, struct, sys, zipfile
target, bins = sys.argv[1], sys.argv[2:]
print(f"{'binary':<16} {'bootstrap':>12} {'zip':>12}")
for b in bins:
    data = open(f"{target}/lambda/{b}/bootstrap", "rb").read()
    # ELF e_machine 183 is AArch64.
    if data[:4] != b"\x7fELF" or struct.unpack_from("<H", data, 18)[0] != 183:
        sys.exit(f"{b}: not an arm64 ELF binary")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("bootstrap", data)
    mb = lambda n: f"{n / 1048576:.1f} MB"
    print(f"{b:<16} {mb(len(data)):>12} {mb(len(buf.getvalue())):>12}")
PY
