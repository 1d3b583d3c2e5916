#!/usr/bin/env bash
# System packages the tests use, from Debian's archive: Java + Maven (the local Kafka broker),
# Chromium + ChromeDriver (the triage page's browser test), Prometheus + promtool (a real
# scraper and the alerting rules' check). Installs only what is missing; needs root for apt.
set -euo pipefail
need=()
command -v java >/dev/null || need+=(default-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root or: sudo apt-get install ${need[*]})" >&2
  exit 0  # the tests that need them say so; CI runs as root and always installs them
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
