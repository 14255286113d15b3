#!/bin/bash
# The dm-thin tier of `make test`: two boots of the VM lab (scripts/vmlab.sh).
# The first boot runs the conformance suite (the same client, pamtester and
# CLI tests as the host tier, on loop-file pools, and the attacks whose
# outcome depends on the backend), erofs generations sealed with fs-verity
# (test_erofs_verity.py: this machine's kernel has no fs-verity), then
# Tests/integration/test_dmthin_lab.py on a store whose pool lives on two
# disk files, and ends with a power cut in the middle of a publish with
# sessions open; the second runs test_dmthin_reboot.py. Exit status: 0 only if both pass.
# LC_LAB_TESTS="FILE..." runs those test files in the first boot instead.
set -euo pipefail
cd "$(dirname "$0")/.."

lab=$(mktemp -d /var/tmp/lclab.XXXXXX)
trap 'rm -rf "$lab"' EXIT
# Only what the tests run: every file costs under emulation.
sh scripts/make-image.sh "$lab/image" sh cat echo sleep nohup setsid unshare id ls grep pwd test [ dd \
    head wc timeout rm mkdir true env touch >/dev/null
bash scripts/lab-sysdisk.sh "$lab/system.disk" >/dev/null
truncate -s 192M "$lab/data.disk"
truncate -s 16M "$lab/meta.disk"
for client in mtclient pamclient; do  # a compiler is slow in there
    gcc -Wall -O2 -o "$lab/$client" "Tests/integration/$client.c" -lpam -lpthread
done
gcc -Wall -O2 -static -o "$lab/deeptree" Tests/integration/deeptree.c

python=$(python3 -c 'import sys; print(sys.executable)')
settings=(LC_LAB_DIR="$lab" LC_IMAGE_DIR="$lab/image" LC_MTCLIENT="$lab/mtclient" LC_PAMCLIENT="$lab/pamclient" LC_DEEPTREE="$lab/deeptree"
          LC_RELIABILITY_LOG="$lab/reliability.jsonl" LC_BACKENDS=dm-thin LC_TIME_SCALE=10
          LC_MODULE="$PWD/.build/release/pam_loginchroot.so" LC_CLI="$PWD/.build/release/loginchroot"
          PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 PYTHONUNBUFFERED=1)
pytest=(env -u PYTHONDONTWRITEBYTECODE "${settings[@]}" "$python" -m pytest -v -p no:cacheprovider --durations=0)
default_first_boot=(Tests/integration/test_pamtester.py Tests/integration/test_cli.py Tests/integration/test_clients.py
            Tests/integration/test_crashes.py Tests/integration/test_concurrency.py Tests/integration/test_soak.py
            Tests/integration/test_attacks.py Tests/integration/test_erofs_verity.py
            Tests/integration/test_dmthin_lab.py)  # last: it ends in a power cut
read -r -a first_boot <<< "${LC_LAB_TESTS:-${default_first_boot[*]}}"
# Compile the tests here, where it is fast (the system disk has the rest
# compiled); the guest finds the bytecode next to the sources.
"${pytest[@]}" --collect-only -q "${first_boot[@]}" Tests/integration/test_dmthin_reboot.py >/dev/null

boot() {
    echo "== VM lab: $1"
    scripts/vmlab.sh --keep "$lab" --disk "$lab/data.disk" --disk "$lab/meta.disk" --system-disk "$lab/system.disk" \
        -- "${pytest[@]}" "${@:2}"
}
status=0
boot "first boot" -rs "${first_boot[@]}" || status=$?
boot "second boot, after a power cut mid-publish with sessions open" Tests/integration/test_dmthin_reboot.py || status=$?
# The lab's rows of RELIABILITY.md (scripts/reliability-report.py).
mkdir -p .build/reliability
cp "$lab/reliability.jsonl" .build/reliability/lab.jsonl 2>/dev/null || rm -f .build/reliability/lab.jsonl
exit $status
