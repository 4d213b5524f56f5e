#!/usr/bin/env bash
# Issue #7, session 11 (H200): session 10's quick speed run (B = 32 forwards, MDLM T = 128, EDLM-AR and EDLM-NCE
# k = 8 over [0, 1], the card's clocks every 2 s) timed the way sessions 1-10 timed it: a device sync around every
# network call (--sync-timers). Results under $OUT/quick.
SPEED_ARGS="--sync-timers ${SPEED_ARGS:-}" exec bash "$(dirname "$0")/session10_quick.sh"
