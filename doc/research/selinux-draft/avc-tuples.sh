#!/bin/sh
# Reduce AVC denials to unique "stype ttype tclass perm" tuples.
# Input: raw audit records on stdin (ausearch --raw, audit.log, journalctl -k or dmesg all work).
# Usage: ausearch -m AVC,USER_AVC -ts boot --raw | avc-tuples.sh
#        journalctl -k -b | avc-tuples.sh
grep -o 'avc: *denied *{[^}]*}.*' |
awk '{
  perms = ""; i = 4
  while (i <= NF && $i != "}") { perms = perms " " $i; i++ }
  sc = tc = cl = ""
  for (j = i; j <= NF; j++) {
    if ($j ~ /^scontext=/) sc = substr($j, 10)
    else if ($j ~ /^tcontext=/) tc = substr($j, 10)
    else if ($j ~ /^tclass=/)  cl = substr($j, 8)
  }
  split(sc, s, ":"); split(tc, t, ":")
  n = split(perms, p, " ")
  for (k = 1; k <= n; k++) print s[3], t[3], cl, p[k]
}' | sort -u
