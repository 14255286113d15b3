#!/bin/sh
# Builds the C shim once with AddressSanitizer and UndefinedBehaviorSanitizer
# into a test PAM module (the Swift side replaced by stub_entry.c) and drives
# it through real libpam with shim_test.c. Exit status 0 only if every check
# passes and no sanitizer finds anything (leaks included).
set -eu
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags="-std=gnu11 -Wall -Wextra -Werror -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
gcc $flags -shared -fPIC -ICModule/include CModule/pam_shim.c Tests/shim/stub_entry.c -lpam -o "$out/pam_shim_test.so"
gcc $flags Tests/shim/shim_test.c -lpam -o "$out/shim_test"
printf 'session required %s config=/nonexistent %%n%%n%%s\n' "$out/pam_shim_test.so" > "$out/lc-shim-test"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$out/shim_test" "$out"
